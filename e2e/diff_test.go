package e2e

// Preview before activation: the built listener and CLI, Debian's
// nats-server, real Nix building a stand-in system, and a stand-in
// nixos-rebuild that must never run.

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv/buildtest"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// TestDeployDiff: `deploy deploy.test.h1 --diff --json` returns the
// closure diff of the flake's new system against the host's running one
// and reboot_required (the kernel changed); the human output says the
// same; nixos-rebuild never runs and the running system stays.
func TestDeployDiff(t *testing.T) {
	t.Parallel()
	sys := buildtest.NewSystems(t, "h1", true)
	dir := t.TempDir()
	listenerCred := testenv.NewCred(t, dir, "h1", *testenv.ListenerPerms("test", "h1", ""))
	deployerCred := testenv.NewCred(t, dir, "deployer", protocol.TestDeployerPermissions())
	nats := startNATSServer(t, listenerCred, deployerCred)
	standIn := testenv.StandIn(t, "nixos-rebuild", "echo activated")
	env := append(baseEnv(standIn), "NIX_CONFIG="+buildtest.NixConfig)
	l := startDaemon(t, env, "listener", "--hostname", "h1", "--tier", "test",
		"--nats-url", nats.URL, "--nkey-file", listenerCred.SeedFile, "--flake-url", sys.URL,
		"--fleet-system-root", sys.Root, "--fleet-heartbeat", "0", "--timeout", "120", "--log-format", "text")
	l.WaitFor(t, "listener ready", 20*time.Second)
	deployEnv := append(baseEnv(), "HOMELAB_DEPLOY_NATS_URL="+nats.URL, "HOMELAB_DEPLOY_NKEY_FILE="+deployerCred.SeedFile)

	start := time.Now()
	r := run(t, deployEnv, "deploy", "deploy.test.h1", "--diff", "--json", "--branch", buildtest.DefaultBranch, "--timeout", "120")
	t.Logf("preview took %s", time.Since(start).Round(time.Millisecond))
	var out struct {
		Action  string `json:"action"`
		Success bool   `json:"success"`
		Hosts   []struct {
			Hostname       string `json:"hostname"`
			Status         string `json:"status"`
			Message        string `json:"message"`
			Diff           string `json:"diff"`
			RebootRequired *bool  `json:"reboot_required"`
		} `json:"hosts"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil || r.Code != 0 {
		t.Fatalf("exit %d, %v\nstdout:\n%s\nstderr:\n%s\nlistener:\n%s", r.Code, err, r.Stdout, r.Stderr, l.Output)
	}
	hello := "hello: " + buildtest.HelloOld + " → " + buildtest.HelloNew
	kernel := "linux: " + buildtest.KernelOld + " → " + buildtest.KernelNew
	if out.Action != "diff" || !out.Success || len(out.Hosts) != 1 {
		t.Fatalf("result %s", r.Stdout)
	}
	h := out.Hosts[0]
	if h.Hostname != "h1" || h.Status != "completed" || !strings.Contains(h.Diff, hello) || !strings.Contains(h.Diff, kernel) ||
		h.RebootRequired == nil || !*h.RebootRequired {
		t.Fatalf("host %+v, want completed with %q and %q in the diff and reboot_required true", h, hello, kernel)
	}

	r = run(t, deployEnv, "deploy", "deploy.test.h1", "--diff", "--branch", buildtest.DefaultBranch, "--timeout", "120")
	t.Logf("deploy --diff:\n%s", r.Stdout)
	if r.Code != 0 || !strings.Contains(r.Stdout, hello) || !strings.Contains(r.Stdout, "reboot required: yes (kernel, initrd") {
		t.Fatalf("human output, exit %d:\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if calls := testenv.Calls(standIn); len(calls) != 0 {
		t.Errorf("nixos-rebuild ran: %q", calls)
	}
	if got := sys.RunningSystem(t); got != sys.Current {
		t.Errorf("run/current-system now points to %s, was %s", got, sys.Current)
	}
}
