package e2e

// Confirm or roll back on the host: the built listener, a stand-in
// nixos-rebuild that records its argv, Debian's nats-server.

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
)

const switchArgv = "switch --flake " + e2eFlake + "?ref=master#testhost1"

func deployJSON(t *testing.T, f *relFleet) (Result, map[string]any) {
	t.Helper()
	r := run(t, f.deployEnv(""), "deploy", "deploy.test.testhost1", "--timeout", "120", "--json")
	var out map[string]any
	if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil {
		t.Fatalf("deploy --json: %v\nstdout:\n%s\nstderr:\n%s\nlistener:\n%s", err, r.Stdout, r.Stderr, f.listener.Output)
	}
	return r, out
}

func hostOf(t *testing.T, out map[string]any) map[string]any {
	t.Helper()
	hosts, _ := out["hosts"].([]any)
	if len(hosts) != 1 {
		t.Fatalf("hosts = %v, want one", out["hosts"])
	}
	return hosts[0].(map[string]any)
}

// TestFailingHealthCheckRollsBackSwitch: the switch succeeds, the health
// check does not pass within the window, the listener runs
// `nixos-rebuild switch --rollback` and the deployer gets failed /
// rolled_back naming the check, exit 1.
func TestFailingHealthCheckRollsBackSwitch(t *testing.T) {
	t.Parallel()
	f := startRelFleet(t, "echo activated", "--confirm-timeout", "2s", "--health-check", "timeout=5s sh -c 'echo sshd is down; exit 3'")
	r, out := deployJSON(t, f)
	if r.Code != 1 {
		t.Fatalf("exit %d, want 1\n%s", r.Code, r.Stdout)
	}
	h := hostOf(t, out)
	msg, _ := h["message"].(string)
	if h["status"] != "failed" || h["error"] != "rolled_back" || !strings.Contains(msg, "health check `sh -c 'echo sshd is down; exit 3'`") || !strings.Contains(msg, "sshd is down") {
		t.Fatalf("host result %v, want failed/rolled_back naming the check and its output", h)
	}
	if calls := testenv.Calls(f.standIn); !slices.Equal(calls, []string{switchArgv, "switch --rollback"}) {
		t.Fatalf("nixos-rebuild calls %q, want the switch and then switch --rollback", calls)
	}
}

// TestPassingHealthCheckKeepsSwitch: the check passes, nothing is rolled
// back, exit 0.
func TestPassingHealthCheckKeepsSwitch(t *testing.T) {
	t.Parallel()
	f := startRelFleet(t, "echo activated", "--confirm-timeout", "60s", "--health-check", "true")
	r, out := deployJSON(t, f)
	if r.Code != 0 || hostOf(t, out)["status"] != "completed" {
		t.Fatalf("exit %d, result %v; want 0 and completed", r.Code, out)
	}
	if calls := testenv.Calls(f.standIn); !slices.Equal(calls, []string{switchArgv}) {
		t.Fatalf("nixos-rebuild calls %q, want the switch only", calls)
	}
}

// TestNATSDownDuringConfirmRollsBack: the NATS server is stopped while
// nixos-rebuild runs and stays down through the confirmation window. The
// listener decides alone, rolls back, and the deployer gets the final
// failed / rolled_back once the server is back; discovery then shows it as
// the host's last deploy.
func TestNATSDownDuringConfirmRollsBack(t *testing.T) {
	t.Parallel()
	f := startRelFleet(t, holdBody, "--confirm-timeout", "1s")
	d := startDaemon(t, f.deployEnv(""), "deploy", "deploy.test.testhost1", "--timeout", "120", "--json")
	waitFile(t, filepath.Join(f.standIn, "started"), 30*time.Second)

	f.nats.Stop()
	f.listener.WaitFor(t, "NATS disconnected", 30*time.Second)
	touch(t, filepath.Join(f.standIn, "release"))
	f.listener.WaitFor(t, "rolled back", 60*time.Second)
	if calls := testenv.Calls(f.standIn); !slices.Equal(calls, []string{switchArgv, "switch --rollback"}) {
		t.Fatalf("nixos-rebuild calls %q, want the switch and then switch --rollback", calls)
	}

	f.nats.start(t, testenv.RequireBinary(t, "nats-server"))
	if code := d.exitCode(t, 90*time.Second); code != 1 {
		t.Fatalf("deploy exit %d, want 1:\n%s\nlistener:\n%s", code, d.Output, f.listener.Output)
	}
	var out map[string]any
	stdout := d.Output.String()
	if i := strings.Index(stdout, "{"); i >= 0 {
		_ = json.Unmarshal([]byte(stdout[i:strings.LastIndex(stdout, "}")+1]), &out)
	}
	if out == nil {
		t.Fatalf("no JSON result in the deployer's output:\n%s", stdout)
	}
	h := hostOf(t, out)
	if h["status"] != "failed" || h["error"] != "rolled_back" || !strings.Contains(h["message"].(string), "NATS connection was not back") {
		t.Fatalf("host result %v, want failed/rolled_back saying NATS was not back\ndeployer:\n%s", h, stdout)
	}

	lh := run(t, f.deployEnv(""), "list-hosts", "--json")
	if !strings.Contains(lh.Stdout, `"rolled_back"`) {
		t.Fatalf("list-hosts does not show the rolled-back deploy as the last one:\n%s\n%s", lh.Stdout, lh.Stderr)
	}
}
