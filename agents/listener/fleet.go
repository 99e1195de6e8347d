package listener

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/agents/daemon"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
	"github.com/homelab-deploy/homelab-deploy/tools/fleet"
)

// FleetConfig is the listener's entry in the fleet registry (the
// --fleet-* flags).
type FleetConfig struct {
	// Heartbeat is how often the entry is written when nothing changed
	// (default fleet.DefaultInterval); negative turns the entry off.
	Heartbeat time.Duration
	// SystemRoot is where /run/current-system, /run/booted-system, the
	// system profile and /proc/uptime are read ("" is /).
	SystemRoot string
	// Replicas of the bucket if this listener creates it; 0: three on a
	// JetStream cluster, one on a single server.
	Replicas int
}

// stopEntryTimeout bounds the last write of a stopping listener: a NATS
// server that does not answer must not hold up the shutdown.
const stopEntryTimeout = 3 * time.Second

// fleetEntry keeps the listener's registry entry and its system metrics.
type fleetEntry struct {
	writer *fleet.Writer // nil when the entry is off
	server *deploy.Server
	log    *slog.Logger
}

// newFleetEntry reads the system once for the metrics and prepares the
// entry; attach gives it the deploy server, start writes it.
func newFleetEntry(cfg Config, conn *protocol.Conn, subjects []string, m *deploy.Metrics, log *slog.Logger) *fleetEntry {
	paths := fleet.SystemPaths{Root: cfg.Fleet.SystemRoot}
	onSystem := func(s fleet.System) {
		m.RebootRequired.Set(boolGauge(s.RebootRequired))
		m.Generation.Set(float64(s.Generation))
	}
	onSystem(paths.Read())
	f := &fleetEntry{log: log}
	if cfg.Fleet.Heartbeat < 0 {
		return f
	}
	w, err := fleet.NewWriter(fleet.WriterConfig{
		Conn: conn, Hostname: cfg.Hostname, Tier: cfg.Tier, Role: cfg.Role, Subjects: subjects,
		Version: cfg.Version, PublicKey: publicKey(conn), Interval: cfg.Fleet.Heartbeat,
		Replicas: cfg.Fleet.Replicas, System: paths, OnSystem: onSystem,
		Running: f.running, Last: f.last, Logger: log,
	})
	if err != nil {
		log.Warn("fleet registry entry off", "err", err)
		return f
	}
	f.writer = w
	return f
}

func (f *fleetEntry) attach(s *deploy.Server) { f.server = s }

func (f *fleetEntry) start(ctx context.Context) {
	if f.writer != nil {
		f.writer.Start(ctx)
	}
}

// changed is the deploy server's OnChange.
func (f *fleetEntry) changed() {
	if f.writer != nil {
		f.writer.Changed()
	}
}

func (f *fleetEntry) running() *protocol.RunningDeploy {
	if f.server == nil {
		return nil
	}
	r := f.server.Running()
	if r == nil {
		return nil
	}
	return &protocol.RunningDeploy{ID: r.ID, Caller: r.Caller, Action: r.Action, Revision: r.Revision, StartedAt: r.Arrived.UTC().Format(time.RFC3339Nano)}
}

func (f *fleetEntry) last() *protocol.LastDeploy {
	if f.server == nil {
		return nil
	}
	return f.server.LastDeploy()
}

// wrap is the deploy server as the daemon winds it down: once running work
// is over, the entry is written a last time, marked stopped, so readers
// see the host offline at once rather than three heartbeats later.
func (f *fleetEntry) wrap(s *deploy.Server) daemon.Server { return stoppingEntry{s, f} }

type stoppingEntry struct {
	*deploy.Server
	f *fleetEntry
}

func (s stoppingEntry) Shutdown(ctx context.Context) {
	s.Server.Shutdown(ctx)
	if s.f.writer == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopEntryTimeout)
	defer cancel()
	if err := s.f.writer.Stop(ctx); err == nil {
		s.f.log.Info("fleet registry entry marked stopped")
	}
}

// dropJetStream keeps messages that JetStream delivered on someone's
// behalf away from h (protocol.DeliveredByJetStream): a credential that may
// read registry entries could otherwise have one delivered to a deploy
// subject it may not publish to.
func dropJetStream(log *slog.Logger, h func(*nats.Msg)) func(*nats.Msg) {
	return func(msg *nats.Msg) {
		if protocol.DeliveredByJetStream(msg.Reply, msg.Header) {
			log.Warn("dropped a message JetStream delivered to a deploy subject; only clients send requests", "subject", msg.Subject)
			return
		}
		h(msg)
	}
}

// publicKey is the connection's NKey public key, when it knows it.
func publicKey(conn *protocol.Conn) string {
	if k, ok := any(conn).(interface{ PublicKey() string }); ok {
		return k.PublicKey()
	}
	return ""
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
