package fleet

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// cluster is three embedded nats-servers forming one JetStream cluster,
// with the same NKey users on each.
type cluster struct {
	servers []*server.Server
	urls    []string
	creds   map[string]testenv.Cred
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startCluster(t testing.TB, users ...testenv.User) *cluster {
	t.Helper()
	dir := t.TempDir()
	c := &cluster{creds: map[string]testenv.Cred{}}
	var nkeys []*server.NkeyUser
	for _, u := range users {
		p := protocol.Permissions{Publish: []string{">"}, Subscribe: []string{">"}}
		if u.Permissions != nil {
			p = *u.Permissions
		}
		cr := testenv.NewCred(t, dir, u.Name, p)
		c.creds[u.Name] = cr
		nkeys = append(nkeys, &server.NkeyUser{Nkey: cr.Public, Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: p.Publish}, Subscribe: &server.SubjectPermission{Allow: p.Subscribe},
		}})
	}
	const size = 3
	routePorts := make([]int, size)
	var routes []*url.URL
	for i := range routePorts {
		routePorts[i] = freePort(t)
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", routePorts[i])})
	}
	for i := 0; i < size; i++ {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
			JetStream: true, StoreDir: t.TempDir(), Nkeys: nkeys,
			Cluster: server.ClusterOpts{Name: "fleet", Host: "127.0.0.1", Port: routePorts[i]},
			Routes:  routes,
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		t.Cleanup(s.Shutdown)
		c.servers = append(c.servers, s)
	}
	for _, s := range c.servers {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("cluster node did not start")
		}
		c.urls = append(c.urls, s.ClientURL())
	}
	return c
}

func (c *cluster) connect(t testing.TB, name string) *protocol.Conn {
	t.Helper()
	conn, err := protocol.Connect(t.Context(), protocol.ConnectOptions{URLs: strings.Join(c.urls, ","), NKeyFile: c.creds[name].SeedFile, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	return conn
}

// On a three-node cluster the first listener creates the bucket with three
// replicas, and the registry keeps working when a node is lost: listeners
// write, readers read, through the two that are left.
func TestClusterSurvivesNodeLoss(t *testing.T) {
	t.Parallel()
	c := startCluster(t, fleetUsers()...)
	writers := map[string]*Writer{}
	for _, h := range []struct{ host, tier, role string }{{"web1", "test", "web"}, {"web2", "test", ""}, {"db1", "prod", "db"}} {
		conn := c.connect(t, "listener-"+h.host)
		w, err := NewWriter(WriterConfig{Conn: conn, Hostname: h.host, Tier: h.tier, Role: h.role, Version: "test", Interval: time.Hour, System: SystemPaths{Root: t.TempDir()}})
		if err != nil {
			t.Fatal(err)
		}
		writers[h.host] = w
		// The JetStream meta leader is elected a moment after the nodes
		// start; until then a write has no answer.
		testenv.Eventually(t, 30*time.Second, func() bool { return w.write(t.Context(), false) == nil }, "%s never registered on the cluster", h.host)
	}
	admin := c.connect(t, "admin-deployer")
	info := streamReplicas(t, c.connect(t, "all"))
	if info != 3 {
		t.Fatalf("the bucket has %d replicas on a three-node cluster, want 3", info)
	}

	// Lose one node: the one the admin reads through, to force a
	// reconnection too.
	for i, s := range c.servers {
		if s.ClientURL() == admin.ConnectedUrl() {
			s.Shutdown()
			c.servers = append(c.servers[:i], c.servers[i+1:]...)
			break
		}
	}
	for name, w := range writers {
		testenv.Eventually(t, 30*time.Second, func() bool { return w.write(t.Context(), false) == nil }, "%s could not write after a node was lost", name)
	}
	var hosts []Host
	testenv.Eventually(t, 30*time.Second, func() bool {
		var errs map[string]error
		hosts, errs = Read(t.Context(), admin, protocol.Tiers, ReadOptions{})
		return len(errs) == 0 && len(hosts) == 3
	}, "the admin could not read the three entries after a node was lost: %+v", hosts)
	for _, h := range hosts {
		if !h.Online {
			t.Errorf("%s is offline after a node loss", h.Hostname)
		}
	}
}

// streamReplicas returns the bucket stream's replica count.
func streamReplicas(t testing.TB, conn *protocol.Conn) int {
	t.Helper()
	msg, err := conn.Request(protocol.FleetStreamInfoSubject, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info streamInfo
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatal(err)
	}
	return info.Config.Replicas
}
