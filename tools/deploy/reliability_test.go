package deploy_test

// Reliability and replay rows of docs/RELIABILITY.md and docs/SECURITY.md
// that run in-process against an embedded NATS server.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
)

// The stand-in forks a child that forks a grandchild; at the timeout the
// whole tree is killed and the deploy reports timeout.
func TestDeployTimeoutKillsGrandchildren(t *testing.T) {
	t.Parallel()
	body := `dir=$(dirname "$0")
sh -c 'sleep 300 & echo $! > "$1/grandchild.pid"; wait' sh "$dir" &
echo $! > "$dir/child.pid"
echo $$ > "$dir/parent.pid"
wait`
	f := startFleet(t, defaultHosts[:1], body, 700*time.Millisecond)
	res, err := deploy.Send(ctx, f.deployer, deploy.Request{Subject: "deploy.test.testhost1", Action: "switch", Revision: "main"}, deps(f.deployer), nil)
	if err != nil {
		t.Fatal(err)
	}
	if h := res.Hosts[0]; h.Status != protocol.StatusFailed || h.Error != protocol.ErrTimeout || !strings.Contains(h.Message, "timeout") {
		t.Fatalf("result = %+v", res)
	}
	for _, name := range []string{"parent.pid", "child.pid", "grandchild.pid"} {
		pid := readPID(t, filepath.Join(f.standIn, name))
		testenv.Eventually(t, 10*time.Second, func() bool { return !alive(pid) }, "%s %d still running after the timeout", name, pid)
	}
}

// A nixos-rebuild that succeeds but leaves a background grandchild behind
// (in its process group) does not leave it running.
func TestDeployLeavesNoOrphans(t *testing.T) {
	t.Parallel()
	body := `dir=$(dirname "$0"); (sleep 300 & echo $! > "$dir/orphan.pid"); echo done`
	f := startFleet(t, defaultHosts[:1], body, time.Minute)
	res, err := deploy.Send(ctx, f.deployer, deploy.Request{Subject: "deploy.test.testhost1", Action: "switch", Revision: "main"}, deps(f.deployer), nil)
	if err != nil || !res.Success {
		t.Fatalf("%+v %v", res, err)
	}
	pid := readPID(t, filepath.Join(f.standIn, "orphan.pid"))
	testenv.Eventually(t, 10*time.Second, func() bool { return !alive(pid) }, "orphan %d still running after the deploy", pid)
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() bool {
		b, err := os.ReadFile(path)
		return err == nil && strings.TrimSpace(string(b)) != ""
	}, "%s never written", path)
	pid, err := strconv.Atoi(strings.TrimSpace(readFile(t, path)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// A burst of 200 deploy requests at one listener: exactly one is accepted,
// every other is rejected already_running, nixos-rebuild runs once, and the
// listener takes the next deploy.
func TestDeployBurstOneAccepted(t *testing.T) {
	t.Parallel()
	body := `dir=$(dirname "$0"); while [ ! -f "$dir/release" ]; do sleep 0.05; done`
	f := startFleet(t, defaultHosts[:1], body, time.Minute)

	const n = 200
	reply := protocol.DeployResponsesPrefix + "burst"
	var mu sync.Mutex
	byStatus := map[string]int{}
	var count atomic.Int64
	sub, err := f.deployer.Subscribe(protocol.BoundReply(reply, "*"), func(m *nats.Msg) {
		var r protocol.DeployResponse
		if json.Unmarshal(m.Data, &r) != nil {
			return
		}
		mu.Lock()
		byStatus[string(r.Status)+"/"+string(r.Error)]++
		mu.Unlock()
		count.Add(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	_ = f.deployer.Flush()
	for i := range n {
		req := fmt.Sprintf(`{"id":"burst%d","action":"switch","revision":"main","reply_to":%q}`, i, reply)
		if err := f.deployer.Publish("deploy.test.testhost1", []byte(req)); err != nil {
			t.Fatal(err)
		}
	}
	_ = f.deployer.Flush()
	// accepted + started for one, rejected for the other 199.
	testenv.Eventually(t, 30*time.Second, func() bool { return count.Load() >= n+1 }, "only %d answers to %d requests", count.Load(), n)
	if err := os.WriteFile(filepath.Join(f.standIn, "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return count.Load() >= n+2 }, "the accepted deploy never finished")
	mu.Lock()
	got := fmt.Sprint(byStatus)
	ok := byStatus["accepted/"] == 1 && byStatus["started/"] == 1 && byStatus["completed/"] == 1 && byStatus["rejected/already_running"] == n-1 && len(byStatus) == 4
	mu.Unlock()
	if !ok {
		t.Fatalf("answers by status = %s; want one accepted, started and completed, and %d already_running", got, n-1)
	}
	if calls := f.calls(); len(calls) != 1 {
		t.Fatalf("nixos-rebuild ran %d times, want 1", len(calls))
	}
	res, err := deploy.Send(ctx, f.deployer, deploy.Request{Subject: "deploy.test.testhost1", Action: "switch", Revision: "main"}, deps(f.deployer), nil)
	if err != nil || !res.Success {
		t.Fatalf("deploy after the burst: %+v %v", res, err)
	}
}

// The replay window: within it a request id is carried out once; after it
// the same message is carried out again (what stops it then is only who
// may publish; see docs/SECURITY.md).
func TestReplayWindowEnds(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	var replies []protocol.DeployResponse
	var runs atomic.Int64
	srv, err := deploy.NewServer(deploy.ServerConfig{
		Hostname: "h1", Tier: "test", FlakeURL: flakeURL, ReplayWindow: 10 * time.Minute,
		Now:  func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
		Exec: func(_ context.Context, _ []string) (string, error) { runs.Add(1); return "", nil },
		Publish: func(_ string, data []byte) error {
			var r protocol.DeployResponse
			_ = json.Unmarshal(data, &r)
			mu.Lock()
			replies = append(replies, r)
			mu.Unlock()
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte(`{"id":"captured1","action":"switch","revision":"main","reply_to":"deploy.responses.captured1"}`)
	final := func() protocol.DeployResponse {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(replies) > 0 && replies[len(replies)-1].Status.Terminal() && !srv.Busy()
		}, "no final status")
		mu.Lock()
		defer mu.Unlock()
		r := replies[len(replies)-1]
		replies = nil
		return r
	}
	srv.Handle("deploy.test.h1", msg)
	if r := final(); r.Status != protocol.StatusCompleted {
		t.Fatalf("first: %+v", r)
	}
	mu.Lock()
	now = now.Add(9 * time.Minute)
	mu.Unlock()
	srv.Handle("deploy.test.h1", msg)
	if r := final(); r.Status != protocol.StatusRejected || r.Error != protocol.ErrInvalidRequest || !strings.Contains(r.Message, "already seen") {
		t.Fatalf("replay within the window: %+v", r)
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	srv.Handle("deploy.test.h1", msg)
	if r := final(); r.Status != protocol.StatusCompleted {
		t.Fatalf("replay after the window: %+v", r)
	}
	if n := runs.Load(); n != 2 {
		t.Fatalf("nixos-rebuild ran %d times, want 2", n)
	}
}
