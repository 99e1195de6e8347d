package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv/buildtest"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/build"
)

// TestBuilderEndToEnd runs the built binary as builder and as build client
// against Debian's nats-server with SPEC's builder and build-client
// permissions, building a real flake with real Nix.
func TestBuilderEndToEnd(t *testing.T) {
	t.Parallel()
	fix := buildtest.New(t)
	dir := t.TempDir()
	builderCred := testenv.NewCred(t, dir, "builder", protocol.BuilderPermissions([]string{"fleet", "other"}))
	clientCred := testenv.NewCred(t, dir, "build-client", protocol.BuildClientPermissions([]string{"fleet"}))
	nats := startNATSServer(t, builderCred, clientCred)

	metrics := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	env := append(baseEnv(filepath.Dir(fix.Nix)), "NIX_CONFIG="+buildtest.NixConfig)
	b := startDaemon(t, env, "builder", "--nats-url", nats.URL, "--nkey-file", builderCred.SeedFile,
		"--config", fix.WriteConfig(t, "fleet"), "--timeout", "8", "--max-parallel", "3",
		"--metrics-enabled", "--metrics-addr", metrics, "--log-format", "text")
	b.WaitFor(t, "builder ready", 30*time.Second)

	clientEnv := append(baseEnv(), "HOMELAB_DEPLOY_NATS_URL="+nats.URL, "HOMELAB_DEPLOY_NKEY_FILE="+clientCred.SeedFile)

	res := run(t, clientEnv, "build", "fleet", "--all")
	if res.Code != 1 {
		t.Fatalf("build --all: exit %d, want 1\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
	}
	lines := regexp.MustCompile(`(?m)^\[\d/3\] \S+ \S+`).FindAllString(res.Stderr, -1)
	if strings.Join(lines, "|") != "[1/3] bad FAILED|[2/3] good ok|[3/3] slow TIMEOUT" {
		t.Errorf("live lines %q\nstderr:\n%s", lines, res.Stderr)
	}
	if !strings.Contains(res.Stdout, "built 1/3 hosts; failed: bad (build failed), slow (timed out)") || !strings.Contains(res.Stdout, buildtest.BadMessage) {
		t.Errorf("summary:\n%s", res.Stdout)
	}
	pid := fix.SlowPID()
	if pid == 0 {
		t.Fatal("the slow host never started building")
	}
	deadline := time.Now().Add(10 * time.Second)
	for buildtest.Alive(pid) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if buildtest.Alive(pid) {
		t.Errorf("the slow host's builder (pid %d) outlived its timeout", pid)
	}

	res = run(t, append(clientEnv, "HOMELAB_DEPLOY_BRANCH="+buildtest.Branch), "build", "fleet", "extra", "--json")
	var out build.Result
	if res.Code != 0 || json.Unmarshal([]byte(res.Stdout), &out) != nil || !out.Success || out.Results[0].Host != "extra" {
		t.Fatalf("build extra on %s: exit %d\nstdout:\n%s\nstderr:\n%s", buildtest.Branch, res.Code, res.Stdout, res.Stderr)
	}

	// The build client may not publish to a repository it was not given.
	res = run(t, clientEnv, "build", "other", "--all")
	if res.Code != 1 || !strings.Contains(res.Stdout, "refused to let this credential publish to build.other.all") {
		t.Errorf("build other: exit %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
	}
	// Hostile branches never leave the client.
	for _, br := range []string{"-x", "main#other", "a..b", "x?dir=/", strings.Repeat("b", 300)} {
		if res := run(t, clientEnv, "build", "fleet", "--all", "--branch="+br); res.Code != 2 {
			t.Errorf("--branch=%q: exit %d, want 2", br, res.Code)
		}
	}

	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`homelab_deploy_builds_total{repo="fleet",status="failure"} 1`,
		`homelab_deploy_builds_total{repo="fleet",status="success"} 1`,
		`homelab_deploy_build_host_total{host="slow",repo="fleet",status="failure"} 1`,
		`homelab_deploy_build_host_total{host="extra",repo="fleet",status="success"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	promtool := testenv.RequireBinary(t, "promtool")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(string(body))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	if code := b.Stop(30 * time.Second); code != 0 {
		t.Errorf("builder exited %d on SIGTERM, want 0", code)
	}
	if calls := fix.NixCalls(); len(calls) != 6 {
		t.Errorf("nix ran %d times (%q), want 6: two evals and four builds", len(calls), calls)
	}
}
