package listener_test

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/agents/listener"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
)

// A request that arrives while a listener restarts onto its new version
// (right after the final status of the switch that replaced it) is rejected
// or finds nobody subscribed; it is never accepted and then killed, nor
// left unanswered. RestartAfter sleeps to stand in for hashing the unit.
func TestRequestDuringSelfRestartIsRejected(t *testing.T) {
	t.Parallel()
	const delay = 10 * time.Millisecond
	n := testenv.StartNATS(t,
		testenv.User{Name: "h1", Permissions: testenv.ListenerPerms("test", "h1", "")},
		testenv.User{Name: "deployer", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())})
	var mu sync.Mutex
	calls := 0
	exec := func(ctx context.Context, argv []string) (string, error) {
		mu.Lock()
		calls++
		c := calls
		mu.Unlock()
		if c == 1 {
			return "", nil
		}
		select {
		case <-time.After(5 * time.Second):
			return "", nil
		case <-ctx.Done():
			return "", context.Cause(ctx)
		}
	}
	exited := make(chan error, 1)
	ready := make(chan struct{})
	var restarted atomic.Bool
	go func() {
		exited <- listener.Run(context.Background(), listener.Config{
			Hostname: "h1", Tier: "test", FlakeURL: "git+file:///srv/cfg", Timeout: time.Minute,
			Conn: n.Connect(t, "h1"), Exec: exec, ShutdownGrace: 500 * time.Millisecond,
			RestartAfter: func(protocol.Action, protocol.Status) (bool, string) {
				time.Sleep(delay)
				return restarted.CompareAndSwap(false, true), "unit changed"
			},
			Ready: func(*listener.Listener) { close(ready) },
		})
	}()
	<-ready
	conn := n.Connect(t, "deployer")
	second := make(chan *nats.Msg, 16)
	// The listener answers on its bound reply subject; the server's "no
	// responders" comes on the request's own reply subject.
	_, _ = conn.ChanSubscribe(protocol.BoundReply("deploy.responses.second", "h1"), second)
	_, _ = conn.ChanSubscribe("deploy.responses.second", second)
	_ = conn.Flush()
	req2, _ := json.Marshal(protocol.DeployRequest{ID: "second", Action: "test", Revision: "main", ReplyTo: "deploy.responses.second"})
	progress := func(e tools.Event) {
		if e.Status == protocol.StatusCompleted {
			_ = conn.PublishMsg(&nats.Msg{Subject: "deploy.test.h1", Reply: "deploy.responses.second", Data: req2})
		}
	}
	res, err := deploy.Send(context.Background(), conn, deploy.Request{Subject: "deploy.test.h1", Action: "switch", Revision: "main"}, deploy.Options{Timeout: time.Minute}, progress)
	if err != nil || !res.Success {
		t.Fatalf("first: %+v %v", res, err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-second:
			if len(m.Data) == 0 {
				// nobody subscribed any more: the sender learns it at once
				return
			}
			var r protocol.DeployResponse
			_ = json.Unmarshal(m.Data, &r)
			t.Logf("second deploy: %s %s %s", r.Status, r.Error, r.Message)
			if r.Status.Terminal() {
				if r.Status != protocol.StatusRejected {
					t.Errorf("second deploy accepted during the restart, then ended %s", r.Status)
				}
				return
			}
		case <-deadline:
			t.Error("second request delivered but never answered (dropped by Unsubscribe)")
			return
		}
	}
}
