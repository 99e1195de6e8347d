package nixos

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
)

// nixConfig lets Debian's Nix 2.8 evaluate here, as any user and offline.
const nixConfig = "experimental-features = nix-command flakes\n" +
	"sandbox = false\n" +
	"build-users-group =\n" +
	"substituters ="

// needTool returns the path of an outside tool, skipping the test when it is
// missing, or failing it under CI (CI installs it; a missing tool there is a
// broken setup, not a reason to pass).
func needTool(t *testing.T, name string) string {
	t.Helper()
	return testenv.RequireBinary(t, name)
}

// repoRoot is the repository root (tests run in nixos/).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root %s has no go.mod: %v", root, err)
	}
	return root
}

// nixEnv is the environment for nix commands: our NIX_CONFIG, and a private
// HOME, cache and state directory so nothing depends on the user.
func nixEnv(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "NIX_CONFIG", "NIX_PATH", "HOME", "XDG_CACHE_HOME", "NIX_STATE_DIR":
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"NIX_CONFIG="+nixConfig,
		"HOME="+dir,
		"XDG_CACHE_HOME="+filepath.Join(dir, "cache"),
		"NIX_STATE_DIR="+filepath.Join(dir, "state"),
	)
}

// run runs a command and returns its stdout; stderr goes into the error.
func run(t *testing.T, dir string, env []string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// nixEvalJSON evaluates with `nix-instantiate --eval --strict --json` in
// nixos/ and decodes the result into out.
func nixEvalJSON(t *testing.T, out any, args ...string) {
	t.Helper()
	if err := tryNixEvalJSON(t, out, args...); err != nil {
		t.Fatal(err)
	}
}

func tryNixEvalJSON(t *testing.T, out any, args ...string) error {
	t.Helper()
	bin := needTool(t, "nix-instantiate")
	stdout, err := run(t, ".", nixEnv(t), bin, append([]string{"--eval", "--strict", "--json"}, args...)...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(stdout), out); err != nil {
		return fmt.Errorf("decode %q: %w", stdout, err)
	}
	return nil
}

// nixFiles lists every .nix file of the repository, skipping .git and any
// vendor directory.
func nixFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "vendor" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".nix") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestNixFilesParse(t *testing.T) {
	t.Parallel()
	bin := needTool(t, "nix-instantiate")
	root := repoRoot(t)
	files := nixFiles(t, root)
	// The files this package is responsible for must be among them.
	for _, want := range []string{"flake.nix", "nixos/module.nix", "nixos/listener.nix", "nixos/builder.nix",
		"nixos/options.nix", "nixos/defaults.nix", "nixos/helpers.nix", "nixos/tests/vm-test.nix"} {
		found := false
		for _, f := range files {
			if f == filepath.Join(root, want) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s not found among the repository's .nix files", want)
		}
	}
	env := nixEnv(t)
	for _, f := range files {
		rel, _ := filepath.Rel(root, f)
		if _, err := run(t, root, env, bin, "--parse", f); err != nil {
			t.Errorf("%s does not parse: %v", rel, err)
		}
	}
}

var vendorHashRE = regexp.MustCompile(`(?m)^\s*vendorHash = (?:"(sha256-[A-Za-z0-9+/=]+)"|(null));`)

// TestVendorHash recomputes what nixpkgs' buildGoModule will hash: the
// vendor/ directory that `go mod vendor` writes (including modules.txt),
// hashed as a NAR with SHA-256. A stale value in flake.nix fails here rather
// than in the first `nix build` after a dependency change.
func TestVendorHash(t *testing.T) {
	t.Parallel()
	goBin := needTool(t, "go")
	nixBin := needTool(t, "nix")
	root := repoRoot(t)

	flake, err := os.ReadFile(filepath.Join(root, "flake.nix"))
	if err != nil {
		t.Fatal(err)
	}
	m := vendorHashRE.FindAllSubmatch(flake, -1)
	if len(m) != 1 {
		t.Fatalf("flake.nix must have exactly one `vendorHash = \"sha256-...\";` line, found %d", len(m))
	}
	inFlake := string(m[0][1]) + string(m[0][2])

	vendor := filepath.Join(t.TempDir(), "vendor")
	goEnv := append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off", "GOTOOLCHAIN=local")
	if _, err := run(t, root, goEnv, goBin, "mod", "vendor", "-o", vendor); err != nil {
		t.Fatalf("go mod vendor: %v", err)
	}
	if _, err := os.Stat(filepath.Join(vendor, "modules.txt")); err != nil {
		t.Fatalf("go mod vendor wrote no modules.txt (no dependencies? then flake.nix needs vendorHash = null): %v", err)
	}
	out, err := run(t, root, nixEnv(t), nixBin, "hash", "path", vendor)
	if err != nil {
		t.Fatalf("nix hash path: %v", err)
	}
	computed := strings.TrimSpace(out)
	if !strings.HasPrefix(computed, "sha256-") {
		t.Fatalf("nix hash path printed %q, want an SRI sha256 hash", computed)
	}

	// The update script must agree with this computation.
	// (Run with the user's environment: it needs Go's module cache under HOME.)
	script, err := run(t, root, os.Environ(), filepath.Join(root, "scripts", "update-vendor-hash"), "--print")
	if err != nil {
		t.Errorf("scripts/update-vendor-hash --print: %v", err)
	} else if got := strings.TrimSpace(script); got != computed {
		t.Errorf("scripts/update-vendor-hash --print = %s, but go mod vendor + nix hash path = %s", got, computed)
	}

	if inFlake != computed {
		t.Errorf("flake.nix has vendorHash = %q, but the Go dependencies hash to %q.\n"+
			"The dependencies changed (go.mod, go.sum or the imported packages). Update it with\n"+
			"    scripts/update-vendor-hash\n"+
			"(or set vendorHash = \"%s\"; in flake.nix) and commit flake.nix.", inFlake, computed, computed)
	}
}
