// Package status is the status tool module: it reads the current or final
// result of a long call (deploy, deploy_admin, build) by its request id,
// from the adapter's store of calls (tools.Calls), and for an id the store
// does not know, from what the hosts report as their last deploy. It knows
// no other tool: a result is whatever the call's tool returned.
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
)

// Input is the status tool's input.
type Input struct {
	ID string `json:"id" jsonschema:"the request id from the result of deploy, deploy_admin or build (its id field)"`
}

// Check validates the id: one request-id token.
func (in Input) Check() (string, error) {
	if in.ID == "" {
		return "", tools.Invalid("give the id of a deploy or build: the id field of its result")
	}
	if err := protocol.ValidateRequestID(in.ID); err != nil {
		return "", tools.Invalid("id: %v", err)
	}
	return in.ID, nil
}

// Sources of a status.
const (
	// SourceServer: the call was started by this server and is kept here.
	SourceServer = "server"
	// SourceHosts: the server does not know the id; hosts report it as
	// their last deploy.
	SourceHosts = "hosts"
	// SourceNone: nobody knows the id.
	SourceNone = "none"
)

// Result is a call's status: the fields of the call's own result (the
// deploy or build result, as that tool returns it) with id, tool, done,
// source and message on top.
type Result struct {
	ID      string `json:"id" jsonschema:"the request id asked about"`
	Tool    string `json:"tool" jsonschema:"the tool that started it (deploy, deploy_admin, build); empty when unknown"`
	Done    bool   `json:"done" jsonschema:"false while it still runs: call status again in 15 to 30 seconds; true once the result is final"`
	Source  string `json:"source" jsonschema:"server: kept by this server since it started the call; hosts: not kept here (results are kept for an hour and lost on restart), reported by the hosts as their last deploy; none: unknown"`
	Message string `json:"message" jsonschema:"one-line summary"`

	inner   tools.Result
	hosts   []Host
	isError bool
	summary string
}

// Host is a host's last deploy with the id asked about (source hosts),
// in the shape of a deploy result's hosts.
type Host struct {
	Hostname        string             `json:"hostname"`
	Status          protocol.Status    `json:"status"`
	Error           protocol.ErrorCode `json:"error"`
	Message         string             `json:"message"`
	DurationSeconds float64            `json:"duration_seconds"`
	FinishedAt      string             `json:"finished_at"`
}

// MarshalJSON writes the call's own result with the status fields on top.
func (r Result) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	if r.inner != nil {
		b, err := json.Marshal(r.inner)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("status: the result of %s is not a JSON object: %w", r.Tool, err)
		}
	}
	if r.hosts != nil {
		m["hosts"] = r.hosts
	}
	m["id"], m["tool"], m["done"], m["source"], m["message"] = r.ID, r.Tool, r.Done, r.Source, r.Message
	return json.Marshal(m)
}

// IsError implements tools.Result: a call that is still running is not an
// error; a finished one is when its result is; an unknown id is.
func (r Result) IsError() bool { return r.isError }

// Summary implements tools.Result.
func (r Result) Summary() string { return r.summary }

// Tool returns the status tool. It has no gate: it only reads.
func Tool() tools.Tool {
	return tools.Define(tools.Tool{
		Name:  "status",
		Title: "Status of a deploy or build",
		Description: "Returns the current or final result of a deploy, deploy_admin or build that this server started, by the request id " +
			"its result carried (the id field; deploy and build return it at once with \"wait\": false). The answer has the same fields as that tool's result, " +
			"plus tool, source and done: done false means it is still running (each host's latest status and output lines are included), so call status again " +
			"in 15 to 30 seconds; done true means the result is final. Results are kept for at least an hour. For an id this server does not know " +
			"(older, or before a restart) it asks the hosts and reports those whose last deploy had this id. Read-only.",
		Annotations: tools.Annotations{ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true},
	}, func(in, out *jsonschema.Schema) {
		in.Properties["id"].Pattern = protocol.TokenPattern
		in.Properties["id"].MaxLength = jsonschema.Ptr(protocol.MaxIDLen)
		out.Properties["source"].Enum = []any{SourceServer, SourceHosts, SourceNone}
		// The rest of the fields are the call's own result.
		out.AdditionalProperties = &jsonschema.Schema{}
	}, Input.Check, run)
}

func run(ctx context.Context, env tools.Env, id string, _ tools.Progress) (Result, error) {
	if env.Calls != nil {
		if call := env.Calls.Lookup(id); call != nil {
			return kept(call.State(), env.Calls.Keep()), nil
		}
	}
	return fromHosts(ctx, env, id)
}

// kept renders a call this server keeps.
func kept(s tools.CallState, keep time.Duration) Result {
	r := Result{ID: s.ID, Tool: s.Tool, Done: s.Done, Source: SourceServer, inner: s.Result}
	var head string
	switch {
	case !s.Done:
		head = fmt.Sprintf("%s %s is still running (started %s ago); call status again in 15 to 30 seconds.", s.Tool, s.ID, since(s.Started, s.Updated))
	case s.Err != nil && s.Result == nil:
		r.isError = true
		r.Message = fmt.Sprintf("%s %s ended without a result: %v", s.Tool, s.ID, s.Err)
		head = r.Message + "."
	default:
		head = fmt.Sprintf("%s %s is done (kept until %s).", s.Tool, s.ID, s.Ended.Add(keep).UTC().Format(time.RFC3339))
	}
	if s.Result != nil {
		r.Message = firstLine(s.Result.Summary())
		r.isError = s.Done && s.Result.IsError()
		r.summary = head + "\n" + s.Result.Summary()
	} else {
		r.summary = head
	}
	return r
}

func since(from, to time.Time) string {
	return time.Since(from).Round(time.Second).String()
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// fromHosts asks the hosts for their last deploy and keeps those with id.
func fromHosts(ctx context.Context, env tools.Env, id string) (Result, error) {
	r := Result{ID: id, Source: SourceNone, Done: true, isError: true}
	unknown := fmt.Sprintf("No deploy or build with id %s is known: this server keeps results for %s and forgets them when it restarts", id, keepText(env))
	if env.Conn == nil {
		r.Message = unknown + "."
		r.summary = r.Message
		return r, nil
	}
	found, err := listhosts.Discover(ctx, env.Conn, "", protocol.DefaultDiscoverSubject, listhosts.Options{Logger: env.Logger})
	if err != nil {
		return r, fmt.Errorf("status: asking the hosts for their last deploy: %w", err)
	}
	for _, h := range found.Hosts {
		l := h.LastDeploy
		if l == nil || l.ID != id {
			continue
		}
		msg := fmt.Sprintf("%s of %s %s at %s after %.1f s", l.Action, l.Revision, l.Status, l.FinishedAt, l.DurationSeconds)
		r.hosts = append(r.hosts, Host{Hostname: h.Hostname, Status: l.Status, Error: l.Error, Message: msg, DurationSeconds: l.DurationSeconds, FinishedAt: l.FinishedAt})
	}
	if len(r.hosts) == 0 {
		r.Message = unknown + ", and no host reports it as its last deploy. Call list_hosts to see each host's last deploy and whether a deploy runs on it."
		r.summary = r.Message
		return r, nil
	}
	sort.Slice(r.hosts, func(i, j int) bool { return r.hosts[i].Hostname < r.hosts[j].Hostname })
	r.Source, r.Tool, r.isError = SourceHosts, "deploy", false
	var b strings.Builder
	for _, h := range r.hosts {
		if h.Status != protocol.StatusCompleted {
			r.isError = true
		}
		fmt.Fprintf(&b, "\n%s: %s", h.Hostname, h.Status)
		if h.Error != protocol.ErrNone {
			fmt.Fprintf(&b, " (%s)", h.Error)
		}
		fmt.Fprintf(&b, ": %s", h.Message)
	}
	r.Message = fmt.Sprintf("this server does not keep %s; %d host(s) report it as their last deploy (hosts that have deployed since, or are offline, are not counted)", id, len(r.hosts))
	r.summary = r.Message + b.String()
	return r, nil
}

func keepText(env tools.Env) string {
	if env.Calls == nil {
		return "no time (it keeps none)"
	}
	return env.Calls.Keep().String()
}
