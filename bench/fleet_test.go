package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/agents/listener"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
)

// Subjects of the raw baseline's responders. They live on the same
// connections as the real listeners, so both paths cross the same server,
// sockets and read loops.
const (
	rawDeploySubject   = "bench.raw.deploy"
	rawDiscoverSubject = "bench.raw.discover"
	rawSinglePrefix    = "bench.raw.single."
)

// acceptWindow is the group deploy's accept window in the benchmarks. It is
// a fixed wait by design, so it is set small here (the default is 2 s) and
// reported on its own. It must still exceed the longest pause between two
// hosts' first answers: with 1000 listeners, the NATS server and the
// deployer in one process on two CPUs, a 50 ms window sometimes closed
// after the first few hosts (a pause of 117 ms between two first answers:
// the deployer's goroutines queued behind the listeners', not a lost
// message).
const acceptWindow = 250 * time.Millisecond

// discoverQuiet is discovery's quiet period in the benchmarks (the default
// is 500 ms), small for the same reason and as long for the same reason:
// with 50 ms a discovery over 1000 in-process listeners sometimes ended
// after the first two answers.
const discoverQuiet = 250 * time.Millisecond

// instant stands in for nixos-rebuild: it succeeds at once, so the
// benchmarks measure messaging, not Nix.
func instant(context.Context, []string) (string, error) { return "", nil }

// sizes are the byte sizes of our messages, measured on the wire, so the raw
// baseline carries exactly as many bytes.
type sizes struct {
	request, accepted, started, completed int
	discoverRequest, discoverAnswer       int
}

// fleet is N in-process listeners on an embedded NATS server, one NATS
// connection each (as N hosts would have), plus a deployer connection.
//
// The server has one NKey user allowed everything: N users with SPEC's
// per-host permissions would only make setup slower, not the messaging.
type fleet struct {
	n        int
	nats     *testenv.NATS
	deployer *protocol.Conn
	deploy   deploy.Options
	discover listhosts.Options
	size     sizes
	payload  struct{ request, discoverRequest []byte }
	// replay holds host 0's accepted, started and completed statuses as
	// they were on the wire.
	replay   [3][]byte
	replayID string
	// early holds, per round whose accept window closed before every host
	// answered, how many hosts it heard from.
	early []string
}

// requestID picks the id out of a deploy request without decoding it.
func requestID(data []byte) []byte {
	_, rest, ok := bytes.Cut(data, []byte(`"id":"`))
	if !ok {
		return nil
	}
	id, _, _ := bytes.Cut(rest, []byte(`"`))
	return id
}

func hostname(i int) string { return fmt.Sprintf("h%04d", i) }

// startFleet starts n listeners through listener.Run, exactly as the
// daemon composes them (deploy serve half, list_hosts responder, metrics
// registry), with the instant executor. It is stopped when b ends.
func startFleet(b *testing.B, n int) *fleet {
	b.Helper()
	f := &fleet{n: n, nats: testenv.StartNATS(b, testenv.User{Name: "all"})}
	f.deployer = f.nats.Connect(b, "all")
	f.discover = listhosts.Options{Quiet: discoverQuiet, Max: 60 * time.Second}
	f.deploy = deploy.Options{AcceptWindow: acceptWindow, Timeout: 60 * time.Second, Discover: f.discover}

	conns := f.runListeners(b, listener.FleetConfig{})
	f.calibrate(b)
	f.startRaw(b, conns)
	return f
}

// runListeners starts f.n listeners of the test tier, each on a connection
// of its own, with the fleet registry configuration fc, and returns the
// connections. They stop when b ends.
func (f *fleet) runListeners(b *testing.B, fc listener.FleetConfig) []*protocol.Conn {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var ready, done sync.WaitGroup
	errs := make(chan error, f.n)
	conns := make([]*protocol.Conn, f.n)
	for i := range f.n {
		conns[i] = f.nats.Connect(b, "all")
		ready.Add(1)
		done.Add(1)
		go func(i int) {
			defer done.Done()
			var once sync.Once
			err := listener.Run(ctx, listener.Config{
				Hostname: hostname(i), Tier: "test", FlakeURL: "git+https://git.example.com/homelab/nixos-configs.git",
				Timeout: time.Minute, Version: "bench", Conn: conns[i], Exec: instant, Fleet: fc,
				Ready: func(*listener.Listener) { once.Do(ready.Done) },
			})
			if err != nil {
				errs <- fmt.Errorf("listener %s: %w", hostname(i), err)
				once.Do(ready.Done)
			}
		}(i)
	}
	ready.Wait()
	b.Cleanup(func() { cancel(); done.Wait() })
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	return conns
}

// calibrate runs one real deploy and one real discovery with a sniffer on
// the server and records the size of every kind of message.
func (f *fleet) calibrate(b *testing.B) {
	b.Helper()
	sniffer := f.nats.Connect(b, "all")
	var mu sync.Mutex
	var s sizes
	target := protocol.DeploySubject("test", hostname(0))
	sub, err := sniffer.Subscribe(">", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case m.Subject == target:
			s.request = len(m.Data)
		case m.Subject == protocol.DefaultDiscoverSubject:
			s.discoverRequest = len(m.Data)
		case strings.HasPrefix(m.Subject, protocol.DeployResponsesPrefix):
			var probe struct {
				Status   protocol.Status `json:"status"`
				Subjects []string        `json:"subjects"`
			}
			if json.Unmarshal(m.Data, &probe) != nil {
				return
			}
			switch {
			case probe.Subjects != nil:
				s.discoverAnswer = max(s.discoverAnswer, len(m.Data))
			case probe.Status == protocol.StatusAccepted:
				s.accepted = len(m.Data)
				f.replay[0] = bytes.Clone(m.Data)
			case probe.Status == protocol.StatusStarted:
				s.started = len(m.Data)
				f.replay[1] = bytes.Clone(m.Data)
			case probe.Status == protocol.StatusCompleted:
				s.completed = len(m.Data)
				f.replay[2] = bytes.Clone(m.Data)
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := sniffer.Flush(); err != nil {
		b.Fatal(err)
	}
	res, err := deploy.Send(context.Background(), f.deployer, deploy.Request{Subject: target, Action: protocol.ActionSwitch, Revision: "main"}, f.deploy, nil)
	if err != nil || !res.Success {
		b.Fatalf("calibration deploy: %v %s", err, res.Summary())
	}
	f.replayID = res.ID
	found, err := listhosts.Discover(context.Background(), f.deployer, "", protocol.DefaultDiscoverSubject, f.discover)
	if err != nil || len(found.Hosts) != f.n {
		b.Fatalf("calibration discovery found %d of %d hosts: %v", len(found.Hosts), f.n, err)
	}
	_ = sniffer.Flush()
	_ = sub.Unsubscribe()
	mu.Lock()
	f.size = s
	mu.Unlock()
	if s.request == 0 || s.accepted == 0 || s.started == 0 || s.completed == 0 || s.discoverRequest == 0 || s.discoverAnswer == 0 {
		b.Fatalf("calibration missed a message kind: %+v", s)
	}
	f.payload.request = filler('r', s.request)
	f.payload.discoverRequest = filler('q', s.discoverRequest)
	time.Sleep(20 * time.Millisecond) // let host 0 leave its deploy slot
}

// filler returns n bytes starting with tag: the raw baseline's payloads
// carry our sizes but need no encoding.
func filler(tag byte, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = 'x'
	}
	p[0] = tag
	return p
}

// startRaw adds the raw baseline's responders to every listener's
// connection: the deploy responder answers three times (accepted, started,
// completed sizes), the discovery responder once, the single-host responder
// once with the completed size.
func (f *fleet) startRaw(b *testing.B, conns []*protocol.Conn) {
	b.Helper()
	acc, sta, com := filler('a', f.size.accepted), filler('s', f.size.started), filler('c', f.size.completed)
	disc := filler('d', f.size.discoverAnswer)
	for i, c := range conns {
		nc := c.Conn
		subs := []struct {
			subject string
			h       nats.MsgHandler
		}{
			{rawDeploySubject, func(m *nats.Msg) {
				_ = nc.Publish(m.Reply, acc)
				_ = nc.Publish(m.Reply, sta)
				_ = nc.Publish(m.Reply, com)
			}},
			{rawDiscoverSubject, func(m *nats.Msg) { _ = nc.Publish(m.Reply, disc) }},
			{rawSinglePrefix + hostname(i), func(m *nats.Msg) { _ = nc.Publish(m.Reply, com) }},
		}
		// The replay responder answers deploys to the prod tier (the real
		// listeners are test) with our own statuses, re-addressed to its
		// host, tier and the request's id, on the host's own reply subject:
		// the request half then gets exactly the bytes real listeners
		// send, at the cost of a raw responder.
		var replay [3][2][]byte
		for k, msg := range f.replay {
			msg = bytes.Replace(msg, []byte(`"hostname":"`+hostname(0)+`"`), []byte(`"hostname":"`+hostname(i)+`"`), 1)
			msg = bytes.Replace(msg, []byte(`"tier":"test"`), []byte(`"tier":"prod"`), 1)
			before, after, ok := bytes.Cut(msg, []byte(f.replayID))
			if !ok {
				b.Fatalf("the calibration status %s does not carry its request id %s", msg, f.replayID)
			}
			replay[k] = [2][]byte{before, after}
		}
		replayer := func(m *nats.Msg) {
			id := requestID(m.Data)
			for _, r := range replay {
				out := make([]byte, 0, len(r[0])+len(id)+len(r[1]))
				out = append(append(append(out, r[0]...), id...), r[1]...)
				_ = nc.Publish(protocol.BoundReply(m.Reply, hostname(i)), out)
			}
		}
		subs = append(subs, struct {
			subject string
			h       nats.MsgHandler
		}{protocol.DeployAllSubject("prod"), replayer}, struct {
			subject string
			h       nats.MsgHandler
		}{protocol.DeploySubject("prod", hostname(i)), replayer})
		for _, s := range subs {
			if _, err := nc.Subscribe(s.subject, s.h); err != nil {
				b.Fatal(err)
			}
		}
		if err := nc.Flush(); err != nil {
			b.Fatal(err)
		}
	}
}

// rawScatter is the baseline scatter-gather: subscribe to a reply subject,
// publish once, and count per×n answers in the subscription's callback
// without decoding them. It returns when every responder's first answer had
// arrived and when all had.
func (f *fleet) rawScatter(b *testing.B, subject string, payload []byte, per int) (first, all time.Duration) {
	b.Helper()
	inbox := protocol.DeployResponsesPrefix + protocol.NewID()
	want := per * f.n
	var got, firsts int
	firstDone, allDone := make(chan time.Duration, 1), make(chan time.Duration, 1)
	start := time.Now()
	sub, err := f.deployer.Subscribe(inbox, func(m *nats.Msg) {
		// Callbacks of one subscription run one at a time.
		got++
		if m.Data[0] == 'a' || per == 1 {
			if firsts++; firsts == f.n {
				firstDone <- time.Since(start)
			}
		}
		if got == want {
			allDone <- time.Since(start)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)
	if err := f.deployer.PublishRequest(subject, inbox, payload); err != nil {
		b.Fatal(err)
	}
	select {
	case all = <-allDone:
	case <-time.After(30 * time.Second):
		b.Fatalf("raw scatter-gather on %s: no %d answers within 30 s", subject, want)
	}
	return <-firstDone, all
}

// ourDeploy sends one deploy through the request half and returns when every
// host had accepted, when every host had completed, and when Send returned.
//
// ok is false when the accept window closed before every host had
// answered: the deploy then succeeds on the hosts it heard from, by the
// completion rule, and the round is not a measurement. Such rounds are
// counted in f.early; more than a few fail the benchmark.
func (f *fleet) ourDeploy(b *testing.B, subject string, n int) (accepted, completed, returned time.Duration, ok bool) {
	b.Helper()
	start := time.Now()
	acc := 0
	var last, gap time.Duration // the longest pause between two hosts' first answers
	res, err := deploy.Send(context.Background(), f.deployer, deploy.Request{Subject: subject, Action: protocol.ActionSwitch, Revision: "main"}, f.deploy, func(e tools.Event) {
		if e.Status == protocol.StatusAccepted {
			gap, last = max(gap, e.Elapsed-last), e.Elapsed
			if acc++; acc == n {
				accepted = time.Since(start)
			}
		}
		if e.Done == n && completed == 0 {
			completed = time.Since(start)
		}
	})
	returned = time.Since(start)
	if err == nil && res.Success && len(res.Hosts) < n {
		f.early = append(f.early, fmt.Sprintf("%d/%d", len(res.Hosts), n))
		if len(f.early) > 3 {
			b.Fatalf("the accept window (%s) closed early in %d rounds, after hearing from %v hosts", f.deploy.AcceptWindow, len(f.early), f.early)
		}
		time.Sleep(time.Second) // let the hosts it did not wait for finish
		return 0, 0, 0, false
	}
	if err != nil || res.Completed != n {
		b.Fatalf("deploy to %s: %d of %d completed after %s (longest pause between new hosts %s): %v %s", subject, res.Completed, n, returned, gap, err, res.Message)
	}
	return accepted, completed, returned, true
}

// earlyNote says how many rounds the accept window closed early, if any.
func (f *fleet) earlyNote() string {
	if len(f.early) == 0 {
		return ""
	}
	return fmt.Sprintf("; %d round(s) left out: a pause between two answers outlasted the window (hosts heard: %v)", len(f.early), f.early)
}

// settle lets the listeners leave their deploy slot (each flushes its
// connection after the final status) before the next round.
func settle() { time.Sleep(10 * time.Millisecond) }

// discover runs list_hosts over the fleet.
func discover(f *fleet) ([]listhosts.Host, error) {
	res, err := listhosts.Discover(context.Background(), f.deployer, "", protocol.DefaultDiscoverSubject, f.discover)
	return res.Hosts, err
}
