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
	"runtime/debug"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/homelab-deploy/homelab-deploy/tools"
)

// Name is the implementation name the server reports to clients.
const Name = "homelab-deploy"

const instructions = "homelab-deploy deploys NixOS configurations to a fleet of hosts over NATS. " +
	"Discover the hosts before targeting them (list_hosts), and read each tool's description: it says what the tool may change, " +
	"what it can never do, and how long it can take. A deploy or build takes minutes: call it with \"wait\": false, which returns the request id " +
	"at once, then poll the status tool with that id until done is true. A call that waits sends a progress notification at least every few seconds " +
	"when you send a progress token. A result with isError means the operation did not fully succeed; its text says what happened and what to call next."

// New returns an MCP server exposing the tools that gates switch on. deps is
// handed to every tool call; version is reported to clients. Without a
// store of calls in deps, it makes one (kept for tools.DefaultKeepCalls),
// so that `"wait": false` and the status tool work on every transport.
// deps.Defaults become the defaults the input schemas publish.
func New(reg *tools.Registry, gates tools.Gates, deps tools.Deps, version string) *mcp.Server {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Calls == nil {
		deps.Calls = tools.NewCalls(0, 0)
	}
	s := mcp.NewServer(&mcp.Implementation{Name: Name, Title: "homelab-deploy", Version: version}, &mcp.ServerOptions{
		Instructions: instructions,
		Logger:       deps.Logger,
		// Tools only: the tool list is fixed for the server's lifetime, so
		// there are no list-changed notifications, and no MCP logging.
		Capabilities: &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{}},
	})
	for _, t := range reg.Enabled(gates) {
		t.InputSchema = withDefaults(t, deps.Defaults)
		s.AddTool(Describe(t), handler(t, deps))
	}
	return s
}

// withDefaults returns t's input schema with the adapter's defaults as the
// published defaults, so that an assistant sees what leaving a field out
// means on this server (--default-branch, --deploy-timeout).
func withDefaults(t tools.Tool, defaults map[string]any) *jsonschema.Schema {
	in := t.InputSchema
	cloned := false
	for name, prop := range t.InputSchema.Properties {
		v, ok := t.Default(defaults, name)
		if !ok {
			continue
		}
		if !cloned {
			in, cloned = in.CloneSchemas(), true
		}
		p := *prop
		p.Default = tools.Marshal(v)
		in.Properties[name] = &p
	}
	return in
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
		n := newNotifier(ctx, req, t.Name)
		defer n.Close()
		start := time.Now()
		out, callErr := t.Call(ctx, deps, raw, n.Progress())
		var inputErr *tools.InputError
		switch {
		case errors.As(callErr, &inputErr):
			return invalidResult(t.Name, inputErr), nil
		case ctx.Err() != nil:
			// The client cancelled the call (or went away): nobody waits
			// for a result any more. On stdio the response is dropped
			// (StdioTransport).
			deps.Logger.Info("tool call cancelled", "tool", t.Name, "after", time.Since(start).Round(time.Millisecond))
			return nil, ctx.Err()
		case callErr != nil:
			deps.Logger.Warn("tool call failed", "tool", t.Name, "err", callErr)
			return errorResult(fmt.Sprintf("%s did not complete: %v. Nothing is known to have run. The NATS server may be unreachable from this MCP server, or its credential not allowed to do this: call list_hosts to check that hosts answer, then call %s again; if it fails the same way, tell the user, who can check the server's log.", t.Name, tools.Quote(callErr.Error()), t.Name)), nil
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
			return fmt.Errorf("arguments are not valid JSON: %s", tools.Quote(err.Error()))
		}
	}
	if err := schema.Validate(v); err != nil {
		msg := err.Error()
		// A rule written as a root "not" (tools.ExactlyOne) fails as "not:
		// validated against <anonymous schema>": say the rule instead.
		if root := schema.Schema(); root.Not != nil && root.Not.Description != "" && strings.HasPrefix(msg, "validating root: not:") {
			msg = root.Not.Description
		}
		return errors.New(tools.Quote(tidySchemaError(msg)))
	}
	return nil
}

// tidySchemaError shortens the validator's path prefixes:
// "validating root: validating /properties/hostname: pattern: ..." becomes
// "hostname: pattern: ...".
func tidySchemaError(msg string) string {
	msg = strings.ReplaceAll(msg, "validating root: ", "")
	// The validator names a JSON null this way.
	msg = strings.ReplaceAll(msg, "<invalid reflect.Value>", "null")
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
