package mcpserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/agents/listener"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	mcpserver "github.com/homelab-deploy/homelab-deploy/mcp"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
	"github.com/homelab-deploy/homelab-deploy/tools/registry"
)

const flakeURL = "git+https://git.example.com/fleet/nixos-configs.git"

// host is one listener of the test fleet.
type host struct{ name, tier, role string }

// The fleet: two test hosts with different roles and one prod host sharing
// a role with a test host. slowHost is added where a test needs a host whose
// nixos-rebuild never ends.
var fleetHosts = []host{
	{"testhost1", "test", "web"},
	{"testhost2", "test", "db"},
	{"prodhost1", "prod", "web"},
}

var slowHost = host{"slowhost", "test", "slow"}

// gateHost's nixos-rebuild prints a line, then runs until the test opens
// its gate (fleet.open), then prints another and succeeds.
var gateHost = host{"gatehost", "test", "gate"}

// gateLine is the line gateHost's nixos-rebuild prints while it waits.
const gateLine = "building the system configuration..."

// fleet is an embedded NATS server with SPEC's credentials and real
// in-process listeners whose nixos-rebuild is a recording stand-in.
type fleet struct {
	nats *testenv.NATS
	mu   sync.Mutex
	argv map[string][][]string // host -> recorded nixos-rebuild argv
	gate chan struct{}         // closed by open
	once sync.Once
}

// open lets gateHost's nixos-rebuild finish.
func (f *fleet) open() { f.once.Do(func() { close(f.gate) }) }

func newFleet(t *testing.T, extra ...host) *fleet {
	t.Helper()
	hosts := append(slices.Clone(fleetHosts), extra...)
	users := []testenv.User{
		{Name: "mcp", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())},
		{Name: "admin", Permissions: testenv.Ptr(protocol.AdminDeployerPermissions())},
		{Name: "root"}, // allow-all: the spy, and a deliberately over-privileged deployer
	}
	for _, h := range hosts {
		users = append(users, testenv.User{Name: h.name, Permissions: testenv.ListenerPerms(h.tier, h.name, h.role)})
	}
	f := &fleet{nats: testenv.StartNATS(t, users...), argv: map[string][][]string{}, gate: make(chan struct{})}
	t.Cleanup(f.open)
	for _, h := range hosts {
		f.startListener(t, h)
	}
	return f
}

func (f *fleet) startListener(t *testing.T, h host) {
	t.Helper()
	conn := f.nats.Connect(t, h.name)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	rebuild := func(ctx context.Context, r deploy.Rebuild) (string, error) {
		argv := r.Argv
		f.mu.Lock()
		f.argv[h.name] = append(f.argv[h.name], append([]string(nil), argv...))
		f.mu.Unlock()
		switch {
		case h == slowHost:
			<-ctx.Done()
			return "", ctx.Err()
		case h == gateHost:
			r.Line(gateLine)
			select {
			case <-f.gate:
			case <-ctx.Done():
				return "", ctx.Err()
			}
			r.Line("activating the configuration...")
		case strings.HasSuffix(argv[len(argv)-1], "ref=broken#"+h.name):
			// A failure with several lines of output, as Nix writes it.
			r.Line("building the system configuration...")
			r.Line("error: attribute 'broken' missing")
			r.Line("       at /nix/store/flake.nix:12:5")
			return "building the system configuration...\nerror: attribute 'broken' missing\n       at /nix/store/flake.nix:12:5", errors.New("exit status 1")
		}
		return "", nil
	}
	go func() {
		done <- listener.Run(ctx, listener.Config{
			Hostname: h.name, Tier: h.tier, Role: h.role, FlakeURL: flakeURL,
			Timeout: time.Hour, ShutdownGrace: 50 * time.Millisecond, Version: "test",
			Conn: conn, Rebuild: rebuild, Ready: func(*listener.Listener) { close(ready) },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("listener %s: %v", h.name, err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("listener %s did not start: %v", h.name, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("listener %s did not become ready", h.name)
	}
}

// calls returns the nixos-rebuild invocations recorded on a host.
func (f *fleet) calls(name string) [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]string(nil), f.argv[name]...)
}

// deps returns tool dependencies with the test-tier credential and, when
// admin is set, the admin credential. The accept window is short so group
// deploys finish quickly; it is not a limit the tests race against.
func (f *fleet) deps(t *testing.T, admin bool) tools.Deps {
	d := tools.Deps{
		Conns:    map[string]*protocol.Conn{tools.DefaultCredential: f.nats.Connect(t, "mcp")},
		Defaults: map[string]any{"accept_window_seconds": 0.3, "quiet_seconds": 0.2},
	}
	if admin {
		d.Conns["admin"] = f.nats.Connect(t, "admin")
	}
	return d
}

// spy subscribes with the allow-all credential and records every message
// on the given subjects.
type spy struct {
	conn *protocol.Conn
	mu   sync.Mutex
	msgs []*nats.Msg
}

func (f *fleet) spy(t *testing.T, subjects ...string) *spy {
	t.Helper()
	s := &spy{conn: f.nats.Connect(t, "root")}
	for _, subj := range subjects {
		if _, err := s.conn.Subscribe(subj, func(m *nats.Msg) {
			s.mu.Lock()
			s.msgs = append(s.msgs, m)
			s.mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.conn.Flush(); err != nil {
		t.Fatal(err)
	}
	return s
}

// seen returns the subjects received so far, after a round trip to the
// server so that everything published before the call has arrived.
func (s *spy) seen(t *testing.T) []string {
	t.Helper()
	if err := s.conn.Flush(); err != nil {
		t.Fatal(err)
	}
	// Messages published by other connections before this point are
	// delivered before the server answers a later ping from them; a short
	// settle covers the delivery to our handler goroutine.
	time.Sleep(50 * time.Millisecond)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, m := range s.msgs {
		out = append(out, m.Subject)
	}
	return out
}

// progressLog collects progress notifications per token.
type progressLog struct {
	mu     sync.Mutex
	events []*mcp.ProgressNotificationParams
	hook   func(*mcp.ProgressNotificationParams)
}

func (p *progressLog) handle(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
	p.mu.Lock()
	p.events = append(p.events, req.Params)
	hook := p.hook
	p.mu.Unlock()
	if hook != nil {
		hook(req.Params)
	}
}

func (p *progressLog) get() []*mcp.ProgressNotificationParams {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*mcp.ProgressNotificationParams(nil), p.events...)
}

// session serves srv over in-memory transports and returns a connected
// client session.
func session(t *testing.T, srv *mcp.Server, progress *progressLog) *mcp.ClientSession {
	t.Helper()
	ctx := context.Background()
	ct, st := mcp.NewInMemoryTransports()
	ss, err := srv.Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	opts := &mcp.ClientOptions{}
	if progress != nil {
		opts.ProgressNotificationHandler = progress.handle
	}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test-client", Version: "1"}, opts).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.Close()
		_ = ss.Wait()
	})
	return cs
}

func newServer(t *testing.T, f *fleet, gates tools.Gates) *mcp.Server {
	t.Helper()
	return mcpserver.New(registry.New(), gates, f.deps(t, gates.On("admin")), "test")
}

// call calls a tool and checks that a successful call's structured content
// matches the tool's advertised output schema.
func call(t *testing.T, cs *mcp.ClientSession, name string, args any, token any) *mcp.CallToolResult {
	t.Helper()
	params := &mcp.CallToolParams{Name: name, Arguments: args}
	if token != nil {
		params.SetProgressToken(token)
	}
	// A generous ceiling so that a call that waits for hosts that never
	// answer fails the test instead of hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := cs.CallTool(ctx, params)
	if err != nil {
		t.Fatalf("call %s %v: %v", name, args, err)
	}
	if res.StructuredContent != nil {
		checkOutputSchema(t, cs, name, res.StructuredContent)
	}
	return res
}

// checkOutputSchema validates structured output the way strict clients do.
func checkOutputSchema(t *testing.T, cs *mcp.ClientSession, name string, out any) {
	t.Helper()
	list, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tl := range list.Tools {
		if tl.Name != name {
			continue
		}
		var s jsonschema.Schema
		remarshal(t, tl.OutputSchema, &s)
		r, err := s.Resolve(nil)
		if err != nil {
			t.Fatalf("%s: output schema does not resolve: %v", name, err)
		}
		var v any
		remarshal(t, out, &v)
		if err := r.Validate(v); err != nil {
			t.Errorf("%s: structured content does not match the advertised output schema: %v\n%s", name, err, mustJSON(out))
		}
		return
	}
	t.Fatalf("tool %s not listed", name)
}

func remarshal(t *testing.T, from, to any) {
	t.Helper()
	b, err := json.Marshal(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, to); err != nil {
		t.Fatal(err)
	}
}

func mustJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

func text(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

func toolNames(t *testing.T, cs *mcp.ClientSession) []string {
	t.Helper()
	list, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range list.Tools {
		names = append(names, tl.Name)
	}
	return names
}

// eventually polls cond for up to a generous deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, cond, "timed out waiting for %s", what)
}
