package deploy

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/fleet"
)

// Requester-side reasons a group member did not deploy. They are not wire
// error codes: no listener sends them.
const (
	// ErrOffline: the fleet registry has the host offline (stopped, or no
	// heartbeat for three intervals), so it was not waited for.
	ErrOffline protocol.ErrorCode = "offline"
	// ErrNoAnswer: the registry has the host online, but it did not answer
	// within the accept window.
	ErrNoAnswer protocol.ErrorCode = "no_answer"
)

// memberReadTimeout bounds the registry read before a group deploy: a
// registry that does not answer quickly is not waited for (the accept
// window decides instead, as without a registry).
const memberReadTimeout = 2 * time.Second

// groupMembers is who should answer a group deploy, from the fleet registry
// (tools/fleet): the hosts of the tier subscribed to the group subject.
// With it a group deploy ends as soon as each of them is terminal, and
// names those that are offline or silent; without it (nil: no JetStream,
// no bucket, no permission, no member registered) the accept window
// decides.
type groupMembers struct {
	skipOffline bool
	// pending are online members not heard from yet.
	pending map[string]bool
	// offline are the members the registry has offline, by name.
	offline map[string]fleet.Host
	// marked are hosts this sets terminal (offline, no_answer); a status
	// from one of them later makes it an ordinary host again.
	marked map[string]bool
	online map[string]fleet.Host
	accept *time.Timer
	window time.Duration
}

// lookupGroupMembers reads the members of a .all or .role.<role> deploy from
// the registry; nil when there is none to read.
func lookupGroupMembers(ctx context.Context, conn *protocol.Conn, target protocol.Target, opts Options) *groupMembers {
	if target.Kind != protocol.TargetAll && target.Kind != protocol.TargetRole {
		return nil
	}
	hosts, err := fleet.ReadTier(ctx, conn, target.Tier, fleet.ReadOptions{Timeout: memberReadTimeout})
	if err != nil {
		opts.Logger.Debug("group members not known from the fleet registry; the accept window decides", "subject", target.Subject, "reason", err)
		return nil
	}
	m := &groupMembers{skipOffline: opts.SkipOffline, pending: map[string]bool{}, offline: map[string]fleet.Host{},
		marked: map[string]bool{}, online: map[string]fleet.Host{}, window: opts.AcceptWindow}
	for _, h := range hosts {
		if !slices.Contains(h.Subjects, target.Subject) {
			continue
		}
		if h.Online {
			m.pending[h.Hostname] = true
			m.online[h.Hostname] = h
		} else {
			m.offline[h.Hostname] = h
		}
	}
	if len(m.pending)+len(m.offline) == 0 {
		opts.Logger.Debug("no member of the group in the fleet registry; the accept window decides", "subject", target.Subject)
		return nil
	}
	return m
}

// start takes the members once they are read: hosts already heard from
// are neither pending nor offline (they answered), the offline members
// are seeded as failed (unless they are skipped), and the accept window
// starts for the online ones not heard from yet. It returns how many
// hosts it made terminal; done is how many were before.
func (m *groupMembers) start(hosts map[string]*hostState, action protocol.Action, progress tools.Progress, done int) int {
	if m == nil {
		return 0
	}
	for name := range hosts {
		delete(m.pending, name)
		delete(m.offline, name)
	}
	m.accept = time.NewTimer(m.window)
	if m.skipOffline {
		return 0
	}
	n := 0
	for _, name := range sortedKeys(m.offline) {
		h := m.offline[name]
		hosts[name] = &hostState{terminal: true, resp: protocol.DeployResponse{
			Hostname: name, Status: protocol.StatusFailed, Error: ErrOffline,
			Message: fmt.Sprintf("offline in the fleet registry (%s; last seen %s): not deployed; deploy it when it is back, or leave offline hosts out with --skip-offline (MCP: skip_offline)",
				offlineWhy(h), fleet.Stamp(h.LastSeen)),
		}}
		m.marked[name] = true
		n++
		progress.Emit(tools.Event{Action: string(action), Host: name, Status: protocol.StatusFailed, Error: ErrOffline, Message: hosts[name].resp.Message, Done: done + n, Total: len(hosts)})
	}
	return n
}

// deadline fires when online members have had the accept window to
// answer; nil (never) without members.
func (m *groupMembers) deadline() <-chan time.Time {
	if m == nil || m.accept == nil {
		return nil
	}
	return m.accept.C
}

// heard notes a status of name. When name was made terminal here
// (offline, no answer) it answered after all: it becomes an ordinary host
// again, and heard reports true so the caller counts one terminal host
// less.
func (m *groupMembers) heard(name string, h *hostState) (revived bool) {
	if m == nil {
		return false
	}
	delete(m.pending, name)
	if m.marked[name] && h != nil && h.terminal {
		delete(m.marked, name)
		h.terminal = false
		return true
	}
	return false
}

// silent marks the online members that have not answered by the deadline
// as failed with no_answer, and returns how many.
func (m *groupMembers) silent(hosts map[string]*hostState, elapsed time.Duration, action protocol.Action, done int, progress tools.Progress) int {
	n := 0
	for _, name := range sortedKeys(m.pending) {
		h := m.online[name]
		hosts[name] = &hostState{terminal: true, firstAt: elapsed, lastAt: elapsed, resp: protocol.DeployResponse{
			Hostname: name, Status: protocol.StatusFailed, Error: ErrNoAnswer,
			Message: fmt.Sprintf("online in the fleet registry (last seen %s) but no answer within %s: its listener may be stuck or cut off from NATS; if it answers later it still deploys",
				fleet.Stamp(h.LastSeen), m.window),
		}}
		m.marked[name] = true
		delete(m.pending, name)
		n++
		progress.Emit(tools.Event{Action: string(action), Host: name, Status: protocol.StatusFailed, Error: ErrNoAnswer, Message: hosts[name].resp.Message, Done: done + n, Total: len(hosts), Elapsed: elapsed})
	}
	return n
}

// waiting reports whether an online member has not answered yet.
func (m *groupMembers) waiting() bool { return m != nil && len(m.pending) > 0 }

func (m *groupMembers) stop() {
	if m != nil && m.accept != nil {
		m.accept.Stop()
	}
}

// annotate adds to a result what the registry knew: each offline host's
// last seen time, and the offline hosts left out with skip_offline.
func (m *groupMembers) annotate(res *Result, hosts map[string]*hostState) {
	if m == nil {
		return
	}
	res.Members = "registry"
	for i := range res.Hosts {
		if h, ok := m.offline[res.Hosts[i].Hostname]; ok && m.marked[res.Hosts[i].Hostname] {
			res.Hosts[i].LastSeen = fleet.Stamp(h.LastSeen)
		}
	}
	if !m.skipOffline {
		return
	}
	res.Skipped = res.Skipped[:0]
	for _, name := range sortedKeys(m.offline) {
		if _, answered := hosts[name]; answered {
			continue
		}
		h := m.offline[name]
		res.Skipped = append(res.Skipped, HostResult{Hostname: name, Status: StatusSkipped, Error: ErrOffline,
			Message: fmt.Sprintf("offline in the fleet registry (%s): skipped (skip_offline)", offlineWhy(h)), LastSeen: fleet.Stamp(h.LastSeen)})
	}
}

// note is what the summary line adds: offline hosts left out.
func (m *groupMembers) note(res *Result) string {
	if m == nil || len(res.Skipped) == 0 {
		return ""
	}
	var names []string
	for _, h := range res.Skipped {
		names = append(names, h.Hostname+" (last seen "+h.LastSeen+")")
	}
	return "; skipped offline: " + strings.Join(names, ", ")
}

func offlineWhy(h fleet.Host) string {
	if h.Stopped {
		return "its listener stopped"
	}
	return "no heartbeat for three intervals"
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
