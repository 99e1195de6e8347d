// Package mcpserver turns the tool registry into an MCP server. It holds no
// tool logic: it maps each enabled tool's schemas and annotations onto go-sdk
// tools, runs the tool's handler with the raw arguments, turns its result
// into structured output plus a readable summary, and turns its progress
// events into MCP progress notifications. The same *mcp.Server serves every
// transport (stdio, streamable HTTP, SSE), so a tool that the gates switch
// off is absent everywhere.
package mcpserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/homelab-deploy/homelab-deploy/tools"
)

// Name is the implementation name the server reports to clients.
const Name = "homelab-deploy"

const instructions = "homelab-deploy deploys NixOS configurations to a fleet of hosts over NATS. " +
	"Discover the hosts before targeting them, and read each tool's description: it says what the tool may change, " +
	"what it can never do, and how long it can take. Deploys and builds report progress per host when you send a progress token. " +
	"A result with isError means the operation did not fully succeed; its text says what happened and what to try next."

// New returns an MCP server exposing the tools that gates switch on. deps is
// handed to every tool call; version is reported to clients.
func New(reg *tools.Registry, gates tools.Gates, deps tools.Deps, version string) *mcp.Server {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	s := mcp.NewServer(&mcp.Implementation{Name: Name, Title: "homelab-deploy", Version: version}, &mcp.ServerOptions{
		Instructions: instructions,
		Logger:       deps.Logger,
		// Tools only: the tool list is fixed for the server's lifetime, so
		// there are no list-changed notifications, and no MCP logging.
		Capabilities: &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{}},
	})
	for _, t := range reg.Enabled(gates) {
		s.AddTool(Describe(t), handler(t, deps))
	}
	return s
}

// Describe returns the MCP description of t: name, title, description,
// schemas and all four annotations, each set explicitly.
func Describe(t tools.Tool) *mcp.Tool {
	a := t.Annotations
	return &mcp.Tool{
		Name:        t.Name,
		Title:       t.Title,
		Description: t.Description,
		Annotations: &mcp.ToolAnnotations{
			Title:           t.Title,
			ReadOnlyHint:    a.ReadOnly,
			DestructiveHint: jsonschema.Ptr(a.Destructive),
			IdempotentHint:  a.Idempotent,
			OpenWorldHint:   jsonschema.Ptr(a.OpenWorld),
		},
		InputSchema:  t.InputSchema,
		OutputSchema: t.OutputSchema,
	}
}

// handler runs one tool. The mapping:
//   - a Result becomes structured content plus its Summary as text, with
//     isError when the operation did not fully succeed;
//   - arguments that do not match the input schema, and a tools.InputError,
//     become an isError result saying what is wrong (nothing was sent);
//   - any other error from the tool (NATS unreachable, permission refused)
//     is a failed operation and also an isError result, so the assistant
//     sees it;
//   - cancellation by the client ends the call with the context's error;
//   - only our own faults (a panic, a tool returning nothing) are protocol
//     errors.
func handler(t tools.Tool, deps tools.Deps) mcp.ToolHandler {
	input, err := t.InputSchema.Resolve(&jsonschema.ResolveOptions{ValidateDefaults: true})
	if err != nil {
		panic(fmt.Sprintf("mcp: tool %s: input schema does not resolve: %v", t.Name, err))
	}
	return func(ctx context.Context, req *mcp.CallToolRequest) (res *mcp.CallToolResult, err error) {
		defer func() {
			if p := recover(); p != nil {
				deps.Logger.Error("tool panicked", "tool", t.Name, "panic", p, "stack", string(debug.Stack()))
				res, err = nil, fmt.Errorf("internal error in tool %s; the server log has the details", t.Name)
			}
		}()
		raw := req.Params.Arguments
		if err := validate(input, raw); err != nil {
			return invalidResult(t.Name, err), nil
		}
		progress := notifier(ctx, req)
		start := time.Now()
		out, callErr := t.Call(ctx, deps, raw, progress)
		var inputErr *tools.InputError
		switch {
		case errors.As(callErr, &inputErr):
			return invalidResult(t.Name, inputErr), nil
		case ctx.Err() != nil:
			// The client cancelled the call (or went away): nobody waits
			// for a result any more.
			deps.Logger.Info("tool call cancelled", "tool", t.Name, "after", time.Since(start).Round(time.Millisecond))
			return nil, ctx.Err()
		case callErr != nil:
			deps.Logger.Warn("tool call failed", "tool", t.Name, "err", callErr)
			return errorResult(fmt.Sprintf("%s did not complete: %v. Check that the NATS server is reachable and that this server's credential is allowed to do this; then try again.", t.Name, callErr)), nil
		case out == nil:
			return nil, fmt.Errorf("internal error: tool %s returned no result", t.Name)
		}
		return &mcp.CallToolResult{
			Content:           []mcp.Content{&mcp.TextContent{Text: out.Summary()}},
			StructuredContent: out,
			IsError:           out.IsError(),
		}, nil
	}
}

// validate checks raw arguments against the tool's input schema. Missing
// arguments count as an empty object.
func validate(schema *jsonschema.Resolved, raw json.RawMessage) error {
	var v any = map[string]any{}
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("arguments are not valid JSON: %v", err)
		}
	}
	if err := schema.Validate(v); err != nil {
		return errors.New(tools.Quote(tidySchemaError(err.Error())))
	}
	return nil
}

// tidySchemaError shortens the validator's path prefixes:
// "validating root: validating /properties/hostname: pattern: ..." becomes
// "hostname: pattern: ...".
func tidySchemaError(msg string) string {
	msg = strings.ReplaceAll(msg, "validating root: ", "")
	for {
		i := strings.Index(msg, "validating /properties/")
		if i < 0 {
			return msg
		}
		rest := msg[i+len("validating /properties/"):]
		j := strings.Index(rest, ": ")
		if j < 0 {
			return msg
		}
		msg = msg[:i] + strings.ReplaceAll(rest[:j], "/properties/", ".") + ": " + rest[j+2:]
	}
}

func invalidResult(tool string, err error) *mcp.CallToolResult {
	return errorResult(fmt.Sprintf("invalid input for %s: %v. Nothing was sent. Correct the arguments (the tool's input schema and description list what is allowed) and call %s again.", tool, err, tool))
}

func errorResult(text string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: text}}, IsError: true}
}

// notifier returns a tools.Progress that sends one MCP progress notification
// per event, or nil when the client sent no progress token.
//
// progress counts finished hosts and total the hosts known so far. The MCP
// specification requires progress to increase with every notification, so
// an event that finishes no host (accepted, started) moves progress halfway
// towards the next whole number: the integer part is always the number of
// finished hosts.
func notifier(ctx context.Context, req *mcp.CallToolRequest) tools.Progress {
	token := req.Params.GetProgressToken()
	if token == nil || req.Session == nil {
		return nil
	}
	var mu sync.Mutex
	last := -1.0
	return func(e tools.Event) {
		mu.Lock()
		defer mu.Unlock()
		p := math.Max(float64(e.Done), math.Floor(last))
		if p <= last {
			p = last + (math.Floor(last)+1-last)/2
		}
		last = p
		total := float64(e.Total)
		if total > 0 && total < math.Ceil(p) {
			total = math.Ceil(p)
		}
		// A failed notification (client gone) must not stop the tool; the
		// call's context ends it if the client cancelled.
		_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
			ProgressToken: token,
			Progress:      p,
			Total:         total,
			Message:       EventMessage(e),
		})
	}
}

// EventMessage renders an event as one line, for example
// "testhost1: completed (switch, 41 s): nixos-rebuild switch of master completed in 41.0s".
func EventMessage(e tools.Event) string {
	var b strings.Builder
	if e.Host != "" {
		b.WriteString(e.Host)
		b.WriteString(": ")
	}
	b.WriteString(string(e.Status))
	var detail []string
	if e.Action != "" {
		detail = append(detail, e.Action)
	}
	if e.Error != "" {
		detail = append(detail, string(e.Error))
	}
	if e.Duration > 0 {
		detail = append(detail, seconds(e.Duration))
	}
	if len(detail) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(detail, ", "))
	}
	msg := e.Message
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	if msg = strings.TrimSpace(msg); msg != "" {
		if b.Len() > 0 {
			b.WriteString(": ")
		}
		b.WriteString(msg)
	}
	return b.String()
}

func seconds(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%.0f s", d.Seconds())
}
