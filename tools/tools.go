// Package tools is the registry at the centre of homelab-deploy. Each
// capability (deploy, list_hosts, build) is a tool module in its own folder
// under tools/, and the CLI, the MCP server and the demo are thin adapters
// that call a tool by name through a Registry: one input type, one set of
// defaults, one validation and one error mapping for every adapter.
package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// Gate switches an optional tool on. Gates are declared by the tools
// themselves (an open set); an adapter offers each gate it finds in the
// registry as --enable-<Name>, with Help as the flag's help text.
type Gate struct {
	Name string
	Help string
}

// Credential is the NATS identity a tool acts with. Tools without one use
// the adapter's default credential. An adapter offers each credential it
// finds in the registry as --<Name>-nkey-file.
type Credential struct {
	Name string
	Help string
	// Holder names who holds it, for messages ("the admin deployer").
	Holder string
	// Own means the tool must never fall back to the default credential:
	// its gate cannot be switched on without a seed for this credential.
	Own bool
}

// Annotations describe a tool's effects truthfully; every tool sets all four.
type Annotations struct {
	ReadOnly    bool
	Destructive bool
	Idempotent  bool
	OpenWorld   bool
}

// Event is one progress report from a running tool.
type Event struct {
	// Host is the host the event is about; empty for tool-level events.
	Host string
	// Status is the host's status (accepted, started, completed, ...).
	Status protocol.Status
	// Error is the host's error code, if any.
	Error protocol.ErrorCode
	// Message is a one-line human description.
	Message string
	// Action is what the host was asked to do (a nixos-rebuild action),
	// when the tool has one.
	Action string
	// Done counts hosts that are finished; Total counts hosts known so far
	// (0 while unknown).
	Done, Total int
	// Elapsed is the time since the request was sent.
	Elapsed time.Duration
	// Duration is how long the host's work took, when it is finished.
	Duration time.Duration
	// Lines are output lines of the host's work (nixos-rebuild, nix
	// build) that arrived with this event, oldest first; empty for a
	// status change or a heartbeat.
	Lines []string
	// Running is how long the host's work has been running, as the host
	// reports it with output and heartbeats; zero otherwise.
	Running time.Duration
}

// Progress receives events. A nil Progress drops them.
type Progress func(Event)

// Emit calls p if it is not nil.
func (p Progress) Emit(e Event) {
	if p != nil {
		p(e)
	}
}

// DefaultCredential is the key of the adapter's own credential in
// Deps.Conns (the --nkey-file connection).
const DefaultCredential = ""

// Deps are what an adapter hands to every tool call: a logger and one NATS
// connection per credential. Nothing in it is specific to a tool; a tool's
// own settings are fields of its input.
type Deps struct {
	Logger *slog.Logger
	// Conns maps a credential name to its connection; DefaultCredential
	// ("") is the adapter's own.
	Conns map[string]*protocol.Conn
	// Defaults are the adapter's defaults for input fields, by JSON name
	// (an MCP server's --default-branch, a test's short accept window).
	// They apply to every tool whose input has the field, hidden or not,
	// when the caller left it out; a key "<tool>.<field>" applies to that
	// tool only and comes first (Tool.Default).
	Defaults map[string]any
	// Calls, if set, keeps the long calls this adapter started, for
	// `"wait": false` and the status tool (calls.go).
	Calls *Calls
}

// Env is what a tool's handler receives: the connection of the tool's
// credential and a logger.
type Env struct {
	Conn   *protocol.Conn
	Logger *slog.Logger
	// Tool is the name the tool was called by; Calls is the adapter's
	// store of long calls, nil when it keeps none.
	Tool  string
	Calls *Calls
}

// env resolves t's credential in d. A missing connection is left nil: the
// tool says what it could not do without it.
func (d Deps) env(t *Tool) Env {
	e := Env{Logger: d.Logger, Tool: t.Name, Calls: d.Calls}
	if e.Logger == nil {
		e.Logger = slog.New(slog.DiscardHandler)
	}
	name := DefaultCredential
	if t.Credential != nil {
		name = t.Credential.Name
	}
	e.Conn = d.Conns[name]
	if e.Conn == nil && (t.Credential == nil || !t.Credential.Own) {
		e.Conn = d.Conns[DefaultCredential]
	}
	return e
}

// Result is what every tool returns: structured output plus a verdict and a
// summary a person can read.
type Result interface {
	// IsError reports whether the operation did not fully succeed (a host
	// failed, was rejected, timed out, or nobody answered).
	IsError() bool
	// Summary is a short human-readable account of the outcome.
	Summary() string
}

// InputError is returned when the caller's input is invalid. Adapters show
// it as a usage error (CLI exit 2) or an isError result (MCP); nothing was
// sent.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// Invalid wraps a formatted error as an InputError.
func Invalid(format string, args ...any) error {
	return &InputError{fmt.Errorf(format, args...)}
}

// ErrUnknownTool is returned by Registry.Call for a name it does not hold.
var ErrUnknownTool = errors.New("unknown tool")

// Tool is one registered capability.
type Tool struct {
	Name        string
	Title       string
	Description string
	Annotations Annotations
	// Gate, if set, is the switch the tool needs to exist.
	Gate *Gate
	// Credential, if set, is the identity the tool acts with.
	Credential *Credential
	// Hidden lists input fields that adapters may set but that are not part
	// of the published schema (operator settings such as a discovery
	// subject); an MCP client cannot send them.
	Hidden []string
	// InputSchema and OutputSchema are inferred from the handler's types.
	InputSchema  *jsonschema.Schema
	OutputSchema *jsonschema.Schema

	// fields are the JSON names of every input field, hidden ones included.
	fields []string
	check  func(raw json.RawMessage) (any, error)
	run    func(ctx context.Context, env Env, req any, progress Progress) (Result, error)
}

// Define makes a Tool from its input type In, a check that validates the
// input and turns it into a request Req (no I/O: it runs before an adapter
// connects anywhere), and the handler that carries Req out. schemaFix, if
// not nil, refines the inferred schemas (enums, bounds, defaults).
func Define[In any, Req any, Out Result](t Tool, schemaFix func(in, out *jsonschema.Schema),
	check func(in In) (Req, error),
	run func(ctx context.Context, env Env, req Req, progress Progress) (Out, error)) Tool {
	in, err := jsonschema.For[In](schemaOptions())
	if err != nil {
		panic(fmt.Sprintf("tool %s: input schema: %v", t.Name, err))
	}
	out, err := jsonschema.For[Out](schemaOptions())
	if err != nil {
		panic(fmt.Sprintf("tool %s: output schema: %v", t.Name, err))
	}
	if schemaFix != nil {
		schemaFix(in, out)
	}
	for name := range in.Properties {
		t.fields = append(t.fields, name)
	}
	for _, h := range t.Hidden {
		if _, ok := in.Properties[h]; !ok {
			panic(fmt.Sprintf("tool %s: hidden field %q is not in the input", t.Name, h))
		}
		delete(in.Properties, h)
		in.PropertyOrder = slices.DeleteFunc(in.PropertyOrder, func(s string) bool { return s == h })
	}
	t.InputSchema, t.OutputSchema = in, out
	t.check = func(raw json.RawMessage) (any, error) {
		var v In
		if err := decodeInput(raw, &v); err != nil {
			return nil, &InputError{fmt.Errorf("%s: %w", t.Name, err)}
		}
		return check(v)
	}
	t.run = func(ctx context.Context, env Env, req any, progress Progress) (Result, error) {
		return run(ctx, env, req.(Req), progress)
	}
	return t
}

// maxInputQuote bounds how much of a bad input an error message repeats.
const maxInputQuote = 200

// decodeInput decodes a JSON object strictly: unknown fields and trailing
// data are refused. Missing or null input is the zero value.
func decodeInput(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("input does not match the schema: %s", Quote(err.Error()))
	}
	if dec.More() {
		return errors.New("input does not match the schema: trailing data after the JSON object")
	}
	return nil
}

// Quote shortens s for an error message.
func Quote(s string) string {
	if len(s) <= maxInputQuote {
		return s
	}
	cut := maxInputQuote
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + fmt.Sprintf("… (%d bytes)", len(s))
}

// Check decodes and validates raw input without running the tool. Errors
// are *InputError.
func (t *Tool) Check(raw json.RawMessage) error {
	_, err := t.check(raw)
	return err
}

// Call validates raw input and runs the tool with the connection of its
// credential. An invalid input is an *InputError and nothing is sent.
func (t *Tool) Call(ctx context.Context, deps Deps, raw json.RawMessage, progress Progress) (Result, error) {
	raw, err := t.withDefaults(raw, deps.Defaults)
	if err != nil {
		return nil, err
	}
	req, err := t.check(raw)
	if err != nil {
		return nil, err
	}
	return t.run(ctx, deps.env(t), req, progress)
}

// Default returns the adapter's default for t's input field: the one
// for "<tool>.<field>", else the one for "<field>".
func (t *Tool) Default(defaults map[string]any, field string) (any, bool) {
	if v, ok := defaults[t.Name+"."+field]; ok {
		return v, true
	}
	v, ok := defaults[field]
	return v, ok
}

// withDefaults adds the adapter's defaults for the fields raw leaves out.
func (t *Tool) withDefaults(raw json.RawMessage, defaults map[string]any) (json.RawMessage, error) {
	var add []string
	for _, f := range t.fields {
		if _, ok := t.Default(defaults, f); ok {
			add = append(add, f)
		}
	}
	if len(add) == 0 {
		return raw, nil
	}
	obj := map[string]json.RawMessage{}
	if trimmed := bytes.TrimSpace(raw); len(trimmed) > 0 && string(trimmed) != "null" {
		if err := json.Unmarshal(trimmed, &obj); err != nil {
			return nil, &InputError{fmt.Errorf("%s: input is not a JSON object: %s", t.Name, Quote(err.Error()))}
		}
	}
	for _, f := range add {
		if _, ok := obj[f]; !ok {
			v, _ := t.Default(defaults, f)
			obj[f] = Marshal(v)
		}
	}
	return json.Marshal(obj)
}

// schemaOptions describes types whose JSON is not what reflection infers:
// an error code is JSON null when there is no error.
func schemaOptions() *jsonschema.ForOptions {
	return &jsonschema.ForOptions{TypeSchemas: map[reflect.Type]*jsonschema.Schema{
		reflect.TypeFor[protocol.ErrorCode](): {Types: []string{"null", "string"}},
	}}
}

// Gates says which gates are switched on. The zero value switches none on,
// so a forgotten setting never offers a gated tool.
type Gates struct {
	on  map[string]bool
	all bool
}

// GatesOn switches on the named gates.
func GatesOn(names ...string) Gates {
	g := Gates{on: map[string]bool{}}
	for _, n := range names {
		g.on[n] = true
	}
	return g
}

// AllGates switches on every gate: for adapters, such as the CLI, whose
// user chooses the credential and so what may be done.
func AllGates() Gates { return Gates{all: true} }

// On reports whether the gate name is switched on.
func (g Gates) On(name string) bool { return g.all || g.on[name] }

// String lists the gates switched on.
func (g Gates) String() string {
	if g.all {
		return "all"
	}
	var names []string
	for n, on := range g.on {
		if on {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return "[" + strings.Join(names, ",") + "]"
}

// allows reports whether g switches on t's gate.
func (g Gates) allows(t *Tool) bool {
	return t.Gate == nil || g.On(t.Gate.Name)
}

// Registry holds the tool modules.
type Registry struct {
	tools []Tool
}

// Register adds tools; a duplicate name is a programming error.
func (r *Registry) Register(ts ...Tool) {
	for _, t := range ts {
		if r.Lookup(t.Name) != nil {
			panic("tool registered twice: " + t.Name)
		}
		if t.check == nil {
			panic("tool " + t.Name + " was not made with tools.Define")
		}
		r.tools = append(r.tools, t)
	}
}

// Lookup returns the tool with name, or nil.
func (r *Registry) Lookup(name string) *Tool {
	for i := range r.tools {
		if r.tools[i].Name == name {
			return &r.tools[i]
		}
	}
	return nil
}

// All returns every tool, gated or not, sorted by name.
func (r *Registry) All() []Tool {
	out := slices.Clone(r.tools)
	slices.SortFunc(out, func(a, b Tool) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Enabled is the one place where gates are decided: it returns the tools
// that exist under g. Every transport and adapter uses it.
func (r *Registry) Enabled(g Gates) []Tool {
	var out []Tool
	for _, t := range r.All() {
		if g.allows(&t) {
			out = append(out, t)
		}
	}
	return out
}

// Gates returns every gate the registry's tools declare, sorted by name.
func (r *Registry) Gates() []Gate {
	var out []Gate
	for _, t := range r.All() {
		if t.Gate != nil && !slices.ContainsFunc(out, func(g Gate) bool { return g.Name == t.Gate.Name }) {
			out = append(out, *t.Gate)
		}
	}
	slices.SortFunc(out, func(a, b Gate) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Credentials returns every credential the registry's tools declare, with
// the gate of the first tool that uses it, sorted by name.
func (r *Registry) Credentials() []CredentialUse {
	var out []CredentialUse
	for _, t := range r.All() {
		if t.Credential == nil || slices.ContainsFunc(out, func(c CredentialUse) bool { return c.Name == t.Credential.Name }) {
			continue
		}
		out = append(out, CredentialUse{Credential: *t.Credential, Gate: t.Gate})
	}
	slices.SortFunc(out, func(a, b CredentialUse) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// CredentialUse is a credential and the gate of the tools that use it.
type CredentialUse struct {
	Credential
	Gate *Gate
}

// Call runs the tool name, if g switches it on. It is how every adapter
// invokes a tool.
func (r *Registry) Call(ctx context.Context, g Gates, name string, deps Deps, raw json.RawMessage, progress Progress) (Result, error) {
	t := r.Lookup(name)
	if t == nil || !g.allows(t) {
		return nil, fmt.Errorf("%w %q", ErrUnknownTool, name)
	}
	return t.Call(ctx, deps, raw, progress)
}

// Check validates raw input for the tool name without running it.
func (r *Registry) Check(name string, raw json.RawMessage) error {
	t := r.Lookup(name)
	if t == nil {
		return fmt.Errorf("%w %q", ErrUnknownTool, name)
	}
	return t.Check(raw)
}

// Marshal encodes v as a tool input; adapters use it to turn their flags
// into the same JSON an MCP client would send.
func Marshal(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("tools.Marshal: %v", err))
	}
	return b
}
