package buildtest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/build"
)

// Serve runs the builder's serve half on conn, subscribed to
// build.<repo>.* for every repo of cfg.Config as the daemon is; cfg.Publish
// is set to publish on conn. The server is shut down when the test ends.
func Serve(t testing.TB, conn *protocol.Conn, cfg build.ServerConfig) *build.Server {
	t.Helper()
	cfg.Publish = func(s string, d []byte) error { return conn.Publish(s, d) }
	srv, err := build.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range cfg.Config.Names() {
		if _, err := conn.Subscribe(protocol.BuildRepoWildcard(name), func(m *nats.Msg) { srv.HandleMsg(m.Subject, m.Header, m.Data) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv
}
