package bench

import (
	"fmt"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// BenchmarkFanout deploys to deploy.test.all over N listeners and compares
// the request half with a raw scatter-gather of the same sizes (three
// answers per responder) in the same run, round by round, alternating
// which goes first.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) { benchFanout(b, n) })
	}
}

func benchFanout(b *testing.B, n int) {
	f := startFleet(b, n)
	subject := protocol.DeployAllSubject("test")
	var rawAcc, rawDone, ourAcc, ourDone, ourRet, halfDone samples
	round := 0
	for b.Loop() {
		// The request half alone, against responders that replay our
		// statuses: what the deployer pays when each listener has a
		// machine of its own.
		if _, d, _, ok := f.ourDeploy(b, protocol.DeployAllSubject("prod"), n); ok {
			halfDone = append(halfDone, d)
		}
		settle()
		raw := func() {
			a, d := f.rawScatter(b, rawDeploySubject, f.payload.request, 3)
			rawAcc, rawDone = append(rawAcc, a), append(rawDone, d)
			settle()
		}
		ours := func() {
			if a, d, r, ok := f.ourDeploy(b, subject, n); ok {
				ourAcc, ourDone, ourRet = append(ourAcc, a), append(ourDone, d), append(ourRet, r)
			}
			settle()
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
	name := fmt.Sprintf("fan-out N=%d", n)
	target := 0.0
	if n == 1000 {
		target = 1.5
	}
	record(b, row{Bench: name, Measure: "all accepted", Ours: ourAcc.median(), Baseline: rawAcc.median(), Unit: "ms", Target: target})
	record(b, row{Bench: name, Measure: "all completed", Ours: ourDone.median(), Baseline: rawDone.median(), Unit: "ms", Target: target})
	record(b, row{Bench: name, Measure: "request half alone, all completed", Ours: halfDone.median(), Baseline: rawDone.median(), Unit: "ms",
		Note: "responders replay our JSON statuses at raw cost: listener CPU taken out"})
	ret := ourRet.median()
	record(b, row{Bench: name, Measure: "returned minus accept window", Ours: ret - ms(acceptWindow), Baseline: rawDone.median(), Unit: "ms", Target: target,
		Note: fmt.Sprintf("Send returned after %s including the %s accept window%s", fmtMS(ret), acceptWindow, f.earlyNote())})
}

// BenchmarkDiscovery runs list_hosts over N listeners against a raw
// scatter-gather with one answer of the same size per responder. Discovery
// ends on a quiet period by design; it is subtracted and reported apart.
func BenchmarkDiscovery(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) { benchDiscovery(b, n) })
	}
}

func benchDiscovery(b *testing.B, n int) {
	f := startFleet(b, n)
	var raw, ours samples
	round := 0
	for b.Loop() {
		r := func() {
			_, d := f.rawScatter(b, rawDiscoverSubject, f.payload.discoverRequest, 1)
			raw = append(raw, d)
			settle()
		}
		o := func() {
			start := time.Now()
			res, err := discover(f)
			d := time.Since(start)
			switch {
			case err == nil && len(res) < n && len(f.early) < 3:
				// The quiet period passed between two answers: counted
				// and left out, as for the accept window.
				f.early = append(f.early, fmt.Sprintf("%d/%d", len(res), n))
				time.Sleep(time.Second)
			case err != nil || len(res) != n:
				b.Fatalf("discovery found %d of %d hosts: %v (earlier short rounds: %v)", len(res), n, err, f.early)
			default:
				ours = append(ours, d)
			}
			settle()
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
	total := ours.median()
	record(b, row{Bench: fmt.Sprintf("discovery N=%d", n), Measure: "returned minus quiet period", Ours: total - ms(discoverQuiet), Baseline: raw.median(), Unit: "ms", Target: target,
		Note: fmt.Sprintf("list_hosts returned after %s including the %s quiet period%s", fmtMS(total), discoverQuiet, f.earlyNote())})
}

// BenchmarkSingleHost deploys to one host (deploy.test.<host>) until its
// terminal status, against a raw request-reply whose one answer has the size
// of our completed status, and against a raw exchange of all three
// statuses.
func BenchmarkSingleHost(b *testing.B) {
	f := startFleet(b, 1)
	subject := protocol.DeploySubject("test", hostname(0))
	rawSubject := rawSinglePrefix + hostname(0)
	var reqReply, raw3, ours, half samples
	variants := []func(){
		func() {
			start := time.Now()
			if _, err := f.deployer.Request(rawSubject, f.payload.request, 10*time.Second); err != nil {
				b.Fatal(err)
			}
			reqReply = append(reqReply, time.Since(start))
		},
		func() {
			_, d := f.rawScatter(b, rawDeploySubject, f.payload.request, 3)
			raw3 = append(raw3, d)
		},
		func() {
			_, _, r, _ := f.ourDeploy(b, subject, 1) // one host: no accept window
			ours = append(ours, r)
		},
		func() {
			_, _, r, _ := f.ourDeploy(b, protocol.DeploySubject("prod", hostname(0)), 1)
			half = append(half, r)
		},
	}
	// Every variant starts after the same pause (a single deploy is a
	// cold start: a person runs one), in an order that rotates per round.
	round := 0
	for b.Loop() {
		for k := range variants {
			settle()
			variants[(round+k)%len(variants)]()
		}
		round++
	}
	record(b, row{Bench: "single host", Measure: "request to terminal status", Ours: ours.median(), Baseline: reqReply.median(), Unit: "ms", Target: 2,
		Note: "baseline: raw nats.go request-reply, one answer"})
	record(b, row{Bench: "single host", Measure: "vs raw three-status exchange", Ours: ours.median(), Baseline: raw3.median(), Unit: "ms",
		Note: "baseline: raw subscribe, publish, read accepted/started/completed"})
	record(b, row{Bench: "single host", Measure: "request half alone vs raw three-status exchange", Ours: half.median(), Baseline: raw3.median(), Unit: "ms",
		Note: "a responder replays our JSON statuses at raw cost: the listener's work taken out"})
}
