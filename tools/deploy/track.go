package deploy

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
)

// maxOutputTail bounds the output lines a running host keeps in a result
// so far: enough to see where a rebuild is, small enough to poll often.
const maxOutputTail = 10

// tracker folds a running deploy's events into its result so far, for the
// status tool and `"wait": false` (tools.Track).
type tracker struct {
	res     Result
	started time.Time
	elapsed time.Duration
	hosts   map[string]*HostResult
}

func newTracker(id string, req Request) *tracker {
	return &tracker{
		res:     Result{ID: id, Subject: req.Subject, Action: req.Action, Revision: req.Revision, Hosts: []HostResult{}},
		started: time.Now(),
		hosts:   map[string]*HostResult{},
	}
}

// Apply implements tools.Tracker.
func (t *tracker) Apply(e tools.Event) {
	t.elapsed = max(t.elapsed, e.Elapsed)
	if e.Host == "" {
		return
	}
	h := t.hosts[e.Host]
	if h == nil {
		h = &HostResult{Hostname: e.Host}
		t.hosts[e.Host] = h
	}
	h.DurationSeconds = protocol.Seconds(e.Elapsed)
	if e.Status == protocol.StatusOutput || len(e.Lines) > 0 || e.Running > 0 {
		// Live output or a heartbeat: the host keeps its status.
		if h.Status == "" {
			h.Status = protocol.StatusStarted
		}
		h.Output = append(h.Output, e.Lines...)
		if n := len(h.Output); n > maxOutputTail {
			h.Output = append([]string(nil), h.Output[n-maxOutputTail:]...)
		}
		h.Message = fmt.Sprintf("running for %s", seconds(e.Running))
		if n := len(h.Output); n > 0 {
			h.Message += ": " + h.Output[n-1]
		}
		return
	}
	h.Status, h.Error, h.Message = e.Status, e.Error, e.Message
	if e.Status.Terminal() {
		h.Output = nil
		if e.Duration > 0 {
			h.DurationSeconds = protocol.Seconds(e.Duration)
		}
	}
}

// Result implements tools.Tracker: the deploy so far, not done.
func (t *tracker) Result() Result {
	r := t.res
	r.running = true
	r.Hosts = make([]HostResult, 0, len(t.hosts))
	for _, h := range t.hosts {
		c := *h
		c.Output = append([]string(nil), h.Output...)
		r.Hosts = append(r.Hosts, c)
		switch {
		case h.Status == protocol.StatusCompleted:
			r.Completed++
		case h.Status.Terminal():
			r.Failed++
		default:
			r.Unfinished++
		}
	}
	sort.Slice(r.Hosts, func(i, j int) bool { return r.Hosts[i].Hostname < r.Hosts[j].Hostname })
	r.DurationSeconds = protocol.Seconds(max(t.elapsed, time.Since(t.started)))
	status := fmt.Sprintf("%d/%d host(s) finished", r.Completed+r.Failed, len(r.Hosts))
	if len(r.Hosts) == 0 {
		status = "no host has answered yet"
	}
	r.Message = fmt.Sprintf("%s of %s to %s is still running: %s. Call status with {\"id\": %q} until done is true.",
		r.Action, r.Revision, r.Subject, status, r.ID)
	return r
}

// seconds renders a running time for a message ("41 s").
func seconds(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%.0f s", d.Seconds())
}

// prodHint says where a test-tier deploy to a single host that no listener
// answered should go, when discovery finds the host in another tier.
func prodHint(hostname string, tiers []string) string {
	if len(tiers) == 0 {
		return ""
	}
	return fmt.Sprintf(" %s is a host of the %s tier: the deploy tool reaches only the test tier; deploy_admin (offered when the server runs with --enable-admin) deploys to %s with the admin credential",
		hostname, strings.Join(tiers, " and "), strings.Join(tiers, " and "))
}
