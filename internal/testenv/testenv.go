// Package testenv holds test fixtures shared by the packages' tests: an
// embedded NATS server with NKey users holding the permissions of SPEC's
// table, seed files, and a recording stand-in for nixos-rebuild.
package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/homelab-deploy/homelab-deploy/internal/natsauth"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// Cred is one generated NKey user.
type Cred struct {
	Name        string
	Public      string
	SeedFile    string
	Permissions protocol.Permissions
}

// NATS is an embedded server with NKey users.
type NATS struct {
	Server *server.Server
	URL    string
	Dir    string
	mu     sync.Mutex
	creds  map[string]Cred
}

// User names a credential and its permissions; nil Permissions mean "allow all".
type User struct {
	Name        string
	Permissions *protocol.Permissions
}

// NewCred generates an NKey user and writes its seed with mode 0600 in dir.
func NewCred(t testing.TB, dir, name string, perms protocol.Permissions) Cred {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	path := filepath.Join(dir, name+".nkey")
	if err := os.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return Cred{Name: name, Public: pub, SeedFile: path, Permissions: perms}
}

// StartNATS starts an embedded server on a random loopback port with the
// given users; it is shut down when the test ends.
func StartNATS(t testing.TB, users ...User) *NATS {
	t.Helper()
	return StartNATSWith(t, nil, users...)
}

// JetStream is a StartNATSWith option: JetStream on, stored in a
// temporary directory.
func JetStream(t testing.TB) func(*server.Options) {
	dir := t.TempDir()
	return func(o *server.Options) { o.JetStream, o.StoreDir = true, dir }
}

// StartNATSWith is StartNATS with configure applied to the server's
// options (nil for none) before it starts.
func StartNATSWith(t testing.TB, configure func(*server.Options), users ...User) *NATS {
	t.Helper()
	n := &NATS{Dir: t.TempDir(), creds: map[string]Cred{}}
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, MaxPayload: 1 << 20}
	for _, u := range users {
		var c Cred
		if u.Permissions == nil {
			c = NewCred(t, n.Dir, u.Name, protocol.Permissions{Publish: []string{">"}, Subscribe: []string{">"}})
		} else {
			c = NewCred(t, n.Dir, u.Name, *u.Permissions)
		}
		n.creds[u.Name] = c
		opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: c.Public, Permissions: serverPerms(c.Permissions)})
	}
	if configure != nil {
		configure(opts)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("embedded NATS server did not start")
	}
	t.Cleanup(s.Shutdown)
	n.Server = s
	n.URL = s.ClientURL()
	return n
}

func serverPerms(p protocol.Permissions) *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: p.Publish},
		Subscribe: &server.SubjectPermission{Allow: p.Subscribe},
	}
}

// Cred returns the named credential.
func (n *NATS) Cred(name string) Cred {
	n.mu.Lock()
	defer n.mu.Unlock()
	c, ok := n.creds[name]
	if !ok {
		panic("testenv: no credential " + name)
	}
	return c
}

// Connect opens a connection with the named credential.
func (n *NATS) Connect(t testing.TB, name string) *protocol.Conn {
	t.Helper()
	c, err := protocol.Connect(context.Background(), protocol.ConnectOptions{
		URLs: n.URL, NKeyFile: n.Cred(name).SeedFile, Name: name,
	})
	if err != nil {
		t.Fatalf("connect as %s: %v", name, err)
	}
	t.Cleanup(c.Close)
	return c
}

// ListenerPerms returns SPEC's listener permissions for a host.
func ListenerPerms(tier, hostname, role string) *protocol.Permissions {
	subs, err := protocol.ExpandSubjects(protocol.DefaultDeploySubjects(), protocol.TemplateVars{Hostname: hostname, Tier: tier, Role: role})
	if err != nil {
		panic(err)
	}
	p := protocol.ListenerPermissions(hostname, subs, "")
	f := protocol.FleetListenerPermissions(tier, hostname)
	p.Publish = append(p.Publish, f.Publish...)
	p.Subscribe = append(p.Subscribe, f.Subscribe...)
	return &p
}

// Ptr returns a pointer to p.
func Ptr(p protocol.Permissions) *protocol.Permissions { return &p }

// AuthUsers turns credentials into natsauth users.
func AuthUsers(creds ...Cred) []natsauth.User {
	var out []natsauth.User
	for _, c := range creds {
		out = append(out, natsauth.User{Comment: c.Name, Nkey: c.Public, Permissions: c.Permissions})
	}
	return out
}

// StandIn writes an executable script named name into a fresh directory and
// returns that directory, to be put first on PATH. The script records its
// argv (one line per call, arguments separated by spaces) in calls.log next
// to it, then runs body.
func StandIn(t testing.TB, name, body string) (dir string) {
	t.Helper()
	dir = t.TempDir()
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %q\n%s\n", filepath.Join(dir, "calls.log"), body)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Calls returns the recorded invocations of a stand-in in dir.
func Calls(dir string) []string {
	b, err := os.ReadFile(filepath.Join(dir, "calls.log"))
	if err != nil {
		return nil
	}
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// Eventually polls cond until it is true or the deadline passes.
func Eventually(t testing.TB, d time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf(format, args...)
}

// debianPackage names the Debian package that ships a program, for the
// messages of RequireBinary.
var debianPackage = map[string]string{
	"nats-server":     "nats-server",
	"nix":             "nix-bin",
	"nix-instantiate": "nix-bin",
	"promtool":        "prometheus",
	"git":             "git",
	"sshd":            "openssh-server",
}

// RequireBinary skips the test when name is not on PATH, except under CI,
// where a missing binary fails the test.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := lookPath(name)
	if err != nil {
		pkg := debianPackage[name]
		if pkg == "" {
			pkg = name
		}
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed: CI must install it (Debian package %s, see .ci/run)", name, pkg)
		}
		t.Skipf("%s is not installed; skipping (install Debian's %s; CI installs it)", name, pkg)
	}
	return p
}
