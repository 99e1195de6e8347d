package builder_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/agents/builder"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/build"
)

// nixStandIn is a recording nix whose `eval` lists the host h1 (after a
// file named release appears next to it, when hold is set), whose `build`
// prints a store path, and whose `show-config` has flakes enabled.
func nixStandIn(t *testing.T, hold bool) string {
	t.Helper()
	wait := ""
	if hold {
		wait = `while [ ! -f "$(dirname "$0")/release" ]; do sleep 0.05; done; `
	}
	dir := testenv.StandIn(t, "nix", `case "$1" in
show-config) echo 'experimental-features = flakes nix-command';;
eval) `+wait+`echo '["h1"]';;
build) echo '[{"drvPath":"/nix/store/aaaa-h1.drv","outputs":{"out":"/nix/store/aaaa-nixos-system-h1"}}]';;
*) exit 1;;
esac`)
	return filepath.Join(dir, "nix")
}

// nixWork is the eval and build calls nix got, without the builder's
// start-up check of its configuration.
func nixWork(nix string) []string {
	var work []string
	for _, c := range testenv.Calls(filepath.Dir(nix)) {
		if !strings.HasPrefix(c, "show-config") {
			work = append(work, c)
		}
	}
	return work
}

func writeConfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "builder.yaml")
	if err := os.WriteFile(p, []byte("repos:\n  fleet:\n    url: \"git+file:///nonexistent/fleet\"\n    default_branch: \"main\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A burst of build requests for one repository: one builds, every other is
// rejected already_running at once, nix runs for one build only, and the
// builder takes the next build.
func TestBuilderBurstOneRuns(t *testing.T) {
	t.Parallel()
	nix := nixStandIn(t, true)
	n := testenv.StartNATS(t,
		testenv.User{Name: "builder", Permissions: testenv.Ptr(protocol.BuilderPermissions([]string{"fleet"}))},
		testenv.User{Name: "client", Permissions: testenv.Ptr(protocol.BuildClientPermissions([]string{"fleet"}))},
	)
	ready := make(chan struct{})
	ctx, stop := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- builder.Run(ctx, builder.Config{
			Conn: n.Connect(t, "builder"), ConfigFile: writeConfig(t), Timeout: time.Minute, Nix: nix,
			ShutdownGrace: 5 * time.Second, Ready: func(*builder.Builder) { close(ready) },
		})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-errc; err != nil {
			t.Errorf("builder: %v", err)
		}
	})
	<-ready

	client := n.Connect(t, "client")
	const burst = 100
	reply := protocol.BuildResponsesPrefix + "burst"
	var mu sync.Mutex
	byStatus := map[string]int{}
	var count atomic.Int64
	sub, err := client.Subscribe(protocol.BoundReply(reply, protocol.BuilderToken), func(m *nats.Msg) {
		var r protocol.BuildResponse
		if json.Unmarshal(m.Data, &r) != nil {
			return
		}
		mu.Lock()
		byStatus[string(r.Status)+"/"+string(r.ErrorCode)]++
		mu.Unlock()
		count.Add(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	_ = client.Flush()
	for i := range burst {
		req := fmt.Sprintf(`{"id":"b%d","repo":"fleet","target":"all","reply_to":%q}`, i, reply)
		if err := client.Publish("build.fleet.all", []byte(req)); err != nil {
			t.Fatal(err)
		}
	}
	_ = client.Flush()
	testenv.Eventually(t, 30*time.Second, func() bool { return count.Load() >= burst-1 }, "only %d rejections", count.Load())
	if err := os.WriteFile(filepath.Join(filepath.Dir(nix), "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// started, one progress, completed for the build that ran.
	testenv.Eventually(t, 30*time.Second, func() bool { return count.Load() >= burst+2 }, "the running build never finished")
	mu.Lock()
	got := fmt.Sprint(byStatus)
	ok := byStatus["rejected/already_running"] == burst-1 && byStatus["started/"] == 1 && byStatus["progress/"] == 1 && byStatus["completed/"] == 1 && len(byStatus) == 4
	mu.Unlock()
	if !ok {
		t.Fatalf("answers by status = %s; want %d already_running and one started, progress and completed", got, burst-1)
	}
	if calls := nixWork(nix); len(calls) != 2 {
		t.Fatalf("nix calls %q, want one eval and one build", calls)
	}
	res, err := build.Send(context.Background(), client, build.Request{Repo: "fleet", Target: "h1"}, build.Options{Timeout: time.Minute}, nil)
	if err != nil || !res.Success {
		t.Fatalf("build after the burst: %v %s", err, res.Summary())
	}
}

// The builder's replay window: a captured request is refused within it and
// carried out again after it.
func TestBuilderReplayWindowEnds(t *testing.T) {
	t.Parallel()
	nix := nixStandIn(t, false)
	cfg, err := build.LoadConfig(writeConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	var replies []protocol.BuildResponse
	srv, err := build.NewServer(build.ServerConfig{
		Config: cfg, Timeout: time.Minute, Nix: nix, ReplayWindow: 10 * time.Minute,
		Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
		Publish: func(_ string, data []byte) error {
			var r protocol.BuildResponse
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
	msg := []byte(`{"id":"captured","repo":"fleet","target":"all","reply_to":"build.responses.captured"}`)
	final := func() protocol.BuildResponse {
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
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	srv.Handle("build.fleet.all", msg)
	if r := final(); r.Status != protocol.StatusCompleted {
		t.Fatalf("first: %+v", r)
	}
	advance(9 * time.Minute)
	srv.Handle("build.fleet.all", msg)
	if r := final(); r.Status != protocol.StatusRejected || !strings.Contains(r.Message, "already seen") {
		t.Fatalf("replay within the window: %+v", r)
	}
	advance(2 * time.Minute)
	srv.Handle("build.fleet.all", msg)
	if r := final(); r.Status != protocol.StatusCompleted {
		t.Fatalf("replay after the window: %+v", r)
	}
	if calls := nixWork(nix); len(calls) != 4 {
		t.Fatalf("nix calls %q, want two evals and two builds", calls)
	}
}
