package fleet

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// On a three-node cluster the first listener creates the bucket with three
// replicas, and the registry keeps working when a node is lost: listeners
// write, readers read, through the two that are left.
func TestClusterSurvivesNodeLoss(t *testing.T) {
	t.Parallel()
	c := testenv.StartCluster(t, 3, fleetUsers()...)
	writers := map[string]*Writer{}
	for _, h := range []struct{ host, tier, role string }{{"web1", "test", "web"}, {"web2", "test", ""}, {"db1", "prod", "db"}} {
		conn := c.Connect(t, "listener-"+h.host)
		w, err := NewWriter(WriterConfig{Conn: conn, Hostname: h.host, Tier: h.tier, Role: h.role, Version: "test", Interval: time.Hour, System: SystemPaths{Root: t.TempDir()}})
		if err != nil {
			t.Fatal(err)
		}
		writers[h.host] = w
		// The JetStream meta leader is elected a moment after the nodes
		// start; until then a write has no answer.
		testenv.Eventually(t, 30*time.Second, func() bool { return w.write(t.Context(), false) == nil }, "%s never registered on the cluster", h.host)
	}
	admin := c.Connect(t, "admin-deployer")
	info := streamReplicas(t, c.Connect(t, "all"))
	if info != 3 {
		t.Fatalf("the bucket has %d replicas on a three-node cluster, want 3", info)
	}

	// Lose one node: the one the admin reads through, to force a
	// reconnection too.
	for i, s := range c.Servers {
		if s.ClientURL() == admin.ConnectedUrl() {
			s.Shutdown()
			c.Servers = append(c.Servers[:i], c.Servers[i+1:]...)
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
