// Package listhosts is the list_hosts tool module: discovery requests (ask)
// and the listener's discovery answers (serve).
package listhosts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/protocol/gather"
	"github.com/homelab-deploy/homelab-deploy/tools"
)

// Input is the list_hosts tool's input.
type Input struct {
	Tier string `json:"tier,omitempty" jsonschema:"only list hosts of this tier"`
	// DiscoverSubject is an operator setting (the CLI's --discover-subject),
	// not offered to assistants.
	DiscoverSubject string `json:"discover_subject,omitempty" jsonschema:"the discovery subject (default deploy.discover)"`
	// QuietSeconds ends discovery after this long without a new answer;
	// an operator setting.
	QuietSeconds float64 `json:"quiet_seconds,omitempty" jsonschema:"seconds without a new answer that end discovery (default 0.5)"`
	Role         string  `json:"role,omitempty" jsonschema:"only list hosts with this role"`
	State        string  `json:"state,omitempty" jsonschema:"only list hosts whose listener is online, or offline (the fleet registry knows offline hosts; discovery finds only online ones)"`
	// Source is an operator setting (the CLI's --source): auto (the fleet
	// registry when it can be used, else discovery), registry or discovery.
	Source string `json:"source,omitempty" jsonschema:"where the list comes from: auto (default), registry or discovery"`
}

// Request is a checked discovery.
type Request struct {
	Tier, Subject string
	Quiet         time.Duration
	// Role and State filter the list; Source picks where it comes from
	// (registry.go).
	Role, State, Source string
}

// Check validates the input.
func (in Input) Check() (Request, error) {
	if in.Tier != "" {
		if err := protocol.ValidateTier(in.Tier); err != nil {
			return Request{}, tools.Invalid("tier: %v", err)
		}
	}
	subject := in.DiscoverSubject
	if subject == "" {
		subject = protocol.DefaultDiscoverSubject
	}
	if err := protocol.ValidateLiteralSubject(subject); err != nil {
		return Request{}, tools.Invalid("discover subject: %v", err)
	}
	if in.QuietSeconds < 0 || in.QuietSeconds > 60 {
		return Request{}, tools.Invalid("quiet_seconds must be between 0 and 60")
	}
	role, state, source, err := in.checkFilters()
	if err != nil {
		return Request{}, err
	}
	return Request{Tier: in.Tier, Subject: subject, Quiet: time.Duration(in.QuietSeconds * float64(time.Second)), Role: role, State: state, Source: source}, nil
}

// Host is one discovered listener.
type Host struct {
	Hostname string   `json:"hostname" jsonschema:"the host's name, usable as deploy's hostname"`
	Tier     string   `json:"tier" jsonschema:"test or prod"`
	Role     string   `json:"role,omitempty" jsonschema:"the host's role, usable as deploy's role"`
	Subjects []string `json:"subjects" jsonschema:"the NATS subjects the listener takes deploys on"`
	Version  string   `json:"version" jsonschema:"the listener's homelab-deploy version"`
	Busy     bool     `json:"busy" jsonschema:"true while a deploy runs on the host"`
	// LastDeploy is the host's most recent finished deploy since its
	// listener started.
	LastDeploy *protocol.LastDeploy `json:"last_deploy,omitempty" jsonschema:"the host's most recent finished deploy since its listener started, if any"`
	Online     bool                 `json:"online" jsonschema:"false when the listener stopped or has not been heard from for three heartbeats (fleet registry); always true from discovery"`
	LastSeen   string               `json:"last_seen" jsonschema:"when the host was last heard from, RFC 3339 UTC"`
	// The fleet registry's view (registry.go); absent from discovery.
	Stopped       bool                    `json:"stopped,omitempty" jsonschema:"true when the listener stopped cleanly"`
	RunningDeploy *protocol.RunningDeploy `json:"running_deploy,omitempty" jsonschema:"the deploy running on the host, if any (fleet registry)"`
	System        *System                 `json:"system,omitempty" jsonschema:"the host's NixOS system (fleet registry)"`
}

// Result is the outcome of a discovery.
type Result struct {
	Tier    string `json:"tier,omitempty" jsonschema:"the tier filter, if any"`
	Hosts   []Host `json:"hosts" jsonschema:"hosts that answered, sorted by tier then hostname"`
	Message string `json:"message" jsonschema:"one-line summary"`
	// Source says where the list came from (registry.go).
	Source string   `json:"source" jsonschema:"registry (the fleet registry: every registered host, offline ones too) or discovery (the hosts that answered now)"`
	Notes  []string `json:"notes,omitempty" jsonschema:"what was left out and why (a tier this credential may not read, why the registry was not used)"`
}

// IsError implements tools.Result: finding nobody is not an error.
func (r Result) IsError() bool { return false }

// Summary implements tools.Result.
func (r Result) Summary() string {
	var b strings.Builder
	b.WriteString(r.Message)
	for _, h := range r.Hosts {
		fmt.Fprintf(&b, "\n%s\t%s", h.Hostname, h.Tier)
		if h.Role != "" {
			fmt.Fprintf(&b, "\trole=%s", h.Role)
		}
		if h.Busy {
			b.WriteString("\tbusy")
		}
		if !h.Online {
			fmt.Fprintf(&b, "\toffline (last seen %s)", h.LastSeen)
		}
		if h.System != nil && h.System.RebootRequired {
			b.WriteString("\treboot required")
		}
		fmt.Fprintf(&b, "\tversion=%s\tsubjects=%s", h.Version, strings.Join(h.Subjects, ","))
		if l := h.LastDeploy; l != nil {
			fmt.Fprintf(&b, "\tlast deploy: %s of %s %s", l.Action, l.Revision, l.Status)
			if l.Error != protocol.ErrNone {
				fmt.Fprintf(&b, " (%s)", l.Error)
			}
			fmt.Fprintf(&b, " at %s after %.1f s", l.FinishedAt, l.DurationSeconds)
			if l.ID != "" {
				fmt.Fprintf(&b, ", id %s", l.ID)
			}
		}
	}
	return b.String()
}

// Tool returns the list_hosts tool.
func Tool() tools.Tool {
	return tools.Define(tools.Tool{
		Name:  "list_hosts",
		Title: "List deployment targets",
		Description: "Lists the deploy targets from the fleet registry (every registered host, offline ones too, with online, last_seen, reboot_required and generation) " +
			"or, without a registry, by discovering the hosts whose listeners are online: hostname, tier, role, the subjects they take deploys on, " +
			"their version, whether a deploy is running, and their last deploy since the listener started (action, revision, status, time, request id). " +
			"Read-only; instant from the registry, about a second by discovery. Use it before deploy to find valid targets, and to see how a deploy ended after the status tool no longer knows it.",
		Annotations: tools.Annotations{ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true},
		Hidden:      []string{"discover_subject", "quiet_seconds", "source"},
	}, func(in, out *jsonschema.Schema) {
		var tiers []any
		for _, t := range protocol.Tiers {
			tiers = append(tiers, t)
		}
		in.Properties["tier"].Enum = tiers
		in.Properties["role"].Pattern = protocol.TokenPattern
		in.Properties["role"].MaxLength = jsonschema.Ptr(protocol.MaxTokenLen)
		in.Properties["state"].Enum = []any{States[0], States[1]}
		tools.NonNullArray(out.Properties["hosts"])
		if last := out.Properties["hosts"].Items.Properties["last_deploy"]; last != nil {
			tools.StatusEnum(last.Properties["status"])
			tools.ErrorCodeEnum(last.Properties["error"])
		}
	}, Input.Check, func(ctx context.Context, env tools.Env, req Request, _ tools.Progress) (Result, error) {
		return list(ctx, env.Conn, req, env.Logger)
	})
}

// Defaults of Options.
const (
	DefaultQuiet = 500 * time.Millisecond
	DefaultMax   = 10 * time.Second
)

// Options tune discovery; zero fields take the defaults.
type Options struct {
	// Quiet ends discovery after this long without a new answer.
	Quiet time.Duration
	// Max caps discovery.
	Max    time.Duration
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Quiet <= 0 {
		o.Quiet = DefaultQuiet
	}
	if o.Max <= 0 {
		o.Max = DefaultMax
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Discover asks every listener on subject to describe itself and collects
// the answers until no new one arrived for opts.Quiet (or
// opts.Max passed).
func Discover(ctx context.Context, conn *protocol.Conn, tier, subject string, opts Options) (Result, error) {
	opts = opts.withDefaults()
	if tier != "" {
		if err := protocol.ValidateTier(tier); err != nil {
			return Result{}, tools.Invalid("%v", err)
		}
	}
	if err := protocol.ValidateLiteralSubject(subject); err != nil {
		return Result{}, tools.Invalid("discover subject: %v", err)
	}
	if conn == nil {
		return Result{}, fmt.Errorf("list_hosts: no NATS connection")
	}
	id := protocol.NewID()
	replyTo := protocol.DeployResponsesPrefix + id
	data, _ := json.Marshal(protocol.DiscoverRequest{ID: id, ReplyTo: replyTo, Tier: tier})
	call, err := gather.Start(conn, subject, replyTo, data, protocol.DecodeDiscoverResponse)
	if refused := (*gather.SubscribeRefusedError)(nil); errors.As(err, &refused) {
		return Result{}, fmt.Errorf("%w; discovery needs subscribe permission on deploy.responses.>", refused)
	}
	if err != nil {
		return Result{}, fmt.Errorf("list_hosts: %w", err)
	}
	defer call.Close()

	ctx, cancel := context.WithTimeout(ctx, opts.Max)
	defer cancel()
	res := Result{Tier: tier, Hosts: []Host{}}
	seen := map[string]bool{}
	// The first answer gets a longer wait (listeners far away); then a
	// short quiet period after the last answer ends the collection. One
	// timer, reset per answer, not a context per answer.
	quiet := time.NewTimer(4 * opts.Quiet)
	defer quiet.Stop()
collect:
	for {
		select {
		case e := <-call.PublishRefused():
			return res, fmt.Errorf("the NATS server refused discovery on %s: %v", subject, e)
		case e := <-call.ReplyRefused():
			return res, fmt.Errorf("the NATS server refused to let this credential subscribe to %s (%v); discovery needs subscribe permission on deploy.responses.>", replyTo, e)
		case <-ctx.Done():
			if ctx.Err() == context.Canceled {
				return res, ctx.Err()
			}
			break collect
		case <-quiet.C:
			break collect
		case m := <-call.Msgs():
			switch m.Kind {
			case gather.NoResponders:
				break collect // nobody listens for discovery
			case gather.Oversized, gather.Malformed:
				opts.Logger.Warn("ignoring malformed discovery answer", "subject", m.Subject, "bytes", m.Size, "err", m.Err)
			case gather.Answer:
				// On a host's own subject (<reply_to>.<hostname>, which
				// nats-config lets only that host publish on) the answer
				// must describe that host; on the bare reply subject (an
				// older listener) nothing is proven, and it is kept as
				// before.
				if m.Bound() && m.Value.Hostname != m.Sender {
					opts.Logger.Warn("ignoring a discovery answer in another host's name", "subject", m.Subject, "hostname", m.Value.Hostname, "sender", m.Sender)
					break
				}
				if h, ok := accept(m.Value, id, tier, seen); ok {
					res.Hosts = append(res.Hosts, h)
				}
			}
		}
		if len(seen) == 0 {
			quiet.Reset(4 * opts.Quiet)
		} else {
			quiet.Reset(opts.Quiet)
		}
	}
	sort.Slice(res.Hosts, func(i, j int) bool {
		if res.Hosts[i].Tier != res.Hosts[j].Tier {
			return res.Hosts[i].Tier < res.Hosts[j].Tier
		}
		return res.Hosts[i].Hostname < res.Hosts[j].Hostname
	})
	switch {
	case len(res.Hosts) == 0 && tier != "":
		res.Message = fmt.Sprintf("no %s-tier host answered on %s", tier, subject)
	case len(res.Hosts) == 0:
		res.Message = fmt.Sprintf("no host answered on %s; are the listeners running and allowed to subscribe to it?", subject)
	default:
		res.Message = fmt.Sprintf("%d host(s) answered", len(res.Hosts))
	}
	return res, nil
}

// accept turns one discovery answer into a host: the answer must carry the
// request's id (or none), match the tier filter, and name a host not
// seen yet; past protocol.MaxDiscoveredHosts none is kept, so a flood of
// answers cannot grow the result without bound.
func accept(r protocol.DiscoverResponse, id, tier string, seen map[string]bool) (Host, bool) {
	if r.ID != "" && r.ID != id || len(seen) >= protocol.MaxDiscoveredHosts {
		return Host{}, false
	}
	if tier != "" && r.Tier != tier {
		return Host{}, false
	}
	key := r.Tier + "/" + r.Hostname
	if seen[key] {
		return Host{}, false
	}
	seen[key] = true
	return Host{Hostname: r.Hostname, Tier: r.Tier, Role: r.Role, Subjects: r.Subjects, Version: r.Version, Busy: r.Busy, LastDeploy: r.LastDeploy}, true
}

// Responder is the serve half: it answers discovery requests for one
// listener.
type Responder struct {
	Hostname, Tier, Role string
	Subjects             []string
	Version              string
	Busy                 func() bool
	// Last, if set, reports the most recent finished deploy.
	Last    func() *protocol.LastDeploy
	Publish func(subject string, data []byte) error
	Logger  *slog.Logger
	// Trusted are the deployer keys whose discovery requests are answered;
	// empty answers unsigned requests too. A signed request is answered
	// only when its signature is valid (protocol.Verify).
	Trusted protocol.TrustedKeys
	// Now is the clock signatures are checked against (default time.Now).
	Now func() time.Time
}

// Handle answers one raw discovery request that came without headers,
// hence unsigned.
func (r *Responder) Handle(data []byte) { r.HandleMsg("", nil, data) }

// HandleMsg answers one raw discovery request that arrived on subject with
// its NATS headers. A request that is refused gets no answer, only a debug
// line: discovery never answers with an error.
func (r *Responder) HandleMsg(subject string, header nats.Header, data []byte) {
	req, err := protocol.DecodeDiscoverRequest(data)
	if err != nil {
		if r.Logger != nil {
			r.Logger.Debug("ignored discovery request", "err", err)
		}
		return
	}
	if req.Tier != "" && req.Tier != r.Tier {
		return
	}
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	if _, err := protocol.Verify(header, subject, data, now(), r.Trusted); err != nil {
		if r.Logger != nil {
			r.Logger.Debug("ignored unauthorized discovery request", "id", req.ID, "err", err)
		}
		return
	}
	resp := protocol.DiscoverResponse{ID: req.ID, Hostname: r.Hostname, Tier: r.Tier, Role: r.Role, Subjects: r.Subjects, Version: r.Version}
	if r.Busy != nil {
		resp.Busy = r.Busy()
	}
	if r.Last != nil {
		resp.LastDeploy = r.Last()
	}
	out, _ := json.Marshal(resp)
	// On <reply_to>.<hostname>, as the deploy statuses (protocol.BoundReply).
	if err := r.Publish(protocol.BoundReply(req.ReplyTo, r.Hostname), out); err != nil && r.Logger != nil {
		r.Logger.Warn("publish discovery answer", "err", err)
	}
}
