package builder_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/agents/builder"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// A builder whose credential may not subscribe to a configured repository's
// subject stops with an error that names it.
func TestBuilderStopsWhenASubscriptionIsRefused(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t, testenv.User{Name: "builder", Permissions: testenv.Ptr(protocol.BuilderPermissions([]string{"other"}))})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := builder.Run(ctx, builder.Config{
		Conn: n.Connect(t, "builder"), ConfigFile: writeConfig(t), Timeout: time.Minute, Nix: nixStandIn(t, false),
	})
	if ctx.Err() != nil {
		t.Fatal("the builder kept running with a refused subscription")
	}
	for _, want := range []string{"refused the builder's subscription to build.fleet.*", "fix the builder's permissions"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Run: %v; want an error saying %q", err, want)
		}
	}
}
