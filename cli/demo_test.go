package cli_test

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/cli"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
)

// nixExpected reports whether the demo must run its build step: when nix is
// installed, and always in CI (which installs it).
func nixExpected(t *testing.T) bool {
	_, err := exec.LookPath("nix")
	if err != nil && os.Getenv("CI") != "" {
		t.Fatalf("nix is not installed: CI must install it so the demo's build step runs")
	}
	return err == nil
}

func TestDemoRunsEveryStep(t *testing.T) {
	t.Parallel()
	withBuild := nixExpected(t)
	code, out, errOut := invoke(t, "", "demo", "--step-delay", "50ms", "--accept-window", "300ms")
	if code != 0 {
		t.Fatalf("demo exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	steps := "4"
	if withBuild {
		steps = "5"
	}
	want := []string{
		// Step 1: the host table of list-hosts, every listener in it.
		"=== Step 1/" + steps + ": list-hosts",
		"HOSTNAME", "dns1                 prod  dns", "web1                 prod  -", "testhost1            test  -",
		"--> ok: all 3 listeners answered",
		// Step 2: the test tier deploy completed, simulated.
		"=== Step 2/" + steps + ":",
		"testhost1            completed\n    [simulated] nixos-rebuild switch of master completed",
		"switch on 1/1 host(s) of deploy.test.all completed",
		// Step 3: the admin deploy to the dns role.
		"=== Step 3/" + steps + ":",
		"dns1                 completed\n    [simulated] nixos-rebuild switch of master completed",
		"switch on 1/1 host(s) of deploy.prod.role.dns completed",
		// Step 4: the server refused the test credential.
		"=== Step 4/" + steps + ":",
		"the NATS server refused to let this credential publish to deploy.prod.web1",
		"--> ok: the NATS server refused",
		"Demo finished: every step behaved as expected.",
	}
	if withBuild {
		want = append(want,
			"=== Step 5/5: build every host",
			"built 3/3",
			"--> ok: the builder built all 3 hosts",
		)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("demo output lacks %q", w)
		}
	}
	if withBuild {
		// Real Nix built each host's toplevel into the store.
		for _, h := range []string{"testhost1", "dns1", "web1"} {
			re := regexp.MustCompile(`(?m)^` + h + `\s+ok\s+[0-9.]+s\s+/nix/store/[a-z0-9]{32}-nixos-system-` + h + `-demo$`)
			if !re.MatchString(out) {
				t.Errorf("no built store path for %s in the build step", h)
			}
		}
	}
	if strings.Contains(out, "UNEXPECTED") || strings.Contains(out, "web1                 completed") {
		t.Errorf("demo reported an unexpected outcome")
	}
	// Progress goes to stderr as in `deploy`; every listener message says
	// it is simulated.
	for _, line := range strings.Split(errOut, "\n") {
		if regexp.MustCompile(`(accepted|started|completed|failed) `).MatchString(line) && strings.Contains(line, "[") && !strings.Contains(line, "level=") {
			if !strings.Contains(line, "[simulated]") {
				t.Errorf("progress line without [simulated]: %q", line)
			}
		}
	}
	if !strings.Contains(errOut, "testhost1            started   [simulated] running nixos-rebuild switch") {
		t.Errorf("stderr lacks testhost1's simulated progress:\n%s", errOut)
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", out, errOut)
	}
}

// TestDemoServePrintsWorkingCommands runs `demo --serve`, then uses the
// export line it printed to run list-hosts and a deploy against the running
// fleet, and stops it by cancelling the context (Ctrl-C).
func TestDemoServePrintsWorkingCommands(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut testenv.Buffer
	done := make(chan int, 1)
	go func() {
		done <- cli.Run(ctx, []string{"demo", "--serve", "--port", "0", "--no-build", "--step-delay", "10ms", "--accept-window", "200ms"},
			cli.Env{Stdout: &out, Stderr: &errOut, Version: "test"})
	}()
	exportRe := regexp.MustCompile(`(?m)^  export HOMELAB_DEPLOY_NATS_URL=(\S+) HOMELAB_DEPLOY_NKEY_FILE=(\S+)$`)
	var m []string
	deadline := time.Now().Add(2 * time.Minute)
	for m == nil {
		select {
		case code := <-done:
			t.Fatalf("demo --serve exited %d before serving:\n%s\n%s", code, out.String(), errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo --serve printed no export line:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
		m = exportRe.FindStringSubmatch(out.String())
	}
	if !strings.Contains(out.String(), "homelab-deploy mcp --nats-url "+m[1]+" --nkey-file ") {
		t.Errorf("demo --serve printed no mcp command for %s:\n%s", m[1], out.String())
	}
	env := map[string]string{"HOMELAB_DEPLOY_NATS_URL": m[1], "HOMELAB_DEPLOY_NKEY_FILE": m[2]}
	getenv := func(k string) string { return env[k] }
	var lo, le testenv.Buffer
	if code := cli.Run(ctx, []string{"list-hosts"}, cli.Env{Stdout: &lo, Stderr: &le, Getenv: getenv}); code != 0 {
		t.Fatalf("list-hosts with the printed environment: exit %d: %s", code, le.String())
	}
	for _, h := range []string{"testhost1", "dns1", "web1"} {
		if !strings.Contains(lo.String(), h) {
			t.Errorf("list-hosts against the demo lacks %s:\n%s", h, lo.String())
		}
	}
	lo.Reset()
	if code := cli.Run(ctx, []string{"deploy", "deploy.test.testhost1"}, cli.Env{Stdout: &lo, Stderr: &le, Getenv: getenv}); code != 0 || !strings.Contains(lo.String(), "testhost1            completed") {
		t.Errorf("deploy with the printed environment: exit %d\n%s\n%s", code, lo.String(), le.String())
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("demo --serve exit %d after Ctrl-C", code)
		}
	case <-time.After(time.Minute):
		t.Fatal("demo --serve did not stop when its context was cancelled")
	}
	if !strings.Contains(out.String(), "Stopping the demo fleet.") {
		t.Errorf("no stop message:\n%s", out.String())
	}
}
