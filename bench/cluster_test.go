package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
	fleetreg "github.com/homelab-deploy/homelab-deploy/tools/fleet"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
)

// BenchmarkRegistryCluster simulates a fleet of N hosts on a three-node
// JetStream cluster (the registry bucket with three replicas): N entries
// in the registry, and N simulated hosts spread over connections to the
// three nodes, each answering a deploy with our own accepted, started and
// completed statuses (re-addressed, at raw cost) and a raw deploy with
// three answers of the same sizes. It measures list_hosts from the
// registry against a raw read of the same entries, and a group deploy
// with its members from the registry against the raw scatter-gather, so
// the table shows how both grow with N. N comes from
// $BENCH_REGISTRY_CLUSTER_N (comma-separated), else 1000 and 10000.
func BenchmarkRegistryCluster(b *testing.B) {
	sizes := []int{1000, 10000}
	if os.Getenv("BENCH_REGISTRY_CLUSTER_N") != "" {
		b.Setenv("BENCH_REGISTRY_N", os.Getenv("BENCH_REGISTRY_CLUSTER_N"))
		sizes = registrySizes(b)
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) { benchRegistryCluster(b, n) })
	}
}

// simConns is how many connections the simulated hosts share, spread
// over the nodes.
const simConns = 30

func benchRegistryCluster(b *testing.B, n int) {
	c := testenv.StartCluster(b, 3, testenv.User{Name: "all"})
	deployer := c.Connect(b, "all")
	// The bucket, with three replicas, made by a writer as a listener
	// would; the meta leader is elected a moment after the nodes start.
	w, err := fleetreg.NewWriter(fleetreg.WriterConfig{Conn: deployer, Hostname: hostname(0), Tier: "prod", Version: "bench", Interval: time.Hour,
		Subjects: []string{protocol.DeploySubject("prod", hostname(0)), protocol.DeployAllSubject("prod")}})
	if err != nil {
		b.Fatal(err)
	}
	// (One write, marked stopped; putEntriesParallel rewrites it.)
	testenv.Eventually(b, 60*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return w.Stop(ctx) == nil
	}, "the registry bucket was not created on the cluster")
	putEntriesParallel(b, c, n)

	// The simulated hosts.
	conns := make([]*protocol.Conn, simConns)
	for i := range conns {
		conns[i] = c.ConnectTo(b, "all", c.URLs[i%len(c.URLs)])
	}
	replay := simStatuses(b)
	var sizes [3]int
	for k, r := range replay {
		sizes[k] = len(r[0]) + 26 + len(r[1]) // 26: the length of a request id
	}
	raw := [3][]byte{filler('a', sizes[0]), filler('s', sizes[1]), filler('c', sizes[2])}
	for i := range n {
		nc := conns[i%len(conns)].Conn
		host := hostname(i)
		var mine [3][2][]byte
		for k, r := range replay {
			from, to := []byte(`"hostname":"`+hostname(0)+`"`), []byte(`"hostname":"`+host+`"`)
			mine[k] = [2][]byte{bytes.Replace(r[0], from, to, 1), bytes.Replace(r[1], from, to, 1)}
		}
		if _, err := nc.Subscribe(protocol.DeployAllSubject("prod"), func(m *nats.Msg) {
			id := requestID(m.Data)
			reply := protocol.BoundReply(m.Reply, host)
			for _, r := range mine {
				out := make([]byte, 0, len(r[0])+len(id)+len(r[1]))
				out = append(append(append(out, r[0]...), id...), r[1]...)
				_ = nc.Publish(reply, out)
			}
		}); err != nil {
			b.Fatal(err)
		}
		if _, err := nc.Subscribe(rawDeploySubject, func(m *nats.Msg) {
			for _, p := range raw {
				_ = nc.Publish(m.Reply, p)
			}
		}); err != nil {
			b.Fatal(err)
		}
	}
	for _, conn := range conns {
		if err := conn.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	payload, _ := json.Marshal(protocol.DeployRequest{ID: protocol.NewID(), Action: protocol.ActionSwitch, Revision: "main", ReplyTo: protocol.DeployResponsesPrefix + protocol.NewID()})
	f := &fleet{n: n, deployer: deployer, deploy: deploy.Options{AcceptWindow: 10 * time.Second, Timeout: 120 * time.Second}}

	var rawList, ourList, rawFan, ourFan samples
	round := 0
	for b.Loop() {
		list := func() {
			rawList = append(rawList, rawRegistryRead(b, deployer, "prod", n, false))
			start := time.Now()
			res, err := listhosts.FromRegistry(context.Background(), deployer, listhosts.Request{Tier: "prod"})
			if err != nil || len(res.Hosts) != n {
				b.Fatalf("list_hosts from the registry: %d of %d hosts: %v", len(res.Hosts), n, err)
			}
			ourList = append(ourList, time.Since(start))
		}
		fan := func() {
			_, d := f.rawScatter(b, rawDeploySubject, payload, 3)
			rawFan = append(rawFan, d)
			settle()
			if _, _, r, ok := f.ourDeploy(b, protocol.DeployAllSubject("prod"), n); ok {
				ourFan = append(ourFan, r)
			}
			settle()
		}
		if round%2 == 0 {
			list()
			fan()
		} else {
			fan()
			list()
		}
		round++
	}
	name := fmt.Sprintf("3-node cluster, simulated N=%d", n)
	record(b, row{Bench: name, Measure: "list_hosts from the registry (R3) vs raw read", Ours: ourList.median(), Baseline: rawList.median(), Unit: "ms",
		Note: "baseline: the same last-per-key consumer, entries counted, not decoded"})
	record(b, row{Bench: name, Measure: "group deploy returned (members from the registry) vs raw fan-out", Ours: ourFan.median(), Baseline: rawFan.median(), Unit: "ms",
		Note: fmt.Sprintf("simulated hosts on %d connections over the 3 nodes answer with our statuses at raw cost; includes reading the members", simConns)})
}

// putEntriesParallel writes the entries of hosts 0..n-1 of the prod tier,
// several at a time (a JetStream write to an R3 bucket waits for two
// replicas).
func putEntriesParallel(b *testing.B, c *testenv.Cluster, n int) {
	b.Helper()
	const writers = 16
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for k := range writers {
		conn := c.ConnectTo(b, "all", c.URLs[k%len(c.URLs)])
		wg.Go(func() {
			for i := k; i < n; i += writers {
				w, err := fleetreg.NewWriter(fleetreg.WriterConfig{Conn: conn, Hostname: hostname(i), Tier: "prod", Version: "bench", Interval: time.Hour,
					Subjects: []string{protocol.DeploySubject("prod", hostname(i)), protocol.DeployAllSubject("prod")}})
				if err != nil {
					errs <- err
					return
				}
				data, _ := json.Marshal(w.Entry(fleetreg.System{}, false))
				if _, err := conn.Request(protocol.FleetKeySubject("prod", hostname(i)), data, 30*time.Second); err != nil {
					errs <- fmt.Errorf("entry %s: %w", hostname(i), err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// simStatuses are host h0000's accepted, started and completed statuses of
// a prod deploy, each split around its request id.
func simStatuses(b *testing.B) [3][2][]byte {
	b.Helper()
	const id = "IDIDIDIDIDIDIDIDIDIDIDIDID"
	var out [3][2][]byte
	for k, s := range []protocol.Status{protocol.StatusAccepted, protocol.StatusStarted, protocol.StatusCompleted} {
		r := protocol.DeployResponse{ID: id, Hostname: hostname(0), Status: s, Tier: "prod", Action: protocol.ActionSwitch, Revision: "main",
			Message: "switch of main " + string(s)}
		if s == protocol.StatusCompleted {
			r.DurationSeconds = 0.004
		}
		data, _ := json.Marshal(r)
		before, after, ok := bytes.Cut(data, []byte(id))
		if !ok {
			b.Fatal("the status does not carry its id")
		}
		out[k] = [2][]byte{before, after}
	}
	return out
}
