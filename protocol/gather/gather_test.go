package gather

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// next reads one message of the call, or fails after a generous deadline
// (the messages come from the server at once; the deadline only stops a
// broken test from hanging).
func next[T any](t *testing.T, c *Call[T]) Msg[T] {
	t.Helper()
	select {
	case m := <-c.Msgs():
		return m
	case err := <-c.PublishRefused():
		t.Fatalf("publish refused: %v", err)
	case err := <-c.ReplyRefused():
		t.Fatalf("reply subscription refused: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no message on the reply subject")
	}
	return Msg[T]{}
}

var decodeDeploy = protocol.DecodeDeployResponse

func TestNoResponders(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t, testenv.User{Name: "deployer", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())})
	conn := n.Connect(t, "deployer")
	c, err := Start(conn, "deploy.test.nobody", protocol.DeployResponsesPrefix+protocol.NewID(), []byte(`{}`), decodeDeploy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if m := next(t, c); m.Kind != NoResponders || m.Size != 0 {
		t.Fatalf("first message = %+v, want no responders", m)
	}
	if c.Sent.IsZero() {
		t.Fatal("Sent not set")
	}
}

// startBigNATS starts a server whose max_payload lets through a message
// larger than protocol.MaxResponseSize (testenv's server stops at 1 MiB, as a
// default server does), with one credential that may do anything.
func startBigNATS(t *testing.T) *protocol.Conn {
	t.Helper()
	cred := testenv.NewCred(t, t.TempDir(), "any", protocol.Permissions{})
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		MaxPayload: 4 * protocol.MaxResponseSize, Nkeys: []*server.NkeyUser{{Nkey: cred.Public}}})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("embedded NATS server did not start")
	}
	t.Cleanup(s.Shutdown)
	conn, err := protocol.Connect(t.Context(), protocol.ConnectOptions{URLs: s.ClientURL(), NKeyFile: cred.SeedFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	return conn
}

// Every kind of answer a responder may send arrives classified, in order:
// an oversized one is flagged and not decoded, malformed JSON and an answer
// that fails its Clean check are flagged, a good one is decoded and cleaned.
func TestAnswersAreClassified(t *testing.T) {
	t.Parallel()
	conn := startBigNATS(t)
	good, _ := json.Marshal(protocol.DeployResponse{Hostname: "web1", Status: protocol.StatusCompleted, Message: "ok\x1b[2J"})
	unclean, _ := json.Marshal(protocol.DeployResponse{Hostname: "a.b", Status: protocol.StatusCompleted})
	oversized := append([]byte(`{"hostname":"big","message":"`), strings.Repeat("x", protocol.MaxResponseSize)...)
	oversized = append(oversized, `"}`...)
	if _, err := conn.Subscribe("req.x", func(m *nats.Msg) {
		for _, b := range [][]byte{oversized, []byte(`{"hostname":`), unclean, good} {
			_ = conn.Publish(m.Reply, b)
		}
	}); err != nil {
		t.Fatal(err)
	}
	c, err := Start(conn, "req.x", "reply."+protocol.NewID(), []byte(`{}`), decodeDeploy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, want := range []Kind{Oversized, Malformed, Malformed, Answer} {
		m := next(t, c)
		if m.Kind != want {
			t.Fatalf("message of %d bytes is %s, want %s (err %v)", m.Size, m.Kind, want, m.Err)
		}
		switch want {
		case Oversized:
			if m.Size != len(oversized) || m.Value.Hostname != "" {
				t.Fatalf("oversized message: %+v", m)
			}
		case Answer:
			if m.Value.Hostname != "web1" || m.Value.Message != "ok[2J" {
				t.Fatalf("answer = %+v", m.Value)
			}
		}
	}
}

// A credential that may not publish to the request subject learns it on
// PublishRefused, and no message arrives.
func TestPublishRefused(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t, testenv.User{Name: "deployer", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())})
	conn := n.Connect(t, "deployer")
	c, err := Start(conn, "deploy.prod.web1", protocol.DeployResponsesPrefix+protocol.NewID(), []byte(`{}`), decodeDeploy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case err := <-c.PublishRefused():
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), "deploy.prod.web1") {
			t.Fatalf("refusal = %v", err)
		}
	case m := <-c.Msgs():
		t.Fatalf("a message arrived: %+v", m)
	case <-time.After(30 * time.Second):
		t.Fatal("no refusal")
	}
}

// A credential that may publish but not subscribe to the reply subject gets
// a *SubscribeRefusedError, and the request is never published.
func TestReplySubscriptionRefusedSendsNothing(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t,
		testenv.User{Name: "half", Permissions: &protocol.Permissions{Publish: []string{"deploy.test.>"}, Subscribe: []string{"deploy.discover"}}},
		testenv.User{Name: "spy"})
	spy := n.Connect(t, "spy")
	seen, err := spy.SubscribeSync("deploy.test.web1")
	if err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	half := n.Connect(t, "half")
	replyTo := protocol.DeployResponsesPrefix + protocol.NewID()
	c, err := Start(half, "deploy.test.web1", replyTo, []byte("request"), decodeDeploy)
	var refused *SubscribeRefusedError
	if c != nil || !errors.As(err, &refused) || refused.Subject != replyTo || !errors.Is(err, nats.ErrPermissionViolation) {
		t.Fatalf("Start = %v, %v; want a *SubscribeRefusedError for %s", c, err, replyTo)
	}
	if !strings.HasPrefix(err.Error(), "nothing was sent: the NATS server refused to let this credential subscribe to "+replyTo) {
		t.Fatalf("message = %q", err)
	}
	// A sentinel from the same connection: messages of one publisher arrive
	// in order, so had the request gone out, the spy would see it first.
	if err := half.Publish("deploy.test.web1", []byte("sentinel")); err != nil {
		t.Fatal(err)
	}
	_ = half.Flush()
	m, err := seen.NextMsg(30 * time.Second)
	if err != nil || string(m.Data) != "sentinel" {
		t.Fatalf("first message on the request subject = %v, %v; want the sentinel", m, err)
	}
}

// Close may be called twice, and a call closed while answers keep coming
// does not block the subscription's callback.
func TestCloseWhileAnswersArrive(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t, testenv.User{Name: "any"})
	conn := n.Connect(t, "any")
	good, _ := json.Marshal(protocol.DeployResponse{Hostname: "web1", Status: protocol.StatusAccepted})
	if _, err := conn.Subscribe("req.many", func(m *nats.Msg) {
		for range 500 {
			_ = conn.Publish(m.Reply, good)
		}
	}); err != nil {
		t.Fatal(err)
	}
	c, err := Start(conn, "req.many", "reply."+protocol.NewID(), nil, decodeDeploy)
	if err != nil {
		t.Fatal(err)
	}
	if m := next(t, c); m.Kind != Answer {
		t.Fatalf("first = %+v", m)
	}
	c.Close()
	c.Close()
	// The connection still serves another call: its callback goroutine was
	// not left blocked on the closed call's channel.
	c2, err := Start(conn, "req.none", "reply."+protocol.NewID(), nil, decodeDeploy)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if m := next(t, c2); m.Kind != NoResponders {
		t.Fatalf("second call: %+v", m)
	}
}

// Answers on reply_to.<token> arrive with their sender; answers on the bare
// reply_to without one; a "no responders" status a sender publishes on its
// own subject is malformed, not the end of the request; and a sender token
// that is not one word never reaches the caller as an answer.
func TestSenderIsReadFromTheSubject(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t, testenv.User{Name: "any"})
	conn := n.Connect(t, "any")
	status := func(host string) []byte {
		b, _ := json.Marshal(protocol.DeployResponse{Hostname: host, Status: protocol.StatusAccepted})
		return b
	}
	// One publisher, one subject per step, and a flush after each: the
	// order of arrival is the order below.
	if _, err := conn.Subscribe("req.bound", func(m *nats.Msg) {
		steps := []*nats.Msg{
			{Subject: m.Reply + ".web1", Data: status("web1")},
			{Subject: m.Reply + ".web2", Header: nats.Header{"Status": []string{"503"}}},
			{Subject: m.Reply, Data: status("old1")},
		}
		for _, s := range steps {
			_ = conn.PublishMsg(s)
			_ = conn.Flush()
		}
	}); err != nil {
		t.Fatal(err)
	}
	replyTo := protocol.DeployResponsesPrefix + protocol.NewID()
	c, err := Start(conn, "req.bound", replyTo, nil, protocol.DecodeDeployStatus)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := map[string]Msg[protocol.DeployResponse]{}
	for range 3 {
		m := next(t, c)
		got[m.Subject] = m
	}
	if m := got[replyTo+".web1"]; m.Kind != Answer || m.Sender != "web1" || !m.Bound() || m.Value.Hostname != "web1" {
		t.Errorf("bound answer = %+v", m)
	}
	if m := got[replyTo+".web2"]; m.Kind != Malformed || m.Sender != "web2" || !strings.Contains(fmt.Sprint(m.Err), "only the NATS server sends one") {
		t.Errorf("a sender's no-responders status = %+v", m)
	}
	if m := got[replyTo]; m.Kind != Answer || m.Bound() || m.Value.Hostname != "old1" {
		t.Errorf("bare answer = %+v", m)
	}
}

// A credential that may subscribe to the bare reply subject but not below
// it could never hear a listener that binds its statuses: nothing is sent,
// and the refusal names the senders' subject.
func TestSenderSubscriptionRefusedSendsNothing(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t,
		testenv.User{Name: "narrow", Permissions: &protocol.Permissions{Publish: []string{"deploy.test.>"}, Subscribe: []string{"deploy.responses.*"}}},
		testenv.User{Name: "spy"})
	spy := n.Connect(t, "spy")
	seen, err := spy.SubscribeSync("deploy.test.web1")
	if err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	narrow := n.Connect(t, "narrow")
	replyTo := protocol.DeployResponsesPrefix + protocol.NewID()
	c, err := Start(narrow, "deploy.test.web1", replyTo, []byte("request"), decodeDeploy)
	var refused *SubscribeRefusedError
	if c != nil || !errors.As(err, &refused) || refused.Subject != replyTo+".*" {
		t.Fatalf("Start = %v, %v; want a *SubscribeRefusedError for %s.*", c, err, replyTo)
	}
	if err := narrow.Publish("deploy.test.web1", []byte("sentinel")); err != nil {
		t.Fatal(err)
	}
	_ = narrow.Flush()
	m, err := seen.NextMsg(30 * time.Second)
	if err != nil || string(m.Data) != "sentinel" {
		t.Fatalf("first message on the request subject = %v, %v; want the sentinel", m, err)
	}
}
