package listhosts_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
)

func responder(t *testing.T, n *testenv.NATS, name, tier, role string) {
	t.Helper()
	conn := n.Connect(t, name)
	subs, _ := protocol.ExpandSubjects(protocol.DefaultDeploySubjects(), protocol.TemplateVars{Hostname: name, Tier: tier, Role: role})
	r := &listhosts.Responder{Hostname: name, Tier: tier, Role: role, Subjects: subs, Version: "v1", Busy: func() bool { return name == "dns1" },
		Publish: func(s string, d []byte) error { return conn.Publish(s, d) }}
	if _, err := conn.Subscribe(protocol.DefaultDiscoverSubject, func(m *nats.Msg) { r.Handle(m.Data) }); err != nil {
		t.Fatal(err)
	}
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestDiscover(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t,
		testenv.User{Name: "testhost1", Permissions: testenv.ListenerPerms("test", "testhost1", "")},
		testenv.User{Name: "dns1", Permissions: testenv.ListenerPerms("prod", "dns1", "dns")},
		testenv.User{Name: "deployer", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())})
	responder(t, n, "testhost1", "test", "")
	responder(t, n, "dns1", "prod", "dns")
	conn := n.Connect(t, "deployer")
	deps := listhosts.Options{Quiet: 200 * time.Millisecond}

	res, err := listhosts.Discover(context.Background(), conn, "", protocol.DefaultDiscoverSubject, deps)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(res.Hosts)
	want := "[{dns1 prod dns [deploy.prod.dns1 deploy.prod.all deploy.prod.role.dns] v1 true <nil> false  false <nil> <nil>} {testhost1 test  [deploy.test.testhost1 deploy.test.all] v1 false <nil> false  false <nil> <nil>}]"
	if got != want {
		t.Fatalf("hosts = %s\nwant    %s", got, want)
	}
	res, err = listhosts.Discover(context.Background(), conn, "test", protocol.DefaultDiscoverSubject, deps)
	if err != nil || len(res.Hosts) != 1 || res.Hosts[0].Hostname != "testhost1" {
		t.Fatalf("tier filter: %+v %v", res, err)
	}
	if _, err := listhosts.Discover(context.Background(), conn, "staging", protocol.DefaultDiscoverSubject, deps); err == nil {
		t.Fatal("tier staging accepted")
	}
}

func TestDiscoverWithNobodyListening(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t, testenv.User{Name: "deployer", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())})
	res, err := listhosts.Discover(context.Background(), n.Connect(t, "deployer"), "", protocol.DefaultDiscoverSubject, listhosts.Options{Quiet: 5 * time.Second, Max: 60 * time.Second})
	if err != nil || len(res.Hosts) != 0 || !strings.Contains(res.Message, "no host answered") {
		t.Fatalf("%+v %v", res, err)
	}
}

// A responder ignores requests whose reply subject is outside
// deploy.responses. and never publishes there.
func TestResponderIgnoresForeignReplySubjects(t *testing.T) {
	t.Parallel()
	var published []string
	r := &listhosts.Responder{Hostname: "h", Tier: "test", Publish: func(s string, _ []byte) error { published = append(published, s); return nil }}
	for _, data := range []string{`{"reply_to":"deploy.prod.all"}`, `{"reply_to":"_INBOX.x"}`, `{"reply_to":"deploy.responses.a.b"}`, `not json`, `{"reply_to":"deploy.responses.ok","extra":1}`} {
		r.Handle([]byte(data))
	}
	r.Handle([]byte(`{"reply_to":"deploy.responses.ok","tier":"prod"}`))
	r.Handle([]byte(`{"reply_to":"deploy.responses.ok"}`))
	if fmt.Sprint(published) != "[deploy.responses.ok.h]" {
		t.Fatalf("published to %q", published)
	}
}

// After a deploy, discovery reports its outcome: list-hosts shows what each
// host last ran.
func TestDiscoverReportsLastDeploy(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t,
		testenv.User{Name: "h", Permissions: testenv.ListenerPerms("test", "h", "")},
		testenv.User{Name: "deployer", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())})
	conn := n.Connect(t, "deployer")
	hconn := n.Connect(t, "h")
	want := &protocol.LastDeploy{Action: "switch", Revision: "main", Status: protocol.StatusFailed, Error: protocol.ErrBuildFailed, FinishedAt: "2026-11-26T18:00:00Z", DurationSeconds: 41}
	var last atomic.Pointer[protocol.LastDeploy]
	last.Store(want)
	r := &listhosts.Responder{Hostname: "h", Tier: "test", Subjects: []string{"deploy.test.h"}, Version: "v1",
		Last: last.Load, Publish: func(s string, d []byte) error { return hconn.Publish(s, d) }}
	if _, err := hconn.Subscribe(protocol.DefaultDiscoverSubject, func(m *nats.Msg) { r.Handle(m.Data) }); err != nil {
		t.Fatal(err)
	}
	_ = hconn.Flush()
	res, err := listhosts.Discover(context.Background(), conn, "", protocol.DefaultDiscoverSubject, listhosts.Options{Quiet: 200 * time.Millisecond})
	if err != nil || len(res.Hosts) != 1 || res.Hosts[0].LastDeploy == nil || *res.Hosts[0].LastDeploy != *want {
		t.Fatalf("%+v %v", res, err)
	}
	// A forged last deploy with a hostile revision is dropped, not shown.
	last.Store(&protocol.LastDeploy{Action: "switch", Revision: "-o\x1b[2J", Status: protocol.StatusCompleted})
	res, err = listhosts.Discover(context.Background(), conn, "", protocol.DefaultDiscoverSubject, listhosts.Options{Quiet: 200 * time.Millisecond})
	if err != nil || len(res.Hosts) != 1 || res.Hosts[0].LastDeploy != nil {
		t.Fatalf("%+v %v", res, err)
	}
}

// A credential that may not publish discovery, or may not hear its
// answers, gets an error that names what the server refused; in the second
// case no discovery request went out.
func TestDiscoverSaysWhatWasRefused(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t,
		testenv.User{Name: "builder", Permissions: testenv.Ptr(protocol.BuilderPermissions([]string{"fleet"}))},
		testenv.User{Name: "mute", Permissions: &protocol.Permissions{Publish: []string{"deploy.test.>"}, Subscribe: []string{"deploy.responses.>"}}})
	opts := listhosts.Options{Quiet: 5 * time.Second, Max: 60 * time.Second}

	_, err := listhosts.Discover(context.Background(), n.Connect(t, "mute"), "", protocol.DefaultDiscoverSubject, opts)
	if err == nil || !strings.HasPrefix(err.Error(), "the NATS server refused discovery on deploy.discover: ") {
		t.Fatalf("publish refused: err = %v", err)
	}
	_, err = listhosts.Discover(context.Background(), n.Connect(t, "builder"), "", protocol.DefaultDiscoverSubject, opts)
	if err == nil || !strings.HasPrefix(err.Error(), "nothing was sent: the NATS server refused to let this credential subscribe to deploy.responses.") ||
		!strings.HasSuffix(err.Error(), "; discovery needs subscribe permission on deploy.responses.>") {
		t.Fatalf("reply subscription refused: err = %v", err)
	}
}
