package listener_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/homelab-deploy/homelab-deploy/agents/listener"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
)

// startClusterNode starts one embedded server of a cluster whose route
// ports are routePorts, with NKey users; clientPort -1 picks a free one.
func startClusterNode(t *testing.T, name string, clientPort, routePort int, routePorts []int, users []*server.NkeyUser) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		ServerName: name, Host: "127.0.0.1", Port: clientPort, NoLog: true, NoSigs: true, Nkeys: users,
		Cluster: server.ClusterOpts{Name: "homelab", Host: "127.0.0.1", Port: routePort},
		Routes:  routesExcept(routePorts, routePort),
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatalf("node %s did not start", name)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func nkeyUser(c testenv.Cred) *server.NkeyUser {
	return &server.NkeyUser{Nkey: c.Public, Permissions: &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: c.Permissions.Publish},
		Subscribe: &server.SubjectPermission{Allow: c.Permissions.Subscribe},
	}}
}

// sendUntilAnswered deploys, retrying while the cluster has not yet
// propagated the listener's interest to the deployer's node.
func sendUntilAnswered(t *testing.T, conn *protocol.Conn) deploy.Result {
	t.Helper()
	d := deploy.Options{Timeout: 30 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := deploy.Send(context.Background(), conn, deploy.Request{Subject: "deploy.test.h1", Action: "switch", Revision: "main"}, d, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Hosts) > 0 || time.Now().After(deadline) {
			return res
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A three-node cluster: the listener is given all three URLs and connects
// to node A (the only one up when it starts); the deployer uses node C.
// When A shuts down the listener fails over to another node, and the next
// deploy from C works without restarting the listener.
func TestListenerFailsOverInAThreeNodeCluster(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	hostCred := testenv.NewCred(t, dir, "h1", *testenv.ListenerPerms("test", "h1", ""))
	depCred := testenv.NewCred(t, dir, "deployer", protocol.TestDeployerPermissions())
	users := []*server.NkeyUser{nkeyUser(hostCred), nkeyUser(depCred)}
	routePorts := []int{testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)}

	a := startClusterNode(t, "A", -1, routePorts[0], routePorts, users)
	// B and C get their client ports now, so that the listener's URL list
	// names all three; they start after the listener is on A.
	portB, portC := testenv.FreePort(t), testenv.FreePort(t)
	urls := fmt.Sprintf("%s,nats://127.0.0.1:%d,nats://127.0.0.1:%d", a.ClientURL(), portB, portC)

	var logs testenv.Buffer
	var runs atomic.Int64
	var readies atomic.Int64
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- listener.Run(ctx, listener.Config{
			Hostname: "h1", Tier: "test", FlakeURL: "git+file:///srv/cfg", Timeout: time.Minute,
			NATSURL: urls, NKeyFile: hostCred.SeedFile, ShutdownGrace: 5 * time.Second,
			Logger: slog.New(slog.NewTextHandler(&logs, nil)),
			Exec:   func(context.Context, []string) (string, error) { runs.Add(1); return "", nil },
			Ready: func(*listener.Listener) {
				if readies.Add(1) == 1 {
					close(ready)
				}
			},
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("listener: %v", err)
		}
	})
	<-ready
	testenv.Eventually(t, 20*time.Second, func() bool { return strings.Contains(logs.String(), "NATS connected") }, "listener never connected:\n%s", logs.String())
	if !strings.Contains(logs.String(), a.ClientURL()) {
		t.Fatalf("listener is not on node A:\n%s", logs.String())
	}

	b := startClusterNode(t, "B", portB, routePorts[1], routePorts, users)
	c := startClusterNode(t, "C", portC, routePorts[2], routePorts, users)
	testenv.Eventually(t, 20*time.Second, func() bool { return a.NumRoutes() >= 2 && b.NumRoutes() >= 2 && c.NumRoutes() >= 2 }, "the cluster did not form")

	deployer, err := protocol.Connect(context.Background(), protocol.ConnectOptions{URLs: c.ClientURL(), NKeyFile: depCred.SeedFile, Name: "deployer"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(deployer.Close)

	if res := sendUntilAnswered(t, deployer); !res.Success {
		t.Fatalf("deploy through the cluster: %s", res.Summary())
	}

	a.Shutdown()
	testenv.Eventually(t, 30*time.Second, func() bool { return strings.Contains(logs.String(), "NATS reconnected") }, "the listener did not fail over:\n%s", logs.String())
	if res := sendUntilAnswered(t, deployer); !res.Success {
		t.Fatalf("deploy after node A went down: %s\nlistener log:\n%s", res.Summary(), logs.String())
	}
	if n := runs.Load(); n != 2 {
		t.Fatalf("nixos-rebuild ran %d times, want 2", n)
	}
	if n := readies.Load(); n != 1 {
		t.Fatalf("the listener started %d times", n)
	}
}

func routesExcept(ports []int, self int) []*url.URL {
	var out []*url.URL
	for _, p := range ports {
		if p != self {
			out = append(out, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
		}
	}
	return out
}
