package mcpserver_test

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	mcpserver "github.com/homelab-deploy/homelab-deploy/mcp"
	"github.com/homelab-deploy/homelab-deploy/protocol"

	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
	"github.com/homelab-deploy/homelab-deploy/tools/registry"
)

var gateCombos = []tools.Gates{tools.GatesOn(), tools.GatesOn("admin"), tools.GatesOn("builds"), tools.GatesOn("admin", "builds")}

func TestToolsListFollowsGates(t *testing.T) {
	f := newFleet(t)
	reg := registry.New()
	for _, g := range gateCombos {
		t.Run(g.String(), func(t *testing.T) {
			cs := session(t, newServer(t, f, g), nil)
			got := toolNames(t, cs)

			// deploy and list_hosts always; deploy_admin only with admin;
			// every builds-gated tool only with builds.
			var want []string
			for _, tl := range reg.All() {
				if tl.Gate == nil || g.On(tl.Gate.Name) {
					want = append(want, tl.Name)
				}
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("tools/list = %v, want %v", got, want)
			}
			for _, name := range []string{"deploy", "list_hosts"} {
				if !slices.Contains(got, name) {
					t.Errorf("%s missing from tools/list", name)
				}
			}
			if slices.Contains(got, "deploy_admin") != g.On("admin") {
				t.Errorf("deploy_admin listed = %v with admin gate %v", slices.Contains(got, "deploy_admin"), g.On("admin"))
			}
			if !g.On("builds") && slices.Contains(got, "build") {
				t.Error("build listed without the builds gate")
			}
		})
	}
}

func TestToolsCarryAllFourAnnotations(t *testing.T) {
	f := newFleet(t)
	cs := session(t, newServer(t, f, tools.GatesOn("admin", "builds")), nil)
	list, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New()
	for _, tl := range list.Tools {
		a := tl.Annotations
		if a == nil || a.DestructiveHint == nil || a.OpenWorldHint == nil {
			t.Errorf("%s: annotations not all set explicitly: %+v", tl.Name, a)
			continue
		}
		want := reg.Lookup(tl.Name).Annotations
		got := tools.Annotations{ReadOnly: a.ReadOnlyHint, Destructive: *a.DestructiveHint, Idempotent: a.IdempotentHint, OpenWorld: *a.OpenWorldHint}
		if got != want {
			t.Errorf("%s: annotations %+v, want %+v", tl.Name, got, want)
		}
		if tl.OutputSchema == nil {
			t.Errorf("%s: no output schema", tl.Name)
		}
	}
	// Spot-check the truth of the annotations that matter most.
	byName := map[string]*mcp.Tool{}
	for _, tl := range list.Tools {
		byName[tl.Name] = tl
	}
	if a := byName["list_hosts"].Annotations; !a.ReadOnlyHint || *a.DestructiveHint {
		t.Errorf("list_hosts must be read-only and not destructive: %+v", a)
	}
	if a := byName["deploy"].Annotations; a.ReadOnlyHint || !*a.DestructiveHint {
		t.Errorf("deploy must be destructive and not read-only: %+v", a)
	}
}

func deployResult(t *testing.T, res *mcp.CallToolResult) deploy.Result {
	t.Helper()
	var r deploy.Result
	remarshal(t, res.StructuredContent, &r)
	return r
}

func hostNames(r deploy.Result) []string {
	var out []string
	for _, h := range r.Hosts {
		out = append(out, h.Hostname+"="+string(h.Status))
	}
	return out
}

func TestDeployTargets(t *testing.T) {
	f := newFleet(t)
	cs := session(t, newServer(t, f, tools.GatesOn()), nil)
	cases := []struct {
		name    string
		args    map[string]any
		subject string
		hosts   []string
		action  string
	}{
		{"one host", map[string]any{"hostname": "testhost1", "branch": "feature-x"}, "deploy.test.testhost1", []string{"testhost1=completed"}, "switch"},
		{"all", map[string]any{"all": true, "action": "boot"}, "deploy.test.all", []string{"testhost1=completed", "testhost2=completed"}, "boot"},
		{"role", map[string]any{"role": "web", "action": "test"}, "deploy.test.role.web", []string{"testhost1=completed"}, "test"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before1 := len(f.calls("testhost1"))
			res := call(t, cs, "deploy", tc.args, nil)
			r := deployResult(t, res)
			if res.IsError || !r.Success {
				t.Fatalf("deploy %v failed: %s", tc.args, text(res))
			}
			if r.Subject != tc.subject || string(r.Action) != tc.action {
				t.Errorf("subject %s action %s, want %s %s", r.Subject, r.Action, tc.subject, tc.action)
			}
			if got := hostNames(r); !slices.Equal(got, tc.hosts) {
				t.Errorf("hosts %v, want %v", got, tc.hosts)
			}
			if !strings.Contains(text(res), "testhost1: completed") {
				t.Errorf("summary does not name the host's status:\n%s", text(res))
			}
			calls := f.calls("testhost1")
			if len(calls) != before1+1 {
				t.Fatalf("testhost1 ran nixos-rebuild %d times, want once", len(calls)-before1)
			}
			argv := strings.Join(calls[len(calls)-1], " ")
			ref := "ref=master"
			if b, ok := tc.args["branch"]; ok {
				ref = "ref=" + b.(string)
			}
			if !strings.HasPrefix(argv, "nixos-rebuild "+tc.action+" --flake ") || !strings.Contains(argv, ref) || !strings.HasSuffix(argv, "#testhost1") {
				t.Errorf("argv %q", argv)
			}
			if n := len(f.calls("prodhost1")); n != 0 {
				t.Errorf("prodhost1 ran nixos-rebuild %d times", n)
			}
		})
	}
}

func TestProgressNotificationsOnePerStatusInOrder(t *testing.T) {
	f := newFleet(t)
	var plog progressLog
	cs := session(t, newServer(t, f, tools.GatesOn()), &plog)

	res := call(t, cs, "deploy", map[string]any{"hostname": "testhost1"}, "one")
	if res.IsError {
		t.Fatalf("deploy failed: %s", text(res))
	}
	// Notifications sent before the result may still be in the client's
	// handler when CallTool returns.
	eventually(t, "three progress notifications", func() bool { return len(plog.get()) >= 3 })
	got := plog.get()
	want := []string{"testhost1: accepted (switch)", "testhost1: started (switch)", "testhost1: completed (switch, "}
	if len(got) != len(want) {
		t.Fatalf("got %d notifications, want %d: %v", len(got), len(want), messages(got))
	}
	for i, p := range got {
		if p.ProgressToken != "one" {
			t.Errorf("notification %d has token %v", i, p.ProgressToken)
		}
		if !strings.HasPrefix(p.Message, want[i]) {
			t.Errorf("notification %d: %q, want prefix %q", i, p.Message, want[i])
		}
		if i > 0 && p.Progress <= got[i-1].Progress {
			t.Errorf("progress does not increase: %v", progressValues(got))
		}
		if p.Total != 1 {
			t.Errorf("notification %d: total %v, want 1", i, p.Total)
		}
	}
	if last := got[len(got)-1]; last.Progress != 1 {
		t.Errorf("final progress %v, want 1 (one finished host)", last.Progress)
	}

	// A group deploy: per host, accepted, started, completed in that order;
	// progress counts finished hosts and ends at 2 of 2.
	plog = progressLog{}
	res = call(t, cs, "deploy", map[string]any{"all": true}, 7)
	if res.IsError {
		t.Fatalf("deploy failed: %s", text(res))
	}
	eventually(t, "six progress notifications", func() bool { return len(plog.get()) >= 6 })
	got = plog.get()
	if len(got) != 6 {
		t.Fatalf("got %d notifications, want 6: %v", len(got), messages(got))
	}
	perHost := map[string][]string{}
	for i, p := range got {
		host, rest, _ := strings.Cut(p.Message, ": ")
		status, _, _ := strings.Cut(rest, " ")
		status = strings.TrimSuffix(status, ":")
		perHost[host] = append(perHost[host], status)
		if i > 0 && p.Progress <= got[i-1].Progress {
			t.Errorf("progress does not increase: %v", progressValues(got))
		}
		if float64(int(p.Progress)) > p.Total {
			t.Errorf("progress %v beyond total %v", p.Progress, p.Total)
		}
	}
	for _, h := range []string{"testhost1", "testhost2"} {
		if !slices.Equal(perHost[h], []string{"accepted", "started", "completed"}) {
			t.Errorf("%s statuses %v, want accepted, started, completed", h, perHost[h])
		}
	}
	if last := got[len(got)-1]; last.Progress != 2 || last.Total != 2 {
		t.Errorf("final progress %v/%v, want 2/2", last.Progress, last.Total)
	}

	// Without a token, no notifications.
	plog = progressLog{}
	call(t, cs, "deploy", map[string]any{"hostname": "testhost2"}, nil)
	call(t, cs, "list_hosts", map[string]any{}, nil)
	if n := len(plog.get()); n != 0 {
		t.Errorf("%d notifications without a progress token", n)
	}
}

func messages(ps []*mcp.ProgressNotificationParams) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Message)
	}
	return out
}

func progressValues(ps []*mcp.ProgressNotificationParams) []float64 {
	var out []float64
	for _, p := range ps {
		out = append(out, p.Progress)
	}
	return out
}

func TestCancelStopsWaitingAndLeaksNothing(t *testing.T) {
	f := newFleet(t, slowHost)
	var plog progressLog
	deps := f.deps(t, false)
	cs := session(t, mcpserver.New(registry.New(), tools.GatesOn(), deps, "test"), &plog)
	// Warm up, then flush: the server has processed the warm-up's
	// unsubscribe before the baseline is taken.
	call(t, cs, "list_hosts", map[string]any{}, nil)
	if err := deps.Conns[tools.DefaultCredential].Flush(); err != nil {
		t.Fatal(err)
	}
	baseline := f.nats.Server.NumSubscriptions()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	plog.hook = func(p *mcp.ProgressNotificationParams) {
		if strings.HasPrefix(p.Message, "slowhost: started") {
			close(started)
		}
	}
	errc := make(chan error, 1)
	go func() {
		params := &mcp.CallToolParams{Name: "deploy", Arguments: map[string]any{"hostname": "slowhost"}}
		params.SetProgressToken("slow")
		_, err := cs.CallTool(ctx, params)
		errc <- err
	}()
	<-started
	// Two reply subscriptions: reply_to and reply_to.* (the hosts' own
	// subjects, protocol/gather).
	if n := f.nats.Server.NumSubscriptions(); n != baseline+2 {
		t.Fatalf("while waiting: %d subscriptions, want the baseline %d plus the two reply subscriptions", n, baseline)
	}
	if !goroutinesIn("homelab-deploy/tools/deploy.Send") {
		t.Fatal("no goroutine in deploy.Send while the call waits; the leak check below would prove nothing")
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call returned %v", err)
	}
	eventually(t, "the reply subscription to go away", func() bool { return f.nats.Server.NumSubscriptions() == baseline })
	eventually(t, "the tool's goroutines to end", func() bool { return !goroutinesIn("homelab-deploy/tools/deploy.Send", "homelab-deploy/mcp.handler") })

	// The session still works, and the host shows as busy: the deploy
	// itself was not ours to stop.
	res := call(t, cs, "list_hosts", map[string]any{"tier": "test"}, nil)
	var lr listhosts.Result
	remarshal(t, res.StructuredContent, &lr)
	busy := false
	for _, h := range lr.Hosts {
		if h.Hostname == "slowhost" {
			busy = h.Busy
		}
	}
	if !busy {
		t.Errorf("slowhost not busy after the cancelled call: %+v", lr.Hosts)
	}
}

// goroutinesIn reports whether any goroutine's stack mentions one of the
// functions.
func goroutinesIn(funcs ...string) bool {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for _, fn := range funcs {
		if strings.Contains(string(buf), fn) {
			return true
		}
	}
	return false
}

func TestHostileInputsAreToolErrorsAndSendNothing(t *testing.T) {
	f := newFleet(t)
	deps := f.deps(t, true)
	// The spy's subscriptions count as responders, so a request that did
	// go out would wait for this timeout instead of failing at once.
	deps.Defaults["timeout_seconds"] = 2
	cs := session(t, mcpserver.New(registry.New(), tools.GatesOn("admin"), deps, "test"), nil)
	s := f.spy(t, "deploy.prod.>", "deploy.>")

	bad := []string{"x.y", "*", ">", "all", "prod.all", "test host", " testhost1", "testhost1\n", strings.Repeat("a", 300), "role", "deploy.prod.prodhost1"}
	type attempt struct {
		tool string
		args map[string]any
	}
	var attempts []attempt
	for _, v := range bad {
		attempts = append(attempts,
			attempt{"deploy", map[string]any{"hostname": v}},
			attempt{"deploy_admin", map[string]any{"tier": "test", "hostname": v}},
			attempt{"deploy_admin", map[string]any{"tier": v, "all": true}},
		)
		attempts = append(attempts,
			attempt{"deploy", map[string]any{"role": v}},
			attempt{"deploy_admin", map[string]any{"tier": "prod", "role": v}},
		)
	}
	attempts = append(attempts,
		attempt{"deploy", map[string]any{"hostname": "testhost1", "action": "rm -rf /"}},
		attempt{"deploy", map[string]any{"hostname": "testhost1", "action": "SWITCH"}},
		attempt{"deploy", map[string]any{"hostname": "testhost1", "action": "switch; reboot"}},
		attempt{"deploy", map[string]any{"hostname": "testhost1", "branch": "--upload-pack=touch /tmp/x"}},
		attempt{"deploy", map[string]any{"hostname": "testhost1", "branch": "main/../../x"}},
		attempt{"deploy", map[string]any{"hostname": "testhost1", "branch": strings.Repeat("b", 300)}},
		attempt{"deploy", map[string]any{"tier": "prod", "all": true}},              // deploy has no tier
		attempt{"deploy", map[string]any{"hostname": "testhost1", "all": true}},     // two targets
		attempt{"deploy", map[string]any{}},                                         // no target
		attempt{"deploy", map[string]any{"hostname": 42}},                           // wrong type
		attempt{"deploy_admin", map[string]any{"hostname": "prodhost1"}},            // tier missing
		attempt{"deploy_admin", map[string]any{"tier": "prod", "action": "delete"}}, // action and no target
		attempt{"list_hosts", map[string]any{"tier": "prod.>"}},
	)
	for _, a := range attempts {
		res := call(t, cs, a.tool, a.args, "tok")
		msg := text(res)
		if !res.IsError {
			t.Errorf("%s %v: not an error: %s", a.tool, a.args, msg)
			continue
		}
		if !strings.Contains(msg, "invalid input for "+a.tool) || !strings.Contains(msg, "Nothing was sent") {
			t.Errorf("%s %v: unclear error %q", a.tool, a.args, msg)
		}
		if res.StructuredContent != nil {
			t.Errorf("%s %v: structured content on an input error", a.tool, a.args)
		}
	}
	if got := s.seen(t); len(got) != 0 {
		t.Errorf("hostile inputs put messages on the wire: %v", got)
	}
	for _, h := range fleetHosts {
		if n := len(f.calls(h.name)); n != 0 {
			t.Errorf("%s ran nixos-rebuild %d times", h.name, n)
		}
	}

	// The message names the offending argument.
	res := call(t, cs, "deploy", map[string]any{"hostname": "x.y"}, nil)
	if !strings.Contains(text(res), "hostname") {
		t.Errorf("error does not name the argument: %s", text(res))
	}
	res = call(t, cs, "deploy", map[string]any{"hostname": "all"}, nil)
	if !strings.Contains(text(res), "all") {
		t.Errorf("error does not explain the reserved name: %s", text(res))
	}
}

// deploy cannot reach a prod host whatever its input, even when the
// server's credential would allow it.
func TestDeployNeverReachesProd(t *testing.T) {
	f := newFleet(t)
	root := f.nats.Connect(t, "root")
	srv := mcpserver.New(registry.New(), tools.GatesOn(), tools.Deps{Conns: map[string]*protocol.Conn{"": root, "admin": root}, Defaults: map[string]any{"accept_window_seconds": 0.3, "timeout_seconds": 2}}, "test")
	cs := session(t, srv, nil)
	s := f.spy(t, "deploy.prod.>")
	all := f.spy(t, "deploy.>")

	res := call(t, cs, "deploy", map[string]any{"all": true}, nil)
	if got := hostNames(deployResult(t, res)); !slices.Equal(got, []string{"testhost1=completed", "testhost2=completed"}) {
		t.Errorf("deploy all reached %v", got)
	}
	res = call(t, cs, "deploy", map[string]any{"role": "web"}, nil)
	if got := hostNames(deployResult(t, res)); !slices.Equal(got, []string{"testhost1=completed"}) {
		t.Errorf("deploy role web reached %v", got)
	}
	res = call(t, cs, "deploy", map[string]any{"hostname": "prodhost1"}, nil)
	r := deployResult(t, res)
	if !res.IsError || r.Subject != "deploy.test.prodhost1" || len(r.Hosts) != 0 {
		t.Errorf("deploy hostname=prodhost1: isError=%v subject=%s hosts=%v", res.IsError, r.Subject, r.Hosts)
	}
	// The spies' deploy.> subscriptions count as responders, so the deploy
	// waits for its (short) timeout rather than failing at once.
	if !strings.Contains(text(res), "no host answered on deploy.test.prodhost1") {
		t.Errorf("unanswered deploy does not say why: %s", text(res))
	}
	// Discovery found prodhost1 in prod: the result says which tool
	// reaches it.
	if !strings.Contains(text(res), "prodhost1 is a host of the prod tier") || !strings.Contains(text(res), "deploy_admin") {
		t.Errorf("a deploy to a prod host does not point at deploy_admin: %s", text(res))
	}
	if got := s.seen(t); len(got) != 0 {
		t.Errorf("deploy.prod.> received %v", got)
	}
	for _, subj := range all.seen(t) {
		// deploy.discover: the lookup of a host nobody answered for.
		if strings.HasPrefix(subj, "deploy.") && !strings.HasPrefix(subj, "deploy.test.") && !strings.HasPrefix(subj, "deploy.responses.") && subj != protocol.DefaultDiscoverSubject {
			t.Errorf("unexpected subject %s", subj)
		}
	}
	if n := len(f.calls("prodhost1")); n != 0 {
		t.Errorf("prodhost1 ran nixos-rebuild %d times", n)
	}
}

func TestDeployAdminUsesTheAdminCredential(t *testing.T) {
	f := newFleet(t)
	// The default credential is the test deployer, which the NATS server
	// does not let publish to deploy.prod.*: success proves the admin
	// connection carried the request.
	cs := session(t, newServer(t, f, tools.GatesOn("admin")), nil)
	res := call(t, cs, "deploy_admin", map[string]any{"tier": "prod", "hostname": "prodhost1", "action": "dry-activate", "branch": "v1.2"}, nil)
	r := deployResult(t, res)
	if res.IsError || !r.Success || !slices.Equal(hostNames(r), []string{"prodhost1=completed"}) {
		t.Fatalf("deploy_admin: %s", text(res))
	}
	calls := f.calls("prodhost1")
	if len(calls) != 1 || calls[0][1] != "dry-activate" || !strings.HasSuffix(calls[0][3], "ref=v1.2#prodhost1") {
		t.Errorf("prodhost1 argv %v", calls)
	}
	res = call(t, cs, "deploy_admin", map[string]any{"tier": "prod", "role": "web"}, nil)
	if got := hostNames(deployResult(t, res)); !slices.Equal(got, []string{"prodhost1=completed"}) {
		t.Errorf("deploy_admin prod role web reached %v", got)
	}
}

func TestListHosts(t *testing.T) {
	f := newFleet(t)
	cs := session(t, newServer(t, f, tools.GatesOn()), nil)
	res := call(t, cs, "list_hosts", map[string]any{}, nil)
	var r listhosts.Result
	remarshal(t, res.StructuredContent, &r)
	var got []string
	for _, h := range r.Hosts {
		got = append(got, h.Tier+"/"+h.Hostname+"/"+h.Role)
	}
	if want := []string{"prod/prodhost1/web", "test/testhost1/web", "test/testhost2/db"}; res.IsError || !slices.Equal(got, want) {
		t.Errorf("list_hosts = %v (isError %v), want %v", got, res.IsError, want)
	}
	if !strings.Contains(text(res), "testhost2\ttest\trole=db") {
		t.Errorf("summary:\n%s", text(res))
	}
	res = call(t, cs, "list_hosts", map[string]any{"tier": "prod"}, nil)
	remarshal(t, res.StructuredContent, &r)
	if len(r.Hosts) != 1 || r.Hosts[0].Hostname != "prodhost1" {
		t.Errorf("list_hosts tier=prod = %+v", r.Hosts)
	}
}
