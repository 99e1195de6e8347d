// Package listener is the daemon that runs on each NixOS host: it composes
// the deploy tool's serve half and the list_hosts responder on a NATS
// connection, exposes metrics and health, and shuts down cleanly.
package listener

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/homelab-deploy/homelab-deploy/agents/daemon"
	"github.com/homelab-deploy/homelab-deploy/internal/selfupdate"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
)

// Config is the listener's configuration (the CLI flags).
type Config struct {
	Hostname        string
	Tier            string
	Role            string
	NATSURL         string
	NKeyFile        string
	CAFile          string
	FlakeURL        string
	Timeout         time.Duration
	DeploySubjects  []string // templates; empty means the defaults
	DiscoverSubject string
	MetricsEnabled  bool
	MetricsAddr     string
	// ShutdownGrace is how long SIGTERM waits for a running deploy before
	// killing it.
	ShutdownGrace time.Duration
	Version       string
	Logger        *slog.Logger
	// Exec replaces nixos-rebuild (tests, demo).
	Exec deploy.Executor
	// Rebuild replaces nixos-rebuild with live output (demo); it takes
	// precedence over Exec.
	Rebuild deploy.RebuildFunc
	// LockFile is the rebuild lock that outlives the listener
	// (--lock-file); empty means none.
	LockFile string
	// WatchPaths, when not empty, are the listener's own unit file and
	// binary: after a switch (or test) that changed one of them, the listener
	// exits cleanly so systemd starts the new version.
	WatchPaths []string
	// RestartAfter, if set, is asked after each finished deploy whether the
	// listener should exit so that systemd starts the new version.
	RestartAfter func(action protocol.Action, status protocol.Status) (bool, string)
	// BeforeDeploy, if set, runs before each nixos-rebuild.
	BeforeDeploy func(action protocol.Action)
	// Ready, if set, is called once subscriptions are in place.
	Ready func(*Listener)
	// Conn, if set, is used instead of dialling NATSURL (demo, tests).
	Conn *protocol.Conn
	// MessagePrefix, if set, starts every deploy status message (demo).
	MessagePrefix string
	// TrustedDeployers are NKey user public keys (--trusted-deployer). When
	// set, only requests signed by one of them are carried out or answered.
	TrustedDeployers []string
	// ConfirmTimeout, when positive, is how long after a completed switch
	// or test the NATS connection and every HealthChecks entry get to come
	// good before the change is rolled back (--confirm-timeout).
	ConfirmTimeout time.Duration
	HealthChecks   []deploy.HealthCheck
	// SwitchToConfiguration replaces the system profile's
	// switch-to-configuration for undoing a test (tests).
	SwitchToConfiguration string
	// Fleet is the listener's entry in the fleet registry (fleet.go).
	Fleet FleetConfig
}

// Listener is a running listener.
type Listener struct {
	Subjects    []string
	metricsAddr string
}

// MetricsAddr returns the bound metrics address, or "".
func (l *Listener) MetricsAddr() string { return l.metricsAddr }

// Validate checks the configuration before anything connects.
func (c *Config) Validate() ([]string, error) {
	if err := protocol.ValidateHostname(c.Hostname); err != nil {
		return nil, fmt.Errorf("--hostname: %w", err)
	}
	if err := protocol.ValidateTier(c.Tier); err != nil {
		return nil, fmt.Errorf("--tier: %w", err)
	}
	if c.Role != "" {
		if err := protocol.ValidateRole(c.Role); err != nil {
			return nil, fmt.Errorf("--role: %w", err)
		}
	}
	if err := protocol.ValidateFlakeURL(c.FlakeURL); err != nil {
		return nil, fmt.Errorf("--flake-url: %w", err)
	}
	if _, err := protocol.ParseTrustedKeys(c.TrustedDeployers); err != nil {
		return nil, fmt.Errorf("--trusted-deployer: %w", err)
	}
	if c.Timeout <= 0 {
		return nil, errors.New("--timeout must be a positive number of seconds")
	}
	if c.DiscoverSubject == "" {
		c.DiscoverSubject = protocol.DefaultDiscoverSubject
	}
	if err := protocol.ValidateLiteralSubject(c.DiscoverSubject); err != nil {
		return nil, fmt.Errorf("--discover-subject: %w", err)
	}
	templates := c.DeploySubjects
	if len(templates) == 0 {
		templates = protocol.DefaultDeploySubjects()
	}
	subjects, err := protocol.ExpandSubjects(templates, protocol.TemplateVars{Hostname: c.Hostname, Tier: c.Tier, Role: c.Role})
	if err != nil {
		return nil, fmt.Errorf("--deploy-subject: %w", err)
	}
	if len(subjects) == 0 {
		return nil, errors.New("--deploy-subject: no subject left to subscribe to")
	}
	for _, s := range subjects {
		if s == c.DiscoverSubject {
			return nil, fmt.Errorf("--deploy-subject %s is the discovery subject", s)
		}
	}
	return subjects, nil
}

// Run runs the listener until ctx is cancelled (SIGTERM) or a self-restart
// is due. Both end with a clean drain and a nil error. It fails when the
// NATS server refuses one of its subscriptions.
func Run(ctx context.Context, cfg Config) error {
	subjects, err := cfg.Validate()
	if err != nil {
		return err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger.With("hostname", cfg.Hostname, "tier", cfg.Tier)
	if len(cfg.WatchPaths) > 0 && cfg.RestartAfter == nil {
		cfg.BeforeDeploy, cfg.RestartAfter = selfRestart(cfg.WatchPaths, cfg.BeforeDeploy)
	}
	conn, owned, err := daemon.Connect(ctx, cfg.Conn, protocol.ConnectOptions{
		URLs: cfg.NATSURL, NKeyFile: cfg.NKeyFile, CAFile: cfg.CAFile,
		Name: "homelab-deploy listener " + cfg.Hostname, Wait: true, Logger: log,
	})
	if err != nil {
		return err
	}
	if owned {
		defer conn.Close()
	}
	trusted, err := protocol.ParseTrustedKeys(cfg.TrustedDeployers)
	if err != nil {
		return fmt.Errorf("--trusted-deployer: %w", err)
	}
	reg, m := newMetrics(cfg)
	restart := make(chan string, 1)
	scfg := serverConfig(cfg, conn, m, log, restart)
	scfg.Trusted = trusted
	entry := newFleetEntry(cfg, conn, subjects, m, log)
	scfg.OnChange = entry.changed
	server, err := deploy.NewServer(scfg)
	if err != nil {
		return err
	}
	entry.attach(server)
	responder := &listhosts.Responder{
		Hostname: cfg.Hostname, Tier: cfg.Tier, Role: cfg.Role, Subjects: subjects,
		Version: cfg.Version, Busy: server.Busy, Last: server.LastDeploy, Publish: publisher(conn), Logger: log,
		Trusted: trusted,
	}
	var subs []daemon.Subscription
	for _, s := range subjects {
		subs = append(subs, daemon.Subscription{Subject: s, Handle: dropJetStream(log, func(msg *nats.Msg) { server.HandleMsg(msg.Subject, msg.Header, msg.Data) })})
	}
	// Discovery floods must not grow memory without bound.
	subs = append(subs, daemon.Subscription{
		Subject: cfg.DiscoverSubject, Handle: dropJetStream(log, func(msg *nats.Msg) { server.Redeliver(); responder.HandleMsg(msg.Subject, msg.Header, msg.Data) }),
		PendingMsgs: 4096, PendingBytes: 4 << 20,
	})
	metricsAddr := ""
	if cfg.MetricsEnabled {
		metricsAddr = cfg.MetricsAddr
	}
	err = daemon.Run(ctx, daemon.Spec{
		Name: "listener", Conn: conn, OwnsConn: owned, Subscriptions: subs,
		Registry: reg, MetricsAddr: metricsAddr, Server: entry.wrap(server), Grace: cfg.ShutdownGrace,
		Restart: restart, Logger: log,
		Ready: func(addr string) {
			log.Info("listener ready", "subjects", subjects, "discover", cfg.DiscoverSubject, "flake", protocol.RedactURL(cfg.FlakeURL), "version", cfg.Version,
				"trusted_deployers", trustedAttr(trusted))
			entry.start(ctx)
			if cfg.Ready != nil {
				cfg.Ready(&Listener{Subjects: subjects, metricsAddr: addr})
			}
		},
	})
	log.Info("listener stopped")
	return err
}

func newMetrics(cfg Config) (*prometheus.Registry, *deploy.Metrics) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := deploy.NewMetrics(reg)
	m.Info.WithLabelValues(cfg.Hostname, cfg.Tier, cfg.Role, cfg.Version).Set(1)
	m.InProgress.Set(0)
	return reg, m
}

func publisher(conn *protocol.Conn) func(string, []byte) error {
	return func(subject string, data []byte) error { return conn.Publish(subject, data) }
}

// serverConfig is the deploy server of the listener; a self-restart it
// decides on is delivered on restart.
func serverConfig(cfg Config, conn *protocol.Conn, m *deploy.Metrics, log *slog.Logger, restart chan<- string) deploy.ServerConfig {
	return deploy.ServerConfig{
		Hostname: cfg.Hostname, Tier: cfg.Tier, Role: cfg.Role, FlakeURL: cfg.FlakeURL,
		Timeout: cfg.Timeout, Exec: cfg.Exec, Rebuild: cfg.Rebuild, LockFile: cfg.LockFile, Publish: publisher(conn), Metrics: m, Logger: log,
		BeforeDeploy: cfg.BeforeDeploy, MessagePrefix: cfg.MessagePrefix,
		RestartAfter: cfg.RestartAfter,
		Confirm: deploy.Confirm{
			Timeout: cfg.ConfirmTimeout, Checks: cfg.HealthChecks,
			Connected: conn.IsConnected, SwitchToConfiguration: cfg.SwitchToConfiguration,
		},
		// A preview (diff) reads the running and booted system where the
		// fleet entry does (--fleet-system-root).
		Preview: deploy.Preview{SystemRoot: cfg.Fleet.SystemRoot},
		OnRestart: func(why string) {
			// The final status must be on the wire before the listener
			// exits. Only then: a round trip per deploy is most of a
			// listener's messaging cost (docs/BENCHMARKS.md).
			_ = conn.Flush()
			select {
			case restart <- why:
			default:
			}
		},
	}
}

// selfRestart snapshots the watched paths right before each nixos-rebuild
// and, after a completed deploy, decides whether the listener replaced
// itself.
func selfRestart(paths []string, before func(protocol.Action)) (func(protocol.Action), func(protocol.Action, protocol.Status) (bool, string)) {
	var mu sync.Mutex
	var snap selfupdate.Snapshot
	return func(a protocol.Action) {
			mu.Lock()
			snap = selfupdate.Take(paths, nil)
			mu.Unlock()
			if before != nil {
				before(a)
			}
		}, func(a protocol.Action, status protocol.Status) (bool, string) {
			if status != protocol.StatusCompleted {
				return false, ""
			}
			mu.Lock()
			defer mu.Unlock()
			return selfupdate.Decide(string(a), snap, selfupdate.Take(paths, nil))
		}
}

// trustedAttr is how the ready line names the trusted deployers.
func trustedAttr(t protocol.TrustedKeys) any {
	if len(t) == 0 {
		return "any (unsigned requests accepted)"
	}
	return t.Keys()
}
