package deploy_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/agents/listener"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
)

const flakeURL = "git+https://git.example.com/user/nixos-configs.git"

type host struct{ name, tier, role string }

// defaultHosts: two test hosts (one with role web) and one prod host.
var defaultHosts = []host{{"testhost1", "test", ""}, {"testhost2", "test", "web"}, {"prodhost1", "prod", "web"}}

type fleet struct {
	nats      *testenv.NATS
	standIn   string // directory of the recording nixos-rebuild stand-in
	listeners map[string]*listener.Listener
	deployer  *protocol.Conn
	admin     *protocol.Conn
	spy       *protocol.Conn
}

// startFleet starts an embedded NATS server with SPEC's permissions and one
// in-process listener per host, each running the stand-in script body as
// nixos-rebuild.
func startFleet(t *testing.T, hosts []host, body string, timeout time.Duration) *fleet {
	t.Helper()
	users := []testenv.User{
		{Name: "deployer", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())},
		{Name: "admin", Permissions: testenv.Ptr(protocol.AdminDeployerPermissions())},
		{Name: "spy"},
		// half may send deploys but not hear their replies.
		{Name: "half", Permissions: &protocol.Permissions{Publish: []string{"deploy.test.>"}, Subscribe: []string{"deploy.discover"}}},
	}
	for _, h := range hosts {
		users = append(users, testenv.User{Name: h.name, Permissions: testenv.ListenerPerms(h.tier, h.name, h.role)})
	}
	n := testenv.StartNATS(t, users...)
	f := &fleet{nats: n, standIn: testenv.StandIn(t, "nixos-rebuild", body), listeners: map[string]*listener.Listener{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, h := range hosts {
		ready := make(chan *listener.Listener, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := listener.Run(ctx, listener.Config{
				Hostname: h.name, Tier: h.tier, Role: h.role, FlakeURL: flakeURL, Timeout: timeout,
				Conn: n.Connect(t, h.name), Exec: f.exec, Version: "test", ShutdownGrace: 5 * time.Second,
				MetricsEnabled: true, MetricsAddr: "127.0.0.1:0",
				Ready:  func(l *listener.Listener) { ready <- l },
				Logger: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				t.Errorf("listener %s: %v", h.name, err)
				close(ready)
			}
		}()
		l := <-ready
		mu.Lock()
		f.listeners[h.name] = l
		mu.Unlock()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	f.deployer = n.Connect(t, "deployer")
	f.admin = n.Connect(t, "admin")
	f.spy = n.Connect(t, "spy")
	return f
}

// exec runs the stand-in by absolute path, exactly as the real executor runs
// nixos-rebuild from PATH.
func (f *fleet) exec(ctx context.Context, argv []string) (string, error) {
	argv = append([]string{filepath.Join(f.standIn, "nixos-rebuild")}, argv[1:]...)
	return deploy.NixosRebuild(ctx, argv)
}

func (f *fleet) calls() []string { return testenv.Calls(f.standIn) }

func deps(conn *protocol.Conn) deploy.Options {
	return deploy.Options{Timeout: 60 * time.Second, AcceptWindow: 300 * time.Millisecond}
}

type recorder struct {
	mu     sync.Mutex
	events []tools.Event
}

func (r *recorder) progress() tools.Progress {
	return func(e tools.Event) {
		r.mu.Lock()
		r.events = append(r.events, e)
		r.mu.Unlock()
	}
}

func (r *recorder) statuses(hostname string) []protocol.Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []protocol.Status
	for _, e := range r.events {
		if e.Host == hostname {
			out = append(out, e.Status)
		}
	}
	return out
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
