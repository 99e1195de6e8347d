package mcpserver

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
)

// Pacing of progress notifications. A client that resets its request
// timeout on progress (the TypeScript SDK's resetTimeoutOnProgress, which
// clients with a short timeout use for long calls) must hear from the
// server more often than its timeout, whatever the hosts send: hosts
// stream output and heartbeats at least every protocol.OutputHeartbeat
// (5 s) while a rebuild runs, and the server itself sends a keep-alive
// after KeepAlive without a notification, so that an older listener that
// sends nothing between started and its final status does not let a call
// time out either. Output lines of many hosts can arrive far faster than
// anyone reads them; they are coalesced to at most one notification per
// MinNotifyInterval, the latest line kept.
const (
	KeepAlive         = 4 * time.Second
	MinNotifyInterval = 250 * time.Millisecond
)

// notifier sends the progress notifications of one tool call.
//
// progress counts finished hosts and total the hosts known so far. The MCP
// specification requires progress to increase with every notification, so
// a notification that finishes no host moves progress towards the next
// whole number without reaching it: the k-th such notification after the
// last finished host is at done + k/(k+1). The whole part is always the
// number of finished hosts, and float64 keeps the steps distinct for
// millions of notifications (halving the gap each time ran out after 52).
type notifier struct {
	ctx   context.Context
	req   *mcp.CallToolRequest
	token any
	tool  string
	start time.Time

	mu       sync.Mutex
	closed   bool
	whole    int // finished hosts at the last notification; -1 before the first
	k        int // notifications since whole changed
	total    int
	sentAt   time.Time
	pending  *tools.Event // output waiting for MinNotifyInterval
	flush    *time.Timer
	keep     *time.Timer
	last     *tools.Event         // the latest event, for keep-alives
	lastAt   time.Time            // when it arrived
	lastLine map[string]string    // host -> latest output line
	running  map[string]time.Time // host -> when its running time was last reported
}

// newNotifier returns a notifier, or nil when the client sent no progress
// token. Close it when the call returns.
func newNotifier(ctx context.Context, req *mcp.CallToolRequest, tool string) *notifier {
	token := req.Params.GetProgressToken()
	if token == nil || req.Session == nil {
		return nil
	}
	n := &notifier{ctx: ctx, req: req, token: token, tool: tool, start: time.Now(), whole: -1,
		lastLine: map[string]string{}, running: map[string]time.Time{}}
	n.keep = time.AfterFunc(KeepAlive, n.keepAlive)
	return n
}

// Progress returns the tools.Progress that feeds n; nil for a nil n.
func (n *notifier) Progress() tools.Progress {
	if n == nil {
		return nil
	}
	return n.event
}

// Close sends the output still held back, then stops every notification
// of the call: nothing is sent once the call has returned.
func (n *notifier) Close() {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed {
		n.sendPendingLocked()
	}
	n.closed = true
	n.keep.Stop()
	if n.flush != nil {
		n.flush.Stop()
	}
}

func isOutput(e tools.Event) bool {
	return e.Status == protocol.StatusOutput || len(e.Lines) > 0 || e.Running > 0
}

func (n *notifier) event(e tools.Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	now := time.Now()
	n.last, n.lastAt = &e, now
	if e.Host != "" {
		if len(e.Lines) > 0 {
			n.lastLine[e.Host] = e.Lines[len(e.Lines)-1]
		}
		if e.Running > 0 {
			n.running[e.Host] = now.Add(-e.Running)
		}
	}
	if !isOutput(e) {
		// A status change goes out at once, after any output it follows.
		n.sendPendingLocked()
		n.sendLocked(e, EventMessage(e))
		return
	}
	if n.pending == nil && now.Sub(n.sentAt) >= MinNotifyInterval {
		n.sendLocked(e, EventMessage(e))
		return
	}
	n.pending = &e
	if n.flush == nil {
		n.flush = time.AfterFunc(MinNotifyInterval-now.Sub(n.sentAt), func() {
			n.mu.Lock()
			defer n.mu.Unlock()
			n.flush = nil
			if !n.closed {
				n.sendPendingLocked()
			}
		})
	}
}

func (n *notifier) sendPendingLocked() {
	if n.pending != nil {
		e := *n.pending
		n.pending = nil
		n.sendLocked(e, EventMessage(e))
	}
}

// keepAlive runs KeepAlive after the last notification.
func (n *notifier) keepAlive() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	if wait := KeepAlive - time.Since(n.sentAt); wait > 0 {
		n.keep.Reset(wait)
		return
	}
	var e tools.Event
	if n.last != nil {
		e = *n.last
	}
	n.sendLocked(e, n.stillRunning(e))
}

// stillRunning describes the call when nothing new came in for a while:
// the latest host's state with its running time and latest output line.
func (n *notifier) stillRunning(e tools.Event) string {
	if e.Host == "" {
		return fmt.Sprintf("%s: still waiting, %s since the request", n.tool, seconds(time.Since(n.start)))
	}
	if since, ok := n.running[e.Host]; ok && !e.Status.Terminal() {
		msg := fmt.Sprintf("%s: running %s", e.Host, seconds(time.Since(since)))
		if line := n.lastLine[e.Host]; line != "" {
			msg += ": " + line
		}
		return msg
	}
	return fmt.Sprintf("%s: %s, still waiting, %s since the request", e.Host, e.Status, seconds(time.Since(n.start)))
}

// sendLocked sends one notification for e with message msg.
func (n *notifier) sendLocked(e tools.Event, msg string) {
	var p float64
	if e.Done > n.whole {
		n.whole, n.k = e.Done, 0
		p = float64(e.Done)
	} else {
		n.k++
		p = float64(n.whole) + float64(n.k)/float64(n.k+1)
	}
	if e.Total > 0 {
		n.total = e.Total
	}
	total := float64(n.total)
	if total > 0 && total < math.Ceil(p) {
		total = math.Ceil(p)
	}
	n.sentAt = time.Now()
	n.keep.Reset(KeepAlive)
	// A failed notification (client gone) must not stop the tool; the
	// call's context ends it if the client cancelled.
	_ = n.req.Session.NotifyProgress(n.ctx, &mcp.ProgressNotificationParams{
		ProgressToken: n.token,
		Progress:      p,
		Total:         total,
		Message:       msg,
	})
}

// EventMessage renders an event as one line, for example
// "testhost1: completed (switch, 41 s): nixos-rebuild switch of master completed in 41.0s",
// or, for output and heartbeats,
// "testhost1: running 41 s: building the system configuration...".
func EventMessage(e tools.Event) string {
	var b strings.Builder
	if e.Host != "" {
		b.WriteString(e.Host)
		b.WriteString(": ")
	}
	if isOutput(e) {
		running := e.Running
		if running == 0 {
			running = e.Elapsed
		}
		fmt.Fprintf(&b, "running %s", seconds(running))
		line := strings.TrimSpace(e.Message)
		if len(e.Lines) > 0 {
			line = e.Lines[len(e.Lines)-1]
		}
		if line != "" {
			b.WriteString(": ")
			b.WriteString(line)
		}
		if len(e.Lines) > 1 {
			fmt.Fprintf(&b, " (%d new lines)", len(e.Lines))
		}
		return b.String()
	}
	b.WriteString(string(e.Status))
	var detail []string
	if e.Action != "" {
		detail = append(detail, e.Action)
	}
	if e.Error != protocol.ErrNone {
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
