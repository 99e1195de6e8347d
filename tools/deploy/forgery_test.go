package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
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
)

// The attacks of issue 12 replayed against in-process listeners on an
// embedded NATS server whose users hold the permissions nats-config
// generates (protocol.ListenerPermissions and friends): a stolen listener
// credential forging another host's status, and a test deployer that
// learnt an admin's reply subject. The reply subject is handed to the
// attacker by a spy on the request subject: ids are unpredictable now, so
// this is the strongest case, a reply subject that leaked.

// gate holds a host's nixos-rebuild until the test opens it, then makes it
// succeed or fail.
type gate struct {
	open chan struct{}
	fail bool
	mu   sync.Mutex
	runs int
}

func (g *gate) exec(ctx context.Context, _ []string) (string, error) {
	g.mu.Lock()
	g.runs++
	g.mu.Unlock()
	if g.open != nil {
		select {
		case <-g.open:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if g.fail {
		return "error: the frobnicator is misaligned", errors.New("exit status 1")
	}
	return "", nil
}

func (g *gate) ran() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.runs
}

type forgeryFleet struct {
	nats  *testenv.NATS
	gates map[string]*gate
	log   *logWatch // the deployer's log
}

// logWatch is a log a test can wait on: each write wakes the waiter.
type logWatch struct {
	testenv.Buffer
	wrote chan struct{}
}

func (l *logWatch) Write(p []byte) (int, error) {
	n, err := l.Buffer.Write(p)
	select {
	case l.wrote <- struct{}{}:
	default:
	}
	return n, err
}

// startForgeryFleet starts listeners for testhost1, testhost2 (test) and
// dns1 (prod, role dns) with nats-config's permissions, plus the
// credentials of the attacks.
func startForgeryFleet(t *testing.T, gates map[string]*gate) *forgeryFleet {
	t.Helper()
	hosts := []host{{"testhost1", "test", ""}, {"testhost2", "test", "web"}, {"dns1", "prod", "dns"}}
	users := []testenv.User{
		{Name: "admin", Permissions: testenv.Ptr(protocol.AdminDeployerPermissions())},
		{Name: "test-deployer", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())},
		{Name: "spy"},
		// A second connection with testhost1's permissions: the stolen
		// listener credential.
		{Name: "stolen-testhost1", Permissions: testenv.ListenerPerms("test", "testhost1", "")},
	}
	for _, h := range hosts {
		users = append(users, testenv.User{Name: h.name, Permissions: testenv.ListenerPerms(h.tier, h.name, h.role)})
	}
	n := testenv.StartNATS(t, users...)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, h := range hosts {
		g := gates[h.name]
		if g == nil {
			g = &gate{}
			gates[h.name] = g
		}
		ready := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := listener.Run(ctx, listener.Config{
				Hostname: h.name, Tier: h.tier, Role: h.role, FlakeURL: flakeURL, Timeout: time.Minute,
				Conn: n.Connect(t, h.name), Exec: g.exec, Version: "test", ShutdownGrace: 5 * time.Second,
				Ready: func(*listener.Listener) { close(ready) }, Logger: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				t.Errorf("listener %s: %v", h.name, err)
			}
		}()
		<-ready
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	return &forgeryFleet{nats: n, gates: gates, log: &logWatch{wrote: make(chan struct{}, 1)}}
}

func (f *forgeryFleet) options() deploy.Options {
	return deploy.Options{Timeout: 5 * time.Minute, AcceptWindow: 300 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(f.log, nil))}
}

// learnRequest subscribes a spy to subject and returns a channel that
// receives the first request published there.
func (f *forgeryFleet) learnRequest(t *testing.T, subject string) <-chan protocol.DeployRequest {
	t.Helper()
	spy := f.nats.Connect(t, "spy")
	out := make(chan protocol.DeployRequest, 1)
	var once sync.Once
	if _, err := spy.Subscribe(subject, func(m *nats.Msg) {
		var req protocol.DeployRequest
		if json.Unmarshal(m.Data, &req) == nil {
			once.Do(func() { out <- req })
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitLog waits until the deployer's log holds want at least n times. The
// lines come from statuses already published; the deadline only stops a
// broken test from hanging.
func (f *forgeryFleet) waitLog(t *testing.T, want string, n int) {
	t.Helper()
	deadline := time.After(time.Minute)
	for strings.Count(f.log.String(), want) < n {
		select {
		case <-f.log.wrote:
		case <-deadline:
			t.Fatalf("the deployer's log never said %q %d times:\n%s", want, n, f.log.String())
		}
	}
}

type sent struct {
	res deploy.Result
	err error
}

func (f *forgeryFleet) send(t *testing.T, conn *protocol.Conn, subject string) <-chan sent {
	out := make(chan sent, 1)
	go func() {
		res, err := deploy.Send(context.Background(), conn, deploy.Request{Subject: subject, Action: protocol.ActionSwitch, Revision: "main"}, f.options(), nil)
		out <- sent{res, err}
	}()
	return out
}

// forge publishes a completed status naming host on subject with a
// stolen credential. With refused set it waits for the server's refusal
// and fails the test without one.
func forge(t *testing.T, conn *protocol.Conn, subject string, req protocol.DeployRequest, host, tier string, refused bool) {
	t.Helper()
	refusal, stop := conn.WatchPermission(subject)
	defer stop()
	data, _ := json.Marshal(protocol.DeployResponse{ID: req.ID, Hostname: host, Tier: tier, Status: protocol.StatusCompleted, Message: "nixos-rebuild switch of main completed in 1.0s", Action: req.Action, Revision: req.Revision})
	if err := conn.Publish(subject, data); err != nil {
		t.Fatal(err)
	}
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	if !refused {
		return
	}
	select {
	case err := <-refusal:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("forged status on %s: %v, want a permissions violation", subject, err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("the server let a stolen credential publish on %s", subject)
	}
}

func oneHost(t *testing.T, res deploy.Result) deploy.HostResult {
	t.Helper()
	if len(res.Hosts) != 1 {
		t.Fatalf("hosts %+v, want one", res.Hosts)
	}
	return res.Hosts[0]
}

// Attack (a): testhost1's credential publishes "completed" for dns1 on the
// reply subject of an admin's prod deploy to dns1. The server refuses the
// bare and dns1's subjects; on testhost1's own subject the deployer
// ignores a status naming dns1. The deploy reports dns1's real failure.
func TestStolenListenerCannotCompleteAnotherHost(t *testing.T) {
	t.Parallel()
	dns1 := &gate{open: make(chan struct{}), fail: true}
	f := startForgeryFleet(t, map[string]*gate{"dns1": dns1})
	learnt := f.learnRequest(t, "deploy.prod.dns1")
	done := f.send(t, f.nats.Connect(t, "admin"), "deploy.prod.dns1")
	req := <-learnt

	stolen := f.nats.Connect(t, "stolen-testhost1")
	forge(t, stolen, req.ReplyTo, req, "dns1", "prod", true)
	forge(t, stolen, protocol.BoundReply(req.ReplyTo, "dns1"), req, "dns1", "prod", true)
	forge(t, stolen, protocol.BoundReply(req.ReplyTo, "testhost1"), req, "dns1", "prod", false)
	f.waitLog(t, "it names host dns1 but came on the reply subject of testhost1", 1)
	close(dns1.open)

	s := <-done
	if s.err != nil {
		t.Fatal(s.err)
	}
	h := oneHost(t, s.res)
	if s.res.Success || h.Hostname != "dns1" || h.Status != protocol.StatusFailed || h.Error != protocol.ErrBuildFailed || !h.Verified {
		t.Fatalf("result %+v; want dns1's own verified failure", s.res)
	}
	if strings.Contains(s.res.Message, "not verified") {
		t.Errorf("message %q speaks of unverified statuses", s.res.Message)
	}
}

// Attack (b): in a group deploy to deploy.test.all, testhost1 forges
// testhost2's completion. It is not counted; testhost2's real failure
// stands and the deploy fails.
func TestGroupMemberCannotCompleteAnotherMember(t *testing.T) {
	t.Parallel()
	testhost2 := &gate{open: make(chan struct{}), fail: true}
	f := startForgeryFleet(t, map[string]*gate{"testhost2": testhost2})
	learnt := f.learnRequest(t, "deploy.test.all")
	done := f.send(t, f.nats.Connect(t, "admin"), "deploy.test.all")
	req := <-learnt

	stolen := f.nats.Connect(t, "stolen-testhost1")
	forge(t, stolen, req.ReplyTo, req, "testhost2", "test", true)
	forge(t, stolen, protocol.BoundReply(req.ReplyTo, "testhost2"), req, "testhost2", "test", true)
	forge(t, stolen, protocol.BoundReply(req.ReplyTo, "testhost1"), req, "testhost2", "test", false)
	f.waitLog(t, "it names host testhost2 but came on the reply subject of testhost1", 1)
	close(testhost2.open)

	s := <-done
	if s.err != nil {
		t.Fatal(s.err)
	}
	got := map[string]deploy.HostResult{}
	for _, h := range s.res.Hosts {
		got[h.Hostname] = h
	}
	if s.res.Success || len(got) != 2 || got["testhost1"].Status != protocol.StatusCompleted ||
		got["testhost2"].Status != protocol.StatusFailed || got["testhost2"].Error != protocol.ErrBuildFailed ||
		!got["testhost1"].Verified || !got["testhost2"].Verified {
		t.Fatalf("result %+v; want testhost1 completed and testhost2's own failure", s.res)
	}
	if !strings.Contains(s.res.Message, "1/2 host(s) completed; testhost2 failed (build_failed)") {
		t.Errorf("message %q", s.res.Message)
	}
}

// Attack (c): a test deployer that saw an admin's reply subject sends a
// deploy to a test host and a discovery request, both with that reply
// subject and id. The test host's statuses (not the target) and every
// listener's discovery answer (not a deploy status) are ignored: the prod
// result lists dns1 alone and ends as soon as dns1 completes.
func TestTestDeployerCannotPolluteAProdDeploy(t *testing.T) {
	t.Parallel()
	dns1 := &gate{open: make(chan struct{})}
	f := startForgeryFleet(t, map[string]*gate{"dns1": dns1})
	learnt := f.learnRequest(t, "deploy.prod.dns1")
	done := f.send(t, f.nats.Connect(t, "admin"), "deploy.prod.dns1")
	req := <-learnt

	td := f.nats.Connect(t, "test-deployer")
	dep, _ := json.Marshal(protocol.DeployRequest{ID: req.ID, Action: protocol.ActionSwitch, Revision: "main", ReplyTo: req.ReplyTo})
	disc, _ := json.Marshal(protocol.DiscoverRequest{ID: req.ID, ReplyTo: req.ReplyTo})
	for subject, data := range map[string][]byte{"deploy.test.testhost1": dep, protocol.DefaultDiscoverSubject: disc} {
		if err := td.Publish(subject, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := td.Flush(); err != nil {
		t.Fatal(err)
	}
	// testhost1 runs the test deployer's request (it may deploy the test
	// tier) and answers accepted, started, completed; three listeners
	// answer discovery.
	f.waitLog(t, "host testhost1 is not the target dns1", 3)
	f.waitLog(t, "looks like a discovery answer", 3)
	close(dns1.open)

	s := <-done
	if s.err != nil {
		t.Fatal(s.err)
	}
	h := oneHost(t, s.res)
	if !s.res.Success || h.Hostname != "dns1" || h.Status != protocol.StatusCompleted || !h.Verified {
		t.Fatalf("result %+v; want dns1 completed alone", s.res)
	}
	if f.gates["testhost1"].ran() != 1 {
		t.Errorf("testhost1 ran nixos-rebuild %d times, want once (the test deployer's request)", f.gates["testhost1"].ran())
	}
}

// olderListener answers deploys on subject as a listener of an earlier
// version did: every status on the bare reply subject.
func olderListener(t *testing.T, conn *protocol.Conn, subject, hostname, tier string) {
	t.Helper()
	if _, err := conn.Subscribe(subject, func(m *nats.Msg) {
		req, err := protocol.DecodeDeployRequest(m.Data)
		if err != nil {
			return
		}
		for _, st := range []protocol.Status{protocol.StatusAccepted, protocol.StatusStarted, protocol.StatusCompleted} {
			data, _ := json.Marshal(protocol.DeployResponse{ID: req.ID, Hostname: hostname, Tier: tier, Status: st, Message: string(st)})
			_ = conn.Publish(req.ReplyTo, data)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
}

// An older listener, on a server that still grants the older
// deploy.responses.> permission, answers on the bare reply subject: its
// statuses count, are marked unverified, and the summary says so and what
// to do.
func TestOlderListenerStatusesCountUnverified(t *testing.T) {
	t.Parallel()
	broad := &protocol.Permissions{Publish: []string{"deploy.responses.>"}, Subscribe: []string{"deploy.test.oldhost"}}
	n := testenv.StartNATS(t,
		testenv.User{Name: "admin", Permissions: testenv.Ptr(protocol.AdminDeployerPermissions())},
		testenv.User{Name: "oldhost", Permissions: broad})
	olderListener(t, n.Connect(t, "oldhost"), "deploy.test.oldhost", "oldhost", "test")
	f := &forgeryFleet{nats: n, log: &logWatch{wrote: make(chan struct{}, 1)}}
	s := <-f.send(t, n.Connect(t, "admin"), "deploy.test.oldhost")
	if s.err != nil {
		t.Fatal(s.err)
	}
	h := oneHost(t, s.res)
	if !s.res.Success || h.Status != protocol.StatusCompleted || h.Verified {
		t.Fatalf("result %+v; want oldhost completed, unverified", s.res)
	}
	for _, want := range []string{"not verified: oldhost", "an older listener", "deploy.responses.>", "nats-config"} {
		if !strings.Contains(s.res.Message, want) {
			t.Errorf("message %q lacks %q", s.res.Message, want)
		}
	}
}

// A server still configured with the older, broader deploy.responses.>
// listener permission lets any listener publish on <reply_to>.<any host>:
// there the subject proves nothing. What the deployer still refuses is a
// status on the bare reply subject for a host whose statuses came on its
// own; what it cannot refuse is a status on the host's own subject. This
// is the documented limit (docs/SECURITY.md): regenerate the server's
// authorization with nats-config.
func TestBroadPermissionMakesTheSubjectNoProof(t *testing.T) {
	t.Parallel()
	dns1 := &gate{open: make(chan struct{})}
	f := startForgeryFleet(t, map[string]*gate{"dns1": dns1})
	t.Cleanup(func() { close(dns1.open) }) // before the fleet's cleanup stops the listener
	learnt := f.learnRequest(t, "deploy.prod.dns1")
	accepted := make(chan struct{})
	var once sync.Once
	out := make(chan sent, 1)
	go func() {
		res, err := deploy.Send(context.Background(), f.nats.Connect(t, "admin"), deploy.Request{Subject: "deploy.prod.dns1", Action: protocol.ActionSwitch, Revision: "main"}, f.options(),
			func(e tools.Event) {
				if e.Host == "dns1" && e.Status == protocol.StatusStarted {
					once.Do(func() { close(accepted) })
				}
			})
		out <- sent{res, err}
	}()
	req := <-learnt
	<-accepted
	// The spy's credential may publish anywhere, as a listener credential
	// under the broad permission may under deploy.responses.
	stolen := f.nats.Connect(t, "spy")
	forge(t, stolen, req.ReplyTo, req, "dns1", "prod", false)
	f.waitLog(t, "it came on the bare reply subject, and dns1's statuses come on its own", 1)
	forge(t, stolen, protocol.BoundReply(req.ReplyTo, "dns1"), req, "dns1", "prod", false)
	s := <-out
	if s.err != nil {
		t.Fatal(s.err)
	}
	if h := oneHost(t, s.res); !s.res.Success || !h.Verified {
		t.Fatalf("result %+v: a forged status on dns1's own subject under a broad permission was expected to count", s.res)
	}
}
