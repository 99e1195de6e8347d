// Package daemon holds what the listener and builder daemons share: the
// ordered shutdown that stops taking requests, lets running work finish
// within a grace period, closes the metrics endpoint and drains NATS.
package daemon

import (
	"context"
	"errors"
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

// Stop shuts a daemon down in a fixed order: unsubscribe (no new requests),
// wind down the server within grace, close the metrics endpoint, then drain
// the connection so the last statuses reach their requesters. A connection
// the daemon does not own (ownsConn false) is only flushed.
func Stop(log *slog.Logger, subs []*nats.Subscription, srv Server, grace time.Duration, metrics *metricsserver.Server, conn *protocol.Conn, ownsConn bool) {
	// Drain rather than unsubscribe: requests already queued are still
	// handled, and the server, which is stopping, answers them with a
	// rejection instead of leaving their senders waiting.
	for _, s := range subs {
		_ = s.Drain()
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	srv.Shutdown(sctx)
	cancel()
	if metrics != nil {
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = metrics.Close(cctx)
		ccancel()
	}
	if !ownsConn {
		_ = conn.Flush()
		return
	}
	if err := drain(conn, 5*time.Second); err != nil {
		log.Warn("NATS drain", "err", err)
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

// Start finishes a daemon's start-up once its subscriptions are made: it
// flushes them to the server (when connected; a daemon started before NATS
// is reachable subscribes on connection) and, when metricsAddr is not
// empty, serves reg on /metrics with a /health that fails while NATS is
// disconnected.
func Start(log *slog.Logger, conn *protocol.Conn, reg *prometheus.Registry, metricsAddr string) (*metricsserver.Server, error) {
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
