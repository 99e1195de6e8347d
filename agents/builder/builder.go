// Package builder is the daemon that runs on a build host: it loads the
// builder configuration, composes the build tool's serve half on a NATS
// connection, exposes metrics and health, and shuts down cleanly.
package builder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/homelab-deploy/homelab-deploy/agents/daemon"
	"github.com/homelab-deploy/homelab-deploy/agents/metricsserver"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/build"
)

// DefaultMetricsAddr is the builder's metrics address (SPEC).
const DefaultMetricsAddr = ":9973"

// Config is the builder's configuration (the CLI flags).
type Config struct {
	NATSURL    string
	NKeyFile   string
	CAFile     string
	ConfigFile string
	// Timeout is the per-host build timeout (default 1800 s).
	Timeout time.Duration
	// MaxParallel bounds concurrent nix builds (default 2).
	MaxParallel    int
	MetricsEnabled bool
	MetricsAddr    string
	// ShutdownGrace is how long SIGTERM waits for running builds before
	// killing them (their hosts are then reported as failed).
	ShutdownGrace time.Duration
	// Nix is the nix program (default "nix" from PATH); NixEnv its
	// environment (nil: the builder's own).
	Nix     string
	NixEnv  []string
	Version string
	Logger  *slog.Logger
	// Conn, if set, is used instead of dialling NATSURL (tests).
	Conn *protocol.Conn
	// Ready, if set, is called once subscriptions are in place.
	Ready func(*Builder)
}

// Builder is a running builder.
type Builder struct {
	// Subjects are the subjects subscribed to, one build.<repo>.* per repo.
	Subjects []string
	Server   *build.Server
	metrics  *metricsserver.Server
}

// MetricsAddr returns the bound metrics address, or "".
func (b *Builder) MetricsAddr() string {
	if b.metrics == nil {
		return ""
	}
	return b.metrics.Addr()
}

// Load checks the flags and reads the configuration file; the builder
// refuses to start when either is wrong.
func (c *Config) Load() (*build.Config, error) {
	if c.Timeout <= 0 {
		return nil, errors.New("--timeout must be a positive number of seconds")
	}
	if c.MaxParallel < 0 {
		return nil, errors.New("--max-parallel must be a positive number")
	}
	if c.ConfigFile == "" {
		return nil, errors.New("--config is required: the YAML file listing the repositories to build")
	}
	return build.LoadConfig(c.ConfigFile)
}

// Run runs the builder until ctx is cancelled (SIGTERM), then stops taking
// requests, lets running builds finish within the grace period (or kills
// them and reports them failed), and drains.
func Run(ctx context.Context, cfg Config) error {
	bcfg, err := cfg.Load()
	if err != nil {
		return err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 30 * time.Second
	}
	if cfg.MetricsAddr == "" {
		cfg.MetricsAddr = DefaultMetricsAddr
	}
	log := cfg.Logger.With("component", "builder")
	names := bcfg.Names()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := build.NewMetrics(reg, names)

	conn := cfg.Conn
	if conn == nil {
		conn, err = protocol.Connect(ctx, protocol.ConnectOptions{
			URLs: cfg.NATSURL, NKeyFile: cfg.NKeyFile, CAFile: cfg.CAFile,
			Name: "homelab-deploy builder", Wait: true, Logger: log,
		})
		if err != nil {
			return err
		}
		defer conn.Close()
	}
	srv, err := build.NewServer(build.ServerConfig{
		Config: bcfg, Timeout: cfg.Timeout, MaxParallel: cfg.MaxParallel,
		Nix: cfg.Nix, Env: cfg.NixEnv, Metrics: m, Logger: log,
		Publish: func(subject string, data []byte) error { return conn.Publish(subject, data) },
	})
	if err != nil {
		return err
	}
	b := &Builder{Server: srv}

	var subs []*nats.Subscription
	for _, name := range names {
		subject := protocol.BuildRepoWildcard(name)
		sub, err := conn.Subscribe(subject, func(msg *nats.Msg) { srv.Handle(msg.Subject, msg.Data) })
		if err != nil {
			return fmt.Errorf("subscribe to %s: %w", subject, err)
		}
		// Requests are tiny and handled at once; a flood is dropped rather
		// than held in memory.
		_ = sub.SetPendingLimits(4096, 4<<20)
		subs = append(subs, sub)
		b.Subjects = append(b.Subjects, subject)
	}
	metricsAddr := ""
	if cfg.MetricsEnabled {
		metricsAddr = cfg.MetricsAddr
	}
	if b.metrics, err = daemon.Start(log, conn, reg, metricsAddr); err != nil {
		return err
	}
	log.Info("builder ready", "subjects", b.Subjects, "repos", names, "timeout", cfg.Timeout, "max_parallel", cfg.MaxParallel, "version", cfg.Version)
	if cfg.Ready != nil {
		cfg.Ready(b)
	}

	<-ctx.Done()
	log.Info("stopping: signal received", "busy", srv.Busy())
	daemon.Stop(log, subs, srv, cfg.ShutdownGrace, b.metrics, conn, cfg.Conn == nil)
	log.Info("builder stopped")
	return nil
}
