package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/natsauth"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

const permFleet = `hosts:
  testhost1: {tier: test}
  dns1: {tier: prod, role: dns}
builder: {repos: [nixos-servers]}
deployers: {test: true, admin: true, build_client: true, mcp: true}
`

// natsConfig runs `nats-config --generate-keys` on permFleet and returns the
// keys directory and the printed block.
func natsConfig(t *testing.T, extra ...string) (dir, out string) {
	t.Helper()
	dir = t.TempDir()
	fleet := filepath.Join(dir, "fleet.yaml")
	os.WriteFile(fleet, []byte(permFleet), 0o644)
	keys := filepath.Join(dir, "keys")
	code, out, errOut := invoke(t, "", append([]string{"nats-config", "--fleet", fleet, "--keys-dir", keys, "--generate-keys"}, extra...)...)
	if code != 0 {
		t.Fatalf("nats-config exit %d: %s", code, errOut)
	}
	return keys, out
}

func TestNATSConfigUsage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fleet := filepath.Join(dir, "fleet.yaml")
	os.WriteFile(fleet, []byte(permFleet), 0o644)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("hosts:\n  dns1: {tier: prod, rol: dns}\n"), 0o644)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no fleet", []string{"nats-config"}, 2, "--fleet is required"},
		{"missing file", []string{"nats-config", "--fleet", filepath.Join(dir, "nope.yaml")}, 2, "no such file"},
		{"unknown field", []string{"nats-config", "--fleet", bad}, 2, `line 2: unknown field "rol"`},
		{"no keys", []string{"nats-config", "--fleet", fleet}, 1, "no public key for listener-dns1"},
		{"generate without dir", []string{"nats-config", "--fleet", fleet, "--generate-keys"}, 2, "--generate-keys needs --keys-dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := invoke(t, "", tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.want) || out != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and %q", code, out, errOut, tt.code, tt.want)
			}
		})
	}
}

func TestNATSConfigGeneratesKeysOnceAndRendersThem(t *testing.T) {
	t.Parallel()
	keys, out := natsConfig(t)
	for _, name := range []string{"listener-testhost1", "listener-dns1", "builder", "test-deployer", "admin-deployer", "build-client", "mcp"} {
		fi, err := os.Stat(natsauth.SeedPath(keys, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("seed of %s: %v, mode %v; want a 0600 file", name, err, fi)
		}
		pub, err := natsauth.ReadPublicKeyFile(natsauth.PublicPath(keys, name))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, `nkey: "`+pub+`"`) {
			t.Errorf("the block lacks %s's key %s", name, pub)
		}
		if seedPub, _ := natsauth.PublicFromSeedFile(natsauth.SeedPath(keys, name)); seedPub != pub {
			t.Errorf("%s: .pub %s does not match the seed's %s", name, pub, seedPub)
		}
	}
	// A second run with the same directory keeps the keys: same output.
	code, again, errOut := invoke(t, "", "nats-config", "--fleet", filepath.Join(filepath.Dir(keys), "fleet.yaml"), "--keys-dir", keys, "--generate-keys")
	if code != 0 || again != out || strings.Contains(errOut, "generated") {
		t.Errorf("second run: exit %d, same output %v, stderr %q", code, again == out, errOut)
	}

	// --json carries the same users for services.nats.settings.
	code, js, _ := invoke(t, "", "nats-config", "--fleet", filepath.Join(filepath.Dir(keys), "fleet.yaml"), "--keys-dir", keys, "--json")
	var doc struct {
		Authorization struct {
			Users []struct {
				Nkey        string               `json:"nkey"`
				Permissions protocol.Permissions `json:"permissions"`
			} `json:"users"`
		} `json:"authorization"`
	}
	if err := json.Unmarshal([]byte(js), &doc); code != 0 || err != nil {
		t.Fatalf("--json: exit %d, %v:\n%s", code, err, js)
	}
	if n := len(doc.Authorization.Users); n != 7 {
		t.Fatalf("--json has %d users, want 7", n)
	}
	adminPub, _ := natsauth.ReadPublicKeyFile(natsauth.PublicPath(keys, "admin-deployer"))
	found := false
	for _, u := range doc.Authorization.Users {
		if u.Nkey == adminPub {
			found = true
			if want := protocol.AdminDeployerPermissions(); !slices.Equal(u.Permissions.Publish, want.Publish) || !slices.Equal(u.Permissions.Subscribe, want.Subscribe) || want.Publish[0] != "deploy.>" {
				t.Errorf("admin in --json: %+v", u.Permissions)
			}
		}
	}
	if !found {
		t.Errorf("--json lacks the admin deployer")
	}
}

// TestAuthorizationBlockInNATSServer loads the printed block into Debian's
// nats-server and checks with real connections that every credential can do
// what SPEC's table allows and nothing more.
func TestAuthorizationBlockInNATSServer(t *testing.T) {
	bin := testenv.RequireBinary(t, "nats-server")
	t.Parallel()
	keys, block := natsConfig(t)
	url := startNATSServer(t, bin, block)

	conns := map[string]*protocol.Conn{}
	for _, name := range []string{"listener-testhost1", "listener-dns1", "builder", "test-deployer", "admin-deployer", "build-client", "mcp"} {
		c, err := protocol.Connect(context.Background(), protocol.ConnectOptions{URLs: url, NKeyFile: natsauth.SeedPath(keys, name), Name: name})
		if err != nil {
			t.Fatalf("connect as %s: %v", name, err)
		}
		t.Cleanup(c.Close)
		conns[name] = c
	}
	// Who can observe (subscribe to) a subject, and who can send on it, so
	// that an allowed operation is proven by a delivered message.
	observer := func(subject string) string {
		switch {
		case strings.HasPrefix(subject, "deploy."):
			return "admin-deployer"
		case strings.HasPrefix(subject, "build.responses."):
			return "build-client"
		}
		return "builder"
	}
	sender := func(subject string) string {
		switch {
		case strings.HasPrefix(subject, "deploy."):
			return "admin-deployer"
		case strings.HasPrefix(subject, "build.responses."):
			return "builder"
		}
		return "build-client"
	}

	type check struct {
		cred, op, subject string
		allowed           bool
	}
	checks := []check{
		// Listener: replies and discovery out; its own subjects and discovery in.
		{"listener-testhost1", "pub", "deploy.responses.r1.testhost1", true},
		{"listener-testhost1", "pub", "deploy.responses.r1", false},
		{"listener-testhost1", "pub", "deploy.responses.r1.dns1", false},
		{"listener-testhost1", "pub", "deploy.discover", true},
		{"listener-testhost1", "pub", "deploy.test.all", false},
		{"listener-testhost1", "pub", "deploy.prod.dns1", false},
		{"listener-testhost1", "pub", "build.nixos-servers.all", false},
		{"listener-testhost1", "pub", "build.responses.r1", false},
		{"listener-testhost1", "sub", "deploy.test.testhost1", true},
		{"listener-testhost1", "sub", "deploy.test.all", true},
		{"listener-testhost1", "sub", "deploy.discover", true},
		{"listener-testhost1", "sub", "deploy.prod.all", false},
		{"listener-testhost1", "sub", "deploy.test.otherhost", false},
		{"listener-testhost1", "sub", "deploy.responses.r1", false},
		{"listener-dns1", "sub", "deploy.prod.role.dns", true},
		{"listener-dns1", "sub", "deploy.prod.dns1", true},
		{"listener-dns1", "sub", "deploy.prod.role.web", false},
		{"listener-dns1", "pub", "deploy.prod.all", false},
		// Builder: build replies out; its repos' build subjects in.
		{"builder", "pub", "build.responses.r2.builder", true},
		{"builder", "pub", "build.responses.r2", false},
		{"builder", "pub", "deploy.responses.r2", false},
		{"builder", "pub", "build.nixos-servers.all", false},
		{"builder", "sub", "build.nixos-servers.all", true},
		{"builder", "sub", "build.other.all", false},
		{"builder", "sub", "deploy.test.all", false},
		// Test deployer: the test tier and discovery only.
		{"test-deployer", "pub", "deploy.test.testhost1", true},
		{"test-deployer", "pub", "deploy.test.all", true},
		{"test-deployer", "pub", "deploy.discover", true},
		{"test-deployer", "pub", "deploy.prod.dns1", false},
		{"test-deployer", "pub", "deploy.prod.all", false},
		{"test-deployer", "pub", "deploy.prod.role.dns", false},
		{"test-deployer", "pub", "build.nixos-servers.all", false},
		{"test-deployer", "sub", "deploy.responses.r3", true},
		{"test-deployer", "sub", "deploy.discover", true},
		{"test-deployer", "sub", "deploy.test.all", false},
		{"test-deployer", "sub", "build.responses.r3", false},
		// Admin deployer: all of deploy.>, nothing of build.
		{"admin-deployer", "pub", "deploy.prod.dns1", true},
		{"admin-deployer", "pub", "deploy.prod.role.dns", true},
		{"admin-deployer", "pub", "build.nixos-servers.all", false},
		{"admin-deployer", "sub", "deploy.responses.r4", true},
		{"admin-deployer", "sub", "build.responses.r4", false},
		// Build client: its repos' build subjects out, build replies in.
		{"build-client", "pub", "build.nixos-servers.all", true},
		{"build-client", "pub", "build.nixos-servers.dns1", true},
		{"build-client", "pub", "build.other.all", false},
		{"build-client", "pub", "deploy.test.all", false},
		{"build-client", "pub", "deploy.discover", false},
		{"build-client", "sub", "build.responses.r5.builder", true},
		{"build-client", "sub", "deploy.responses.r5", false},
		{"build-client", "sub", "deploy.discover", false},
		// MCP: test deployer plus build client.
		{"mcp", "pub", "deploy.test.all", true},
		{"mcp", "pub", "build.nixos-servers.all", true},
		{"mcp", "pub", "deploy.prod.all", false},
		{"mcp", "sub", "build.responses.r6.builder", true},
		{"mcp", "sub", "deploy.responses.r6", true},
		{"mcp", "sub", "deploy.prod.all", false},
	}
	const wait = 10 * time.Second // generous: only a failing check waits this long
	for i, ck := range checks {
		name := fmt.Sprintf("%s %s %s", ck.cred, ck.op, ck.subject)
		t.Run(name, func(t *testing.T) {
			c := conns[ck.cred]
			denied, stop := c.WatchPermission(ck.subject)
			defer stop()
			payload := []byte("check-" + strconv.Itoa(i))
			switch ck.op {
			case "pub":
				obs := conns[observer(ck.subject)]
				sub, err := obs.SubscribeSync(ck.subject)
				if err != nil {
					t.Fatal(err)
				}
				defer sub.Unsubscribe()
				if err := obs.Flush(); err != nil {
					t.Fatal(err)
				}
				if err := c.Publish(ck.subject, payload); err != nil {
					t.Fatal(err)
				}
				_ = c.Flush()
				if ck.allowed {
					m, err := sub.NextMsg(wait)
					if err != nil || !bytes.Equal(m.Data, payload) {
						t.Fatalf("allowed publish was not delivered to %s: %v", observer(ck.subject), err)
					}
					return
				}
				select {
				case <-denied:
				case <-time.After(wait):
					t.Fatalf("the server did not refuse the publish")
				}
				_ = obs.Flush()
				if m, err := sub.NextMsg(50 * time.Millisecond); err == nil {
					t.Fatalf("a refused publish was delivered: %q", m.Data)
				}
			case "sub":
				sub, err := c.SubscribeSync(ck.subject)
				if err != nil {
					t.Fatal(err)
				}
				defer sub.Unsubscribe()
				_ = c.Flush()
				if !ck.allowed {
					select {
					case <-denied:
					case <-time.After(wait):
						t.Fatalf("the server did not refuse the subscription")
					}
					return
				}
				snd := conns[sender(ck.subject)]
				if err := snd.Publish(ck.subject, payload); err != nil {
					t.Fatal(err)
				}
				_ = snd.Flush()
				m, err := sub.NextMsg(wait)
				if err != nil || !bytes.Equal(m.Data, payload) {
					t.Fatalf("allowed subscription got nothing from %s: %v", sender(ck.subject), err)
				}
				select {
				case err := <-denied:
					t.Fatalf("allowed subscription was refused: %v", err)
				default:
				}
			}
		})
	}
}

// startNATSServer runs the nats-server binary with listen plus block and
// returns its URL once it accepts connections.
func startNATSServer(t *testing.T, bin, block string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := filepath.Join(t.TempDir(), "nats.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("listen: \"127.0.0.1:%d\"\n%s", port, block)), 0o600)
	var logs bytes.Buffer
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("nats-server rejected the generated config (%v):\n%s", err, logs.String())
		default:
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "nats://" + addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server did not listen on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
