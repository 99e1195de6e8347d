// Package buildtest makes real flakes in real git repositories for the
// builder's tests: hosts whose system.build.toplevel are plain derivations
// (no nixpkgs), so real `nix eval` and `nix build` run offline in seconds.
package buildtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// NixConfig is what the tests run Nix with: flakes on, no sandbox or build
// users (no daemon, the local store), and no binary cache (offline).
const NixConfig = "experimental-features = nix-command flakes\nsandbox = false\nbuild-users-group =\nsubstituters ="

// The fixture's hosts.
const (
	HostGood  = "good"  // builds after about a second
	HostBad   = "bad"   // its builder exits 1 with BadMessage
	HostSlow  = "slow"  // sleeps far past any test timeout
	HostExtra = "extra" // only on Branch
	// Branch is the fixture's second branch; it adds HostExtra.
	Branch = "feature-x"
	// DefaultBranch is the fixture's default branch.
	DefaultBranch = "main"
	// BadMessage is what the bad host's builder prints before failing.
	BadMessage = "error: the frobnicator of host bad is misaligned"
)

// Fixture is one git repository holding a flake, and a nix that logs its
// calls.
type Fixture struct {
	// Dir is the git work tree; URL is its git+file:// flake URL.
	Dir, URL string
	// Nix is a wrapper script that logs each call, then runs the real nix.
	Nix string
	// Env is the environment to run Nix with (NIX_CONFIG set).
	Env []string
	// PIDFile is where the slow host's builder writes its PID.
	PIDFile string
	nixDir  string
}

// RequireNix skips the test when real Nix builds cannot run here (no nix,
// no git, or neither root for the local store nor a daemon), except under
// CI, where that is a failure.
func RequireNix(t testing.TB) string {
	t.Helper()
	nix := testenv.RequireBinary(t, "nix")
	testenv.RequireBinary(t, "git")
	if os.Geteuid() != 0 {
		if _, err := os.Stat("/nix/var/nix/daemon-socket/socket"); err != nil {
			msg := "nix builds need root (the local store) or a running nix-daemon; run the tests as root or start nix-daemon"
			if os.Getenv("CI") != "" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	return nix
}

// System is the Nix system string of this machine. Flakes evaluate purely,
// so builtins.currentSystem is not available inside them.
func System() string {
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "riscv64": "riscv64"}[runtime.GOARCH]
	if arch == "" {
		arch = runtime.GOARCH
	}
	return arch + "-" + runtime.GOOS
}

// New makes the fixture: a repository with HostGood, HostBad and HostSlow
// on DefaultBranch, and Branch adding HostExtra. Every derivation carries a
// nonce unique to this fixture, so nothing is a cached no-op.
func New(t testing.TB) *Fixture {
	t.Helper()
	realNix := RequireNix(t)
	dir := t.TempDir()
	f := &Fixture{Dir: dir, URL: "git+file://" + dir, PIDFile: filepath.Join(t.TempDir(), "slow.pid")}
	f.nixDir = testenv.StandIn(t, "nix", fmt.Sprintf("exec %q \"$@\"", realNix))
	f.Nix = filepath.Join(f.nixDir, "nix")
	f.Env = append(os.Environ(), "NIX_CONFIG="+NixConfig)

	nonce := protocol.NewID() + strconv.FormatInt(time.Now().UnixNano(), 36)
	hosts := map[string]string{
		HostGood: `/bin/sleep 1; echo built > $out`,
		HostBad:  fmt.Sprintf(`echo %q >&2; exit 1`, BadMessage),
		HostSlow: fmt.Sprintf(`echo $$ > %s; exec /bin/sleep 600`, f.PIDFile),
	}
	f.git(t, "init", "-q", "-b", DefaultBranch)
	f.writeFlake(t, nonce, hosts)
	f.git(t, "add", "flake.nix")
	f.git(t, "commit", "-q", "-m", "three hosts")
	f.git(t, "checkout", "-q", "-b", Branch)
	hosts[HostExtra] = `echo extra > $out`
	f.writeFlake(t, nonce, hosts)
	f.git(t, "commit", "-q", "-am", "add a host")
	f.git(t, "checkout", "-q", DefaultBranch)
	return f
}

func (f *Fixture) writeFlake(t testing.TB, nonce string, hosts map[string]string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("{\n  description = \"homelab-deploy builder test fixture\";\n  outputs = { self }: let\n")
	fmt.Fprintf(&b, "    host = name: script: { config.system.build.toplevel = derivation {\n")
	fmt.Fprintf(&b, "      inherit name; system = %q; builder = \"/bin/sh\"; args = [ \"-c\" script ]; nonce = %q;\n    }; };\n", System(), nonce)
	b.WriteString("  in {\n    nixosConfigurations = {\n")
	for _, name := range []string{HostBad, HostExtra, HostGood, HostSlow} {
		if script, ok := hosts[name]; ok {
			fmt.Fprintf(&b, "      %s = host %q %s;\n", name, name, nixString(script))
		}
	}
	b.WriteString("    };\n  };\n}\n")
	if err := os.WriteFile(filepath.Join(f.Dir, "flake.nix"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// nixString quotes s as a Nix ” string, in which nothing but ${ and ”
// is special.
func nixString(s string) string {
	s = strings.ReplaceAll(s, "''", "'''")
	s = strings.ReplaceAll(s, "${", "''${")
	return "''" + s + "''"
}

func (f *Fixture) git(t testing.TB, args ...string) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = f.Dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=test", "GIT_AUTHOR_EMAIL=test@example.com",
		"GIT_COMMITTER_NAME=test", "GIT_COMMITTER_EMAIL=test@example.com", "GIT_CONFIG_GLOBAL=/dev/null")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// NixCalls returns the recorded nix invocations that do work (eval,
// build), leaving out the builder daemon's start-up `show-config` check.
func (f *Fixture) NixCalls() []string {
	var work []string
	for _, c := range testenv.Calls(f.nixDir) {
		if !strings.HasPrefix(c, "show-config") {
			work = append(work, c)
		}
	}
	return work
}

// SlowPID returns the PID the slow host's builder wrote, or 0.
func (f *Fixture) SlowPID() int {
	b, err := os.ReadFile(f.PIDFile)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// Alive reports whether pid runs a sleep (the slow builder).
func Alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// A zombie is dead already; it only waits for its parent.
		if i := strings.LastIndexByte(string(st), ')'); i >= 0 && strings.HasPrefix(string(st)[i+1:], " Z") {
			return false
		}
	}
	return strings.Contains(string(b), "sleep")
}

// ConfigYAML is a builder config naming the fixture as repo name (plus a
// second repository that need not exist).
func (f *Fixture) ConfigYAML(name string) string {
	return fmt.Sprintf("repos:\n  %s:\n    url: %q\n    default_branch: %q\n  other:\n    url: \"git+file:///nonexistent/other\"\n    default_branch: \"master\"\n", name, f.URL, DefaultBranch)
}

// WriteConfig writes ConfigYAML into a file and returns its path.
func (f *Fixture) WriteConfig(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "builder.yaml")
	if err := os.WriteFile(p, []byte(f.ConfigYAML(name)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
