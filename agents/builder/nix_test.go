package builder_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/agents/builder"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
)

// A builder whose nix cannot build flakes refuses to start, before it
// connects to NATS, and says what to install or enable.
func TestBuilderRefusesANixThatCannotBuildFlakes(t *testing.T) {
	t.Parallel()
	fake := func(body string) string {
		return filepath.Join(testenv.StandIn(t, "nix", body), "nix")
	}
	cases := []struct {
		name, nix string
		want      []string
	}{
		{"no nix", filepath.Join(t.TempDir(), "nix"), []string{"not found", "install Nix"}},
		{"nix-command disabled", fake(`echo "error: experimental Nix feature 'nix-command' is disabled; use '--extra-experimental-features nix-command' to override" >&2; exit 1`),
			[]string{"nix-command and flakes disabled", "experimental-features = nix-command flakes", "NIX_CONFIG"}},
		{"flakes disabled", fake(`echo 'experimental-features = nix-command'`),
			[]string{"lacks the experimental feature(s) flakes,", "experimental-features = nix-command flakes"}},
		{"neither", fake(`echo 'experimental-features = '`),
			[]string{"nix-command and flakes, which"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := builder.Run(context.Background(), builder.Config{
				ConfigFile: writeConfig(t), Timeout: time.Minute, Nix: c.nix,
				NATSURL: "nats://127.0.0.1:1", NKeyFile: "/nonexistent",
			})
			for _, w := range c.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("Run: %v; want an error saying %q", err, w)
				}
			}
		})
	}
}

// Real Nix passes the check with the features on, and fails it without.
func TestCheckNixWithRealNix(t *testing.T) {
	t.Parallel()
	nix := testenv.RequireBinary(t, "nix")
	log := slog.New(slog.DiscardHandler)
	on := append(os.Environ(), "NIX_CONFIG=experimental-features = nix-command flakes")
	if err := builder.CheckNix(context.Background(), nix, on, log); err != nil {
		t.Errorf("with nix-command and flakes: %v", err)
	}
	off := append(os.Environ(), "NIX_CONFIG=experimental-features = nix-command")
	if err := builder.CheckNix(context.Background(), nix, off, log); err == nil || !strings.Contains(err.Error(), "flakes") {
		t.Errorf("without flakes: %v, want an error naming flakes", err)
	}
}
