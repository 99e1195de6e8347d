package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
)

var ctx = context.Background()

func TestDeploySingleHostRunsExactArgv(t *testing.T) {
	t.Parallel()
	f := startFleet(t, defaultHosts, "echo building; exit 0", time.Minute)
	var rec recorder
	res, err := deploy.Send(ctx, f.deployer, deploy.Request{Subject: "deploy.test.testhost1", Action: "switch", Revision: "main"}, deps(f.deployer), rec.progress())
	if err != nil {
		t.Fatal(err)
	}
	if !res.Success || len(res.Hosts) != 1 || res.Hosts[0].Hostname != "testhost1" || res.Hosts[0].Status != protocol.StatusCompleted {
		t.Fatalf("result = %+v", res)
	}
	want := []string{"switch --flake " + flakeURL + "?ref=main#testhost1"}
	if got := f.calls(); !reflect.DeepEqual(got, want) {
		t.Fatalf("nixos-rebuild argv = %q, want %q", got, want)
	}
	if got := rec.statuses("testhost1"); !reflect.DeepEqual(got, []protocol.Status{"accepted", "started", "completed"}) {
		t.Fatalf("statuses = %v", got)
	}
}

func TestDeployCommitUsesRev(t *testing.T) {
	t.Parallel()
	f := startFleet(t, defaultHosts[:1], "exit 0", time.Minute)
	commit := "0123456789abcdef0123456789abcdef01234567"
	res, err := deploy.Send(ctx, f.deployer, deploy.Request{Subject: "deploy.test.testhost1", Action: "boot", Revision: commit}, deps(f.deployer), nil)
	if err != nil || !res.Success {
		t.Fatalf("%+v %v", res, err)
	}
	want := []string{"boot --flake " + flakeURL + "?rev=" + commit + "#testhost1"}
	if got := f.calls(); !reflect.DeepEqual(got, want) {
		t.Fatalf("argv = %q, want %q", got, want)
	}
}

func TestDeployAllReachesOnlyThatTier(t *testing.T) {
	t.Parallel()
	f := startFleet(t, defaultHosts, "exit 0", time.Minute)
	res, err := deploy.Send(ctx, f.deployer, deploy.Request{Subject: "deploy.test.all", Action: "test", Revision: "main"}, deps(f.deployer), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range res.Hosts {
		names = append(names, h.Hostname+"="+string(h.Status))
	}
	if !res.Success || !reflect.DeepEqual(names, []string{"testhost1=completed", "testhost2=completed"}) {
		t.Fatalf("hosts = %v, result %+v", names, res)
	}
	calls := f.calls()
	slices.Sort(calls)
	want := []string{"test --flake " + flakeURL + "?ref=main#testhost1", "test --flake " + flakeURL + "?ref=main#testhost2"}
	if !reflect.DeepEqual(calls, want) {
		t.Fatalf("calls = %q, want %q (the prod host must not run)", calls, want)
	}
}

func TestDeployRole(t *testing.T) {
	t.Parallel()
	f := startFleet(t, defaultHosts, "exit 0", time.Minute)
	res, err := deploy.Send(ctx, f.admin, deploy.Request{Subject: "deploy.prod.role.web", Action: "dry-activate", Revision: "v1"}, deps(f.admin), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Success || len(res.Hosts) != 1 || res.Hosts[0].Hostname != "prodhost1" {
		t.Fatalf("result = %+v", res)
	}
	if got := f.calls(); len(got) != 1 || !strings.HasSuffix(got[0], "#prodhost1") || !strings.HasPrefix(got[0], "dry-activate ") {
		t.Fatalf("calls = %q", got)
	}
}

func TestDeployFailureCarriesOutput(t *testing.T) {
	t.Parallel()
	f := startFleet(t, defaultHosts[:1], "echo 'error: attribute missing in flake' >&2; exit 1", time.Minute)
	res, err := deploy.Send(ctx, f.deployer, deploy.Request{Subject: "deploy.test.testhost1", Action: "switch", Revision: "main"}, deps(f.deployer), nil)
	if err != nil {
		t.Fatal(err)
	}
	h := res.Hosts[0]
	if res.Success || !res.IsError() || h.Status != protocol.StatusFailed || h.Error != protocol.ErrBuildFailed || !strings.Contains(h.Message, "attribute missing in flake") {
		t.Fatalf("result = %+v", res)
	}
}

func TestDeployTimeoutKillsProcessTree(t *testing.T) {
	t.Parallel()
	// The stand-in forks a child and waits: both must die at the timeout.
	body := `dir=$(dirname "$0"); sleep 300 & echo $! > "$dir/child.pid"; echo $$ > "$dir/parent.pid"; wait`
	f := startFleet(t, defaultHosts[:1], body, 700*time.Millisecond)
	res, err := deploy.Send(ctx, f.deployer, deploy.Request{Subject: "deploy.test.testhost1", Action: "switch", Revision: "main"}, deps(f.deployer), nil)
	if err != nil {
		t.Fatal(err)
	}
	if h := res.Hosts[0]; h.Status != protocol.StatusFailed || h.Error != protocol.ErrTimeout {
		t.Fatalf("result = %+v", res)
	}
	for _, name := range []string{"parent.pid", "child.pid"} {
		pid, err := strconv.Atoi(strings.TrimSpace(readFile(t, filepath.Join(f.standIn, name))))
		if err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 10*time.Second, func() bool { return !alive(pid) }, "%s %d still running after the timeout", name, pid)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b))
	return len(fields) > 2 && fields[2] != "Z"
}

func TestSecondDeployIsAlreadyRunning(t *testing.T) {
	t.Parallel()
	// The first deploy blocks until the test creates the release file.
	body := `dir=$(dirname "$0"); while [ ! -f "$dir/release" ]; do sleep 0.05; done`
	f := startFleet(t, defaultHosts[:1], body, time.Minute)
	first := make(chan deploy.Result, 1)
	started := make(chan struct{})
	var once sync.Once
	go func() {
		var rec recorder
		p := rec.progress()
		res, _ := deploy.Send(ctx, f.deployer, deploy.Request{Subject: "deploy.test.testhost1", Action: "switch", Revision: "main"}, deps(f.deployer), func(e tools.Event) {
			p(e)
			if e.Status == protocol.StatusStarted {
				once.Do(func() { close(started) })
			}
		})
		first <- res
	}()
	<-started
	res, err := deploy.Send(ctx, f.deployer, deploy.Request{Subject: "deploy.test.testhost1", Action: "switch", Revision: "main"}, deps(f.deployer), nil)
	if err != nil {
		t.Fatal(err)
	}
	if h := res.Hosts[0]; h.Status != protocol.StatusRejected || h.Error != protocol.ErrAlreadyRunning {
		t.Fatalf("second deploy = %+v", res)
	}
	if err := os.WriteFile(filepath.Join(f.standIn, "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := <-first; !r.Success {
		t.Fatalf("first deploy = %+v", r)
	}
	if n := len(f.calls()); n != 1 {
		t.Fatalf("nixos-rebuild ran %d times, want 1", n)
	}
}

// rawRequest publishes data on subject as a hostile client would and returns
// the first terminal answer.
func rawRequest(t *testing.T, conn *protocol.Conn, subject string, data []byte, replyTo string) protocol.DeployResponse {
	t.Helper()
	sub, err := conn.SubscribeSync(protocol.BoundReply(replyTo, "*"))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := conn.PublishMsg(&nats.Msg{Subject: subject, Reply: replyTo, Data: data}); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("no answer to %s: %v", data, err)
		}
		var r protocol.DeployResponse
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		if r.Status.Terminal() {
			return r
		}
	}
}

func TestInvalidRequestsAreRejectedAndNothingRuns(t *testing.T) {
	t.Parallel()
	f := startFleet(t, defaultHosts[:1], "exit 0", time.Minute)
	cases := []struct {
		name string
		data string
		code protocol.ErrorCode
	}{
		{"unknown action", `{"action":"rm -rf","revision":"main","reply_to":"%s"}`, protocol.ErrInvalidAction},
		{"option revision", `{"action":"switch","revision":"--option x y","reply_to":"%s"}`, protocol.ErrInvalidRevision},
		{"fragment revision", `{"action":"switch","revision":"main#other","reply_to":"%s"}`, protocol.ErrInvalidRevision},
		{"query revision", `{"action":"switch","revision":"x?dir=/etc","reply_to":"%s"}`, protocol.ErrInvalidRevision},
		{"dotdot revision", `{"action":"switch","revision":"a..b","reply_to":"%s"}`, protocol.ErrInvalidRevision},
		{"empty revision", `{"action":"switch","revision":"","reply_to":"%s"}`, protocol.ErrInvalidRevision},
		{"unknown field", `{"action":"switch","revision":"main","reply_to":"%s","flake":"github:evil/x"}`, protocol.ErrInvalidRequest},
	}
	for i, c := range cases {
		reply := fmt.Sprintf("deploy.responses.t%d", i)
		r := rawRequest(t, f.deployer, "deploy.test.testhost1", []byte(fmt.Sprintf(c.data, reply)), reply)
		if r.Status != protocol.StatusRejected || r.Error != c.code || r.Message == "" {
			t.Errorf("%s: answer %+v, want rejected %s", c.name, r, c.code)
		}
	}
	if calls := f.calls(); len(calls) != 0 {
		t.Fatalf("nixos-rebuild ran for invalid requests: %q", calls)
	}
}

func TestReplayedRequestIDIsRejected(t *testing.T) {
	t.Parallel()
	f := startFleet(t, defaultHosts[:1], "exit 0", time.Minute)
	data := []byte(`{"id":"replay1","action":"switch","revision":"main","reply_to":"deploy.responses.replay1"}`)
	if r := rawRequest(t, f.deployer, "deploy.test.testhost1", data, "deploy.responses.replay1"); r.Status != protocol.StatusCompleted {
		t.Fatalf("first = %+v", r)
	}
	if r := rawRequest(t, f.deployer, "deploy.test.testhost1", data, "deploy.responses.replay1"); r.Status != protocol.StatusRejected || r.Error != protocol.ErrInvalidRequest {
		t.Fatalf("replay = %+v", r)
	}
	if n := len(f.calls()); n != 1 {
		t.Fatalf("nixos-rebuild ran %d times", n)
	}
}

func TestNoRespondersFailsAtOnce(t *testing.T) {
	t.Parallel()
	f := startFleet(t, defaultHosts[:1], "exit 0", time.Minute)
	start := time.Now()
	res, err := deploy.Send(ctx, f.deployer, deploy.Request{Subject: "deploy.test.nosuchhost", Action: "switch", Revision: "main"}, deps(f.deployer), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "no listener is subscribed to deploy.test.nosuchhost: check the target with list_hosts (homelab-deploy list-hosts)"; res.Success || len(res.Hosts) != 0 || res.Message != want {
		t.Fatalf("result = %+v\nwant message %q", res, want)
	}
	// Far below the 60 s ceiling: the answer came from the server, not a timer.
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("took %s", d)
	}
}

func TestTestCredentialCannotReachProd(t *testing.T) {
	t.Parallel()
	f := startFleet(t, defaultHosts, "exit 0", time.Minute)
	res, err := deploy.Send(ctx, f.deployer, deploy.Request{Subject: "deploy.prod.prodhost1", Action: "switch", Revision: "main"}, deps(f.deployer), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The message names the tier the credential may not deploy to, and
	// the subject the server refused.
	want := "this credential may not deploy to tier prod (the NATS server refused to let this credential publish to deploy.prod.prodhost1); use a credential allowed for that tier (the admin deployer for prod)"
	if res.Success || len(res.Hosts) != 0 || res.Message != want {
		t.Fatalf("result = %+v\nwant message %q", res, want)
	}
	if calls := f.calls(); len(calls) != 0 {
		t.Fatalf("a prod host ran nixos-rebuild: %q", calls)
	}
}

// A compromised host may publish anything under deploy.responses.: control
// characters (terminal escape sequences) never reach the result, and an
// answer under a hostname that is not one token is ignored.
func TestHostileResponsesAreCleaned(t *testing.T) {
	t.Parallel()
	f := startFleet(t, defaultHosts[:1], "exit 0", time.Minute)
	rogue := f.nats.Connect(t, "spy")
	_, err := rogue.Subscribe("deploy.test.rogue", func(m *nats.Msg) {
		var req protocol.DeployRequest
		_ = json.Unmarshal(m.Data, &req)
		for _, r := range []protocol.DeployResponse{
			{ID: req.ID, Hostname: "evil\x1b[2J", Status: protocol.StatusCompleted, Message: "ignored"},
			{ID: req.ID, Hostname: "rogue", Status: protocol.StatusCompleted, Message: "done\x1b[2J\x1b]0;owned\x07 \u009b31m"},
		} {
			b, _ := json.Marshal(r)
			_ = rogue.Publish(req.ReplyTo, b)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = rogue.Flush()
	res, err := deploy.Send(ctx, f.deployer, deploy.Request{Subject: "deploy.test.rogue", Action: "switch", Revision: "main"}, deps(f.deployer), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Hosts) != 1 || res.Hosts[0].Hostname != "rogue" {
		t.Fatalf("hosts = %+v", res.Hosts)
	}
	if msg := res.Hosts[0].Message; strings.ContainsAny(msg, "\x1b\x07\u009b") || !strings.HasPrefix(msg, "done") {
		t.Fatalf("message not cleaned: %q", msg)
	}
}

// After a deploy, the listener's discovery answer carries its outcome.
func TestDiscoveryShowsLastDeploy(t *testing.T) {
	t.Parallel()
	f := startFleet(t, defaultHosts[:1], `case "$*" in *ref=broken*) exit 1;; esac`, time.Minute)
	if res, _ := deploy.Send(ctx, f.deployer, deploy.Request{Subject: "deploy.test.testhost1", Action: "boot", Revision: "broken"}, deps(f.deployer), nil); res.Success {
		t.Fatalf("broken deploy succeeded: %+v", res)
	}
	hosts, err := listhosts.Discover(ctx, f.deployer, "", protocol.DefaultDiscoverSubject, listhosts.Options{Quiet: 200 * time.Millisecond})
	if err != nil || len(hosts.Hosts) != 1 {
		t.Fatalf("%+v %v", hosts, err)
	}
	l := hosts.Hosts[0].LastDeploy
	if l == nil || l.Action != "boot" || l.Revision != "broken" || l.Status != protocol.StatusFailed || l.Error != protocol.ErrBuildFailed || l.FinishedAt == "" {
		t.Fatalf("last deploy = %+v", l)
	}
}

// A credential that may publish deploys but not subscribe to their replies
// sends nothing: it could never hear the result, so no host must deploy.
func TestNothingIsSentWhenRepliesCannotBeHeard(t *testing.T) {
	t.Parallel()
	f := startFleet(t, defaultHosts[:1], "exit 0", time.Minute)
	seen, err := f.spy.SubscribeSync("deploy.test.testhost1")
	if err != nil || f.spy.Flush() != nil {
		t.Fatal(err)
	}
	half := f.nats.Connect(t, "half")
	res, err := deploy.Send(ctx, half, deploy.Request{Subject: "deploy.test.testhost1", Action: "switch", Revision: "main"}, deps(half), nil)
	prefix := "nothing was sent: the NATS server refused to let this credential subscribe to " + protocol.DeployResponsesPrefix + res.ID + " ("
	suffix := "); a deployer needs subscribe permission on deploy.responses.>"
	if err != nil || res.Success || !strings.HasPrefix(res.Message, prefix) || !strings.HasSuffix(res.Message, suffix) {
		t.Fatalf("result %+v, err %v", res, err)
	}
	// A sentinel from the same connection: one publisher's messages arrive
	// in order, so a request that did go out would come first.
	if err := half.Publish("deploy.test.testhost1", []byte("sentinel")); err != nil || half.Flush() != nil {
		t.Fatal(err)
	}
	if m, err := seen.NextMsg(30 * time.Second); err != nil || string(m.Data) != "sentinel" {
		t.Fatalf("first message on deploy.test.testhost1: %v %v; want the sentinel", m, err)
	}
	if calls := f.calls(); len(calls) != 0 {
		t.Fatalf("nixos-rebuild ran although the deployer could not hear the result: %q", calls)
	}
}
