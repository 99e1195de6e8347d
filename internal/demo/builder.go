package demo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/homelab-deploy/homelab-deploy/agents/builder"
	"github.com/homelab-deploy/homelab-deploy/internal/natsauth"
)

// startBuilder runs the builder daemon (agents/builder) over the example
// flake, on the builder credential's own connection, with a builder.yaml
// written like a user's. It reports whether a builder runs.
func (d *Demo) startBuilder(ctx context.Context, o Options) (bool, error) {
	cfgText := fmt.Sprintf("repos:\n  %s:\n    url: %q\n    default_branch: \"master\"\n", Repo, d.FlakeURL)
	path := filepath.Join(d.Dir, "builder.yaml")
	if err := os.WriteFile(path, []byte(cfgText), 0o644); err != nil {
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
	ready := make(chan struct{})
	done := make(chan error, 1)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		err := builder.Run(ctx, builder.Config{
			ConfigFile: path, Timeout: 10 * time.Minute, NixEnv: env,
			Version: o.Version, Logger: log, Conn: conn, ShutdownGrace: 2 * time.Second,
			Ready: func(*builder.Builder) { close(ready) },
		})
		done <- err
		if err != nil {
			d.fail(fmt.Errorf("builder: %w", err))
		}
	}()
	select {
	case <-ready:
		return true, nil
	case err := <-done:
		return false, fmt.Errorf("demo: the builder stopped at start: %v", err)
	case <-ctx.Done():
		return false, ctx.Err()
	}
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
