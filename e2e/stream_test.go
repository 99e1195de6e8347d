package e2e

// Live output of the built binary against Debian's nats-server:
// nixos-rebuild's lines stream to `deploy --follow` and into the
// listener's log, a heartbeat comes while it is silent, and the
// credentials of the flake URL appear nowhere but in nixos-rebuild's own
// argv.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

const secretFlake = "git+https://user:s3cret@git.example.com/x.git?access_token=tok123"

// streamBody prints what it runs, a line on stderr, then is silent until
// a file named release appears next to it, then prints one more line.
const streamBody = `dir=$(dirname "$0"); echo "fetching $*"; echo "building the system configuration..." >&2
while [ ! -f "$dir/release" ]; do sleep 0.05; done; echo "activating the configuration..."`

func TestDeployFollowStreamsOutputWithoutSecrets(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	creds := map[string]testenv.Cred{
		"testhost1": testenv.NewCred(t, dir, "testhost1", *testenv.ListenerPerms("test", "testhost1", "")),
		"deployer":  testenv.NewCred(t, dir, "deployer", protocol.TestDeployerPermissions()),
		"spy":       testenv.NewCred(t, dir, "spy", allowAll),
	}
	s := startNATSServer(t, creds["testhost1"], creds["deployer"], creds["spy"])
	spy := startSpy(t, s.URL, creds["spy"])
	standIn := testenv.StandIn(t, "nixos-rebuild", streamBody)
	listener := startDaemon(t, baseEnv(standIn), "listener", "--hostname", "testhost1", "--tier", "test",
		"--nats-url", s.URL, "--nkey-file", creds["testhost1"].SeedFile, "--flake-url", secretFlake,
		"--timeout", "120", "--log-format", "text")
	listener.WaitFor(t, "listener ready", 20*time.Second)

	env := append(baseEnv(), "HOMELAB_DEPLOY_NATS_URL="+s.URL, "HOMELAB_DEPLOY_NKEY_FILE="+creds["deployer"].SeedFile)
	cli := startDaemon(t, env, "deploy", "deploy.test.testhost1", "--follow", "--timeout", "120")

	// While nixos-rebuild is silent, a heartbeat arrives: an output status
	// without lines, with the time it has been running and its last line.
	testenv.Eventually(t, 60*time.Second, func() bool {
		for _, r := range spy.statuses(t) {
			if r.Status == protocol.StatusOutput && len(r.Lines) == 0 && r.ElapsedSeconds >= 4 && r.Message == "building the system configuration..." {
				return true
			}
		}
		return false
	}, "no heartbeat while nixos-rebuild was silent; statuses: %+v", spy.statuses(t))
	if err := os.WriteFile(filepath.Join(standIn, "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := cli.exitCode(t, 60*time.Second); code != 0 {
		t.Fatalf("deploy --follow exited %d:\n%s", code, cli.Output)
	}

	out := cli.Output.String()
	var at []int
	for _, want := range []string{
		"testhost1 | fetching switch --flake git+https://***@git.example.com/x.git?access_token=***&ref=master#testhost1",
		"testhost1 | building the system configuration...",
		"testhost1 | activating the configuration...",
		"testhost1            completed",
	} {
		i := strings.Index(out, want)
		if i < 0 {
			t.Fatalf("deploy --follow output lacks %q:\n%s", want, out)
		}
		at = append(at, i)
	}
	for i := 1; i < len(at); i++ {
		if at[i] < at[i-1] {
			t.Errorf("output lines out of order:\n%s", out)
		}
	}

	// The listener's log holds every line, one record each, with the id.
	log := listener.Output.String()
	for _, want := range []string{"building the system configuration...", "activating the configuration..."} {
		found := false
		for _, l := range strings.Split(log, "\n") {
			found = found || strings.Contains(l, `msg="nixos-rebuild output"`) && strings.Contains(l, " id=") && strings.Contains(l, want)
		}
		if !found {
			t.Errorf("listener log has no output record for %q:\n%s", want, log)
		}
	}

	// The credentials reach nixos-rebuild, and nothing else.
	if calls := testenv.Calls(standIn); len(calls) != 1 || !strings.Contains(calls[0], "user:s3cret@") || !strings.Contains(calls[0], "access_token=tok123") {
		t.Fatalf("nixos-rebuild argv %q, want the real flake URL", calls)
	}
	wire, _ := json.Marshal(spy.statuses(t))
	for what, text := range map[string]string{"CLI output": out, "listener log": log, "statuses on the wire": string(wire)} {
		for _, secret := range []string{"s3cret", "tok123"} {
			if strings.Contains(text, secret) {
				t.Errorf("%s shows %q:\n%s", what, secret, text)
			}
		}
	}

	// --json prints the same result document as before, and --follow's
	// lines stay on stderr.
	r := run(t, env, "deploy", "deploy.test.testhost1", "--follow", "--json", "--timeout", "60")
	var res map[string]any
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil || r.Code != 0 {
		t.Fatalf("deploy --json exit %d, stdout not one JSON document (%v):\n%s", r.Code, err, r.Stdout)
	}
	for _, key := range []string{"id", "subject", "action", "revision", "success", "message", "hosts", "completed", "failed", "unfinished", "duration_seconds"} {
		if _, ok := res[key]; !ok {
			t.Errorf("--json result lacks %q: %s", key, r.Stdout)
		}
	}
	if !strings.Contains(r.Stderr, "testhost1 | activating the configuration...") || strings.Contains(r.Stdout, " | ") {
		t.Errorf("--follow lines belong on stderr:\nstdout:\n%s\nstderr:\n%s", r.Stdout, r.Stderr)
	}
}

// statuses decodes the deploy statuses the spy saw, as a deployer would.
func (s *spy) statuses(t *testing.T) []protocol.DeployResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []protocol.DeployResponse
	for _, m := range s.msgs {
		if !strings.HasPrefix(m.Subject, protocol.DeployResponsesPrefix) {
			continue
		}
		if r, err := protocol.DecodeDeployResponse(m.Data); err == nil && r.Status != "" {
			out = append(out, r)
		}
	}
	return out
}
