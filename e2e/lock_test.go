package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
)

// TestKilledListenerRebuildHoldsTheLock: a listener is killed with
// SIGKILL mid-deploy; its nixos-rebuild runs on in its own process group,
// holding the rebuild lock. The restarted listener says so in its log,
// shows busy in discovery and refuses a deploy with already_running
// naming the rebuild's pid, and nothing runs; once that rebuild ends, the
// next deploy runs.
func TestKilledListenerRebuildHoldsTheLock(t *testing.T) {
	t.Parallel()
	lock := filepath.Join(t.TempDir(), "run", "homelab-deploy", "listener.lock")
	f := startRelFleet(t, holdBody, "--lock-file", lock)

	first := startDaemon(t, f.deployEnv(""), "deploy", "deploy.test.testhost1", "--timeout", "300")
	var rebuildPID int
	testenv.Eventually(t, 30*time.Second, func() bool {
		b, err := os.ReadFile(filepath.Join(f.standIn, "started"))
		rebuildPID, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && rebuildPID > 0
	}, "nixos-rebuild did not start:\n%s", f.listener.Output)

	if err := f.listener.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	f.listener.exitCode(t, 30*time.Second)
	if !processAlive(rebuildPID) {
		t.Fatalf("nixos-rebuild (pid %d) died with the listener; this test needs it to outlive it", rebuildPID)
	}
	first.Stop(10 * time.Second) // its listener is gone; it would wait for its timeout

	f.listener = f.startListener(t, f.nats.URL, "--lock-file", lock)
	f.listener.WaitFor(t, "listener ready", 20*time.Second)
	if !strings.Contains(f.listener.Output.String(), "deploys are refused with already_running until the rebuild lock is free") {
		t.Errorf("the restarted listener does not log the held lock:\n%s", f.listener.Output)
	}

	hosts := run(t, f.deployEnv(""), "list-hosts", "--json")
	var listed struct {
		Hosts []struct {
			Hostname string `json:"hostname"`
			Busy     bool   `json:"busy"`
		} `json:"hosts"`
	}
	if err := json.Unmarshal([]byte(hosts.Stdout), &listed); err != nil || len(listed.Hosts) != 1 || !listed.Hosts[0].Busy {
		t.Errorf("list-hosts while the old rebuild runs: want testhost1 busy (%v):\n%s", err, hosts.Stdout)
	}

	second := run(t, f.deployEnv(""), "deploy", "deploy.test.testhost1", "--timeout", "60")
	if second.Code != 1 || !strings.Contains(second.Stdout, "rejected  already_running") ||
		!strings.Contains(second.Stdout, "earlier listener process (pid "+strconv.Itoa(rebuildPID)) {
		t.Fatalf("second deploy: exit %d, want 1 with rejected/already_running naming pid %d\nstdout:\n%s\nstderr:\n%s", second.Code, rebuildPID, second.Stdout, second.Stderr)
	}
	if calls := testenv.Calls(f.standIn); len(calls) != 1 {
		t.Fatalf("nixos-rebuild ran %d times, want once (the refused deploy must run nothing): %q", len(calls), calls)
	}
	if !strings.Contains(f.listener.Output.String(), "rejected deploy: the rebuild lock is taken") {
		t.Errorf("the refusal is not in the listener's log:\n%s", f.listener.Output)
	}

	if err := os.WriteFile(filepath.Join(f.standIn, "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return !processAlive(rebuildPID) }, "the old nixos-rebuild did not end after its release")
	f.mustDeploy(t, "after the old rebuild ended")
	if calls := testenv.Calls(f.standIn); len(calls) != 2 {
		t.Fatalf("nixos-rebuild ran %d times, want twice: %q", len(calls), calls)
	}
}

// processAlive reports whether pid runs (a zombie does not).
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] != "Z"
}
