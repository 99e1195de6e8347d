package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/protocol/gather"
	"github.com/homelab-deploy/homelab-deploy/tools"
)

// DefaultTimeout caps a build request (the builder's own per-host timeout
// is separate).
const DefaultTimeout = 3600 * time.Second

// Options tune the request half; zero fields take the defaults.
type Options struct {
	// Timeout caps the wait for the builder's final status (default 3600 s).
	Timeout time.Duration
	Logger  *slog.Logger
	// ID, if set, is the request id to send (a caller that keeps track of
	// the call under it); otherwise a fresh one is drawn.
	ID string
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Request is a build as the request half sends it.
type Request struct {
	Repo string
	// Target is one host, or "all" (also when empty).
	Target string
	// Branch is a git branch, tag or commit; empty means the repo's default.
	Branch string
}

// Result is the outcome of one build request: the builder's final response
// plus what the requester knows. Its JSON shape is what `build --json`
// prints and what the MCP tool returns; keep it stable.
type Result struct {
	ID     string `json:"id" jsonschema:"request id, echoed by the builder; give it to the status tool to read this build's result later"`
	Repo   string `json:"repo" jsonschema:"the repository built"`
	Target string `json:"target" jsonschema:"the host built, or all"`
	Branch string `json:"branch,omitempty" jsonschema:"git branch, tag or commit built (the repo default when none was asked for)"`
	// Status is the builder's final status: completed, failed or rejected;
	// failed also when no builder answered or no final status came in time.
	Status    protocol.Status    `json:"status" jsonschema:"completed, failed or rejected once done; while the build runs, the latest status (started, progress)"`
	ErrorCode protocol.ErrorCode `json:"error_code,omitempty" jsonschema:"why the build was rejected or failed"`
	Done      bool               `json:"done" jsonschema:"false while the build still runs (\"wait\": false, or the status tool); true once this result is final"`
	Success   bool               `json:"success" jsonschema:"true when every host built"`
	Message   string             `json:"message" jsonschema:"one-line summary, e.g. built 5/5 hosts successfully"`
	// Error holds Nix's output when listing the hosts failed.
	Error                string                     `json:"error,omitempty" jsonschema:"last lines of Nix's error when the hosts could not be listed"`
	Results              []protocol.BuildHostResult `json:"results" jsonschema:"one entry per finished host, sorted by host"`
	Running              []RunningHost              `json:"running,omitempty" jsonschema:"while the build runs: the hosts being built now, with the last lines of their output"`
	HostsTotal           int                        `json:"hosts_total" jsonschema:"hosts the build covered"`
	Succeeded            int                        `json:"succeeded" jsonschema:"hosts that built"`
	Failed               int                        `json:"failed" jsonschema:"hosts that failed or timed out"`
	TotalDurationSeconds float64                    `json:"total_duration_seconds" jsonschema:"seconds from sending the request to the final status"`
	Verified             bool                       `json:"verified" jsonschema:"true when the final status came on the builder's own reply subject, which the NATS server lets only the builder's credential publish on; false when it came on the bare reply subject (an older builder, or a server still granting it build.responses.>: regenerate it with nats-config), or when none came"`

	// running marks a result so far (track.go).
	running bool
}

// RunningHost is a host the builder is building, while the build runs.
type RunningHost struct {
	Host           string   `json:"host" jsonschema:"the host being built"`
	RunningSeconds float64  `json:"running_seconds" jsonschema:"how long its nix build has been running, as the builder reported"`
	Output         []string `json:"output,omitempty" jsonschema:"the last lines of its nix build output so far"`
}

// IsError implements tools.Result: a build that did not fully succeed;
// never one that is still running (a result so far).
func (r Result) IsError() bool { return !r.Success && !r.running }

// Summary implements tools.Result: everything the JSON holds, for a reader
// (an assistant that sees only the text), Nix's error lines included.
func (r Result) Summary() string {
	var b strings.Builder
	b.WriteString(r.Message)
	state := "done"
	if !r.Done {
		state = "still running"
	}
	branch := r.Branch
	if branch == "" {
		branch = "the default branch"
	}
	fmt.Fprintf(&b, "\nid %s: build of %s in %s at %s; status %s", r.ID, r.Target, r.Repo, branch, r.Status)
	if r.ErrorCode != protocol.ErrNone {
		fmt.Fprintf(&b, " (%s)", r.ErrorCode)
	}
	fmt.Fprintf(&b, "; %d/%d built, %d failed; %.1f s; %s", r.Succeeded, r.HostsTotal, r.Failed, r.TotalDurationSeconds, state)
	for _, h := range r.Results {
		if h.Success {
			fmt.Fprintf(&b, "\n%s: ok (%.1fs)", h.Host, h.DurationSeconds)
			if h.OutPath != "" {
				fmt.Fprintf(&b, " %s", h.OutPath)
			}
			continue
		}
		fmt.Fprintf(&b, "\n%s: FAILED (%.1fs)", h.Host, h.DurationSeconds)
		if h.ErrorCode != protocol.ErrNone {
			fmt.Fprintf(&b, " (%s)", h.ErrorCode)
		}
		indent(&b, h.Error)
	}
	for _, h := range r.Running {
		fmt.Fprintf(&b, "\n%s: building, running %.0f s", h.Host, h.RunningSeconds)
		for _, line := range h.Output {
			fmt.Fprintf(&b, "\n  | %s", line)
		}
	}
	indent(&b, r.Error)
	return b.String()
}

// indent writes each line of text on its own indented line.
func indent(b *strings.Builder, text string) {
	text = strings.TrimRight(text, "\n")
	if text == "" {
		return
	}
	for _, line := range strings.Split(text, "\n") {
		fmt.Fprintf(b, "\n    %s", line)
	}
}

// Check validates a request and fills the default target. Errors are
// *tools.InputError: nothing was sent.
func (req *Request) Check() error {
	if err := protocol.ValidateRepo(req.Repo); err != nil {
		return &tools.InputError{Err: err}
	}
	if req.Target == "" {
		req.Target = protocol.BuildTargetAll
	}
	if err := protocol.ValidateBuildTarget(req.Target); err != nil {
		return &tools.InputError{Err: err}
	}
	if req.Branch != "" {
		if err := protocol.ValidateRevision(req.Branch); err != nil {
			return &tools.InputError{Err: fmt.Errorf("branch: %w", err)}
		}
	}
	return nil
}

// Send publishes a build request on conn (to build.<repo>.<target>, with
// the NATS reply subject equal to reply_to) and collects the builder's
// statuses until the final one. It emits one event when the build starts
// and one per finished host, in the order the hosts finish. It returns at
// once when no builder is subscribed, and gives up after opts.Timeout.
func Send(ctx context.Context, conn *protocol.Conn, req Request, opts Options, progress tools.Progress) (Result, error) {
	opts = opts.withDefaults()
	if err := req.Check(); err != nil {
		return Result{}, err
	}
	if conn == nil {
		return Result{}, fmt.Errorf("build: no NATS connection")
	}
	id := opts.ID
	if id == "" {
		id = protocol.NewID()
	} else if err := protocol.ValidateRequestID(id); err != nil {
		return Result{}, &tools.InputError{Err: err}
	}
	replyTo := protocol.BuildResponsesPrefix + id
	subject := protocol.BuildSubject(req.Repo, req.Target)
	res := Result{ID: id, Repo: req.Repo, Target: req.Target, Branch: req.Branch, Status: protocol.StatusFailed, Results: []protocol.BuildHostResult{}}

	data, _ := json.Marshal(protocol.BuildRequest{ID: id, Repo: req.Repo, Target: req.Target, Branch: req.Branch, ReplyTo: replyTo})
	call, err := gather.Start(conn, subject, replyTo, data, protocol.DecodeBuildResponse)
	if refused := (*gather.SubscribeRefusedError)(nil); errors.As(err, &refused) {
		res.Message = refused.Error() + "; a build client needs subscribe permission on build.responses.>"
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("build: %w", err)
	}
	defer call.Close()
	start := call.Sent
	dropped := map[string]int{} // per host, for output statuses

	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	bound := false // a status came on the builder's own subject
	finish := func(msg string) Result {
		res.TotalDurationSeconds = protocol.Seconds(time.Since(start))
		if msg != "" {
			res.Message = msg
		}
		return res
	}
	for {
		select {
		case <-call.PublishRefused():
			return finish(fmt.Sprintf("this credential may not request builds of repo %s: the NATS server refused to let this credential publish to %s; a build client may only build the repos listed in its permissions (see `homelab-deploy nats-config`)", req.Repo, subject)), nil
		case err := <-call.ReplyRefused():
			return finish(fmt.Sprintf("the NATS server refused to let this credential subscribe to %s (%v); a build client needs subscribe permission on build.responses.>", replyTo, err)), nil
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return finish("cancelled while waiting for the builder"), ctx.Err()
			}
			res.ErrorCode = protocol.ErrTimeout
			return finish(fmt.Sprintf("no final status from the builder within %s (%d of %d host(s) reported); the build may still be running there", time.Since(start).Round(time.Second), len(res.Results), res.HostsTotal)), nil
		case m := <-call.Msgs():
			switch m.Kind {
			case gather.NoResponders:
				return finish(fmt.Sprintf("no builder answered for repo %s: no builder is subscribed to %s (is one running with %s in its config?)", req.Repo, protocol.BuildRepoWildcard(req.Repo), req.Repo)), nil
			case gather.Oversized, gather.Malformed:
				opts.Logger.Warn("ignoring malformed build response", "subject", m.Subject, "bytes", m.Size, "err", m.Err)
				continue
			}
			r := m.Value
			if why := admit(m, id, bound); why != "" {
				opts.Logger.Warn("ignoring a build status that cannot belong to this build", "subject", m.Subject, "status", r.Status, "reason", why)
				continue
			}
			bound = bound || m.Bound()
			if r.Status == protocol.StatusOutput {
				res.output(r, time.Since(start), dropped, progress)
				continue
			}
			if final := res.apply(r, time.Since(start), progress, opts.Logger); final != "" {
				if res.Verified = m.Bound(); !res.Verified {
					final += unverifiedNote
				}
				return finish(final), nil
			}
		}
	}
}

// output emits an output status of one host (its new lines, or a
// heartbeat) as an event; dropped holds each host's dropped_lines so far.
func (res *Result) output(r protocol.BuildResponse, elapsed time.Duration, dropped map[string]int, progress tools.Progress) {
	if r.Host == "" {
		return
	}
	ev := tools.Event{Host: r.Host, Status: r.Status, Message: r.Message, Done: len(res.Results), Total: res.HostsTotal, Elapsed: elapsed, Running: r.Elapsed()}
	var n int
	ev.Lines, n = r.LinesSince(dropped[r.Host])
	if _, known := dropped[r.Host]; known || len(dropped) < protocol.MaxDiscoveredHosts {
		dropped[r.Host] = n // bounded: a builder names few hosts
	}
	progress.Emit(ev)
}

// apply takes one status from the builder into the result, emitting its
// event, and returns the message of a final status ("" while the build
// goes on).
func (res *Result) apply(r protocol.BuildResponse, elapsed time.Duration, progress tools.Progress, logger *slog.Logger) string {
	if r.Branch != "" {
		res.Branch = r.Branch
	}
	switch r.Status {
	case protocol.StatusStarted:
		res.HostsTotal = r.HostsTotal
		progress.Emit(tools.Event{Status: r.Status, Message: r.Message, Total: r.HostsTotal, Elapsed: elapsed})
	case protocol.StatusProgress:
		ok := r.HostSuccess != nil && *r.HostSuccess
		hr := protocol.BuildHostResult{Host: r.Host, Success: ok, DurationSeconds: protocol.RoundSeconds(r.Duration), Error: r.Error, ErrorCode: r.ErrorCode, OutPath: r.OutPath}
		res.Results = append(res.Results, hr)
		if r.HostsTotal > 0 {
			res.HostsTotal = r.HostsTotal
		}
		ev := tools.Event{Host: r.Host, Status: protocol.StatusCompleted, Message: r.Message, Done: r.HostsCompleted, Total: r.HostsTotal,
			Elapsed: elapsed, Duration: time.Duration(r.Duration * float64(time.Second))}
		if !ok {
			ev.Status, ev.Error = protocol.StatusFailed, r.ErrorCode
			if ev.Error == protocol.ErrNone {
				ev.Error = protocol.ErrBuildFailed
			}
		}
		progress.Emit(ev)
	case protocol.StatusCompleted, protocol.StatusFailed, protocol.StatusRejected:
		res.Status = r.Status
		res.ErrorCode = r.ErrorCode
		res.Error = r.Error
		if r.Results != nil || r.Status != protocol.StatusRejected {
			res.Results = append([]protocol.BuildHostResult{}, r.Results...)
			for i := range res.Results {
				res.Results[i].DurationSeconds = protocol.RoundSeconds(res.Results[i].DurationSeconds)
			}
		}
		res.Succeeded, res.Failed = r.Succeeded, r.Failed
		if n := len(r.Results); n > res.HostsTotal {
			res.HostsTotal = n
		}
		res.Success = r.Status == protocol.StatusCompleted && r.Failed == 0
		msg := r.Message
		if msg == "" {
			msg = "build " + string(r.Status)
		}
		return msg
	default:
		// A later builder's extension: nothing to do with it here.
		logger.Debug("ignoring build response with an unknown status", "status", r.Status)
	}
	return ""
}
