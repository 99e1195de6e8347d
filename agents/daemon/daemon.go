// Package daemon is the start-up and shutdown the listener and builder
// daemons share: subscribe, serve metrics and health, run until stopped,
// then stop taking requests, let running work finish within a grace period,
// close the metrics endpoint and drain NATS, in that order.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/homelab-deploy/homelab-deploy/agents/metricsserver"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// Server is a serve half that can wind down its running work.
type Server interface {
	// Shutdown waits for running work until ctx ends, then kills it and
	// reports it failed.
	Shutdown(ctx context.Context)
}

// Subscription is one subject a daemon listens on.
type Subscription struct {
	Subject string
	Handle  func(msg *nats.Msg)
	// PendingMsgs and PendingBytes, when set, bound the messages queued for
	// Handle: a flood is dropped (and counted by the client library as a
	// slow consumer) rather than held in memory.
	PendingMsgs, PendingBytes int
}

// Spec is what a daemon runs.
type Spec struct {
	// Name is what the daemon is called in messages ("listener", "builder").
	Name string
	// Conn is the NATS connection. When OwnsConn is set, Run drains and
	// closes it on the way out; otherwise it only flushes it.
	Conn     *protocol.Conn
	OwnsConn bool
	// Subscriptions are made in order before the daemon counts as started.
	Subscriptions []Subscription
	// Registry is served on /metrics at MetricsAddr; no endpoint when
	// MetricsAddr is empty.
	Registry    *prometheus.Registry
	MetricsAddr string
	// Server is wound down within Grace (default 30 s) when the daemon stops.
	Server Server
	Grace  time.Duration
	// Restart, when it delivers a reason, stops the daemon as a cancelled
	// context does (the listener replaced itself).
	Restart <-chan string
	// Ready, if set, is called once the daemon is started, with the bound
	// metrics address ("" without an endpoint).
	Ready  func(metricsAddr string)
	Logger *slog.Logger
}

// Connect returns given when it is not nil (the caller keeps owning it), or
// dials NATS with opts (then owned is true and the caller closes it).
func Connect(ctx context.Context, given *protocol.Conn, opts protocol.ConnectOptions) (conn *protocol.Conn, owned bool, err error) {
	if given != nil {
		return given, false, nil
	}
	conn, err = protocol.Connect(ctx, opts)
	return conn, err == nil, err
}

// Run starts the daemon and runs it until ctx ends or a restart is asked
// for; both end with the ordered stop and a nil error. It returns an error
// when the start fails, or when the NATS server refuses one of the
// subscriptions (at start or later): a daemon that cannot hear requests
// must not look healthy while it never receives one.
func Run(ctx context.Context, spec Spec) error {
	spec.defaults()
	refused, unwatch := watchRefusals(spec.Conn, spec.Subscriptions)
	defer unwatch()
	subs, err := subscribe(spec.Conn, spec.Subscriptions)
	if err != nil {
		return err
	}
	metrics, err := start(spec.Logger, spec.Conn, spec.Registry, spec.MetricsAddr)
	if err != nil {
		unsubscribe(subs)
		return err
	}
	if spec.Ready != nil {
		addr := ""
		if metrics != nil {
			addr = metrics.Addr()
		}
		spec.Ready(addr)
	}
	var failure error
	select {
	case <-ctx.Done():
		spec.Logger.Info("stopping: signal received")
	case why := <-spec.Restart:
		spec.Logger.Info("stopping so that systemd starts the new version", "reason", why)
	case r := <-refused:
		failure = r.error(spec.Name)
		spec.Logger.Error("stopping: the NATS server refused a subscription", "subject", r.subject, "err", r.err)
	}
	stop(spec, subs, metrics)
	return failure
}

func (s *Spec) defaults() {
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	if s.Grace <= 0 {
		s.Grace = 30 * time.Second
	}
}

// subscribe makes every subscription, or none: when one fails, the ones
// already made are removed.
func subscribe(conn *protocol.Conn, want []Subscription) ([]*nats.Subscription, error) {
	subs := make([]*nats.Subscription, 0, len(want))
	for _, w := range want {
		sub, err := conn.Subscribe(w.Subject, w.Handle)
		if err != nil {
			unsubscribe(subs)
			return nil, fmt.Errorf("subscribe to %s: %w", w.Subject, err)
		}
		if w.PendingMsgs != 0 || w.PendingBytes != 0 {
			_ = sub.SetPendingLimits(w.PendingMsgs, w.PendingBytes)
		}
		subs = append(subs, sub)
	}
	return subs, nil
}

func unsubscribe(subs []*nats.Subscription) {
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
}

// refusal is the server's permission error for one subscription.
type refusal struct {
	subject string
	err     error
}

func (r refusal) error(name string) error {
	return fmt.Errorf("the NATS server refused the %s's subscription to %s: fix the %s's permissions (its subscribe allow list must hold what `homelab-deploy nats-config` prints for it) and restart it: %w",
		name, r.subject, name, r.err)
}

// watchRefusals reports the first permission refusal for any of subs. A
// refused subscription arrives as an asynchronous error, at start or when
// the daemon first reaches a server, so it is watched for the whole run.
func watchRefusals(conn *protocol.Conn, subs []Subscription) (<-chan refusal, func()) {
	out := make(chan refusal, 1)
	done := make(chan struct{})
	var stops []func()
	for _, s := range subs {
		ch, stopWatch := conn.WatchPermission(s.Subject)
		stops = append(stops, stopWatch)
		go func(subject string) {
			select {
			case err := <-ch:
				select {
				case out <- refusal{subject: subject, err: err}:
				default:
				}
			case <-done:
			}
		}(s.Subject)
	}
	return out, func() {
		close(done)
		for _, stopWatch := range stops {
			stopWatch()
		}
	}
}

// start finishes the start-up once the subscriptions are made: it flushes
// them to the server (when connected; a daemon started before NATS is
// reachable subscribes on connection) and, when metricsAddr is not empty,
// serves reg on /metrics with a /health that fails while NATS is
// disconnected.
func start(log *slog.Logger, conn *protocol.Conn, reg *prometheus.Registry, metricsAddr string) (*metricsserver.Server, error) {
	if conn.IsConnected() {
		if err := conn.FlushTimeout(5 * time.Second); err != nil {
			log.Warn("NATS flush after subscribing failed", "err", err)
		}
	}
	if metricsAddr == "" {
		return nil, nil
	}
	return metricsserver.Start(metricsAddr, reg, func() error {
		if !conn.IsConnected() {
			return errors.New("not connected to NATS")
		}
		return nil
	}, log)
}

// stop shuts the daemon down in a fixed order: stop taking requests, wind
// down the server within the grace period, close the metrics endpoint,
// then drain the connection so the last statuses reach their requesters.
func stop(spec Spec, subs []*nats.Subscription, metrics *metricsserver.Server) {
	// Drain rather than unsubscribe: requests already queued are still
	// handled, and the server, which is stopping, answers them with a
	// rejection instead of leaving their senders waiting.
	for _, s := range subs {
		_ = s.Drain()
	}
	sctx, cancel := context.WithTimeout(context.Background(), spec.Grace)
	spec.Server.Shutdown(sctx)
	cancel()
	if metrics != nil {
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = metrics.Close(cctx)
		ccancel()
	}
	if !spec.OwnsConn {
		_ = spec.Conn.Flush()
		return
	}
	if err := drain(spec.Conn, 5*time.Second); err != nil {
		spec.Logger.Warn("NATS drain", "err", err)
	}
}

func drain(conn *protocol.Conn, d time.Duration) error {
	if !conn.IsConnected() {
		return nil
	}
	closed := make(chan struct{})
	conn.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := conn.Drain(); err != nil {
		return err
	}
	select {
	case <-closed:
		return nil
	case <-time.After(d):
		return errors.New("drain timed out")
	}
}
