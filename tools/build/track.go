package build

import (
	"fmt"
	"sort"
	"time"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
)

// maxOutputTail bounds the output lines a host being built keeps in a
// result so far.
const maxOutputTail = 10

// tracker folds a running build's events into its result so far, for the
// status tool and `"wait": false` (tools.Track).
type tracker struct {
	res     Result
	started time.Time
	running map[string]*RunningHost
	order   []string // hosts in the order they started
}

func newTracker(id string, req Request) *tracker {
	return &tracker{
		res:     Result{ID: id, Repo: req.Repo, Target: req.Target, Branch: req.Branch, Results: []protocol.BuildHostResult{}},
		started: time.Now(),
		running: map[string]*RunningHost{},
	}
}

// Apply implements tools.Tracker.
func (t *tracker) Apply(e tools.Event) {
	if e.Total > 0 {
		t.res.HostsTotal = e.Total
	}
	switch {
	case e.Host == "":
		t.res.Status = e.Status
	case e.Status == protocol.StatusOutput || len(e.Lines) > 0 || e.Running > 0:
		h := t.running[e.Host]
		if h == nil {
			h = &RunningHost{Host: e.Host}
			t.running[e.Host] = h
			t.order = append(t.order, e.Host)
		}
		h.RunningSeconds = protocol.Seconds(e.Running)
		h.Output = append(h.Output, e.Lines...)
		if n := len(h.Output); n > maxOutputTail {
			h.Output = append([]string(nil), h.Output[n-maxOutputTail:]...)
		}
	case e.Status.Terminal():
		t.res.Status = protocol.StatusProgress
		delete(t.running, e.Host)
		hr := protocol.BuildHostResult{Host: e.Host, Success: e.Status == protocol.StatusCompleted, DurationSeconds: protocol.Seconds(e.Duration), ErrorCode: e.Error}
		if !hr.Success {
			hr.Error = e.Message
			t.res.Failed++
		} else {
			t.res.Succeeded++
		}
		t.res.Results = append(t.res.Results, hr)
	}
}

// Result implements tools.Tracker: the build so far, not done.
func (t *tracker) Result() Result {
	r := t.res
	r.running = true
	if r.Status == "" {
		r.Status = protocol.StatusStarted
	}
	r.Results = append([]protocol.BuildHostResult{}, t.res.Results...)
	sort.Slice(r.Results, func(i, j int) bool { return r.Results[i].Host < r.Results[j].Host })
	for _, name := range t.order {
		if h := t.running[name]; h != nil {
			c := *h
			c.Output = append([]string(nil), h.Output...)
			r.Running = append(r.Running, c)
		}
	}
	r.TotalDurationSeconds = protocol.Seconds(time.Since(t.started))
	progress := "waiting for the builder to list the hosts"
	if r.HostsTotal > 0 || len(r.Results) > 0 {
		progress = fmt.Sprintf("%d/%d host(s) finished", len(r.Results), r.HostsTotal)
	}
	r.Message = fmt.Sprintf("build of %s in %s is still running: %s. Call status with {\"id\": %q} until done is true.", r.Target, r.Repo, progress, r.ID)
	return r
}
