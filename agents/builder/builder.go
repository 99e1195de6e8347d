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
	// TrustedDeployers are NKey user public keys (--trusted-deployer). When
	// set, only build requests signed by one of them are carried out.
	TrustedDeployers []string
	// Conn, if set, is used instead of dialling NATSURL (tests).
	Conn *protocol.Conn
	// Ready, if set, is called once subscriptions are in place.
	Ready func(*Builder)
}

// Builder is a running builder.
type Builder struct {
	// Subjects are the subjects subscribed to, one build.<repo>.* per repo.
	Subjects    []string
	Server      *build.Server
	metricsAddr string
}

// MetricsAddr returns the bound metrics address, or "".
func (b *Builder) MetricsAddr() string { return b.metricsAddr }

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
	if _, err := protocol.ParseTrustedKeys(c.TrustedDeployers); err != nil {
		return nil, fmt.Errorf("--trusted-deployer: %w", err)
	}
	return build.LoadConfig(c.ConfigFile)
}

// Run runs the builder until ctx is cancelled (SIGTERM), then stops taking
// requests, lets running builds finish within the grace period (or kills
// them and reports them failed), and drains. It refuses to start when nix
// cannot build flakes, and fails when the NATS server refuses one of its
// subscriptions.
func Run(ctx context.Context, cfg Config) error {
	bcfg, err := cfg.Load()
	if err != nil {
		return err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MetricsAddr == "" {
		cfg.MetricsAddr = DefaultMetricsAddr
	}
	log := cfg.Logger.With("component", "builder")
	trusted, err := protocol.ParseTrustedKeys(cfg.TrustedDeployers)
	if err != nil {
		return fmt.Errorf("--trusted-deployer: %w", err)
	}
	if err := CheckNix(ctx, cfg.Nix, cfg.NixEnv, log); err != nil {
		return err
	}
	conn, owned, err := daemon.Connect(ctx, cfg.Conn, protocol.ConnectOptions{
		URLs: cfg.NATSURL, NKeyFile: cfg.NKeyFile, CAFile: cfg.CAFile,
		Name: "homelab-deploy builder", Wait: true, Logger: log,
	})
	if err != nil {
		return err
	}
	if owned {
		defer conn.Close()
	}
	names := bcfg.Names()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := build.NewServer(build.ServerConfig{
		Config: bcfg, Timeout: cfg.Timeout, MaxParallel: cfg.MaxParallel,
		Nix: cfg.Nix, Env: cfg.NixEnv, Metrics: build.NewMetrics(reg, names), Logger: log, Trusted: trusted,
		Publish: func(subject string, data []byte) error { return conn.Publish(subject, data) },
	})
	if err != nil {
		return err
	}
	b := &Builder{Server: srv}
	var subs []daemon.Subscription
	for _, name := range names {
		subject := protocol.BuildRepoWildcard(name)
		// Requests are tiny and handled at once; a flood is dropped rather
		// than held in memory.
		subs = append(subs, daemon.Subscription{
			Subject: subject, Handle: func(msg *nats.Msg) { srv.HandleMsg(msg.Subject, msg.Header, msg.Data) },
			PendingMsgs: 4096, PendingBytes: 4 << 20,
		})
		b.Subjects = append(b.Subjects, subject)
	}
	metricsAddr := ""
	if cfg.MetricsEnabled {
		metricsAddr = cfg.MetricsAddr
	}
	err = daemon.Run(ctx, daemon.Spec{
		Name: "builder", Conn: conn, OwnsConn: owned, Subscriptions: subs,
		Registry: reg, MetricsAddr: metricsAddr, Server: srv, Grace: cfg.ShutdownGrace, Logger: log,
		Ready: func(addr string) {
			b.metricsAddr = addr
			log.Info("builder ready", "subjects", b.Subjects, "repos", names, "timeout", cfg.Timeout, "max_parallel", cfg.MaxParallel, "version", cfg.Version,
				"trusted_deployers", trustedAttr(trusted))
			if cfg.Ready != nil {
				cfg.Ready(b)
			}
		},
	})
	log.Info("builder stopped")
	return err
}

// trustedAttr is how the ready line names the trusted deployers.
func trustedAttr(t protocol.TrustedKeys) any {
	if len(t) == 0 {
		return "any (unsigned requests accepted)"
	}
	return t.Keys()
}
