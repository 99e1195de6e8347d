package deploy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/fleet"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
)

// StatusSkipped marks, in a staged rollout's result, a host that was never
// asked to deploy because the rollout halted first. It is not a wire status.
const StatusSkipped protocol.Status = "skipped"

// Staging is how a group deploy is rolled out: in batches, canary first,
// halting after too many failures. The zero value deploys the group in one
// request.
type Staging struct {
	// Batch is the batch size: a count ("2") or a share of the group
	// ("25%", rounded up); empty means no staging.
	Batch string
	// Canary, if set, is deployed alone, first.
	Canary string
	// MaxFailures is how many failed hosts the rollout tolerates before it
	// halts (default 0: the first failure halts it).
	MaxFailures int
}

// Staged reports whether s asks for a staged rollout.
func (s Staging) Staged() bool { return s.Batch != "" || s.Canary != "" }

// MaxBatchPercent and friends bound the staging inputs.
const maxBatchHosts = 10000

// ParseBatch reads a batch size for a group of n hosts: "N" (1 ≤ N) or
// "N%" (1 ≤ N ≤ 100, rounded up to whole hosts). It validates the form
// alone when n is 0.
func ParseBatch(s string, n int) (int, error) {
	num, pct := strings.CutSuffix(strings.TrimSpace(s), "%")
	v, err := strconv.Atoi(num)
	switch {
	case err != nil || v < 1 || num != strings.TrimLeft(num, "+-0"):
		return 0, fmt.Errorf("batch %q is not a positive whole number of hosts (2) or a percentage of the group (25%%)", tools.Quote(s))
	case pct && v > 100:
		return 0, fmt.Errorf("batch %q: a percentage is at most 100%%", s)
	case !pct && v > maxBatchHosts:
		return 0, fmt.Errorf("batch %q: at most %d hosts", s, maxBatchHosts)
	}
	if !pct {
		return v, nil
	}
	size := int(math.Ceil(float64(n) * float64(v) / 100))
	return max(size, 1), nil
}

// check validates s against the target of a deploy.
func (s Staging) check(subject string) error {
	if !s.Staged() {
		if s.MaxFailures != 0 {
			return tools.Invalid("max_failures only applies to a staged rollout: give batch (on the command line --batch)")
		}
		return nil
	}
	t, err := protocol.ParseDeploySubject(subject)
	if err != nil {
		return tools.Invalid("%v", err)
	}
	if t.Kind != protocol.TargetAll && t.Kind != protocol.TargetRole {
		return tools.Invalid("a staged rollout (batch, canary) needs a group target: all or a role, not %s", subject)
	}
	if s.Batch != "" {
		if _, err := ParseBatch(s.Batch, 0); err != nil {
			return tools.Invalid("%v", err)
		}
	}
	if s.Canary != "" {
		if err := protocol.ValidateHostname(s.Canary); err != nil {
			return tools.Invalid("canary: %v", err)
		}
	}
	if s.MaxFailures < 0 || s.MaxFailures > maxBatchHosts {
		return tools.Invalid("max_failures must be between 0 and %d", maxBatchHosts)
	}
	return nil
}

// member is one host of a staged rollout and the subject that reaches it
// alone; offline is set for a member the fleet registry has offline.
type member struct {
	name, subject string
	offline       *fleet.Host
}

// members finds the hosts of a group target: the hosts whose listeners take
// deploys on the group's subject, each with a subject that reaches it
// alone, sorted by hostname. It reads the fleet registry when the server
// has one (offline members included), else asks discovery.
func members(ctx context.Context, conn *protocol.Conn, subject string, opts Options) ([]member, error) {
	t, err := protocol.ParseDeploySubject(subject)
	if err != nil {
		return nil, err
	}
	type candidate struct {
		name     string
		subjects []string
		offline  *fleet.Host
	}
	var cands []candidate
	if hosts, err := fleet.ReadTier(ctx, conn, t.Tier, fleet.ReadOptions{Timeout: memberReadTimeout}); err == nil {
		for _, h := range hosts {
			c := candidate{name: h.Hostname, subjects: h.Subjects}
			if !h.Online {
				c.offline = &h
			}
			cands = append(cands, c)
		}
	} else {
		opts.Logger.Debug("rollout members not known from the fleet registry; asking discovery", "subject", subject, "reason", err)
		found, err := listhosts.Discover(ctx, conn, t.Tier, protocol.DefaultDiscoverSubject, opts.Discover)
		if err != nil {
			return nil, fmt.Errorf("find the members of %s: %w", subject, err)
		}
		for _, h := range found.Hosts {
			cands = append(cands, candidate{name: h.Hostname, subjects: h.Subjects})
		}
	}
	var out []member
	for _, h := range cands {
		if !slices.Contains(h.subjects, subject) {
			continue
		}
		own := ""
		for _, s := range h.subjects {
			if ht, err := protocol.ParseDeploySubject(s); err == nil && ht.Kind == protocol.TargetHost && ht.Name == h.name {
				own = s
				break
			}
		}
		if own == "" {
			// A listener without a subject of its own cannot be deployed
			// to alone; it is reported, not silently left out.
			own = protocol.DeploySubject(t.Tier, h.name)
		}
		out = append(out, member{name: h.name, subject: own, offline: h.offline})
	}
	slices.SortFunc(out, func(a, b member) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

// batches orders the members (canary first, then by hostname) and cuts them
// into batches of size.
func batches(ms []member, canary string, size int) ([][]member, error) {
	var first []member
	if canary != "" {
		i := slices.IndexFunc(ms, func(m member) bool { return m.name == canary })
		if i < 0 {
			names := make([]string, len(ms))
			for j, m := range ms {
				names[j] = m.name
			}
			return nil, fmt.Errorf("canary %s is not a member of the group (members: %s)", canary, strings.Join(names, ", "))
		}
		first = []member{ms[i]}
		ms = slices.Delete(slices.Clone(ms), i, i+1)
	}
	out := [][]member{}
	if first != nil {
		out = append(out, first)
	}
	for len(ms) > 0 {
		n := min(size, len(ms))
		out = append(out, ms[:n])
		ms = ms[n:]
	}
	return out, nil
}

// Rollout deploys the members of the group req.Subject in batches: the next
// batch starts only when every host of the previous one is terminal (a
// listener that confirms a switch with health checks reports completed
// only after them), and the rollout halts once more than MaxFailures hosts
// failed. Hosts never started are reported skipped.
func Rollout(ctx context.Context, conn *protocol.Conn, req Request, s Staging, opts Options, progress tools.Progress) (Result, error) {
	opts = opts.withDefaults()
	start := time.Now()
	res := Result{Subject: req.Subject, Action: req.Action, Revision: req.Revision, Hosts: []HostResult{}}
	finish := func(msg string) Result {
		res.Message = msg
		res.DurationSeconds = protocol.Seconds(time.Since(start))
		return res
	}
	if conn == nil {
		return res, errors.New("deploy: no NATS connection")
	}
	ms, err := members(ctx, conn, req.Subject, opts)
	if err != nil {
		return finish(err.Error()), nil
	}
	if len(ms) == 0 {
		return finish(fmt.Sprintf("no host takes deploys on %s: nothing to roll out (check the target with list_hosts)", req.Subject)), nil
	}
	size := len(ms)
	if s.Batch != "" {
		if size, err = ParseBatch(s.Batch, len(ms)); err != nil {
			return res, &tools.InputError{Err: err}
		}
	}
	plan, err := batches(ms, s.Canary, size)
	if err != nil {
		return res, &tools.InputError{Err: err}
	}
	ids := []string{}
	done := 0
	for i, batch := range plan {
		results, batchIDs, err := runBatch(ctx, conn, req, batch, opts, func(e tools.Event) {
			// Counts across the whole rollout, not per host request.
			e.Total = len(ms)
			e.Done = done
			if e.Status.Terminal() {
				e.Done++
			}
			e.Elapsed = time.Since(start)
			progress.Emit(e)
		})
		ids = append(ids, batchIDs...)
		for _, h := range results {
			res.Hosts = append(res.Hosts, h)
			switch {
			case h.Status == protocol.StatusCompleted:
				res.Completed++
			case h.Status == StatusSkipped:
			case h.Status.Terminal():
				res.Failed++
			default:
				res.Unfinished++
			}
		}
		done += len(batch)
		res.ID = strings.Join(ids, ",")
		if err != nil {
			sortHosts(&res)
			return finish(fmt.Sprintf("rollout of %s to %s interrupted in batch %d/%d: %d/%d host(s) completed", req.Action, req.Subject, i+1, len(plan), res.Completed, len(ms))), err
		}
		if res.Failed > s.MaxFailures && i+1 < len(plan) {
			var skipped []string
			for _, rest := range plan[i+1:] {
				for _, m := range rest {
					res.Hosts = append(res.Hosts, HostResult{Hostname: m.name, Status: StatusSkipped,
						Message: fmt.Sprintf("not deployed: the rollout halted after batch %d/%d", i+1, len(plan))})
					skipped = append(skipped, m.name)
				}
			}
			sortHosts(&res)
			return finish(fmt.Sprintf("rollout of %s to %s halted after batch %d/%d: %d host(s) failed (at most %d tolerated: --max-failures); %d/%d completed; skipped: %s",
				req.Action, req.Subject, i+1, len(plan), res.Failed, s.MaxFailures, res.Completed, len(ms), strings.Join(skipped, ", "))), nil
		}
	}
	sortHosts(&res)
	res.Success = res.Failed == 0 && res.Unfinished == 0
	if res.Success {
		return finish(fmt.Sprintf("rollout of %s to %s completed on %d/%d host(s) in %d batch(es)", req.Action, req.Subject, res.Completed, len(ms), len(plan))), nil
	}
	return finish(fmt.Sprintf("rollout of %s to %s finished: %d/%d host(s) completed, %d failed (at most %d tolerated)", req.Action, req.Subject, res.Completed, len(ms), res.Failed, s.MaxFailures)), nil
}

// runBatch deploys to each host of a batch at once, each with a request of
// its own on the host's own subject, and waits for all of them.
func runBatch(ctx context.Context, conn *protocol.Conn, req Request, batch []member, opts Options, progress tools.Progress) ([]HostResult, []string, error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	results := make([]HostResult, len(batch))
	ids := make([]string, len(batch))
	errs := make([]error, len(batch))
	for i, m := range batch {
		if m.offline != nil {
			// Nobody would answer: the registry says why, at once.
			results[i] = HostResult{Hostname: m.name, Status: protocol.StatusFailed, Error: ErrOffline,
				Message: fmt.Sprintf("offline in the fleet registry (%s; last seen %s): not deployed", offlineWhy(*m.offline), fleet.Stamp(m.offline.LastSeen))}
			if opts.SkipOffline {
				results[i].Status, results[i].Error = StatusSkipped, protocol.ErrNone
				results[i].Message = "offline in the fleet registry: left out (skip_offline)"
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			one := req
			one.Subject = m.subject
			r, err := Send(ctx, conn, one, opts, func(e tools.Event) {
				mu.Lock()
				defer mu.Unlock()
				progress.Emit(e)
			})
			ids[i], errs[i] = r.ID, err
			results[i] = HostResult{Hostname: m.name, Status: protocol.StatusFailed, Error: protocol.ErrTimeout, Message: r.Message}
			for _, h := range r.Hosts {
				if h.Hostname == m.name {
					results[i] = h
				}
			}
		}()
	}
	wg.Wait()
	return results, ids, errors.Join(errs...)
}

func sortHosts(res *Result) {
	slices.SortFunc(res.Hosts, func(a, b HostResult) int { return strings.Compare(a.Hostname, b.Hostname) })
}
