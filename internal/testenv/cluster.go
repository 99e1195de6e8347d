package testenv

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// Cluster is embedded nats-servers routed into one JetStream cluster, with
// the same NKey users on each.
type Cluster struct {
	Servers []*server.Server
	URLs    []string
	creds   map[string]Cred
}

// StartCluster starts size nodes (n1, n2, …) with JetStream and users
// (allowed everything when their Permissions are nil). Until its JetStream
// meta leader is elected, a moment after the nodes start, JetStream
// requests go unanswered.
func StartCluster(t testing.TB, size int, users ...User) *Cluster {
	t.Helper()
	dir := t.TempDir()
	c := &Cluster{creds: map[string]Cred{}}
	var nkeys []*server.NkeyUser
	for _, u := range users {
		p := protocol.Permissions{Publish: []string{">"}, Subscribe: []string{">"}}
		if u.Permissions != nil {
			p = *u.Permissions
		}
		cr := NewCred(t, dir, u.Name, p)
		c.creds[u.Name] = cr
		nkeys = append(nkeys, &server.NkeyUser{Nkey: cr.Public, Permissions: serverPerms(p)})
	}
	routePorts := make([]int, size)
	var routes []*url.URL
	for i := range routePorts {
		routePorts[i] = FreePort(t)
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", routePorts[i])})
	}
	for i := range size {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
			JetStream: true, StoreDir: t.TempDir(), Nkeys: nkeys, MaxPayload: 1 << 20,
			Cluster: server.ClusterOpts{Name: "fleet", Host: "127.0.0.1", Port: routePorts[i]},
			Routes:  routes,
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		t.Cleanup(s.Shutdown)
		c.Servers = append(c.Servers, s)
	}
	for _, s := range c.Servers {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("cluster node did not start")
		}
		c.URLs = append(c.URLs, s.ClientURL())
	}
	return c
}

// Connect opens a connection with the named credential to every node's
// URL (the client picks one and fails over).
func (c *Cluster) Connect(t testing.TB, name string) *protocol.Conn {
	t.Helper()
	return c.ConnectTo(t, name, c.URLs...)
}

// ConnectTo opens a connection with the named credential to the given
// nodes' URLs.
func (c *Cluster) ConnectTo(t testing.TB, name string, urls ...string) *protocol.Conn {
	t.Helper()
	conn, err := protocol.Connect(t.Context(), protocol.ConnectOptions{URLs: strings.Join(urls, ","), NKeyFile: c.creds[name].SeedFile, Name: name})
	if err != nil {
		t.Fatalf("connect as %s: %v", name, err)
	}
	t.Cleanup(conn.Close)
	return conn
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
