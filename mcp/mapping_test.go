package mcpserver_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	mcpserver "github.com/homelab-deploy/homelab-deploy/mcp"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
)

// A synthetic registry shows that the adapter handles every tool alike:
// gates come from the registry, not from names, and each kind of outcome
// maps to the same kind of MCP answer.

type probeIn struct {
	Mode string `json:"mode" jsonschema:"what the probe does"`
}

type probeOut struct {
	Text string `json:"text"`
	Bad  bool   `json:"bad"`
}

func (o probeOut) IsError() bool   { return o.Bad }
func (o probeOut) Summary() string { return "summary: " + o.Text }

func probeTool(name string, gate *tools.Gate) tools.Tool {
	return tools.Define(tools.Tool{
		Name: name, Title: name, Description: "probe", Gate: gate,
		Annotations: tools.Annotations{ReadOnly: true, Idempotent: true},
	}, nil, func(in probeIn) (probeIn, error) { return in, nil }, func(ctx context.Context, env tools.Env, in probeIn, progress tools.Progress) (probeOut, error) {
		switch in.Mode {
		case "ok":
			progress.Emit(tools.Event{Status: protocol.StatusStarted, Message: "looking", Total: 2})
			progress.Emit(tools.Event{Host: "h1", Status: protocol.StatusCompleted, Done: 1, Total: 2})
			progress.Emit(tools.Event{Host: "h2", Status: protocol.StatusFailed, Error: protocol.ErrBuildFailed, Message: "nix build failed\nlong log", Done: 2, Total: 2, Duration: 83_400_000_000})
			return probeOut{Text: "fine"}, nil
		case "failed":
			return probeOut{Text: "one host failed", Bad: true}, nil
		case "input":
			return probeOut{}, tools.Invalid("mode %q needs a partner", in.Mode)
		case "nats":
			return probeOut{}, errors.New("publish: nats: connection closed")
		case "panic":
			panic("probe exploded")
		}
		return probeOut{}, nil
	})
}

func probeRegistry() *tools.Registry {
	r := &tools.Registry{}
	r.Register(probeTool("alpha", nil), probeTool("beta", &tools.Gate{Name: "admin"}), probeTool("gamma", &tools.Gate{Name: "builds"}))
	return r
}

func TestGatesComeFromTheRegistry(t *testing.T) {
	want := map[string][]string{
		"":             {"alpha"},
		"admin":        {"alpha", "beta"},
		"builds":       {"alpha", "gamma"},
		"admin,builds": {"alpha", "beta", "gamma"},
	}
	for on, names := range want {
		g := tools.GatesOn(strings.Split(on, ",")...)
		cs := session(t, mcpserver.New(probeRegistry(), g, tools.Deps{}, "test"), nil)
		got := toolNames(t, cs)
		slices.Sort(got)
		if !slices.Equal(got, names) {
			t.Errorf("gates %+v: tools %v, want %v", g, got, names)
		}
	}
}

func TestOutcomeMapping(t *testing.T) {
	var plog progressLog
	cs := session(t, mcpserver.New(probeRegistry(), tools.GatesOn(), tools.Deps{}, "test"), &plog)
	ctx := context.Background()
	callProbe := func(mode string) (*mcp.CallToolResult, error) {
		p := &mcp.CallToolParams{Name: "alpha", Arguments: map[string]any{"mode": mode}}
		p.SetProgressToken("p")
		return cs.CallTool(ctx, p)
	}

	res, err := callProbe("ok")
	if err != nil || res.IsError || text(res) != "summary: fine" {
		t.Fatalf("ok: %v %v %q", err, res.IsError, text(res))
	}
	var out probeOut
	remarshal(t, res.StructuredContent, &out)
	if out.Text != "fine" {
		t.Errorf("structured content %+v", res.StructuredContent)
	}
	eventually(t, "three notifications", func() bool { return len(plog.get()) == 3 })
	got := plog.get()
	if m := messages(got); !slices.Equal(m, []string{"started: looking", "h1: completed", "h2: failed (build_failed, 83 s): nix build failed"}) {
		t.Errorf("messages %q", m)
	}
	if v := progressValues(got); v[0] != 0 || v[1] != 1 || v[2] != 2 {
		t.Errorf("progress %v, want 0, 1, 2", v)
	}

	res, err = callProbe("failed")
	if err != nil || !res.IsError || text(res) != "summary: one host failed" || res.StructuredContent == nil {
		t.Errorf("failed: %v isError=%v %q", err, res.IsError, text(res))
	}

	res, err = callProbe("input")
	if err != nil || !res.IsError || !strings.Contains(text(res), `invalid input for alpha: mode "input" needs a partner. Nothing was sent.`) {
		t.Errorf("input: %v %q", err, text(res))
	}

	res, err = callProbe("nats")
	if err != nil || !res.IsError || !strings.Contains(text(res), "alpha did not complete: publish: nats: connection closed") {
		t.Errorf("nats: %v %q", err, text(res))
	}

	// Our own faults are protocol errors, and the server survives them.
	if _, err = callProbe("panic"); err == nil || !strings.Contains(err.Error(), "internal error in tool alpha") {
		t.Errorf("panic: %v", err)
	}
	if _, err = callProbe("nothing"); err != nil {
		t.Errorf("a zero result is still a result: %v", err)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "beta"}); err == nil {
		t.Error("a gated-off tool can be called")
	}
	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "alpha", Arguments: map[string]any{"mode": 3, "extra": true}})
	if err != nil || !res.IsError || !strings.Contains(text(res), "invalid input for alpha") {
		t.Errorf("schema mismatch: %v %q", err, text(res))
	}
}

func TestProgressStrictlyIncreases(t *testing.T) {
	// Events that finish nothing (accepted, started) still move progress
	// forward, as MCP requires, without reaching the next finished host.
	reg := &tools.Registry{}
	reg.Register(tools.Define(tools.Tool{Name: "multi", Description: "probe"}, nil,
		func(in struct{}) (struct{}, error) { return in, nil },
		func(ctx context.Context, env tools.Env, in struct{}, progress tools.Progress) (probeOut, error) {
			for _, done := range []int{0, 0, 0, 1, 1, 1, 2} {
				progress.Emit(tools.Event{Host: "h", Status: protocol.StatusStarted, Done: done, Total: 2})
			}
			return probeOut{}, nil
		}))
	var plog progressLog
	cs := session(t, mcpserver.New(reg, tools.GatesOn(), tools.Deps{}, "test"), &plog)
	p := &mcp.CallToolParams{Name: "multi"}
	p.SetProgressToken(1)
	if _, err := cs.CallTool(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	eventually(t, "seven notifications", func() bool { return len(plog.get()) == 7 })
	v := progressValues(plog.get())
	for i := 1; i < len(v); i++ {
		if v[i] <= v[i-1] {
			t.Fatalf("progress %v does not increase strictly", v)
		}
	}
	floors := []float64{0, 0, 0, 1, 1, 1, 2}
	for i, x := range v {
		if float64(int(x)) != floors[i] {
			t.Fatalf("progress %v: the whole part must count finished hosts %v", v, floors)
		}
	}
}
