package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/agents/listener"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
	fleetreg "github.com/homelab-deploy/homelab-deploy/tools/fleet"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
)

// registrySizes are the fleet sizes of the registry benchmarks:
// $BENCH_REGISTRY_N (comma-separated, e.g. 1000,5000,10000), else def.
func registrySizes(b *testing.B, def ...int) []int {
	env := os.Getenv("BENCH_REGISTRY_N")
	if env == "" {
		return def
	}
	var out []int
	for _, s := range strings.Split(env, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			b.Fatalf("BENCH_REGISTRY_N=%q: give sizes such as 1000,5000", env)
		}
		out = append(out, n)
	}
	return out
}

// BenchmarkRegistryList reads N entries from the fleet registry as
// list_hosts does (consumer, exact decoding, validation, online state)
// against a raw read of the same entries through the same kind of
// consumer, counted without decoding, in the same run.
func BenchmarkRegistryList(b *testing.B) {
	for _, n := range registrySizes(b, 100, 1000) {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) { benchRegistryList(b, n) })
	}
}

func benchRegistryList(b *testing.B, n int) {
	srv := testenv.StartNATSWith(b, testenv.JetStream(b), testenv.User{Name: "all"})
	conn := srv.Connect(b, "all")
	fillRegistry(b, conn, n)
	var raw, rawDecoded, ours samples
	round := 0
	for b.Loop() {
		r := func() {
			raw = append(raw, rawRegistryRead(b, conn, "test", n, false))
			rawDecoded = append(rawDecoded, rawRegistryRead(b, conn, "test", n, true))
		}
		o := func() {
			start := time.Now()
			res, err := listhosts.FromRegistry(context.Background(), conn, listhosts.Request{Tier: "test"})
			d := time.Since(start)
			if err != nil || len(res.Hosts) != n {
				b.Fatalf("list_hosts from the registry: %d of %d hosts: %v", len(res.Hosts), n, err)
			}
			ours = append(ours, d)
		}
		if round%2 == 0 {
			r()
			o()
		} else {
			o()
			r()
		}
		round++
	}
	target := 0.0
	if n == 1000 {
		target = 1.5
	}
	record(b, row{Bench: fmt.Sprintf("registry list N=%d", n), Measure: "list_hosts from the registry vs raw read", Ours: ours.median(), Baseline: raw.median(), Unit: "ms", Target: target,
		Note: "baseline: the same last-per-key consumer, entries counted, not decoded"})
	record(b, row{Bench: fmt.Sprintf("registry list N=%d", n), Measure: "list_hosts from the registry vs raw read and json.Unmarshal", Ours: ours.median(), Baseline: rawDecoded.median(), Unit: "ms",
		Note: "baseline: the same consumer, each entry decoded by encoding/json alone (no exact-name pass, no checks, no cleaning)"})
}

// fillRegistry writes n entries of the test tier, as listeners would.
func fillRegistry(b *testing.B, conn *protocol.Conn, n int) {
	b.Helper()
	first, err := fleetreg.NewWriter(fleetreg.WriterConfig{Conn: conn, Hostname: hostname(0), Tier: "test", Version: "bench", Interval: time.Hour,
		Subjects: []string{protocol.DeploySubject("test", hostname(0)), protocol.DeployAllSubject("test")}})
	if err != nil {
		b.Fatal(err)
	}
	// The first writer makes the bucket.
	ctx, cancel := context.WithCancel(context.Background())
	first.Start(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if hosts, err := fleetreg.ReadTier(ctx, conn, "test", fleetreg.ReadOptions{}); err == nil && len(hosts) == 1 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the registry bucket was not created")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	putEntries(b, conn, "test", 1, n)
}

// putEntries writes the entries of hosts from..n-1 of tier straight into
// the bucket, as their listeners' writers would.
func putEntries(b *testing.B, conn *protocol.Conn, tier string, from, n int) {
	b.Helper()
	for i := from; i < n; i++ {
		w, err := fleetreg.NewWriter(fleetreg.WriterConfig{Conn: conn, Hostname: hostname(i), Tier: tier, Version: "bench", Interval: time.Hour,
			Subjects: []string{protocol.DeploySubject(tier, hostname(i)), protocol.DeployAllSubject(tier)}})
		if err != nil {
			b.Fatal(err)
		}
		data, _ := json.Marshal(w.Entry(fleetreg.System{}, false))
		if _, err := conn.Request(protocol.FleetKeySubject(tier, hostname(i)), data, 10*time.Second); err != nil {
			b.Fatal(err)
		}
	}
}

// rawRegistryRead is the baseline: the consumer a registry read creates,
// made with a hand-written request, its n deliveries counted in the
// subscription's callback.
func rawRegistryRead(b *testing.B, conn *protocol.Conn, tier string, n int, decode bool) time.Duration {
	b.Helper()
	inbox := nats.NewInbox()
	name := protocol.NewID()
	done := make(chan time.Duration, 1)
	got := 0
	start := time.Now()
	sub, err := conn.Subscribe(inbox, func(m *nats.Msg) {
		if !strings.HasPrefix(m.Subject, protocol.FleetKeyPrefix) {
			return // the API's answer
		}
		if decode {
			var e protocol.FleetEntry
			if err := json.Unmarshal(m.Data, &e); err != nil {
				b.Error(err)
			}
		}
		if got++; got == n {
			done <- time.Since(start)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)
	req := fmt.Sprintf(`{"stream_name":%q,"config":{"name":%q,"deliver_subject":%q,"deliver_policy":"last_per_subject","ack_policy":"none","replay_policy":"instant","filter_subject":%q,"inactive_threshold":5000000000,"mem_storage":true,"num_replicas":1}}`,
		protocol.FleetStream, name, inbox, protocol.FleetTierFilter(tier))
	if err := conn.PublishRequest(protocol.FleetConsumerCreateSubject(name, tier), inbox, []byte(req)); err != nil {
		b.Fatal(err)
	}
	select {
	case d := <-done:
		return d
	case <-time.After(30 * time.Second):
		b.Fatalf("raw registry read: %d of %d entries within 30 s", got, n)
	}
	return 0
}

// BenchmarkRegistryFanout deploys to deploy.test.all over N listeners that
// keep registry entries: the deployer takes the members from the registry
// and returns as soon as each is terminal, with no accept window. The
// baseline is the raw scatter-gather of BenchmarkFanout (three answers per
// responder) in the same run.
func BenchmarkRegistryFanout(b *testing.B) {
	for _, n := range registrySizes(b, 100, 1000) {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) { benchRegistryFanout(b, n) })
	}
}

func benchRegistryFanout(b *testing.B, n int) {
	f := startRegistryFleet(b, n)
	subject := protocol.DeployAllSubject("test")
	var rawDone, ourRet, ourDone, memberRead, halfRet samples
	round := 0
	for b.Loop() {
		// The request half alone: members of the prod tier from the
		// registry, answered by the responders that replay our statuses
		// at raw cost (each listener's CPU taken out, as when every host
		// has a machine of its own).
		if _, _, r, ok := f.ourDeploy(b, protocol.DeployAllSubject("prod"), n); ok {
			halfRet = append(halfRet, r)
		}
		settle()
		start := time.Now()
		if hosts, err := fleetreg.ReadTier(context.Background(), f.deployer, "test", fleetreg.ReadOptions{}); err != nil || len(hosts) != n {
			b.Fatalf("members: %d of %d: %v", len(hosts), n, err)
		}
		memberRead = append(memberRead, time.Since(start))
		raw := func() {
			_, d := f.rawScatter(b, rawDeploySubject, f.payload.request, 3)
			rawDone = append(rawDone, d)
			settle()
		}
		ours := func() {
			if _, d, r, ok := f.ourDeploy(b, subject, n); ok {
				ourRet, ourDone = append(ourRet, r), append(ourDone, d)
			}
			// Each listener rewrites its entry a moment after its deploy
			// (tools/fleet's changeDelay): let those writes land before
			// the next round, which they would otherwise slow down.
			time.Sleep(2 * time.Second)
		}
		if round%2 == 0 {
			raw()
			ours()
		} else {
			ours()
			raw()
		}
		round++
	}
	target := 0.0
	if n == 1000 {
		target = 1.5
	}
	record(b, row{Bench: fmt.Sprintf("registry fan-out N=%d", n), Measure: "deploy returned (members from the registry, no window)", Ours: ourRet.median(), Baseline: rawDone.median(), Unit: "ms", Target: target,
		Note: "the N members are read from the registry while the request is out"})
	record(b, row{Bench: fmt.Sprintf("registry fan-out N=%d", n), Measure: "request half alone, deploy returned", Ours: halfRet.median(), Baseline: rawDone.median(), Unit: "ms",
		Note: "members from the registry; responders replay our JSON statuses at raw cost: listener CPU (strict decoding, signature check) taken out"})
	record(b, row{Bench: fmt.Sprintf("registry fan-out N=%d", n), Measure: "reading the members alone", Ours: memberRead.median(), Baseline: rawDone.median(), Unit: "ms"})
	record(b, row{Bench: fmt.Sprintf("registry fan-out N=%d", n), Measure: "all completed (progress events)", Ours: ourDone.median(), Baseline: rawDone.median(), Unit: "ms"})
}

// startRegistryFleet is startFleet on a server with JetStream, the
// listeners keeping their registry entries (an hour's heartbeat: the
// rounds measure deploys, not heartbeats).
func startRegistryFleet(b *testing.B, n int) *fleet {
	b.Helper()
	f := &fleet{n: n, nats: testenv.StartNATSWith(b, testenv.JetStream(b), testenv.User{Name: "all"})}
	f.deployer = f.nats.Connect(b, "all")
	f.discover = listhosts.Options{Quiet: discoverQuiet, Max: 60 * time.Second}
	// With members from the registry the accept window is only the
	// deadline for a member's first answer, never waited when all answer:
	// it is set generously, as the default (2 s) is.
	f.deploy = deploy.Options{AcceptWindow: 5 * time.Second, Timeout: 60 * time.Second, Discover: f.discover}
	conns := f.runListeners(b, listener.FleetConfig{Heartbeat: time.Hour, SystemRoot: b.TempDir()})
	deadline := time.Now().Add(60 * time.Second)
	for {
		hosts, err := fleetreg.ReadTier(context.Background(), f.deployer, "test", fleetreg.ReadOptions{Timeout: 10 * time.Second})
		if err == nil && len(hosts) == n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d listeners registered: %v", len(hosts), n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.calibrate(b)
	f.startRaw(b, conns)
	// The replay responders answer for the prod tier: their hosts are
	// registered there too, so a prod group deploy knows its members.
	putEntries(b, f.deployer, "prod", 0, n)
	return f
}
