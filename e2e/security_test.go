package e2e

// Security: hostile input through every door (CLI arguments, raw messages on
// NATS), permission denials logged by our clients, seed files. Each test is
// a row of docs/SECURITY.md.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// hostileRevisions are branches and revisions that must never reach
// nixos-rebuild or nix: options, flake-URL fragments and queries, parent
// paths, look-alikes, nothing, and too much.
var hostileRevisions = []string{
	"-o",
	"--option x y",
	"main#other",
	"x?dir=/etc",
	"ref&rev=0",
	"a..b",
	"m\u0430in",    // Cyrillic а
	"\uff4dain",    // fullwidth ｍ
	"main\u200b",   // zero-width space
	"main\nsecond", // a second line
	"",             // empty
	strings.Repeat("a", 300),
}

// hostileTokens are hostnames, roles, tiers and repos that are not one
// subject token.
var hostileTokens = []string{"a.b", "*", ">", "my host", "h\u0430st", ""}

// secFleet is Debian's nats-server with SPEC's credentials plus an
// allow-all spy, the listeners testhost1 (test) and dns1 (prod, role dns),
// and a builder for the repository fleet, every executor a recording
// stand-in.
type secFleet struct {
	nats      *NATSServer
	creds     map[string]testenv.Cred
	rebuild   map[string]string // host -> nixos-rebuild stand-in dir
	nix       string            // nix stand-in dir
	listeners map[string]*Proc
	builder   *Proc
	spy       *spy
}

func startSecFleet(t *testing.T, extraArgs ...string) *secFleet {
	t.Helper()
	dir := t.TempDir()
	f := &secFleet{creds: map[string]testenv.Cred{}, rebuild: map[string]string{}, listeners: map[string]*Proc{}}
	add := func(name string, p protocol.Permissions) { f.creds[name] = testenv.NewCred(t, dir, name, p) }
	add("testhost1", *testenv.ListenerPerms("test", "testhost1", ""))
	add("dns1", *testenv.ListenerPerms("prod", "dns1", "dns"))
	add("deployer", protocol.TestDeployerPermissions())
	add("admin", protocol.AdminDeployerPermissions())
	add("build-client", protocol.BuildClientPermissions([]string{"fleet"}))
	add("builder", protocol.BuilderPermissions([]string{"fleet"}))
	add("spy", allowAll)
	var all []testenv.Cred
	for _, c := range f.creds {
		all = append(all, c)
	}
	f.nats = startNATSServer(t, all...)
	f.spy = startSpy(t, f.nats.URL, f.creds["spy"])

	for _, h := range []struct{ name, tier, role string }{{"testhost1", "test", ""}, {"dns1", "prod", "dns"}} {
		f.rebuild[h.name] = testenv.StandIn(t, "nixos-rebuild", "echo activating")
		args := append([]string{"listener", "--hostname", h.name, "--tier", h.tier, "--nats-url", f.nats.URL,
			"--nkey-file", f.creds[h.name].SeedFile, "--flake-url", e2eFlake, "--log-format", "text"}, extraArgs...)
		if h.role != "" {
			args = append(args, "--role", h.role)
		}
		f.listeners[h.name] = startDaemon(t, baseEnv(f.rebuild[h.name]), args...)
	}
	f.nix = nixStandIn(t, false)
	f.builder = startDaemon(t, baseEnv(f.nix), append([]string{"builder", "--nats-url", f.nats.URL,
		"--nkey-file", f.creds["builder"].SeedFile, "--config", builderConfig(t), "--log-format", "text"}, extraArgs...)...)
	for _, p := range f.listeners {
		p.WaitFor(t, "listener ready", 20*time.Second)
	}
	f.builder.WaitFor(t, "builder ready", 20*time.Second)
	return f
}

// env is a CLI environment with cred. The spy subscribes to everything, so
// the server never answers "no responders": a generous timeout keeps a
// failing case from waiting the default 15 minutes.
func (f *secFleet) env(cred string, extra ...string) []string {
	return append(baseEnv(), append([]string{
		"HOMELAB_DEPLOY_NATS_URL=" + f.nats.URL,
		"HOMELAB_DEPLOY_NKEY_FILE=" + f.creds[cred].SeedFile,
		"HOMELAB_DEPLOY_TIMEOUT=60", "HOMELAB_DEPLOY_BUILD_TIMEOUT=60",
	}, extra...)...)
}

// executorCalls returns every recorded nixos-rebuild and nix call made for
// a request; the builder's start-up check of nix (show-config) is not one.
func (f *secFleet) executorCalls() []string {
	var out []string
	for h, d := range f.rebuild {
		for _, c := range testenv.Calls(d) {
			out = append(out, h+": nixos-rebuild "+c)
		}
	}
	for _, c := range testenv.Calls(f.nix) {
		if c != "show-config" {
			out = append(out, "nix "+c)
		}
	}
	return out
}

// settle publishes a marker with the spy's credential and waits until the
// spy has seen it: every message published before is then recorded.
func (f *secFleet) settle(t *testing.T) {
	t.Helper()
	conn := connectAs(t, f.nats.URL, f.creds["spy"])
	marker := "spy.marker." + protocol.NewID()
	if err := conn.Publish(marker, nil); err != nil {
		t.Fatal(err)
	}
	_ = conn.Flush()
	testenv.Eventually(t, 10*time.Second, func() bool {
		for _, s := range f.spy.subjects() {
			if s == marker {
				return true
			}
		}
		return false
	}, "the spy never saw its marker")
}

// TestHostileCLIArguments: every hostile argument is refused with exit 2
// before anything is sent: the spy sees no message at all and no executor
// runs.
func TestHostileCLIArguments(t *testing.T) {
	f := startSecFleet(t)
	type cliCase struct {
		cred string
		args []string
		want string // the error names what is wrong
	}
	var cases []cliCase
	listenerArgs := func(extra ...string) []string {
		return append([]string{"listener", "--nats-url", f.nats.URL, "--nkey-file", f.creds["testhost1"].SeedFile, "--flake-url", e2eFlake}, extra...)
	}
	for _, rev := range hostileRevisions {
		cases = append(cases, cliCase{"deployer", []string{"deploy", "deploy.test.testhost1", "--branch=" + rev}, "revision"})
		if rev != "" { // an empty --branch means the repository's default
			cases = append(cases, cliCase{"build-client", []string{"build", "fleet", "--all", "--branch=" + rev}, "revision"})
		}
	}
	for _, tok := range hostileTokens {
		if tok != "a.b" {
			// deploy.test.a.b is not refused: it is a custom group subject
			// (listeners may subscribe to any --deploy-subject), sent as
			// typed and answered by nobody but such listeners.
			cases = append(cases,
				cliCase{"deployer", []string{"deploy", "deploy.test." + tok}, "subject"},
				cliCase{"admin", []string{"deploy", "deploy." + tok + ".testhost1"}, "subject"},
			)
		}
		cases = append(cases,
			cliCase{"admin", []string{"deploy", "deploy.prod.role." + tok}, "role"},
			cliCase{"build-client", []string{"build", tok, "--all"}, "repo"},
			cliCase{"build-client", []string{"build", "fleet", tok}, "host"},
		)
		if tok != "" { // an empty --tier means every tier
			cases = append(cases, cliCase{"deployer", []string{"list-hosts", "--tier=" + tok}, "tier"})
		}
		if tok != "" { // --flag= with nothing after it is the flag parser's to refuse
			cases = append(cases,
				cliCase{"testhost1", listenerArgs("--hostname="+tok, "--tier", "test"), "hostname"},
				cliCase{"testhost1", listenerArgs("--hostname", "testhost1", "--tier="+tok), "tier"},
				cliCase{"testhost1", listenerArgs("--hostname", "testhost1", "--tier", "test", "--role="+tok), "role"},
			)
		}
	}
	cases = append(cases,
		cliCase{"testhost1", listenerArgs("--hostname", "all", "--tier", "test"), "reserved"},
		cliCase{"testhost1", listenerArgs("--hostname", "testhost1", "--tier", "test", "--deploy-subject", "deploy.>"), "deploy-subject"},
	)
	cases = append(cases,
		cliCase{"deployer", []string{"deploy", "deploy.test.role"}, "role"},
		cliCase{"deployer", []string{"deploy", "deploy.responses.x"}, "reserved"},
		cliCase{"deployer", []string{"deploy", "deploy.discover"}, "subject"},
		cliCase{"deployer", []string{"deploy", "deploy.test.testhost1", "--action", "reboot"}, "action"},
		cliCase{"deployer", []string{"deploy", "deploy.test.testhost1", "--action=switch --option x y"}, "action"},
		cliCase{"deployer", []string{"deploy", "deploy.test.testhost1", "--action="}, "action"},
		// A pull request's ref is not a branch: anyone who opens one
		// creates it.
		cliCase{"deployer", []string{"deploy", "deploy.test.testhost1", "--branch", "refs/pull/1/head"}, "revision"},
		cliCase{"build-client", []string{"build", "fleet", "h1", "--branch", "refs/pull/1/head"}, "revision"},
		cliCase{"deployer", []string{"deploy", "../etc/passwd"}, "subject"},
		cliCase{"build-client", []string{"build", "fleet", "all"}, "--all"},
		cliCase{"build-client", []string{"build", "fleet", "role"}, "reserved"},
		cliCase{"build-client", []string{"build", "responses", "--all"}, "reserved"},
		cliCase{"deployer", []string{"list-hosts", "--discover-subject", "deploy.>"}, "subject"},
	)
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			t.Parallel()
			r := run(t, f.env(c.cred), c.args...)
			if r.Code != 2 || !strings.HasPrefix(r.Stderr, "error: ") || !strings.Contains(r.Stderr, c.want) {
				t.Fatalf("exit %d (want 2); stderr should start with \"error: \" and mention %q:\n%s%s", r.Code, c.want, r.Stderr, r.Stdout)
			}
		})
	}
	f.settle(t)
	if got := f.spy.unexpected(func(s string) bool { return strings.HasPrefix(s, "spy.marker.") }); len(got) != 0 {
		t.Errorf("a refused command sent messages: %s", fmtList(got))
	}
	if calls := f.executorCalls(); len(calls) != 0 {
		t.Errorf("an executor ran: %q", calls)
	}
}

// rawCase is one hostile message published straight onto NATS.
type rawCase struct {
	name    string
	cred    string // who publishes; allowed to publish on subject
	subject string
	body    string // %[1]s is replaced by the case's own reply subject
	// code is the rejection the case's reply subject must carry; empty means
	// the request is dropped (logged, nothing published anywhere).
	code protocol.ErrorCode
}

func hostileRawCases() []rawCase {
	var cs []rawCase
	dep := func(name, body string, code protocol.ErrorCode) {
		cs = append(cs, rawCase{"deploy " + name, "deployer", "deploy.test.testhost1", body, code})
	}
	bld := func(name, subject, body string, code protocol.ErrorCode) {
		cs = append(cs, rawCase{"build " + name, "build-client", subject, body, code})
	}
	dis := func(name, body string) {
		cs = append(cs, rawCase{"discover " + name, "deployer", "deploy.discover", body, ""})
	}
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	for _, rev := range hostileRevisions {
		dep("revision "+q(rev), `{"action":"switch","revision":`+q(rev)+`,"reply_to":"%[1]s"}`, protocol.ErrInvalidRevision)
		bld("branch "+q(rev), "build.fleet.all", `{"repo":"fleet","target":"all","branch":`+q(rev)+`,"reply_to":"%[1]s"}`, protocol.ErrInvalidRevision)
	}
	// An empty branch means the repository's default: not hostile for builds.
	cs = slicesDeleteFunc(cs, func(c rawCase) bool { return c.name == `build branch ""` })

	dep("unknown action", `{"action":"reboot","revision":"main","reply_to":"%[1]s"}`, protocol.ErrInvalidAction)
	dep("action with options", `{"action":"switch --option x y","revision":"main","reply_to":"%[1]s"}`, protocol.ErrInvalidAction)
	dep("null action", `{"action":null,"revision":"main","reply_to":"%[1]s"}`, protocol.ErrInvalidAction)
	dep("unknown field flake", `{"action":"switch","revision":"main","reply_to":"%[1]s","flake":"github:evil/x"}`, protocol.ErrInvalidRequest)
	dep("unknown field hostname", `{"action":"switch","revision":"main","reply_to":"%[1]s","hostname":"dns1"}`, protocol.ErrInvalidRequest)
	// Field names are exact: encoding/json alone would take these.
	dep("case-folded field", `{"action":"switch","REVISION":"main","reply_to":"%[1]s"}`, protocol.ErrInvalidRequest)
	dep("duplicate key", `{"action":"switch","revision":"main","revision":"evil","reply_to":"%[1]s"}`, protocol.ErrInvalidRequest)
	dep("id of the wrong type", `{"id":5,"action":"switch","revision":"main","reply_to":"%[1]s"}`, protocol.ErrInvalidRequest)
	dep("wrong type", `{"action":5,"revision":"main","reply_to":"%[1]s"}`, protocol.ErrInvalidRequest)
	dep("id with dots", `{"id":"a.b","action":"switch","revision":"main","reply_to":"%[1]s"}`, protocol.ErrInvalidRequest)
	dep("id with wildcard", `{"id":">","action":"switch","revision":"main","reply_to":"%[1]s"}`, protocol.ErrInvalidRequest)
	dep("truncated JSON", `{"action":"switch","revision":"main","reply_to":"%[1]s"`, "")
	dep("not JSON", `switch main %[1]s`, "")
	dep("two objects", `{"action":"switch","revision":"main","reply_to":"%[1]s"}{"action":"boot"}`, "")
	dep("1 MiB payload", `{"action":"switch","revision":"main","reply_to":"%[1]s","pad":"`+strings.Repeat("x", 1<<20-200)+`"}`, "")
	for _, reply := range []string{"deploy.prod.dns1", "deploy.test.all", "deploy.discover", "_INBOX.abc", "build.responses.x", "deploy.responses.a.b", "deploy.responses.*", "deploy.responses.>", "deploy.responses.", ""} {
		dep("reply_to "+q(reply), `{"action":"switch","revision":"main","reply_to":`+q(reply)+`}`, "")
	}

	for _, tok := range []string{"a.b", "*", ">", "my repo", "responses", ""} {
		bld("repo "+q(tok), "build.fleet.all", `{"repo":`+q(tok)+`,"target":"all","reply_to":"%[1]s"}`, protocol.ErrInvalidRequest)
	}
	for _, tok := range []string{"a.b", "*", ">", "x y", "role", ""} {
		bld("target "+q(tok), "build.fleet.all", `{"repo":"fleet","target":`+q(tok)+`,"reply_to":"%[1]s"}`, protocol.ErrInvalidRequest)
	}
	bld("body names another repo", "build.fleet.all", `{"repo":"other","target":"all","reply_to":"%[1]s"}`, protocol.ErrInvalidRequest)
	bld("body names another host", "build.fleet.all", `{"repo":"fleet","target":"h1","reply_to":"%[1]s"}`, protocol.ErrInvalidRequest)
	bld("unknown field", "build.fleet.all", `{"repo":"fleet","target":"all","reply_to":"%[1]s","url":"github:evil/x"}`, protocol.ErrInvalidRequest)
	bld("truncated JSON", "build.fleet.all", `{"repo":"fleet","target":"all","reply_to":"%[1]s"`, "")
	bld("1 MiB payload", "build.fleet.all", `{"repo":"fleet","target":"all","reply_to":"%[1]s","pad":"`+strings.Repeat("x", 1<<20-200)+`"}`, "")
	for _, reply := range []string{"deploy.responses.x", "build.fleet.all", "_INBOX.abc", "build.responses.a.b", "build.responses.>"} {
		bld("reply_to "+q(reply), "build.fleet.all", `{"repo":"fleet","target":"all","reply_to":`+q(reply)+`}`, "")
	}

	for _, reply := range []string{"deploy.discover", "_INBOX.abc", "build.responses.x", "deploy.test.all", "deploy.responses.a.b"} {
		dis("reply_to "+q(reply), `{"reply_to":`+q(reply)+`}`)
	}
	dis("unknown tier", `{"reply_to":"%[1]s","tier":"staging"}`)
	dis("unknown field", `{"reply_to":"%[1]s","all":true}`)
	dis("not JSON", `hello %[1]s`)
	dis("1 MiB payload", `{"reply_to":"%[1]s","pad":"`+strings.Repeat("x", 1<<20-200)+`"}`)
	return cs
}

func slicesDeleteFunc(cs []rawCase, del func(rawCase) bool) []rawCase {
	out := cs[:0]
	for _, c := range cs {
		if !del(c) {
			out = append(out, c)
		}
	}
	return out
}

// TestHostileRawMessages publishes hostile requests straight onto NATS with
// credentials allowed to publish there. A request with a usable reply
// subject gets a rejection that says why; any other is dropped and logged.
// Nothing executes, and the spy sees no message on a subject it should not:
// no reply outside the case's own deploy.responses./build.responses.
// subject, none at all for a dropped request.
func TestHostileRawMessages(t *testing.T) {
	f := startSecFleet(t)
	conns := map[string]*protocol.Conn{
		"deployer":     connectAs(t, f.nats.URL, f.creds["deployer"]),
		"build-client": connectAs(t, f.nats.URL, f.creds["build-client"]),
	}
	// One subscription per credential on its whole reply space collects
	// every answer, keyed by subject.
	answers := map[string]chan *nats.Msg{}
	for name, prefix := range map[string]string{"deployer": protocol.DeployResponsesPrefix, "build-client": protocol.BuildResponsesPrefix} {
		ch := make(chan *nats.Msg, 1024)
		answers[name] = ch
		sub, err := conns[name].ChanSubscribe(prefix+">", ch)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		_ = conns[name].Flush()
	}
	allowed := map[string]bool{"deploy.test.testhost1": true, "build.fleet.all": true, "deploy.discover": true}
	waitFor := func(cred, subject string) *nats.Msg {
		t.Helper()
		deadline := time.After(15 * time.Second)
		for {
			select {
			case m := <-answers[cred]:
				if m.Subject == subject {
					return m
				}
				t.Errorf("unexpected answer on %s while waiting for %s: %s", m.Subject, subject, m.Data)
			case <-deadline:
				t.Fatalf("no answer on %s", subject)
			}
		}
	}
	// answerOn is where the answer to a case with reply subject reply
	// arrives: the sender's own subject below it (protocol.BoundReply),
	// testhost1's for deploys and discovery of the test tier, the
	// builder's for builds.
	answerOn := func(c rawCase, reply string) string {
		if c.cred == "build-client" {
			return protocol.BoundReply(reply, protocol.BuilderToken)
		}
		return protocol.BoundReply(reply, "testhost1")
	}
	// sentinel sends a request on the case's subject that is surely
	// answered, and waits for the answer: the server handles one
	// subscription's requests in order, so the case before it was handled.
	sentinel := func(c rawCase, i int) {
		t.Helper()
		var prefix, body string
		switch c.subject {
		case "deploy.test.testhost1":
			prefix, body = protocol.DeployResponsesPrefix, `{"action":"sentinel","revision":"main","reply_to":"%s"}`
		case "build.fleet.all":
			prefix, body = protocol.BuildResponsesPrefix, `{"repo":"fleet","target":"all","branch":"a..b","reply_to":"%s"}`
		default:
			prefix, body = protocol.DeployResponsesPrefix, `{"reply_to":"%s","tier":"test"}`
		}
		reply := fmt.Sprintf("%ssentinel%d", prefix, i)
		allowed[answerOn(c, reply)] = true
		if err := conns[c.cred].Publish(c.subject, []byte(fmt.Sprintf(body, reply))); err != nil {
			t.Fatal(err)
		}
		waitFor(c.cred, answerOn(c, reply))
	}

	for i, c := range hostileRawCases() {
		prefix := protocol.DeployResponsesPrefix
		if c.cred == "build-client" {
			prefix = protocol.BuildResponsesPrefix
		}
		reply := fmt.Sprintf("%scase%d", prefix, i)
		body := strings.ReplaceAll(c.body, "%[1]s", reply)
		if err := conns[c.cred].Publish(c.subject, []byte(body)); err != nil {
			t.Fatalf("%s: publish: %v", c.name, err)
		}
		if c.code == "" {
			sentinel(c, i)
			continue
		}
		allowed[answerOn(c, reply)] = true
		m := waitFor(c.cred, answerOn(c, reply))
		var got struct {
			Status    protocol.Status    `json:"status"`
			Error     protocol.ErrorCode `json:"error"`
			ErrorCode protocol.ErrorCode `json:"error_code"`
			Message   string             `json:"message"`
		}
		if err := json.Unmarshal(m.Data, &got); err != nil {
			t.Fatalf("%s: answer is not JSON: %s", c.name, m.Data)
		}
		code := got.Error
		if c.cred == "build-client" {
			code = got.ErrorCode
		}
		if got.Status != protocol.StatusRejected || code != c.code || len(got.Message) < 10 {
			t.Errorf("%s: answer %s; want rejected with %s and a message saying why", c.name, m.Data, c.code)
		}
	}

	// A payload above the server's 1 MiB max_payload never leaves the client.
	if err := conns["deployer"].Publish("deploy.test.testhost1", make([]byte, 1<<20+1)); err == nil {
		t.Errorf("publishing more than max_payload succeeded")
	}

	f.settle(t)
	if got := f.spy.unexpected(func(s string) bool { return allowed[s] || strings.HasPrefix(s, "spy.marker.") }); len(got) != 0 {
		t.Errorf("the spy saw messages on subjects nobody should have published to: %s", fmtList(got))
	}
	if calls := f.executorCalls(); len(calls) != 0 {
		t.Errorf("an executor ran for a hostile request: %q", calls)
	}
	for name, p := range map[string]*Proc{"listener": f.listeners["testhost1"], "builder": f.builder} {
		out := p.Output.String()
		if !strings.Contains(out, "dropped") || !strings.Contains(out, "rejected") {
			t.Errorf("%s logged no dropped/rejected requests:\n%s", name, out)
		}
		if strings.Contains(out, "denied an operation") {
			t.Errorf("%s tried an operation its credential lacks:\n%s", name, out)
		}
	}
	// Both daemons are still healthy: a valid deploy and build run once.
	if r := run(t, f.env("deployer"), "deploy", "deploy.test.testhost1"); r.Code != 0 {
		t.Fatalf("deploy after the hostile messages: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if r := run(t, f.env("build-client"), "build", "fleet", "--all"); r.Code != 0 {
		t.Fatalf("build after the hostile messages: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if calls := f.executorCalls(); len(calls) != 3 {
		t.Errorf("after one valid deploy and one build: calls %q, want nixos-rebuild once, nix eval and nix build", calls)
	}
}

// permLine is what our client logs when the server refuses an operation.
const permLine = "NATS server denied an operation"

// TestPermissionMatrixThroughOurCommands runs every command with every
// credential type against Debian's nats-server with SPEC's authorization
// table. Allowed combinations work; denied ones fail, and the command (or
// daemon) logs the server's permission error with the subject. The same
// table at the level of single publish/subscribe operations, for every
// credential nats-config generates, is cli.TestAuthorizationBlockInNATSServer.
func TestPermissionMatrixThroughOurCommands(t *testing.T) {
	f := startSecFleet(t)
	creds := []string{"testhost1", "builder", "deployer", "admin", "build-client"}
	type op struct {
		name    string
		args    []string
		allowed map[string]bool
		// subject the server must name when it refuses
		subject string
	}
	ops := []op{
		{"deploy test", []string{"deploy", "deploy.test.testhost1"}, map[string]bool{"deployer": true, "admin": true}, "deploy.test.testhost1"},
		{"deploy prod", []string{"deploy", "deploy.prod.dns1"}, map[string]bool{"admin": true}, "deploy.prod.dns1"},
		{"list-hosts", []string{"list-hosts"}, map[string]bool{"deployer": true, "admin": true}, ""},
		{"build", []string{"build", "fleet", "--all"}, map[string]bool{"build-client": true}, "build."},
	}
	for _, o := range ops {
		for _, cred := range creds {
			// Not parallel: two allowed deploys to testhost1 at once would
			// rightly meet already_running.
			t.Run(o.name+" as "+cred, func(t *testing.T) {
				r := run(t, f.env(cred), o.args...)
				if o.allowed[cred] {
					if r.Code != 0 || strings.Contains(r.Stderr, permLine) {
						t.Fatalf("allowed: exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
					}
					if o.name == "list-hosts" && !strings.Contains(r.Stdout, "testhost1") {
						t.Fatalf("list-hosts found nobody:\n%s", r.Stdout)
					}
					return
				}
				// A credential lacking both permissions may be refused the
				// reply subscription or the publish first: the server's
				// two errors race, and either is a correct report.
				named := strings.Contains(r.Stderr, o.subject) || strings.Contains(r.Stderr, `responses.`)
				if r.Code != 1 || !strings.Contains(r.Stderr, permLine) || !strings.Contains(r.Stderr, "Permissions Violation") || !named {
					t.Fatalf("denied: exit %d (want 1); stderr must log %q with the server's error and %s:\nstdout:\n%s\nstderr:\n%s", r.Code, permLine, o.subject, r.Stdout, r.Stderr)
				}
			})
		}
	}

	// The daemons: a listener for testhost1 and a builder for fleet, started
	// with each credential.
	daemons := []struct {
		name    string
		args    func(cred testenv.Cred) []string
		ready   string
		allowed map[string]bool
		subject string
	}{
		{"listener testhost1", func(c testenv.Cred) []string {
			return []string{"listener", "--hostname", "testhost1", "--tier", "test", "--nats-url", f.nats.URL,
				"--nkey-file", c.SeedFile, "--flake-url", e2eFlake, "--log-format", "text"}
		}, "listener ready", map[string]bool{"testhost1": true, "admin": true}, "deploy."},
		{"builder fleet", func(c testenv.Cred) []string {
			return []string{"builder", "--nats-url", f.nats.URL, "--nkey-file", c.SeedFile, "--config", builderConfig(t), "--log-format", "text"}
		}, "builder ready", map[string]bool{"builder": true}, "build.fleet.*"},
	}
	for _, d := range daemons {
		for _, cred := range creds {
			t.Run(d.name+" as "+cred, func(t *testing.T) {
				t.Parallel()
				p := startDaemon(t, baseEnv(f.nix, f.rebuild["testhost1"]), d.args(f.creds[cred])...)
				if !d.allowed[cred] {
					// A daemon that cannot subscribe would never receive a
					// request: it stops, and says which subscription and
					// what to fix, so systemd shows the failure. (The
					// listener's refusals race: any of its subjects.)
					code := p.exitCode(t, 20*time.Second)
					out := p.Output.String()
					if code == 0 || !strings.Contains(out, "subscription to "+d.subject) || !strings.Contains(out, "nats-config") {
						t.Fatalf("refused daemon: exit %d; its output must name the refused subscription %s and the fix:\n%s", code, d.subject, out)
					}
					return
				}
				p.WaitFor(t, d.ready, 20*time.Second)
				// Allowed: a round trip through the server has passed
				// since subscribing, and no refusal was logged.
				conn := connectAs(t, f.nats.URL, f.creds["spy"])
				if err := conn.FlushTimeout(10 * time.Second); err != nil {
					t.Fatal(err)
				}
				time.Sleep(200 * time.Millisecond)
				if out := p.Output.String(); strings.Contains(out, permLine) {
					t.Fatalf("allowed daemon logged a refusal:\n%s", out)
				}
			})
		}
	}
}

// TestSeedFilesReadableByOthersAreRefused: every command that reads a seed
// refuses one that group or others can read, says how to fix it, and never
// prints the seed.
func TestSeedFilesReadableByOthersAreRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := builderConfig(t)
	good := testenv.NewCred(t, dir, "good", protocol.TestDeployerPermissions())
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o666} {
		c := testenv.NewCred(t, dir, fmt.Sprintf("loose%o", mode), protocol.TestDeployerPermissions())
		if err := os.Chmod(c.SeedFile, mode); err != nil {
			t.Fatal(err)
		}
		seed, _ := os.ReadFile(c.SeedFile)
		url := "nats://127.0.0.1:1"
		for _, args := range [][]string{
			{"listener", "--hostname", "h1", "--tier", "test", "--nats-url", url, "--nkey-file", c.SeedFile, "--flake-url", e2eFlake},
			{"builder", "--nats-url", url, "--nkey-file", c.SeedFile, "--config", cfg},
			{"deploy", "deploy.test.h1", "--nats-url", url, "--nkey-file", c.SeedFile},
			{"list-hosts", "--nats-url", url, "--nkey-file", c.SeedFile},
			{"build", "fleet", "--all", "--nats-url", url, "--nkey-file", c.SeedFile},
			{"mcp", "--nats-url", url, "--nkey-file", c.SeedFile},
			{"mcp", "--nats-url", url, "--nkey-file", good.SeedFile, "--enable-admin", "--admin-nkey-file", c.SeedFile},
			{"mcp", "--nats-url", url, "--nkey-file", good.SeedFile, "--enable-builds", "--build-nkey-file", c.SeedFile},
		} {
			r := run(t, baseEnv(), args...)
			if r.Code == 0 || !strings.Contains(r.Stderr, fmt.Sprintf("mode %04o", mode)) || !strings.Contains(r.Stderr, "chmod 600 "+c.SeedFile) {
				t.Errorf("%s with a %04o seed: exit %d, stderr:\n%s", args[0], mode, r.Code, r.Stderr)
			}
			if strings.Contains(r.Stdout+r.Stderr, strings.TrimSpace(string(seed))) {
				t.Errorf("%s printed the seed", args[0])
			}
		}
	}
}

// TestNoSeedInAnyLog runs a full flow at debug level (listeners, deploys,
// list-hosts, builder, builds, a denied deploy, a hostile request) and
// checks that no seed of any credential appears in any output.
func TestNoSeedInAnyLog(t *testing.T) {
	f := startSecFleet(t, "--log-level", "debug")
	var outputs []string
	debug := "HOMELAB_DEPLOY_LOG_LEVEL=debug"
	for _, c := range []struct {
		cred string
		args []string
	}{
		{"deployer", []string{"deploy", "deploy.test.testhost1"}},
		{"deployer", []string{"deploy", "deploy.prod.dns1"}}, // denied
		{"deployer", []string{"deploy", "deploy.test.testhost1", "--branch=main#x"}},
		{"admin", []string{"deploy", "deploy.prod.role.dns", "--json", "--accept-window", "300ms"}},
		{"deployer", []string{"list-hosts"}},
		{"build-client", []string{"build", "fleet", "--all"}},
		{"build-client", []string{"build", "fleet", "h1", "--json"}},
	} {
		r := run(t, f.env(c.cred, debug), c.args...)
		outputs = append(outputs, r.Stdout, r.Stderr)
	}
	// The MCP server over HTTP with a bearer token: one call with the
	// token, one request with a wrong one.
	token := "tok-" + protocol.NewID() + protocol.NewID()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	mcpd := startDaemon(t, append(f.env("deployer", debug), "HOMELAB_DEPLOY_ENABLE_ADMIN=true", "HOMELAB_DEPLOY_ADMIN_NKEY_FILE="+f.creds["admin"].SeedFile,
		"HOMELAB_DEPLOY_ENABLE_BUILDS=true", "HOMELAB_DEPLOY_BUILD_NKEY_FILE="+f.creds["build-client"].SeedFile),
		"mcp", "--log-format", "text", "--http-addr", addr, "--http-token-file", tokenFile)
	mcpd.WaitFor(t, "MCP server listening", 20*time.Second)
	cs := mcpClient(t, httpTransports("http://"+addr, token)["streamable HTTP"], nil)
	if res, _ := mcpCall(t, cs, "deploy", map[string]any{"hostname": "testhost1"}, nil); res.IsError {
		t.Fatalf("deploy over MCP: %s", mcpText(res))
	}
	req, _ := http.NewRequest("POST", "http://"+addr+"/mcp", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+token+"x")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	_ = cs.Close()
	if code := mcpd.Stop(15 * time.Second); code != 0 {
		t.Errorf("mcp exit %d", code)
	}
	outputs = append(outputs, mcpd.Output.String())

	conn := connectAs(t, f.nats.URL, f.creds["deployer"])
	_ = conn.Publish("deploy.test.testhost1", []byte(`{"action":"switch","revision":"-o","reply_to":"deploy.responses.x"}`))
	_ = conn.Publish("deploy.discover", []byte(`{"reply_to":"_INBOX.x"}`)) // logged at debug level
	_ = conn.Flush()
	f.settle(t)
	for _, p := range f.listeners {
		if code := p.Stop(15 * time.Second); code != 0 {
			t.Errorf("listener exit %d", code)
		}
		outputs = append(outputs, p.Output.String())
	}
	if code := f.builder.Stop(15 * time.Second); code != 0 {
		t.Errorf("builder exit %d", code)
	}
	outputs = append(outputs, f.builder.Output.String())
	all := strings.Join(outputs, "\n")
	if !strings.Contains(all, "level=DEBUG") {
		t.Fatalf("no debug line was logged; the flow did not run at debug level:\n%s", all)
	}
	if strings.Contains(all, token) {
		t.Errorf("the MCP bearer token appears in the output")
	}
	for name, c := range f.creds {
		b, err := os.ReadFile(c.SeedFile)
		if err != nil {
			t.Fatal(err)
		}
		seed := strings.TrimSpace(string(b))
		if !strings.HasPrefix(seed, "SU") {
			t.Fatalf("%s: not a user seed", name)
		}
		// The whole seed, and its secret part without the prefix.
		for _, s := range []string{seed, seed[2:]} {
			if strings.Contains(all, s) {
				t.Errorf("the seed of %s appears in the output", name)
			}
		}
	}
}
