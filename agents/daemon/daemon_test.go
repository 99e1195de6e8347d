package daemon

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
)

type noServer struct{}

func (noServer) Shutdown(context.Context) {}

// When a later subscription cannot be made, Run returns its error and
// leaves no earlier subscription behind.
func TestRunUndoesSubscriptionsWhenOneFails(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t, testenv.User{Name: "d"})
	conn := n.Connect(t, "d")
	handle := func(*nats.Msg) {}
	err := Run(context.Background(), Spec{
		Name: "test", Conn: conn, Server: noServer{},
		Subscriptions: []Subscription{{Subject: "a.b", Handle: handle}, {Subject: "bad subject", Handle: handle}},
	})
	if err == nil {
		t.Fatal("Run started with an invalid subject")
	}
	if got := conn.NumSubscriptions(); got != 0 {
		t.Errorf("%d subscriptions left after the failed start, want 0", got)
	}
}
