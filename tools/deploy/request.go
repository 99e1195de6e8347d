package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/protocol/gather"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
)

// Defaults of Options.
const (
	DefaultTimeout      = 900 * time.Second
	DefaultAcceptWindow = 2 * time.Second
)

// Options tune the request half; zero fields take the defaults.
type Options struct {
	// Timeout caps the whole deploy (default 900 s).
	Timeout time.Duration
	// AcceptWindow is how long a group deploy keeps waiting for new hosts
	// after the last one answered (default 2 s).
	AcceptWindow time.Duration
	// Discover tunes the discovery used to find hosts lost after a
	// reconnection.
	Discover listhosts.Options
	Logger   *slog.Logger
	// ID, if set, is the request id to send (a caller that keeps track of
	// the call under it); otherwise a fresh one is drawn. Two concurrent
	// deploys must never share one.
	ID string
	// SkipOffline leaves the group members the fleet registry has offline
	// out of the verdict (members.go); they are listed as skipped.
	SkipOffline bool
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.AcceptWindow <= 0 {
		o.AcceptWindow = DefaultAcceptWindow
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Discover.Logger = o.Logger
	return o
}

// Request is a deploy as the request half sends it.
type Request struct {
	// Subject is the deploy subject (deploy.<tier>.<host>, .all, .role.<r>).
	Subject  string
	Action   protocol.Action
	Revision string
}

// HostResult is one host's state: final once the deploy is done, the
// latest status while it runs (status tool, `"wait": false`).
type HostResult struct {
	Hostname        string             `json:"hostname" jsonschema:"the host that answered"`
	Status          protocol.Status    `json:"status" jsonschema:"final status (completed, failed or rejected), or while the deploy runs the latest one (accepted, started)"`
	Error           protocol.ErrorCode `json:"error" jsonschema:"error code when not completed; null on success and while running"`
	Message         string             `json:"message" jsonschema:"what the host reported, in full: on failure it ends with the last lines of nixos-rebuild's output"`
	DurationSeconds float64            `json:"duration_seconds" jsonschema:"seconds from the request to the host's final (or latest) status"`
	Verified        bool               `json:"verified" jsonschema:"true when the host's status came on its own reply subject, which the NATS server lets only that host's credential publish on; false when it came on the bare reply subject (an older listener, or a server still granting listeners deploy.responses.>: regenerate it with nats-config), or when no status came"`
	// Diff, DiffOmittedLines and RebootRequired are a preview's (diff.go).
	Diff             string `json:"diff,omitempty" jsonschema:"with diff: the closure diff of the new system against the running one, one changed package per line (name: old version → new version, size change); empty when no package changed"`
	DiffOmittedLines int    `json:"diff_omitted_lines,omitempty" jsonschema:"with diff: lines of the closure diff left out to keep the status small"`
	RebootRequired   *bool  `json:"reboot_required,omitempty" jsonschema:"with diff: true when the new system's kernel, initrd or kernel modules differ from the booted system's, so only a reboot would activate them"`
	// Output is the tail of the host's live output while it runs.
	Output []string `json:"output,omitempty" jsonschema:"while the deploy runs: the last lines of nixos-rebuild's output so far"`
	// LastSeen is set for a member the fleet registry has offline.
	LastSeen string `json:"last_seen,omitempty" jsonschema:"for a group member the fleet registry has offline (error offline): when it was last seen, RFC 3339 UTC"`
}

// Result is the outcome of one deploy request. Its JSON shape is what
// `deploy --json` prints and what the MCP tools return; keep it stable.
type Result struct {
	ID              string          `json:"id" jsonschema:"request id, echoed by every host; give it to the status tool to read this deploy's result later"`
	Subject         string          `json:"subject" jsonschema:"the NATS subject the request was sent to"`
	Action          protocol.Action `json:"action" jsonschema:"nixos-rebuild action"`
	Revision        string          `json:"revision" jsonschema:"git branch, tag or commit deployed"`
	Done            bool            `json:"done" jsonschema:"false while the deploy still runs (\"wait\": false, or the status tool); true once this result is final"`
	Success         bool            `json:"success" jsonschema:"true when at least one host answered and every host completed"`
	Message         string          `json:"message" jsonschema:"one-line summary"`
	Hosts           []HostResult    `json:"hosts" jsonschema:"every host that answered, sorted by hostname"`
	Completed       int             `json:"completed" jsonschema:"hosts that completed"`
	Failed          int             `json:"failed" jsonschema:"hosts that failed, were rejected or timed out"`
	Unfinished      int             `json:"unfinished" jsonschema:"hosts still deploying (while running, or when the wait was interrupted: their deploy goes on)"`
	DurationSeconds float64         `json:"duration_seconds" jsonschema:"seconds from sending the request to the result"`
	// Members and Skipped: a group deploy's members from the fleet
	// registry (members.go).
	Members string       `json:"members,omitempty" jsonschema:"registry when the group's members came from the fleet registry: the deploy waited for each of them, and members that were offline (error offline) or did not answer (error no_answer) count as failed"`
	Skipped []HostResult `json:"skipped,omitempty" jsonschema:"with skip_offline: the group members the fleet registry had offline, left out"`

	// running marks a result so far (track.go).
	running bool
}

// IsError implements tools.Result: a deploy that did not fully succeed;
// never one that is still running (a result so far).
func (r Result) IsError() bool { return !r.Success && !r.running }

// Summary implements tools.Result: everything the JSON holds, for a reader
// (an assistant that sees only the text): the verdict, the request, and
// each host's full message with the output tail.
func (r Result) Summary() string {
	var b strings.Builder
	b.WriteString(r.Message)
	state := "done"
	if !r.Done {
		state = "still running"
	}
	fmt.Fprintf(&b, "\nid %s: %s of %s to %s; %d completed, %d failed, %d unfinished; %.1f s; %s",
		r.ID, r.Action, r.Revision, r.Subject, r.Completed, r.Failed, r.Unfinished, r.DurationSeconds, state)
	for _, h := range r.Hosts {
		fmt.Fprintf(&b, "\n%s: %s", h.Hostname, h.Status)
		if h.Error != protocol.ErrNone {
			fmt.Fprintf(&b, " (%s)", h.Error)
		}
		fmt.Fprintf(&b, " after %.1f s", h.DurationSeconds)
		if h.Message != "" {
			first, rest, _ := strings.Cut(h.Message, "\n")
			fmt.Fprintf(&b, ": %s", first)
			for _, line := range strings.Split(rest, "\n") {
				if rest != "" {
					fmt.Fprintf(&b, "\n    %s", line)
				}
			}
		}
		for _, line := range h.Output {
			fmt.Fprintf(&b, "\n  | %s", line)
		}
	}
	return b.String()
}

type hostState struct {
	resp     protocol.DeployResponse
	firstAt  time.Duration
	lastAt   time.Duration
	terminal bool
	// heard: a status of the host was counted; verified: the latest one
	// came on the host's own subject (binding.go).
	heard, verified bool
	// dropped is the host's dropped_lines as of its last output status.
	dropped int
}

// output takes an output status of the host and emits it as an event
// with its lines and running time; the host's status stays what it was
// (started, once it runs).
func (h *hostState) output(r protocol.DeployResponse, elapsed time.Duration, progress tools.Progress, ev tools.Event) {
	if h.resp.Status == "" {
		h.resp = protocol.DeployResponse{Hostname: r.Hostname, Status: protocol.StatusStarted, Message: r.Message}
	}
	h.lastAt = elapsed
	ev.Host, ev.Status, ev.Message, ev.Running = r.Hostname, r.Status, r.Message, r.Elapsed()
	ev.Lines, h.dropped = r.LinesSince(h.dropped)
	progress.Emit(ev)
}

// Send publishes a deploy request on conn and collects the answers until
// the completion rules are met:
//   - one host: when it reports a terminal status;
//   - a group: when every host that answered is terminal and no new host has
//     answered for the accept window;
//   - nobody subscribed: at once;
//   - the timeout is a ceiling; hosts still running then are reported as
//     timed out by name.
//
// Events are emitted for every status as it arrives.
func Send(ctx context.Context, conn *protocol.Conn, req Request, opts Options, progress tools.Progress) (Result, error) {
	opts = opts.withDefaults()
	target, err := protocol.ParseDeploySubject(req.Subject)
	if err != nil {
		return Result{}, &tools.InputError{Err: err}
	}
	if err := protocol.ValidateRequestAction(string(req.Action)); err != nil {
		return Result{}, &tools.InputError{Err: err}
	}
	if err := protocol.ValidateRevision(req.Revision); err != nil {
		return Result{}, &tools.InputError{Err: err}
	}
	if conn == nil {
		return Result{}, fmt.Errorf("deploy: no NATS connection")
	}

	id := opts.ID
	if id == "" {
		id = protocol.NewID()
	} else if err := protocol.ValidateRequestID(id); err != nil {
		return Result{}, &tools.InputError{Err: err}
	}
	replyTo := protocol.DeployResponsesPrefix + id
	res := Result{ID: id, Subject: req.Subject, Action: req.Action, Revision: req.Revision}

	// After a reconnection, statuses sent while this deployer was away are
	// lost; lostCheck finds the hosts that finished meanwhile (lost.go).
	reconnected, stopReconnectWatch := conn.WatchReconnect()
	defer stopReconnectWatch()
	lost := newLostCheck(conn, target, opts)
	defer lost.stop()

	// A group's members, when the fleet registry knows them (members.go).
	// They are read while the request is already out: the hosts start at
	// once, and their statuses wait in the reply subscription meanwhile.
	var members *groupMembers
	lookupCtx, stopLookup := context.WithCancel(ctx)
	defer stopLookup()
	membersRead := make(chan *groupMembers, 1)
	if target.Group() {
		go func() { membersRead <- lookupGroupMembers(lookupCtx, conn, target, opts) }()
	} else {
		membersRead = nil
	}
	defer func() { members.stop() }()

	data, _ := json.Marshal(protocol.DeployRequest{ID: id, Action: req.Action, Revision: req.Revision, ReplyTo: replyTo})
	call, err := gather.Start(conn, req.Subject, replyTo, data, protocol.DecodeDeployStatus)
	if refused := (*gather.SubscribeRefusedError)(nil); errors.As(err, &refused) {
		res.Message = refused.Error() + "; a deployer needs subscribe permission on deploy.responses.>"
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("deploy: %w", err)
	}
	defer call.Close()
	start := call.Sent

	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()

	hosts := map[string]*hostState{}
	done := 0           // hosts in a terminal state
	noListener := false // the server said nobody is subscribed
	noListenerMessage := fmt.Sprintf("no listener is subscribed to %s: check the target with list_hosts (homelab-deploy list-hosts)", req.Subject)
	finish := func(msg string) Result {
		members.annotate(&res, hosts)
		res.DurationSeconds = protocol.Seconds(time.Since(start))
		res.Message = msg + members.note(&res) + unverifiedNote(hosts)
		return res
	}
	window := time.NewTimer(time.Hour)
	window.Stop()
	defer window.Stop()

	// Every host counted in done is terminal, so this is O(1); a loop over
	// the hosts per message made a 1000-host deploy quadratic.
	allTerminal := func() bool { return len(hosts) > 0 && done == len(hosts) }

	for {
		select {
		case <-call.PublishRefused():
			return finish(fmt.Sprintf("this credential may not deploy to tier %s (the NATS server refused to let this credential publish to %s); use a credential allowed for that tier (the admin deployer for prod)", target.Tier, req.Subject)), nil
		case err := <-call.ReplyRefused():
			return finish(fmt.Sprintf("the NATS server refused to let this credential subscribe to %s (%v), after the request was sent: hosts may be deploying, but their statuses cannot reach this credential; a deployer needs subscribe permission on deploy.responses.>", replyTo, err)), nil
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				collect(&res, hosts)
				return finish(interrupted(&res)), ctx.Err()
			}
			elapsed := time.Since(start)
			silent := timeOut(hosts, elapsed)
			done += len(silent)
			collect(&res, hosts)
			if len(hosts) == 0 {
				return finish(fmt.Sprintf("no host answered on %s within %s", req.Subject, elapsed.Round(time.Second))), nil
			}
			return finish(fmt.Sprintf("timed out after %s waiting for %s", elapsed.Round(time.Second), strings.Join(silent, ", "))), nil
		case <-reconnected:
			lost.start()
		case <-lost.tick():
			lost.ask(ctx, pendingHosts(hosts, target))
		case busy := <-lost.answers():
			names := lost.lost(busy, pendingHosts(hosts, target))
			if len(names) == 0 {
				continue
			}
			elapsed := time.Since(start)
			for _, name := range names {
				h, ok := hosts[name]
				if !ok {
					h = &hostState{firstAt: elapsed}
					hosts[name] = h
				}
				h.resp = protocol.DeployResponse{Hostname: name, Status: protocol.StatusFailed, Error: protocol.ErrTimeout, Message: lostMessage(name, h.resp.Status)}
				h.terminal = true
				h.lastAt = elapsed
				done++
				progress.Emit(tools.Event{Action: string(req.Action), Host: name, Status: h.resp.Status, Error: h.resp.Error, Message: h.resp.Message, Done: done, Total: len(hosts), Elapsed: elapsed, Duration: elapsed})
			}
			if allTerminal() {
				collect(&res, hosts)
				return finish(verdict(&res) + "; lost track of " + strings.Join(names, ", ") + " after reconnecting to NATS"), nil
			}
		case members = <-membersRead:
			membersRead = nil
			if noListener && (members == nil || !members.waiting() && (members.skipOffline || len(members.offline) == 0)) {
				// Nobody subscribed, and no offline member to name.
				return finish(noListenerMessage), nil
			}
			if members == nil {
				// No registry: the accept window decides, counted from now
				// if every host heard from is already terminal.
				if allTerminal() {
					window.Reset(opts.AcceptWindow)
				}
				continue
			}
			done += members.start(hosts, req.Action, progress, done)
			if allTerminal() && !members.waiting() {
				collect(&res, hosts)
				return finish(verdict(&res)), nil
			}
		case <-window.C:
			if membersRead != nil {
				continue // the members are still being read
			}
			if allTerminal() {
				collect(&res, hosts)
				return finish(verdict(&res)), nil
			}
		case <-members.deadline():
			done += members.silent(hosts, time.Since(start), req.Action, done, progress)
			if allTerminal() {
				collect(&res, hosts)
				return finish(verdict(&res)), nil
			}
		case m := <-call.Msgs():
			switch m.Kind {
			case gather.NoResponders:
				if len(hosts) == 0 && membersRead != nil {
					// The registry may name offline members: say so
					// rather than that nobody listens.
					noListener = true
					continue
				}
				if len(hosts) == 0 {
					return finish(noListenerMessage), nil
				}
				continue
			case gather.Oversized, gather.Malformed:
				opts.Logger.Warn("ignoring malformed deploy response", "subject", m.Subject, "bytes", m.Size, "err", m.Err)
				continue
			}
			r := m.Value
			if why := admit(m, id, target, hosts); why != "" {
				opts.Logger.Warn("ignoring a deploy status that cannot belong to this deploy", "subject", m.Subject, "hostname", r.Hostname, "status", r.Status, "reason", why)
				continue
			}
			elapsed := time.Since(start)
			h, ok := hosts[r.Hostname]
			if !ok {
				h = &hostState{firstAt: elapsed}
				hosts[r.Hostname] = h
			}
			if members.heard(r.Hostname, h) {
				done-- // an offline or silent member answered after all
			}
			if h.terminal {
				continue
			}
			if r.Status == protocol.StatusOutput {
				// Live output or a heartbeat: never terminal, and proof of
				// life of a host whose earlier statuses were missed.
				h.output(r, elapsed, progress, tools.Event{Action: string(req.Action), Done: done, Total: len(hosts), Elapsed: elapsed})
				continue
			}
			h.resp = r
			h.lastAt = elapsed
			h.heard, h.verified = true, m.Bound()
			if r.Status.Terminal() {
				h.terminal = true
				done++
			}
			ev := tools.Event{Action: string(req.Action), Host: r.Hostname, Status: r.Status, Error: r.Error, Message: r.Message, Done: done, Total: len(hosts), Elapsed: elapsed}
			if h.terminal {
				ev.Duration = elapsed
				if r.DurationSeconds > 0 {
					ev.Duration = time.Duration(r.DurationSeconds * float64(time.Second))
				}
			}
			progress.Emit(ev)
			if !allTerminal() {
				continue
			}
			if !target.Group() || members != nil && !members.waiting() {
				collect(&res, hosts)
				return finish(verdict(&res)), nil
			}
			if members != nil || membersRead != nil {
				continue // an online member has not answered yet, or the members are still being read
			}
			// A group without a registry: wait until nothing has arrived
			// for the accept window. Counted from this last status, not
			// from the last new host's first answer: a host that took
			// longer than the window to finish must not end the deploy
			// before the answers queued behind it are read.
			window.Reset(opts.AcceptWindow)
		}
	}
}

// timeOut marks every host without a final status as timed out, once the
// ceiling is reached, and returns their names, sorted.
func timeOut(hosts map[string]*hostState, elapsed time.Duration) []string {
	// The ceiling is DeployTimeout or the caller's own deadline, whichever
	// came first: say how long was actually waited.
	waited := elapsed.Round(time.Second)
	var names []string
	for name, h := range hosts {
		if !h.terminal {
			names = append(names, name)
			h.terminal = true
			h.resp.Message = fmt.Sprintf("no final status within %s (last status: %s); the deploy may still be running on the host", waited, h.resp.Status)
			h.resp.Status = protocol.StatusFailed
			h.resp.Error = protocol.ErrTimeout
			h.lastAt = elapsed
		}
	}
	sort.Strings(names)
	return names
}

func collect(res *Result, hosts map[string]*hostState) {
	res.Hosts = res.Hosts[:0]
	res.Completed, res.Failed, res.Unfinished = 0, 0, 0
	for name, h := range hosts {
		hr := HostResult{Hostname: name, Status: h.resp.Status, Error: h.resp.Error, Message: h.resp.Message, DurationSeconds: protocol.Seconds(h.lastAt), Verified: h.verified}
		hr.Diff, hr.DiffOmittedLines, hr.RebootRequired = string(h.resp.Diff), h.resp.Omitted(), h.resp.RebootRequired
		explainOldListener(res.Action, &hr) // preview.go
		switch {
		case hr.Status == protocol.StatusCompleted:
			res.Completed++
		case hr.Status.Terminal():
			res.Failed++
		default:
			res.Unfinished++
		}
		res.Hosts = append(res.Hosts, hr)
	}
	sort.Slice(res.Hosts, func(i, j int) bool { return res.Hosts[i].Hostname < res.Hosts[j].Hostname })
}

// interrupted says what an interrupted wait leaves behind: the hosts still
// deploying go on without us, and where their outcome can be read later.
func interrupted(res *Result) string {
	var running []string
	for _, h := range res.Hosts {
		if !h.Status.Terminal() {
			running = append(running, h.Hostname+" ("+string(h.Status)+")")
		}
	}
	msg := fmt.Sprintf("interrupted while waiting on %s: %d/%d host(s) completed", res.Subject, res.Completed, len(res.Hosts))
	if len(running) > 0 {
		msg += fmt.Sprintf("; still deploying: %s. Their rebuild goes on on the host; list_hosts (homelab-deploy list-hosts) shows each host's last deploy once it ends", strings.Join(running, ", "))
	}
	return msg
}

func verdict(res *Result) string {
	n := len(res.Hosts)
	if res.Failed == 0 && n > 0 {
		res.Success = true
		return fmt.Sprintf("%s on %d/%d host(s) of %s completed", res.Action, res.Completed, n, res.Subject)
	}
	var bad []string
	for _, h := range res.Hosts {
		if h.Status != protocol.StatusCompleted {
			s := h.Hostname + " " + string(h.Status)
			if h.Error != protocol.ErrNone {
				s += " (" + string(h.Error) + ")"
			}
			bad = append(bad, s)
		}
	}
	if len(bad) > maxNamedInVerdict {
		bad = append(bad[:maxNamedInVerdict], fmt.Sprintf("and %d more (each host's result is in hosts)", len(bad)-maxNamedInVerdict))
	}
	return fmt.Sprintf("%s on %s: %d/%d host(s) completed; %s", res.Action, res.Subject, res.Completed, n, strings.Join(bad, ", "))
}

// maxNamedInVerdict bounds the hosts a summary names: a fleet-wide failure
// reads as a line, not as a thousand names; every host is in the result.
const maxNamedInVerdict = 20
