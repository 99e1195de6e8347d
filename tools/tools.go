// Package tools is the registry at the centre of homelab-deploy. Each
// capability (deploy, list_hosts, build) is a tool module in its own folder
// under tools/, and the CLI, the MCP server and the daemons are thin adapters
// over the tools defined here.
package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"time"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// Gate names the flag that must be given for a tool to exist.
type Gate string

// Gates.
const (
	GateNone   Gate = ""
	GateAdmin  Gate = "admin"  // --enable-admin
	GateBuilds Gate = "builds" // --enable-builds
)

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
}

// Progress receives events. A nil Progress drops them.
type Progress func(Event)

// Emit calls p if it is not nil.
func (p Progress) Emit(e Event) {
	if p != nil {
		p(e)
	}
}

// Deps are the dependencies a tool's request half needs. Adapters build them
// after parsing their flags; tests replace any of them.
type Deps struct {
	// Conn is the default credential's connection (test-tier deployer,
	// build client).
	Conn *protocol.Conn
	// AdminConn is the admin deployer's connection, used by deploy_admin.
	AdminConn *protocol.Conn
	// BuildConn, when set, is used for builds instead of Conn.
	BuildConn *protocol.Conn
	Logger    *slog.Logger
	// DeployTimeout caps a deploy (default 900 s).
	DeployTimeout time.Duration
	// AcceptWindow is how long a group deploy keeps waiting for new hosts
	// after the last one answered (default 2 s).
	AcceptWindow time.Duration
	// DiscoverQuiet ends discovery after this long without a new answer.
	DiscoverQuiet time.Duration
	// DiscoverMax caps discovery.
	DiscoverMax time.Duration
	// BuildTimeout caps a build (default 3600 s).
	BuildTimeout time.Duration
}

// Defaults for Deps fields left zero.
const (
	DefaultDeployTimeout = 900 * time.Second
	DefaultAcceptWindow  = 2 * time.Second
	DefaultDiscoverQuiet = 500 * time.Millisecond
	DefaultDiscoverMax   = 10 * time.Second
	DefaultBuildTimeout  = 3600 * time.Second
)

// WithDefaults fills zero durations.
func (d Deps) WithDefaults() Deps {
	if d.DeployTimeout <= 0 {
		d.DeployTimeout = DefaultDeployTimeout
	}
	if d.AcceptWindow <= 0 {
		d.AcceptWindow = DefaultAcceptWindow
	}
	if d.DiscoverQuiet <= 0 {
		d.DiscoverQuiet = DefaultDiscoverQuiet
	}
	if d.DiscoverMax <= 0 {
		d.DiscoverMax = DefaultDiscoverMax
	}
	if d.BuildTimeout <= 0 {
		d.BuildTimeout = DefaultBuildTimeout
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	return d
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

// InputError is returned by a handler when the caller's input is invalid.
// Adapters show it as a usage error (CLI) or an isError result (MCP); nothing
// was sent.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// Invalid wraps err as an InputError.
func Invalid(format string, args ...any) error {
	return &InputError{fmt.Errorf(format, args...)}
}

// Tool is one registered capability.
type Tool struct {
	Name        string
	Title       string
	Description string
	Annotations Annotations
	Gate        Gate
	// InputSchema and OutputSchema are inferred from the handler's types.
	InputSchema  *jsonschema.Schema
	OutputSchema *jsonschema.Schema
	// Call decodes the JSON input and runs the handler.
	Call func(ctx context.Context, deps Deps, input json.RawMessage, progress Progress) (Result, error)
}

// Define makes a Tool from a typed handler. schemaFix, if not nil, may refine
// the inferred input schema (enums, bounds).
func Define[In any, Out Result](t Tool, schemaFix func(in, out *jsonschema.Schema), h func(ctx context.Context, deps Deps, in In, progress Progress) (Out, error)) Tool {
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
	t.InputSchema, t.OutputSchema = in, out
	t.Call = func(ctx context.Context, deps Deps, raw json.RawMessage, progress Progress) (Result, error) {
		var v In
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, &InputError{fmt.Errorf("%s: input does not match the schema: %w", t.Name, err)}
			}
		}
		return h(ctx, deps, v, progress)
	}
	return t
}

// schemaOptions describes types whose JSON is not what reflection infers:
// an error code is JSON null when there is no error.
func schemaOptions() *jsonschema.ForOptions {
	return &jsonschema.ForOptions{TypeSchemas: map[reflect.Type]*jsonschema.Schema{
		reflect.TypeFor[protocol.ErrorCode](): {Types: []string{"null", "string"}},
	}}
}

// Gates says which optional tools are switched on.
type Gates struct {
	Admin  bool
	Builds bool
}

// Allows reports whether g switches on gate.
func (g Gates) Allows(gate Gate) bool {
	switch gate {
	case GateNone:
		return true
	case GateAdmin:
		return g.Admin
	case GateBuilds:
		return g.Builds
	}
	return false
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
	slices.SortFunc(out, func(a, b Tool) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// Enabled is the one place where gates are decided: it returns the tools
// that exist under g. Every transport and adapter uses it.
func (r *Registry) Enabled(g Gates) []Tool {
	var out []Tool
	for _, t := range r.All() {
		if g.Allows(t.Gate) {
			out = append(out, t)
		}
	}
	return out
}
