package mcpserver_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	mcpserver "github.com/homelab-deploy/homelab-deploy/mcp"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/registry"
	"github.com/homelab-deploy/homelab-deploy/tools/status"
)

// statusOf calls the status tool and returns its result and structured
// content.
func statusOf(t *testing.T, cs *mcp.ClientSession, id string) (*mcp.CallToolResult, map[string]any) {
	t.Helper()
	res := call(t, cs, "status", map[string]any{"id": id}, nil)
	var out map[string]any
	remarshal(t, res.StructuredContent, &out)
	return res, out
}

// hostEntry returns the entry of hosts (a deploy result's) named name.
func hostEntry(out map[string]any, name string) map[string]any {
	hosts, _ := out["hosts"].([]any)
	for _, h := range hosts {
		if m, _ := h.(map[string]any); m["hostname"] == name {
			return m
		}
	}
	return nil
}

func TestDeployWithoutWaitReturnsItsIDAndStatusFollowsIt(t *testing.T) {
	f := newFleet(t, gateHost)
	cs := session(t, newServer(t, f, tools.GatesOn()), nil)

	res := call(t, cs, "deploy", map[string]any{"hostname": "gatehost", "wait": false}, nil)
	r := deployResult(t, res)
	if res.IsError || r.Done || r.ID == "" || r.Success {
		t.Fatalf("deploy wait=false: isError=%v done=%v id=%q success=%v\n%s", res.IsError, r.Done, r.ID, r.Success, text(res))
	}
	// It returned after the host's first answer, with the host in it.
	if len(r.Hosts) != 1 || r.Hosts[0].Hostname != "gatehost" || r.Hosts[0].Status.Terminal() {
		t.Errorf("hosts so far: %+v", r.Hosts)
	}
	for _, want := range []string{r.ID, "still running", `Call status with {"id": "` + r.ID + `"}`} {
		if !strings.Contains(text(res), want) {
			t.Errorf("text does not carry %q:\n%s", want, text(res))
		}
	}

	// While it runs: the same shape plus tool, source and done, with the
	// rebuild's own output line.
	var out map[string]any
	eventually(t, "status to show gatehost's output", func() bool {
		res, out = statusOf(t, cs, r.ID)
		h := hostEntry(out, "gatehost")
		return h != nil && fmt.Sprint(h["output"]) == "["+gateLine+"]"
	})
	if res.IsError || out["done"] != false || out["tool"] != "deploy" || out["source"] != status.SourceServer || out["id"] != r.ID || out["subject"] != "deploy.test.gatehost" {
		t.Errorf("status while running: isError=%v %s", res.IsError, mustJSON(out))
	}
	if !strings.Contains(text(res), gateLine) || !strings.Contains(text(res), "still running") {
		t.Errorf("status text while running:\n%s", text(res))
	}

	f.open()
	eventually(t, "status to say done", func() bool {
		res, out = statusOf(t, cs, r.ID)
		return out["done"] == true
	})
	if res.IsError || out["success"] != true || out["completed"] != 1.0 || hostEntry(out, "gatehost")["status"] != "completed" {
		t.Errorf("status when done: isError=%v %s", res.IsError, mustJSON(out))
	}
	if !strings.Contains(text(res), "gatehost: completed") || !strings.Contains(text(res), "is done") {
		t.Errorf("status text when done:\n%s", text(res))
	}
	if n := len(f.calls("gatehost")); n != 1 {
		t.Errorf("gatehost ran nixos-rebuild %d times, want once", n)
	}
}

func TestStatusOfIDsThisServerDoesNotKeep(t *testing.T) {
	f := newFleet(t)
	cs := session(t, newServer(t, f, tools.GatesOn()), nil)

	// A deploy by another server (a restart forgets the same way): the
	// hosts still report it as their last deploy.
	other := session(t, newServer(t, f, tools.GatesOn()), nil)
	done := deployResult(t, call(t, other, "deploy", map[string]any{"hostname": "testhost1"}, nil))
	if !done.Success || !done.Done {
		t.Fatalf("deploy through the other server: %+v", done)
	}
	res, out := statusOf(t, cs, done.ID)
	h := hostEntry(out, "testhost1")
	if res.IsError || out["source"] != status.SourceHosts || out["done"] != true || out["tool"] != "deploy" || h == nil || h["status"] != "completed" {
		t.Errorf("status of another server's deploy: isError=%v %s", res.IsError, mustJSON(out))
	}
	if !strings.Contains(text(res), "testhost1: completed") {
		t.Errorf("text: %s", text(res))
	}
	// list_hosts shows the same in its text.
	if lh := call(t, cs, "list_hosts", map[string]any{"tier": "test"}, nil); !strings.Contains(text(lh), "last deploy: switch of master completed") || !strings.Contains(text(lh), "id "+done.ID) {
		t.Errorf("list_hosts text does not show the last deploy:\n%s", text(lh))
	}

	// Nobody knows this one: an error that says where to look.
	res, out = statusOf(t, cs, "NEVERSENT0000000000000000A")
	if !res.IsError || out["source"] != status.SourceNone || !strings.Contains(text(res), "list_hosts") {
		t.Errorf("unknown id: isError=%v %s\n%s", res.IsError, mustJSON(out), text(res))
	}
	// An id that is not one is refused before anything is asked.
	s := f.spy(t, "deploy.>")
	for _, id := range []string{"x.y", "*", "", strings.Repeat("a", 65), "id with space"} {
		res := call(t, cs, "status", map[string]any{"id": id}, nil)
		if !res.IsError || !strings.Contains(text(res), "invalid input for status") || !strings.Contains(text(res), "Nothing was sent") {
			t.Errorf("status id %q: %s", id, text(res))
		}
	}
	if got := s.seen(t); len(got) != 0 {
		t.Errorf("invalid ids put messages on the wire: %v", got)
	}
}

func TestBlockingDeployProgressCarriesTheRebuildOutput(t *testing.T) {
	f := newFleet(t, gateHost)
	var plog progressLog
	plog.hook = func(p *mcp.ProgressNotificationParams) {
		if strings.Contains(p.Message, gateLine) {
			f.open()
		}
	}
	cs := session(t, newServer(t, f, tools.GatesOn()), &plog)
	res := call(t, cs, "deploy", map[string]any{"hostname": "gatehost"}, "live")
	if r := deployResult(t, res); res.IsError || !r.Success || !r.Done {
		t.Fatalf("deploy: %s", text(res))
	}
	eventually(t, "the final notification", func() bool {
		got := plog.get()
		return len(got) > 0 && strings.HasPrefix(got[len(got)-1].Message, "gatehost: completed")
	})
	got := plog.get()
	msgs := messages(got)
	if !slices.ContainsFunc(msgs, func(m string) bool {
		return strings.HasPrefix(m, "gatehost: running ") && strings.HasSuffix(m, ": "+gateLine)
	}) {
		t.Errorf("no notification carries the rebuild's output line: %q", msgs)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Progress <= got[i-1].Progress {
			t.Errorf("progress does not increase: %v", progressValues(got))
		}
	}
}

// outputProbe emits what a host streaming its output looks like to a
// tool: a status, then output events, as fast as the test makes it.
func outputProbe(run func(ctx context.Context, progress tools.Progress)) *tools.Registry {
	reg := &tools.Registry{}
	reg.Register(tools.Define(tools.Tool{Name: "probe", Description: "probe"}, nil,
		func(in struct{}) (struct{}, error) { return in, nil },
		func(ctx context.Context, _ tools.Env, _ struct{}, progress tools.Progress) (probeOut, error) {
			run(ctx, progress)
			return probeOut{Text: "done"}, nil
		}))
	return reg
}

func callProbe(t *testing.T, cs *mcp.ClientSession) {
	t.Helper()
	p := &mcp.CallToolParams{Name: "probe"}
	p.SetProgressToken("p")
	if _, err := cs.CallTool(context.Background(), p); err != nil {
		t.Fatal(err)
	}
}

func TestEventMessages(t *testing.T) {
	for _, tc := range []struct {
		e    tools.Event
		want string
	}{
		{tools.Event{Host: "h1", Status: protocol.StatusStarted, Action: "switch"}, "h1: started (switch)"},
		{tools.Event{Host: "h1", Status: protocol.StatusFailed, Action: "switch", Error: protocol.ErrBuildFailed, Duration: 83_400_000_000, Message: "nixos-rebuild switch failed\nerror: x"}, "h1: failed (switch, build_failed, 83 s): nixos-rebuild switch failed"},
		// Output: the host's running time and its latest line.
		{tools.Event{Host: "h1", Status: "output", Lines: []string{"copying path"}, Running: 41_200_000_000}, "h1: running 41 s: copying path"},
		{tools.Event{Host: "h1", Status: "output", Lines: []string{"a", "b", "c"}, Running: 5_000_000_000}, "h1: running 5.0 s: c (3 new lines)"},
		// A heartbeat: the running time and the latest line as its message.
		{tools.Event{Host: "h1", Status: "output", Message: "building the system configuration...", Running: 46_000_000_000}, "h1: running 46 s: building the system configuration..."},
		{tools.Event{Status: protocol.StatusStarted, Message: "building 3 hosts"}, "started: building 3 hosts"},
	} {
		if got := mcpserver.EventMessage(tc.e); got != tc.want {
			t.Errorf("EventMessage(%+v) = %q, want %q", tc.e, got, tc.want)
		}
	}
}

func TestFastOutputIsCoalescedAndItsLastLineKept(t *testing.T) {
	var plog progressLog
	last := make(chan struct{})
	var once sync.Once
	plog.hook = func(p *mcp.ProgressNotificationParams) {
		if strings.HasSuffix(p.Message, "line 999") {
			once.Do(func() { close(last) })
		}
	}
	reg := outputProbe(func(ctx context.Context, progress tools.Progress) {
		for i := range 1000 {
			progress.Emit(tools.Event{Host: fmt.Sprintf("h%d", i%50), Status: "output", Lines: []string{fmt.Sprintf("line %d", i)}, Running: 1_000_000_000})
		}
		// The call returns once the coalesced last line reached the
		// client: nothing is sent after a call returned.
		select {
		case <-last:
		case <-ctx.Done():
		}
	})
	cs := session(t, mcpserver.New(reg, tools.GatesOn(), tools.Deps{}, "test"), &plog)
	callProbe(t, cs)
	got := plog.get()
	if len(got) > 100 {
		t.Errorf("1000 output events of 50 hosts became %d notifications; they should be coalesced", len(got))
	}
	if len(got) == 0 || !strings.HasSuffix(got[len(got)-1].Message, "line 999") {
		t.Errorf("the last line was lost: %q", messages(got))
	}
	for i := 1; i < len(got); i++ {
		if got[i].Progress <= got[i-1].Progress {
			t.Fatalf("progress does not increase: %v", progressValues(got))
		}
	}
}

func TestKeepAliveWhileTheHostsAreSilent(t *testing.T) {
	// An older listener sends nothing between started and its final
	// status: the server itself keeps the call alive.
	var plog progressLog
	alive := make(chan struct{})
	var once sync.Once
	plog.hook = func(p *mcp.ProgressNotificationParams) {
		if strings.Contains(p.Message, "still waiting") {
			once.Do(func() { close(alive) })
		}
	}
	reg := outputProbe(func(ctx context.Context, progress tools.Progress) {
		progress.Emit(tools.Event{Host: "old1", Status: protocol.StatusStarted, Action: "switch", Total: 1})
		select {
		case <-alive:
		case <-ctx.Done():
		}
	})
	cs := session(t, mcpserver.New(reg, tools.GatesOn(), tools.Deps{}, "test"), &plog)
	callProbe(t, cs)
	got := plog.get()
	if len(got) != 2 || !strings.HasPrefix(got[1].Message, "old1: started, still waiting, ") || got[1].Progress <= got[0].Progress || got[1].Total != 1 {
		t.Errorf("keep-alive: %q %v", messages(got), progressValues(got))
	}
}

func TestSettingsAreTheSchemaDefaultsAndApply(t *testing.T) {
	f := newFleet(t)
	deps := f.deps(t, false)
	deps.Defaults["deploy.branch"] = "release-1"
	deps.Defaults["deploy.timeout_seconds"] = 120
	cs := session(t, mcpserver.New(registry.New(), tools.GatesOn("builds"), deps, "test"), nil)
	list, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defaults := map[string]string{}
	for _, tl := range list.Tools {
		var in struct {
			Properties map[string]struct {
				Default any `json:"default"`
			} `json:"properties"`
		}
		remarshal(t, tl.InputSchema, &in)
		for name, p := range in.Properties {
			if p.Default != nil {
				defaults[tl.Name+"."+name] = fmt.Sprint(p.Default)
			}
		}
	}
	for k, want := range map[string]string{"deploy.branch": "release-1", "deploy.timeout_seconds": "120", "build.timeout_seconds": "3600", "deploy.action": "switch"} {
		if defaults[k] != want {
			t.Errorf("published default of %s = %q, want %q", k, defaults[k], want)
		}
	}
	// The registry's own schema is untouched (other servers, the golden
	// snapshots).
	if d := registry.New().Lookup("deploy").InputSchema.Properties["branch"].Default; string(d) != `"master"` {
		t.Errorf("registry schema default changed to %s", d)
	}
	res := call(t, cs, "deploy", map[string]any{"hostname": "testhost2"}, nil)
	calls := f.calls("testhost2")
	if res.IsError || len(calls) != 1 || !strings.HasSuffix(calls[0][len(calls[0])-1], "ref=release-1#testhost2") {
		t.Errorf("deploy without a branch ran %q: %s", calls, text(res))
	}
}

func TestResultTextCarriesTheFullHostMessage(t *testing.T) {
	f := newFleet(t)
	cs := session(t, newServer(t, f, tools.GatesOn()), nil)
	res := call(t, cs, "deploy", map[string]any{"hostname": "testhost1", "branch": "broken"}, nil)
	r := deployResult(t, res)
	if !res.IsError || r.Success || len(r.Hosts) != 1 || r.Hosts[0].Error != protocol.ErrBuildFailed {
		t.Fatalf("broken deploy: %s", text(res))
	}
	// What was cut at the first newline before: Nix's error and where.
	for _, want := range []string{"testhost1: failed (build_failed)", "error: attribute 'broken' missing", "at /nix/store/flake.nix:12:5", "id " + r.ID} {
		if !strings.Contains(text(res), want) {
			t.Errorf("text lacks %q:\n%s", want, text(res))
		}
	}
}

func TestInputErrorsSayWhatToDoAndQuoteLittle(t *testing.T) {
	f := newFleet(t)
	cs := session(t, newServer(t, f, tools.GatesOn()), nil)
	for _, tc := range []struct {
		args map[string]any
		want string
	}{
		{map[string]any{}, "give exactly one target: hostname, all (true) or role"},
		{map[string]any{"hostname": "testhost1", "role": "web"}, "give exactly one target"},
		{map[string]any{"hostname": "testhost1", "all": true}, "give exactly one target"},
		{map[string]any{"all": false}, "give exactly one target"},
		{map[string]any{"hostname": "testhost1", "branch": nil}, "branch"},
		{map[string]any{"hostname": "testhost1", "branch": strings.Repeat("b", 1<<20)}, "branch"},
		{map[string]any{"hostname": "testhost1", "wait": "no"}, "wait"},
	} {
		res := call(t, cs, "deploy", tc.args, nil)
		msg := text(res)
		if !res.IsError || !strings.Contains(msg, tc.want) || !strings.Contains(msg, "Nothing was sent") {
			t.Errorf("deploy %.80v: %.300s", tc.args, msg)
		}
		if len(msg) > 1000 || strings.Contains(msg, "invalid reflect.Value") {
			t.Errorf("deploy %.80v: the error quotes too much or nothing useful (%d bytes): %.300s", tc.args, len(msg), msg)
		}
	}
	// A valid choice with all: false alongside passes the rule.
	if res := call(t, cs, "deploy", map[string]any{"hostname": "testhost1", "all": false}, nil); res.IsError {
		t.Errorf("hostname with all false: %s", text(res))
	}
}
