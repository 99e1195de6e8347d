package fleet

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// fakeSystem builds a NixOS-like root in a temporary directory: two
// systems (each with kernel, initrd and kernel-modules links into a fake
// store), run/current-system and run/booted-system pointing at them, the
// system profile at generation gen, and proc/uptime.
type fakeSystem struct {
	Root  string
	store string
}

func newFakeSystem(t testing.TB) *fakeSystem {
	t.Helper()
	root := t.TempDir()
	f := &fakeSystem{Root: root, store: filepath.Join(root, "nix", "store")}
	for _, d := range []string{f.store, filepath.Join(root, "run"), filepath.Join(root, "nix", "var", "nix", "profiles"), filepath.Join(root, "proc")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f.uptime(t, "1234.56 4000.00\n")
	return f
}

// system makes a system store path whose boot files come from the named
// kernel, initrd and modules packages.
func (f *fakeSystem) system(t testing.TB, name, kernel, initrd, modules string) string {
	t.Helper()
	sys := filepath.Join(f.store, name)
	if err := os.MkdirAll(sys, 0o755); err != nil {
		t.Fatal(err)
	}
	for link, pkg := range map[string]string{"kernel": kernel, "initrd": initrd, "kernel-modules": modules} {
		target := filepath.Join(f.store, pkg)
		if err := os.MkdirAll(target, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(sys, link)); err != nil {
			t.Fatal(err)
		}
	}
	return sys
}

// point makes run/<which> (current-system, booted-system) point at sys.
func (f *fakeSystem) point(t testing.TB, which, sys string) {
	t.Helper()
	link := filepath.Join(f.Root, "run", which)
	_ = os.Remove(link)
	if err := os.Symlink(sys, link); err != nil {
		t.Fatal(err)
	}
}

func (f *fakeSystem) generation(t testing.TB, n string) {
	t.Helper()
	link := filepath.Join(f.Root, "nix", "var", "nix", "profiles", "system")
	_ = os.Remove(link)
	if err := os.Symlink("system-"+n+"-link", link); err != nil {
		t.Fatal(err)
	}
}

func (f *fakeSystem) uptime(t testing.TB, s string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.Root, "proc", "uptime"), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// jsServer starts an embedded server with JetStream and the credentials
// nats-config generates: listeners web1 (test, role web), web2 (test),
// db1 (prod, role db), the test deployer and the admin deployer.
func jsServer(t testing.TB, jetstream bool) *testenv.NATS {
	t.Helper()
	if jetstream {
		return testenv.StartNATSWith(t, testenv.JetStream(t), fleetUsers()...)
	}
	return testenv.StartNATS(t, fleetUsers()...)
}

func fleetUsers() []testenv.User {
	test := protocol.TestDeployerPermissions()
	admin := protocol.AdminDeployerPermissions()
	return []testenv.User{
		{Name: "listener-web1", Permissions: testenv.ListenerPerms("test", "web1", "web")},
		{Name: "listener-web2", Permissions: testenv.ListenerPerms("test", "web2", "")},
		{Name: "listener-db1", Permissions: testenv.ListenerPerms("prod", "db1", "db")},
		{Name: "test-deployer", Permissions: &test},
		{Name: "admin-deployer", Permissions: &admin},
		{Name: "all"},
	}
}

// startWriter starts the entry of a listener and stops it (cleanly) when
// the test ends, unless the test stopped it.
func startWriter(t testing.TB, n *testenv.NATS, host, tier, role string, sys SystemPaths, interval time.Duration) *Writer {
	t.Helper()
	conn := n.Connect(t, "listener-"+host)
	subs, _ := protocol.ExpandSubjects(protocol.DefaultDeploySubjects(), protocol.TemplateVars{Hostname: host, Tier: tier, Role: role})
	w, err := NewWriter(WriterConfig{Conn: conn, Hostname: host, Tier: tier, Role: role, Subjects: subs, Version: "test", Interval: interval, System: sys})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// writeOnce writes the entry once, synchronously.
func writeOnce(t testing.TB, w *Writer) {
	t.Helper()
	if err := w.write(context.Background(), false); err != nil {
		t.Fatalf("write entry of %s: %v", w.cfg.Hostname, err)
	}
}
