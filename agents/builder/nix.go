package builder

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/execx"
)

// enableFeatures is how to fix a nix without the features the builder uses.
const enableFeatures = "enable them with `experimental-features = nix-command flakes` in /etc/nix/nix.conf, " +
	"or with NIX_CONFIG=\"extra-experimental-features = nix-command flakes\" in the builder's environment " +
	"(the NixOS module sets that)"

// CheckNix makes sure nix (a path, or a name looked up on PATH; default
// "nix") can build flakes with env as its environment (nil: the builder's
// own), so a builder that could only ever fail its builds refuses to start
// and says what to fix. `nix show-config` is itself a nix-command command,
// so a disabled nix-command shows as its error; its text output (not
// --json, whose experimental-features are enum numbers in Nix 2.8) lists
// the enabled features. When the check itself cannot tell, it logs why and
// lets the builder start.
func CheckNix(ctx context.Context, nix string, env []string, log *slog.Logger) error {
	if nix == "" {
		nix = "nix"
	}
	path, err := exec.LookPath(nix)
	if err != nil {
		return fmt.Errorf("the builder runs nix, and %s was not found: install Nix (on Debian: apt install nix-bin) or put it on the builder's PATH", nix)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res, err := execx.Run(ctx, execx.Cmd{Path: path, Args: []string{"show-config"}, Env: env, KeepStdout: true, TailLines: 5})
	if err != nil {
		if strings.Contains(res.Tail, "'nix-command' is disabled") {
			return fmt.Errorf("%s has the experimental features nix-command and flakes disabled, and the builder needs both: %s", path, enableFeatures)
		}
		log.Warn("could not check nix's experimental features; starting anyway", "nix", path, "err", err, "output", res.Tail)
		return nil
	}
	enabled, ok := experimentalFeatures(string(res.Stdout))
	if !ok {
		log.Warn("nix show-config does not list experimental-features; starting anyway", "nix", path)
		return nil
	}
	var missing []string
	for _, f := range []string{"nix-command", "flakes"} {
		if !enabled[f] {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s lacks the experimental feature(s) %s, which the builder needs: %s", path, strings.Join(missing, " and "), enableFeatures)
	}
	return nil
}

// experimentalFeatures reads the experimental-features line of
// `nix show-config`.
func experimentalFeatures(config string) (map[string]bool, bool) {
	for _, line := range strings.Split(config, "\n") {
		name, value, found := strings.Cut(line, "=")
		if !found || strings.TrimSpace(name) != "experimental-features" {
			continue
		}
		enabled := map[string]bool{}
		for _, f := range strings.Fields(value) {
			enabled[f] = true
		}
		return enabled, true
	}
	return nil, false
}
