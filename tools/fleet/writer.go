// Package fleet is the fleet registry: a JetStream key-value bucket in
// which every listener keeps an entry about itself (the writer, used by
// agents/listener), and from which list_hosts and group deploys learn the
// fleet as it is, offline hosts included (the reader). The wire shape of
// the bucket, its keys and entries is in package protocol (fleet.go); the
// permissions that bind a listener to its key and a reader to its tiers
// are in protocol/permissions.go.
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// DefaultInterval is how often a listener rewrites its entry when nothing
// changed. A reader calls a host offline after OfflineAfter intervals.
const (
	DefaultInterval = 30 * time.Second
	OfflineAfter    = 3
	// DefaultTimeout bounds one JetStream request.
	DefaultTimeout = 3 * time.Second
)

// WriterConfig configures a listener's entry.
type WriterConfig struct {
	Conn                 *protocol.Conn
	Hostname, Tier, Role string
	Subjects             []string
	Version              string
	// PublicKey is the listener's NKey public key, if known.
	PublicKey string
	// Interval is the heartbeat (default DefaultInterval).
	Interval time.Duration
	// Replicas of the bucket when this listener creates it; 0 means three
	// on a JetStream cluster, one on a single server.
	Replicas int
	// System is where the host's NixOS state is read.
	System SystemPaths
	// OnSystem, if set, receives the system state each time it is read.
	OnSystem func(System)
	// Running and Last, if set, report the deploy in progress and the last
	// finished one at each write; call Changed when either changes.
	Running func() *protocol.RunningDeploy
	Last    func() *protocol.LastDeploy
	// Timeout bounds one JetStream request (default DefaultTimeout).
	Timeout time.Duration
	Now     func() time.Time
	Logger  *slog.Logger
}

// Writer keeps one listener's entry current: on start, on every change,
// on every heartbeat, and once more, marked stopped, on a clean stop.
type Writer struct {
	cfg     WriterConfig
	started time.Time
	kick    chan struct{}

	putMu   sync.Mutex // one write at a time; guards the fields below
	r       *replies
	ready   bool  // the bucket is known to exist and be sound
	off     error // a reason not to try again (permissions, a foreign bucket)
	lastErr string
	// reported is set once the first outcome was logged.
	reported bool

	cancel context.CancelFunc
	done   chan struct{}
}

// NewWriter checks cfg.
func NewWriter(cfg WriterConfig) (*Writer, error) {
	if cfg.Conn == nil {
		return nil, errors.New("fleet writer: no NATS connection")
	}
	if err := protocol.ValidateHostname(cfg.Hostname); err != nil {
		return nil, err
	}
	if err := protocol.ValidateTier(cfg.Tier); err != nil {
		return nil, err
	}
	if cfg.Role != "" {
		if err := protocol.ValidateRole(cfg.Role); err != nil {
			return nil, err
		}
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Writer{cfg: cfg, started: cfg.Now(), kick: make(chan struct{}, 1)}, nil
}

// Start writes the entry and keeps it current until Stop.
func (w *Writer) Start(ctx context.Context) {
	ctx, w.cancel = context.WithCancel(ctx)
	w.done = make(chan struct{})
	go w.loop(ctx)
}

// retryDisconnected is how soon a listener that is not connected to NATS
// looks again: the entry should be fresh soon after the server is back.
const retryDisconnected = time.Second

// retryFailed is how soon a write that failed for a passing reason is
// tried again.
const retryFailed = 5 * time.Second

// transient reports whether a failed write may succeed if simply tried
// again soon: not when the server has no JetStream (the heartbeat notices
// when it has), nor when this credential may not write, nor for a bucket
// made differently (both need an operator).
func transient(err error) bool {
	return err != nil && !errors.Is(err, ErrNoJetStream) && !errors.Is(err, ErrNotPermitted) && !errors.Is(err, ErrBadBucket)
}

// changeDelay is how long a change waits before it is written, so that
// changes close together (a deploy that starts and ends at once, a fleet
// deploy in which every listener's statuses go out first) cost one write,
// written after the statuses rather than in their way. Readers see a
// change this much later.
const changeDelay = time.Second

func (w *Writer) loop(ctx context.Context) {
	defer close(w.done)
	// After a reconnection (a server restart, a cluster node lost) the
	// entry is written at once rather than at the next heartbeat.
	reconnected, unwatch := w.cfg.Conn.WatchReconnect()
	defer unwatch()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		next := w.cfg.Interval
		if w.cfg.Conn.IsConnected() {
			if err := w.write(ctx, false); transient(err) && ctx.Err() == nil {
				// No answer in time (a cluster still electing its
				// JetStream leader, a busy server): try again soon rather
				// than a heartbeat later.
				next = min(next, retryFailed)
			}
		} else {
			next = min(next, retryDisconnected)
		}
		t.Reset(next)
		due := time.Now().Add(next)
		for waiting := true; waiting; {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				waiting = false
			case <-w.kick:
				// Bring the next write forward to changeDelay from now,
				// never push it back.
				if soon := time.Now().Add(changeDelay); soon.Before(due) {
					due = soon
					t.Reset(changeDelay)
				}
			case <-reconnected:
				waiting = false
			}
		}
	}
}

// Stop ends the heartbeat and writes the entry once more, marked stopped,
// so readers see the host offline at once. It waits for JetStream's
// acknowledgement until ctx ends.
func (w *Writer) Stop(ctx context.Context) error {
	if w.cancel != nil {
		w.cancel()
		<-w.done
	}
	err := w.write(ctx, true)
	w.putMu.Lock()
	if w.r != nil {
		w.r.close()
		w.r = nil
	}
	w.putMu.Unlock()
	return err
}

// Changed writes the entry soon: the running or the last deploy changed.
func (w *Writer) Changed() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Entry returns the entry as it would be written now.
func (w *Writer) Entry(sys System, stopped bool) protocol.FleetEntry {
	now := w.cfg.Now().UTC()
	e := protocol.FleetEntry{
		Hostname: w.cfg.Hostname, Tier: w.cfg.Tier, Role: w.cfg.Role,
		Subjects: w.cfg.Subjects, Version: w.cfg.Version, PublicKey: w.cfg.PublicKey,
		CurrentSystem: sys.Current, BootedSystem: sys.Booted, RebootRequired: sys.RebootRequired,
		Generation: sys.Generation, UptimeSeconds: protocol.RoundSeconds(sys.UptimeSeconds),
		StartedAt:        w.started.UTC().Format(time.RFC3339Nano),
		HeartbeatAt:      now.Format(time.RFC3339Nano),
		HeartbeatSeconds: w.cfg.Interval.Seconds(),
		Stopped:          stopped,
	}
	if w.cfg.Running != nil {
		e.RunningDeploy = w.cfg.Running()
	}
	if w.cfg.Last != nil {
		e.LastDeploy = w.cfg.Last()
	}
	if e.Subjects == nil {
		e.Subjects = []string{}
	}
	return e
}

// write puts the entry, creating the bucket first when it is missing.
func (w *Writer) write(ctx context.Context, stopped bool) error {
	w.putMu.Lock()
	defer w.putMu.Unlock()
	sys := w.cfg.System.Read()
	if w.cfg.OnSystem != nil {
		w.cfg.OnSystem(sys)
	}
	if w.off != nil {
		return w.off
	}
	data, err := json.Marshal(w.Entry(sys, stopped))
	if err != nil {
		return err
	}
	err = w.put(ctx, data)
	if ctx.Err() == nil {
		// A write cut short by the listener stopping is not news: Stop
		// writes the entry once more.
		w.report(err)
	}
	return err
}

func (w *Writer) put(ctx context.Context, data []byte) error {
	if w.r == nil {
		r, err := listenEach(w.cfg.Conn, protocol.FleetHostReplyPrefix(w.cfg.Hostname)+protocol.NewID(), 16)
		if err != nil {
			w.off = err
			return err
		}
		w.r = r
	}
	for attempt := 0; ; attempt++ {
		if !w.ready {
			created, err := ensureStream(ctx, w.r, w.cfg.Replicas, w.cfg.Timeout)
			if errors.Is(err, ErrBadBucket) || errors.Is(err, ErrNotPermitted) {
				w.off = err
			}
			if err != nil {
				return err
			}
			if created {
				w.cfg.Logger.Info("created the fleet registry bucket", "bucket", protocol.FleetBucket)
			}
			w.ready = true
		}
		subject := protocol.FleetKeySubject(w.cfg.Tier, w.cfg.Hostname)
		_, err := w.r.request(ctx, subject, nil, data, w.cfg.Timeout, nil)
		switch {
		case errors.Is(err, errNoResponders) && attempt == 0:
			// The bucket went away (deleted, or the server lost its
			// store): make it again.
			w.ready = false
			continue
		case errors.Is(err, errNoResponders):
			return ErrNoBucket
		case errors.Is(err, ErrNotPermitted):
			w.off = fmt.Errorf("%w: writing %s", err, subject)
			return w.off
		}
		return err
	}
}

// report logs a change in how writing goes: once when it works, once per
// kind of failure, not on every heartbeat.
func (w *Writer) report(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if w.reported && msg == w.lastErr {
		return
	}
	first := !w.reported
	w.lastErr, w.reported = msg, true
	log := w.cfg.Logger
	switch {
	case err == nil && first:
		log.Info("registered in the fleet registry", "bucket", protocol.FleetBucket, "key", protocol.FleetKey(w.cfg.Tier, w.cfg.Hostname), "heartbeat", w.cfg.Interval)
	case err == nil:
		log.Info("fleet registry entry written again", "key", protocol.FleetKey(w.cfg.Tier, w.cfg.Hostname))
	case errors.Is(err, ErrNoJetStream):
		log.Info("fleet registry off: list-hosts and group deploys use discovery", "reason", err)
	default:
		log.Warn("fleet registry entry not written; list-hosts and group deploys may not see this host as it is", "err", err)
	}
}
