package buildtest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// Stand-in NixOS systems for previews (deploy --diff): plain derivations
// shaped like a system (sw, kernel and initrd links), one of them realised
// in the store as the "running" system of a fake root.

// Versions in the stand-in systems: the running system has HelloOld and
// KernelOld; the flake's new one HelloNew and, when asked, KernelNew.
const (
	HelloOld  = "2.10"
	HelloNew  = "2.12"
	KernelOld = "6.1"
	KernelNew = "6.6"
)

// Systems is a flake whose nixosConfigurations.<Host> is the new system,
// and a fake root whose run/current-system and run/booted-system point to
// the running one, built from the same flake.
type Systems struct {
	// URL is the flake's git+file:// URL; Host its one host.
	URL, Host string
	// Root holds run/current-system and run/booted-system.
	Root string
	// Current is the running system's store path.
	Current string
	// Env is the environment to run Nix with (NIX_CONFIG set).
	Env []string
}

// NewSystems makes the flake and the fake root. The new system differs from
// the running one in the version of its package "hello" and, when
// newKernel, in its kernel (and so the kernel and initrd links).
func NewSystems(t testing.TB, host string, newKernel bool) *Systems {
	t.Helper()
	nix := RequireNix(t)
	dir := t.TempDir()
	s := &Systems{URL: "git+file://" + dir, Host: host, Root: t.TempDir(), Env: append(os.Environ(), "NIX_CONFIG="+NixConfig)}
	kernel := KernelOld
	if newKernel {
		kernel = KernelNew
	}
	nonce := protocol.NewID() + strconv.FormatInt(time.Now().UnixNano(), 36)
	flake := fmt.Sprintf(`{
  description = "homelab-deploy preview test fixture";
  outputs = { self }: let
    mk = name: script: derivation { inherit name; system = %q; builder = "/bin/sh"; args = [ "-c" script ]; nonce = %q; };
    hello = v: mk "hello-${v}" "echo hello ${v} > $out";
    kernel = v: mk "linux-${v}" "/bin/mkdir $out; echo kernel ${v} > $out/bzImage; echo initrd ${v} > $out/initrd";
    system = h: k: { config.system.build.toplevel = mk "nixos-system-%s" ''
      /bin/mkdir $out
      /bin/ln -s ${h} $out/sw
      /bin/ln -s ${k}/bzImage $out/kernel
      /bin/ln -s ${k}/initrd $out/initrd
    ''; };
  in {
    nixosConfigurations.%s = system (hello %q) (kernel %q);
    running.%s = system (hello %q) (kernel %q);
  };
}
`, System(), nonce, host, host, HelloNew, kernel, host, HelloOld, KernelOld)
	if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(flake), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &Fixture{Dir: dir}
	f.git(t, "init", "-q", "-b", DefaultBranch)
	f.git(t, "add", "flake.nix")
	f.git(t, "commit", "-q", "-m", "a host")

	cmd := exec.Command(nix, "build", "--no-link", "--json", s.URL+"?ref="+DefaultBranch+"#running."+host+".config.system.build.toplevel")
	cmd.Env = s.Env
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("build the running system: %v\n%s", err, stderr)
	}
	var built []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal(out, &built); err != nil || len(built) != 1 || !strings.HasPrefix(built[0].Outputs["out"], "/") {
		t.Fatalf("nix build --json said %q", out)
	}
	s.Current = built[0].Outputs["out"]
	if err := os.MkdirAll(filepath.Join(s.Root, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, link := range []string{"run/current-system", "run/booted-system"} {
		if err := os.Symlink(s.Current, filepath.Join(s.Root, link)); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// RunningSystem returns where run/current-system points now.
func (s *Systems) RunningSystem(t testing.TB) string {
	t.Helper()
	p, err := os.Readlink(filepath.Join(s.Root, "run/current-system"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}
