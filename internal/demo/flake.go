package demo

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/homelab-deploy/homelab-deploy/examples"
)

// NixConfig is the NIX_CONFIG the demo's builder runs nix with when the user
// has not set one: flakes on, and nothing that needs a daemon, build users or
// the network (the demo flake has no inputs and builds with /bin/sh).
const NixConfig = "experimental-features = nix-command flakes\nsandbox = false\nbuild-users-group =\nsubstituters ="

// NixEnv returns the environment for the builder's nix: the process's own,
// with NIX_CONFIG set to NixConfig unless the user set NIX_CONFIG.
func NixEnv(getenv func(string) string) []string {
	env := os.Environ()
	if getenv("NIX_CONFIG") != "" {
		return env
	}
	return append(withoutVar(env, "NIX_CONFIG"), "NIX_CONFIG="+NixConfig)
}

// nixSystem is Nix's name for this machine's platform. Flakes evaluate
// purely and cannot ask, so the demo writes it into the flake.
func nixSystem() string {
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "riscv64": "riscv64"}[runtime.GOARCH]
	if arch == "" {
		arch = runtime.GOARCH
	}
	return arch + "-" + runtime.GOOS
}

// prepareFlakeRepo copies the example flake into dir, records the system in
// system.nix and commits both on branch master, so the builder can fetch it
// as git+file://dir. It returns dir.
func prepareFlakeRepo(ctx context.Context, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	err := fs.WalkDir(examples.DemoFlake, examples.DemoFlakeDir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		data, err := examples.DemoFlake.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(examples.DemoFlakeDir, path)
		dst := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "system.nix"), []byte(fmt.Sprintf("%q\n", nixSystem())), 0o644); err != nil {
		return "", err
	}
	git := func(args ...string) error {
		// A fixed identity and no user or system git config: the demo must
		// not depend on (or be broken by) the machine's git settings.
		full := append([]string{"-c", "user.name=homelab-deploy demo", "-c", "user.email=demo@homelab-deploy.invalid", "-c", "commit.gpgsign=false"}, args...)
		cmd := exec.CommandContext(ctx, "git", full...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
		}
		return nil
	}
	for _, args := range [][]string{
		{"init", "-q"},
		{"checkout", "-q", "-b", "master"},
		{"add", "."},
		{"commit", "-q", "-m", "homelab-deploy demo flake"},
	} {
		if err := git(args...); err != nil {
			return "", err
		}
	}
	return dir, nil
}
