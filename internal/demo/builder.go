package demo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/internal/natsauth"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/build"
)

// startBuilder runs the build tool's serve half over the example flake, on
// the builder credential's own connection, with a builder.yaml written like
// a user's. It reports whether a builder runs.
//
// agents/builder, the daemon, is not in the tree yet; when it is, this
// should become a call to it (as the listeners use agents/listener).
func (d *Demo) startBuilder(ctx context.Context, o Options) (bool, error) {
	cfgText := fmt.Sprintf("repos:\n  %s:\n    url: %q\n    default_branch: \"master\"\n", Repo, d.FlakeURL)
	path := filepath.Join(d.Dir, "builder.yaml")
	if err := os.WriteFile(path, []byte(cfgText), 0o644); err != nil {
		return false, fmt.Errorf("demo: %w", err)
	}
	cfg, err := build.LoadConfig(path)
	if err != nil {
		return false, fmt.Errorf("demo: %w", err)
	}
	env := NixEnv(os.Getenv)
	if o.NixConfig != "" {
		env = append(withoutVar(os.Environ(), "NIX_CONFIG"), "NIX_CONFIG="+o.NixConfig)
	}
	log := o.Logger.With("agent", "builder")
	conn, err := d.Connect(ctx, natsauth.CredBuilder, log)
	if err != nil {
		return false, fmt.Errorf("demo: builder: %w", err)
	}
	srv, err := build.NewServer(build.ServerConfig{
		Config: cfg, Timeout: 10 * time.Minute, Env: env, Logger: log,
		Publish: func(subject string, data []byte) error { return conn.Publish(subject, data) },
	})
	if err != nil {
		return false, fmt.Errorf("demo: builder: %w", err)
	}
	sub, err := conn.Subscribe(protocol.BuildRepoWildcard(Repo), func(m *nats.Msg) { srv.Handle(m.Subject, m.Data) })
	if err != nil {
		return false, fmt.Errorf("demo: builder: subscribe: %w", err)
	}
	if err := conn.Flush(); err != nil {
		return false, fmt.Errorf("demo: builder: %w", err)
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		<-ctx.Done()
		_ = sub.Unsubscribe()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		srv.Shutdown(sctx)
		cancel()
	}()
	return true, nil
}

func withoutVar(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}
