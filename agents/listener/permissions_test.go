package listener_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/agents/listener"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
)

// A listener whose credential may not subscribe to its own host subject
// would never receive a deploy: it stops with an error that names the
// subject and says to fix its permissions.
func TestListenerStopsWhenASubscriptionIsRefused(t *testing.T) {
	t.Parallel()
	// h1 runs with the permissions nats-config gives h2.
	n := testenv.StartNATS(t, testenv.User{Name: "h1", Permissions: testenv.ListenerPerms("test", "h2", "")})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := listener.Run(ctx, listener.Config{
		Hostname: "h1", Tier: "test", FlakeURL: "git+file:///srv/cfg", Timeout: time.Minute,
		Conn: n.Connect(t, "h1"), Exec: func(context.Context, []string) (string, error) { return "", nil },
	})
	if ctx.Err() != nil {
		t.Fatal("the listener kept running with a refused subscription")
	}
	for _, want := range []string{"refused the listener's subscription to deploy.test.h1", "fix the listener's permissions", "nats-config"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Run: %v; want an error saying %q", err, want)
		}
	}
}
