package deploy_test

import (
	"context"
	"encoding/json"
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
	fleetreg "github.com/homelab-deploy/homelab-deploy/tools/fleet"
)

// memberFleet is a JetStream server with listener credentials for web1,
// web2, web3 (test, role web), db4 (test, role db), and a test deployer.
func memberFleet(t *testing.T) *testenv.NATS {
	t.Helper()
	return testenv.StartNATSWith(t, testenv.JetStream(t),
		testenv.User{Name: "web1", Permissions: testenv.ListenerPerms("test", "web1", "web")},
		testenv.User{Name: "web2", Permissions: testenv.ListenerPerms("test", "web2", "web")},
		testenv.User{Name: "web3", Permissions: testenv.ListenerPerms("test", "web3", "web")},
		testenv.User{Name: "db4", Permissions: testenv.ListenerPerms("test", "db4", "db")},
		testenv.User{Name: "deployer", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())})
}

// runListener runs a real listener until the test ends or stop is called;
// heartbeat < 0 keeps it out of the registry.
func runListener(t *testing.T, n *testenv.NATS, host, role string, heartbeat time.Duration, exec deploy.Executor) (stop func()) {
	t.Helper()
	if exec == nil {
		exec = func(context.Context, []string) (string, error) { return "", nil }
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		_ = listener.Run(ctx, listener.Config{
			Hostname: host, Tier: "test", Role: role, FlakeURL: "git+file:///srv/cfg", Timeout: time.Minute,
			Conn: n.Connect(t, host), Exec: exec, Fleet: listener.FleetConfig{Heartbeat: heartbeat, SystemRoot: t.TempDir()},
			Ready: func(*listener.Listener) { close(ready) },
		})
	}()
	<-ready
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-exited }) }
	t.Cleanup(stop)
	return stop
}

// registered waits until the registry holds want entries of the test tier.
func registered(t *testing.T, conn *protocol.Conn, want int) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() bool {
		hosts, err := fleetreg.ReadTier(t.Context(), conn, "test", fleetreg.ReadOptions{})
		return err == nil && len(hosts) == want
	}, "the registry never held %d test hosts", want)
}

func hostSummary(res deploy.Result) string {
	var out []string
	for _, h := range res.Hosts {
		s := h.Hostname + "=" + string(h.Status)
		if h.Error != protocol.ErrNone {
			s += "/" + string(h.Error)
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// With the registry a group deploy knows its members: it ends as soon as
// each is terminal (the accept window here is an hour and is never
// waited), names the member that is offline with when it was last seen,
// and fails on it, unless offline members are skipped.
func TestGroupDeployWaitsForExactlyItsMembers(t *testing.T) {
	t.Parallel()
	n := memberFleet(t)
	for _, h := range []struct{ name, role string }{{"web1", "web"}, {"web2", "web"}, {"db4", "db"}} {
		runListener(t, n, h.name, h.role, time.Hour, nil)
	}
	runListener(t, n, "web3", "web", time.Hour, nil)() // registered, then stopped cleanly
	conn := n.Connect(t, "deployer")
	registered(t, conn, 4)
	opts := deploy.Options{Timeout: time.Hour, AcceptWindow: time.Hour}

	res, err := deploy.Send(t.Context(), conn, deploy.Request{Subject: "deploy.test.all", Action: "switch", Revision: "main"}, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := hostSummary(res); got != "db4=completed web1=completed web2=completed web3=failed/offline" || res.Success || res.Members != "registry" {
		t.Errorf("deploy.test.all: %s, success %v, members %q", got, res.Success, res.Members)
	}
	if web3 := res.Hosts[3]; !strings.Contains(web3.Message, "its listener stopped") || web3.LastSeen == "" {
		t.Errorf("web3: %+v", web3)
	}

	// The role deploy names exactly the role's members.
	res, err = deploy.Send(t.Context(), conn, deploy.Request{Subject: "deploy.test.role.web", Action: "switch", Revision: "main"}, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := hostSummary(res); got != "web1=completed web2=completed web3=failed/offline" {
		t.Errorf("deploy.test.role.web: %s", got)
	}

	// Offline members skipped: a success that says whom it left out.
	opts.SkipOffline = true
	res, err = deploy.Send(t.Context(), conn, deploy.Request{Subject: "deploy.test.role.web", Action: "switch", Revision: "main"}, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := hostSummary(res); got != "web1=completed web2=completed" || !res.Success || len(res.Skipped) != 1 || res.Skipped[0].Hostname != "web3" ||
		!strings.Contains(res.Message, "skipped offline: web3 (last seen ") {
		t.Errorf("skip offline: %s, success %v, skipped %+v, message %q", got, res.Success, res.Skipped, res.Message)
	}
	js, _ := json.Marshal(res)
	if !strings.Contains(string(js), `"skipped":[{"hostname":"web3","status":"skipped","error":"offline"`) {
		t.Errorf("JSON: %s", js)
	}
}

// A member the registry has online but that does not answer within the
// accept window is reported no_answer, and the deploy fails.
func TestSilentMemberIsNoAnswer(t *testing.T) {
	t.Parallel()
	n := memberFleet(t)
	runListener(t, n, "web1", "web", time.Hour, nil)
	// web2's entry is fresh, but nothing of it listens.
	w, err := fleetreg.NewWriter(fleetreg.WriterConfig{Conn: n.Connect(t, "web2"), Hostname: "web2", Tier: "test", Role: "web",
		Subjects: []string{"deploy.test.web2", "deploy.test.all", "deploy.test.role.web"}, Version: "v", Interval: time.Hour, System: fleetreg.SystemPaths{Root: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	w.Start(t.Context())
	conn := n.Connect(t, "deployer")
	registered(t, conn, 2)
	var events []tools.Event
	var mu sync.Mutex
	res, err := deploy.Send(t.Context(), conn, deploy.Request{Subject: "deploy.test.all", Action: "switch", Revision: "main"},
		deploy.Options{Timeout: time.Hour, AcceptWindow: 300 * time.Millisecond}, func(e tools.Event) { mu.Lock(); events = append(events, e); mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	if got := hostSummary(res); got != "web1=completed web2=failed/no_answer" || res.Success {
		t.Errorf("%s, success %v", got, res.Success)
	}
	if !strings.Contains(res.Hosts[1].Message, "no answer within 300ms") {
		t.Errorf("web2: %q", res.Hosts[1].Message)
	}
	mu.Lock()
	defer mu.Unlock()
	if last := events[len(events)-1]; last.Host == "" {
		t.Errorf("events %+v", events)
	}
}

// A host that answers without being a registered member is included and
// waited for; an offline member that answers after all deploys and counts.
func TestUnexpectedAnswersAreIncluded(t *testing.T) {
	t.Parallel()
	n := memberFleet(t)
	release := make(chan struct{})
	blocked := func(context.Context, []string) (string, error) { <-release; return "", nil }
	runListener(t, n, "web1", "web", time.Hour, blocked)
	// web3 registered and stopped: the registry has it offline...
	runListener(t, n, "web3", "web", time.Hour, nil)()
	conn := n.Connect(t, "deployer")
	registered(t, conn, 2)
	// ...but it runs again, without an entry; db4 never had one.
	runListener(t, n, "web3", "web", -1, nil)
	runListener(t, n, "db4", "db", -1, nil)
	var seen sync.Map
	var once sync.Once
	progress := func(e tools.Event) {
		if e.Status == protocol.StatusAccepted {
			seen.Store(e.Host, true)
		}
		_, a := seen.Load("web3")
		_, b := seen.Load("db4")
		if a && b {
			once.Do(func() { close(release) }) // web1 finishes once both answered
		}
	}
	res, err := deploy.Send(t.Context(), conn, deploy.Request{Subject: "deploy.test.all", Action: "switch", Revision: "main"},
		deploy.Options{Timeout: time.Hour, AcceptWindow: time.Hour}, progress)
	if err != nil {
		t.Fatal(err)
	}
	if got := hostSummary(res); got != "db4=completed web1=completed web3=completed" || !res.Success {
		t.Errorf("%s, success %v: %s", got, res.Success, res.Message)
	}
}

// Without a registry the accept window decides. A host that takes longer
// than the window to finish must not end the deploy before the answers
// queued behind its final status are read: here host b answers right
// after a's completed, which comes more than a window after a's first
// answer. (The window used to be counted from the last new host's first
// answer, so this deploy ended with a alone.)
func TestAcceptWindowCountsFromTheLastStatus(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t,
		testenv.User{Name: "fake"},
		testenv.User{Name: "deployer", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())})
	const window = 300 * time.Millisecond
	fake := n.Connect(t, "fake")
	status := func(req protocol.DeployRequest, host string, s protocol.Status) {
		data, _ := json.Marshal(protocol.DeployResponse{ID: req.ID, Hostname: host, Status: s, Tier: "test", Action: req.Action, Revision: req.Revision})
		if err := fake.Publish(req.ReplyTo, data); err != nil {
			t.Error(err)
		}
	}
	if _, err := fake.Subscribe("deploy.test.all", func(m *nats.Msg) {
		req, err := protocol.DecodeDeployRequest(m.Data)
		if err != nil {
			t.Error(err)
			return
		}
		status(req, "a", protocol.StatusAccepted)
		// a's rebuild takes longer than the window; the scenario, not a
		// synchronisation.
		time.Sleep(2 * window)
		status(req, "a", protocol.StatusCompleted)
		status(req, "b", protocol.StatusAccepted)
		status(req, "b", protocol.StatusCompleted)
	}); err != nil {
		t.Fatal(err)
	}
	if err := fake.Flush(); err != nil {
		t.Fatal(err)
	}
	res, err := deploy.Send(t.Context(), n.Connect(t, "deployer"), deploy.Request{Subject: "deploy.test.all", Action: "switch", Revision: "main"},
		deploy.Options{Timeout: time.Hour, AcceptWindow: window}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := hostSummary(res); got != "a=completed b=completed" || !res.Success || res.Members != "" {
		t.Errorf("%s, success %v, members %q", got, res.Success, res.Members)
	}
}

// Every member of the group is offline, so nobody is subscribed and the
// server answers "no responders" at once: the deploy still names the
// offline members from the registry (read while the request is out) and
// fails on them, rather than saying that no listener exists.
func TestAllMembersOfflineAreNamed(t *testing.T) {
	t.Parallel()
	n := memberFleet(t)
	runListener(t, n, "db4", "db", time.Hour, nil)() // registered, then stopped cleanly
	conn := n.Connect(t, "deployer")
	registered(t, conn, 1)
	res, err := deploy.Send(t.Context(), conn, deploy.Request{Subject: "deploy.test.role.db", Action: "switch", Revision: "main"},
		deploy.Options{Timeout: time.Hour, AcceptWindow: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := hostSummary(res); got != "db4=failed/offline" || res.Success || res.Members != "registry" || strings.Contains(res.Message, "no listener") {
		t.Errorf("%s, success %v, members %q, message %q", got, res.Success, res.Members, res.Message)
	}
	// Skipped, there is nobody left to deploy to: that is said plainly.
	res, err = deploy.Send(t.Context(), conn, deploy.Request{Subject: "deploy.test.role.db", Action: "switch", Revision: "main"},
		deploy.Options{Timeout: time.Hour, AcceptWindow: time.Hour, SkipOffline: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Hosts) != 0 || !strings.Contains(res.Message, "no listener is subscribed") || len(res.Skipped) != 1 {
		t.Errorf("skip offline: hosts %+v, skipped %+v, message %q", res.Hosts, res.Skipped, res.Message)
	}
}
