package deploy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

const signedSubject = "deploy.test.h1"

func newKey(t *testing.T) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return kp, pub
}

// signRig is a deploy server whose nixos-rebuild, replies and log are
// recorded.
type signRig struct {
	srv     *Server
	replies chan protocol.DeployResponse
	log     *testenv.Buffer
	mu      sync.Mutex
	argv    [][]string
	// hold, when set, keeps nixos-rebuild running until it is closed.
	hold chan struct{}
}

func newSignRig(t *testing.T, trusted protocol.TrustedKeys) *signRig {
	t.Helper()
	r := &signRig{replies: make(chan protocol.DeployResponse, 64), log: &testenv.Buffer{}}
	srv, err := NewServer(ServerConfig{
		Hostname: "h1", Tier: "test", FlakeURL: "git+file:///srv/cfg", Trusted: trusted,
		Logger: slog.New(slog.NewJSONHandler(r.log, nil)),
		Exec: func(_ context.Context, argv []string) (string, error) {
			r.mu.Lock()
			r.argv = append(r.argv, argv)
			hold := r.hold
			r.mu.Unlock()
			if hold != nil {
				<-hold
			}
			return "", nil
		},
		Publish: func(_ string, data []byte) error {
			var resp protocol.DeployResponse
			if err := json.Unmarshal(data, &resp); err != nil {
				t.Errorf("reply %s: %v", data, err)
			}
			r.replies <- resp
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.srv = srv
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return r
}

// final returns the statuses up to the terminal one.
func (r *signRig) final(t *testing.T) []protocol.DeployResponse {
	t.Helper()
	var out []protocol.DeployResponse
	for {
		select {
		case resp := <-r.replies:
			out = append(out, resp)
			if resp.Status.Terminal() {
				return out
			}
		case <-time.After(time.Minute):
			t.Fatalf("no final status; got %+v", out)
		}
	}
}

func (r *signRig) calls() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]string(nil), r.argv...)
}

// audits returns the audit lines logged so far, decoded.
func (r *signRig) audits(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(r.log.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if m["msg"] == "audit" {
			out = append(out, m)
		}
	}
	return out
}

func request(id string) []byte {
	b, _ := json.Marshal(protocol.DeployRequest{ID: id, Action: protocol.ActionSwitch, Revision: "main", ReplyTo: protocol.DeployResponsesPrefix + id})
	return b
}

func sign(t *testing.T, kp nkeys.KeyPair, subject string, body []byte, at time.Time) nats.Header {
	t.Helper()
	h, err := protocol.Sign(kp, subject, body, at)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// With trusted deployers, every request that is not signed by one of them
// is rejected with unauthorized, nixos-rebuild never runs, and each
// refusal is one audit line.
func TestTrustedDeployersRefuseOtherRequests(t *testing.T) {
	t.Parallel()
	trustedKP, trustedPub := newKey(t)
	otherKP, otherPub := newKey(t)
	now := time.Now()
	body := request("req1")
	cases := []struct {
		name    string
		subject string
		header  nats.Header
		body    []byte
		claimed string // claimed_key in the audit line
		reason  string
	}{
		{"unsigned", signedSubject, nil, body, "", "not signed"},
		{"signed by a key that is not trusted", signedSubject, sign(t, otherKP, signedSubject, body, now), body, otherPub, "not a trusted deployer"},
		{"body changed after signing", signedSubject, sign(t, trustedKP, signedSubject, body, now),
			[]byte(strings.Replace(string(body), `"main"`, `"evil"`, 1)), trustedPub, "does not match"},
		{"signed for another subject", signedSubject, sign(t, trustedKP, "deploy.test.h2", body, now), body, trustedPub, "another subject"},
		{"expired", signedSubject, sign(t, trustedKP, signedSubject, body, now.Add(-10*time.Minute)), body, trustedPub, "expired"},
		{"issued in the future", signedSubject, sign(t, trustedKP, signedSubject, body, now.Add(5*time.Minute)), body, trustedPub, "ahead of this host's clock"},
		{"signed without an id", signedSubject, sign(t, trustedKP, signedSubject, []byte(`{"action":"switch","revision":"main","reply_to":"deploy.responses.x"}`), now),
			[]byte(`{"action":"switch","revision":"main","reply_to":"deploy.responses.x"}`), trustedPub, "must carry an id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := newSignRig(t, protocol.TrustedKeys{trustedPub: {}})
			r.srv.HandleMsg(c.subject, c.header, c.body)
			got := r.final(t)
			if len(got) != 1 || got[0].Status != protocol.StatusRejected || got[0].Error != protocol.ErrUnauthorized || !strings.Contains(got[0].Message, c.reason) {
				t.Fatalf("statuses %+v, want one rejected/unauthorized mentioning %q", got, c.reason)
			}
			if calls := r.calls(); len(calls) != 0 {
				t.Fatalf("nixos-rebuild ran for a refused request: %q", calls)
			}
			a := r.audits(t)
			if len(a) != 1 {
				t.Fatalf("audit lines %v, want exactly one", a)
			}
			if a[0]["caller"] != "unsigned" || a[0]["status"] != "rejected" || a[0]["error_code"] != "unauthorized" || a[0]["subject"] != c.subject {
				t.Errorf("audit line %v", a[0])
			}
			if c.claimed != "" && a[0]["claimed_key"] != c.claimed {
				t.Errorf("audit line claimed_key = %v, want %s", a[0]["claimed_key"], c.claimed)
			}
			if r.srv.LastDeploy() != nil {
				t.Errorf("a refused request became the last deploy: %+v", r.srv.LastDeploy())
			}
		})
	}
}

// A request signed by a trusted deployer runs; the audit line, the running
// deploy and the last deploy name its key.
func TestTrustedDeployerRuns(t *testing.T) {
	t.Parallel()
	kp, pub := newKey(t)
	r := newSignRig(t, protocol.TrustedKeys{pub: {}})
	r.hold = make(chan struct{})
	body := request("req2")
	r.srv.HandleMsg(signedSubject, sign(t, kp, signedSubject, body, time.Now()), body)

	if first := <-r.replies; first.Status != protocol.StatusAccepted {
		t.Fatalf("first status %+v, want accepted", first)
	}
	run := r.srv.Running()
	if run == nil || run.Caller != pub || run.ID != "req2" || run.Subject != signedSubject || run.Action != protocol.ActionSwitch {
		t.Fatalf("Running() = %+v, want req2 by %s", run, pub)
	}
	close(r.hold)
	got := r.final(t)
	if last := got[len(got)-1]; last.Status != protocol.StatusCompleted {
		t.Fatalf("statuses %+v, want completed", got)
	}
	want := "nixos-rebuild switch --flake git+file:///srv/cfg?ref=main#h1"
	if calls := r.calls(); len(calls) != 1 || strings.Join(calls[0], " ") != want {
		t.Fatalf("argv %q, want %q", calls, want)
	}
	a := r.audits(t)
	if len(a) != 1 {
		t.Fatalf("audit lines %v, want one", a)
	}
	for k, v := range map[string]any{"id": "req2", "caller": pub, "subject": signedSubject, "action": "switch", "revision": "main", "status": "completed", "error_code": ""} {
		if a[0][k] != v {
			t.Errorf("audit %s = %v, want %v (line %v)", k, a[0][k], v, a[0])
		}
	}
	if _, ok := a[0]["duration"].(float64); !ok {
		t.Errorf("audit line has no duration: %v", a[0])
	}
	if l := r.srv.LastDeploy(); l == nil || l.Caller != pub {
		t.Errorf("LastDeploy() = %+v, want caller %s", l, pub)
	}
	if r.srv.Running() != nil {
		t.Errorf("Running() = %+v after the deploy finished", r.srv.Running())
	}
}

// Without trusted deployers an unsigned request runs (older deployers) and
// is audited as unsigned, a validly signed one names its key, and a bad
// signature is still refused.
func TestNoTrustedDeployers(t *testing.T) {
	t.Parallel()
	kp, pub := newKey(t)

	r := newSignRig(t, nil)
	r.srv.HandleMsg(signedSubject, nil, request("u1"))
	if got := r.final(t); got[len(got)-1].Status != protocol.StatusCompleted {
		t.Fatalf("unsigned: %+v, want completed", got)
	}
	if a := r.audits(t); len(a) != 1 || a[0]["caller"] != "unsigned" || a[0]["status"] != "completed" {
		t.Fatalf("unsigned: audit %v", a)
	}
	if l := r.srv.LastDeploy(); l == nil || l.Caller != "" {
		t.Fatalf("unsigned: LastDeploy %+v, want no caller", l)
	}

	body := request("s1")
	r.srv.HandleMsg(signedSubject, sign(t, kp, signedSubject, body, time.Now()), body)
	if got := r.final(t); got[len(got)-1].Status != protocol.StatusCompleted {
		t.Fatalf("signed: %+v, want completed", got)
	}
	if l := r.srv.LastDeploy(); l == nil || l.Caller != pub {
		t.Fatalf("signed: LastDeploy %+v, want caller %s", l, pub)
	}

	body = request("s2")
	h := sign(t, kp, signedSubject, body, time.Now())
	r.srv.HandleMsg(signedSubject, h, []byte(strings.Replace(string(body), "switch", "boot", 1)))
	if got := r.final(t); len(got) != 1 || got[0].Error != protocol.ErrUnauthorized {
		t.Fatalf("bad signature: %+v, want rejected/unauthorized", got)
	}
	if n := len(r.calls()); n != 2 {
		t.Fatalf("nixos-rebuild ran %d times, want 2 (the bad signature ran nothing)", n)
	}
	if a := r.audits(t); len(a) != 3 || a[2]["error_code"] != "unauthorized" {
		t.Fatalf("audit lines %v, want a third one for the refusal", a)
	}
}

// Every other rejection is audited too, with the request's fields, and a
// request without a usable reply subject is audited as dropped.
func TestAuditOfOtherOutcomes(t *testing.T) {
	t.Parallel()
	r := newSignRig(t, nil)
	r.srv.HandleMsg(signedSubject, nil, []byte(`{"id":"b1","action":"reboot","revision":"main","reply_to":"deploy.responses.b1"}`))
	if got := r.final(t); got[0].Error != protocol.ErrInvalidAction {
		t.Fatalf("%+v", got)
	}
	r.srv.HandleMsg(signedSubject, nil, []byte(`{"id":"b2","action":"switch","revision":"main","reply_to":"_INBOX.x"}`))
	a := r.audits(t)
	if len(a) != 2 {
		t.Fatalf("audit lines %v, want two", a)
	}
	if a[0]["id"] != "b1" || a[0]["action"] != "reboot" || a[0]["status"] != "rejected" || a[0]["error_code"] != "invalid_action" {
		t.Errorf("invalid action audit %v", a[0])
	}
	if a[1]["status"] != "dropped" || a[1]["caller"] != "unsigned" {
		t.Errorf("dropped request audit %v", a[1])
	}
	if len(r.calls()) != 0 {
		t.Errorf("nixos-rebuild ran: %q", r.calls())
	}
}

// A request over the size cap is dropped unparsed, signed or not, and is
// audited as dropped; nothing runs.
func TestOversizedRequestIsDropped(t *testing.T) {
	t.Parallel()
	kp, pub := newKey(t)
	r := newSignRig(t, protocol.TrustedKeys{pub: {}})
	body := []byte(`{"id":"big","action":"switch","revision":"main","reply_to":"deploy.responses.big","x":"` + strings.Repeat("a", protocol.MaxMessageSize) + `"}`)
	r.srv.HandleMsg(signedSubject, sign(t, kp, signedSubject, body, time.Now()), body)
	a := r.audits(t)
	if len(a) != 1 || a[0]["status"] != "dropped" || a[0]["error_code"] != "invalid_request" {
		t.Fatalf("audit lines %v, want one dropped/invalid_request", a)
	}
	select {
	case resp := <-r.replies:
		t.Fatalf("an oversized request was answered: %+v", resp)
	default:
	}
	if len(r.calls()) != 0 {
		t.Fatalf("nixos-rebuild ran: %q", r.calls())
	}
}

// A summary names at most 20 hosts that did not complete, then says how
// many more there are; the hosts themselves all stay in the result.
func TestVerdictNamesAFewHostsThenCounts(t *testing.T) {
	res := Result{Action: protocol.ActionSwitch, Subject: "deploy.prod.all"}
	for i := range 25 {
		res.Hosts = append(res.Hosts, HostResult{Hostname: fmt.Sprintf("h%02d", i), Status: protocol.StatusFailed, Error: ErrNoAnswer})
	}
	res.Failed = 25
	got := verdict(&res)
	if !strings.Contains(got, "0/25 host(s) completed; h00 failed (no_answer)") || !strings.Contains(got, "h19 failed (no_answer), and 5 more") ||
		strings.Contains(got, "h20") || res.Success || len(res.Hosts) != 25 {
		t.Errorf("verdict %q (success %v, %d hosts)", got, res.Success, len(res.Hosts))
	}
}
