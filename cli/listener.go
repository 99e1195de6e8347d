package cli

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/peterbourgon/ff/v4"

	"github.com/homelab-deploy/homelab-deploy/agents/listener"
	"github.com/homelab-deploy/homelab-deploy/internal/selfupdate"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
	"github.com/homelab-deploy/homelab-deploy/tools/fleet"
)

type listenerCmd struct {
	root           *Root
	conn           connFlags
	Hostname       string
	Tier           string
	Role           string
	FlakeURL       string
	Timeout        time.Duration
	DeploySubjects []string
	Discover       string
	MetricsEnabled bool
	MetricsAddr    string
	Grace          time.Duration
	WatchUnitFile  string
	LockFile       string
	Trusted        []string
	ConfirmTimeout time.Duration
	HealthChecks   []string
	Fleet          listener.FleetConfig
	Flags          *ff.FlagSet
	Command        *ff.Command
}

func newListener(r *Root) *listenerCmd {
	c := &listenerCmd{root: r}
	c.Flags = ff.NewFlagSet("listener").SetParent(r.Flags)
	c.Flags.StringVar(&c.Hostname, 0, "hostname", "", "hostname for this listener, used in subject templates (required)")
	c.Flags.StringVar(&c.Tier, 0, "tier", "", "deployment tier: test or prod (required)")
	c.conn.register(c.Flags)
	c.Flags.StringVar(&c.FlakeURL, 0, "flake-url", "", "git flake URL for nixos-rebuild, e.g. git+https://git.example.com/user/nixos-configs.git (required)")
	c.Flags.StringVar(&c.Role, 0, "role", "", "role for role-based targeting (deploy.<tier>.role.<role>)")
	durationVar(c.Flags, &c.Timeout, "timeout", 600*time.Second, "deployment timeout, in seconds (600) or as a duration (10m); nixos-rebuild is killed with its process group after it")
	c.Flags.StringListVar(&c.DeploySubjects, 0, "deploy-subject", "NATS subject to subscribe to, repeatable; templates <hostname>, <tier>, <role> (default deploy.<tier>.<hostname>, deploy.<tier>.all, deploy.<tier>.role.<role>)")
	c.Flags.StringVar(&c.Discover, 0, "discover-subject", protocol.DefaultDiscoverSubject, "discovery subject")
	c.Flags.BoolVar(&c.MetricsEnabled, 0, "metrics-enabled", "enable the Prometheus /metrics and /health endpoint")
	c.Flags.StringVar(&c.MetricsAddr, 0, "metrics-addr", ":9972", "metrics HTTP address")
	durationVar(c.Flags, &c.Grace, "shutdown-grace", 30*time.Second, "how long SIGTERM waits for a running deploy before killing it (it is then reported as failed), in seconds or as a duration")
	durationVar(c.Flags, &c.ConfirmTimeout, "confirm-timeout", deploy.DefaultConfirmTimeout, "after a switch or test, how long NATS and every --health-check get to come good before the change is rolled back, in seconds or as a duration; 0 disables")
	c.Flags.StringListVar(&c.HealthChecks, 0, "health-check", "command that must exit 0 after a switch or test, repeatable; run without a shell: [timeout=30s] PROGRAM [ARG...], words quoted with '...' or \"...\"")
	c.Flags.StringListVar(&c.Trusted, 0, "trusted-deployer", "NKey user public key (U...) of a deployer whose signed requests are carried out, repeatable; when given, unsigned requests and requests signed by other keys are refused (unauthorized)")
	c.Flags.StringVar(&c.LockFile, 0, "lock-file", "", "rebuild lock held by nixos-rebuild for as long as it runs, even if the listener dies; a restarted listener refuses deploys (already_running) while it is held (the NixOS module uses "+deploy.DefaultLockFile+"; empty: no lock)")
	durationVar(c.Flags, &c.Fleet.Heartbeat, "fleet-heartbeat", fleet.DefaultInterval, "how often the listener rewrites its entry in the fleet registry (a JetStream bucket) when nothing changed, in seconds or as a duration; readers call the host offline after three; 0 writes no entry")
	c.Flags.StringVar(&c.Fleet.SystemRoot, 0, "fleet-system-root", "/", "directory in which run/current-system, run/booted-system, nix/var/nix/profiles/system and proc/uptime are read for the fleet registry and the reboot and generation metrics")
	c.Flags.IntVar(&c.Fleet.Replicas, 0, "fleet-replicas", 0, "replicas of the fleet registry bucket when this listener creates it (1-5); 0: 3 on a JetStream cluster, 1 on a single server")
	c.Flags.StringVar(&c.WatchUnitFile, 0, "watch-unit-file", "", "systemd unit file of this listener; after a switch that changed it, the listener exits so systemd restarts it on the new version")
	c.Command = &ff.Command{
		Name:      "listener",
		Usage:     "homelab-deploy listener [FLAGS]",
		ShortHelp: "run the deploy listener on a NixOS host",
		LongHelp: "Subscribes to the host's deploy subjects and runs\n" +
			"  nixos-rebuild <action> --flake <flake-url>?ref=<revision>#<hostname>\n" +
			"(rev=<commit> for a 40-hex revision) for each valid request, one at a time, streaming\n" +
			"accepted, started and completed/failed back to the requester. Answers discovery.\n" +
			"Drains and exits 0 on SIGTERM.",
		Flags: c.Flags,
		Exec:  c.exec,
	}
	r.Command.Subcommands = append(r.Command.Subcommands, c.Command)
	return c
}

func (c *listenerCmd) exec(ctx context.Context, args []string) error {
	r := c.root
	args, err := interspersed(c.Flags, args)
	if err != nil {
		return err
	}
	if err := applyEnv(c.Flags, r.Getenv, c.conn.env()); err != nil {
		return err
	}
	if len(args) != 0 {
		return usagef("listener takes no arguments, got %q", args)
	}
	if err := required("--hostname", c.Hostname, "--tier", c.Tier, "--flake-url", c.FlakeURL); err != nil {
		return err
	}
	if c.Timeout <= 0 {
		return usagef("--timeout must be positive, e.g. 600, 600s or 10m")
	}
	if c.Grace <= 0 {
		return usagef("--shutdown-grace must be positive, e.g. 30 or 30s")
	}
	if c.ConfirmTimeout < 0 {
		return usagef("--confirm-timeout must be 0 (off) or positive, e.g. 120 or 2m")
	}
	checks, err := deploy.ParseHealthChecks(c.HealthChecks)
	if err != nil {
		return usagef("--health-check: %v", err)
	}
	if len(checks) > 0 && c.ConfirmTimeout == 0 {
		return usagef("--health-check needs a --confirm-timeout (it is 0, which turns confirmation off)")
	}
	cfg := listener.Config{
		Hostname: c.Hostname, Tier: c.Tier, Role: c.Role,
		NATSURL: c.conn.URL, NKeyFile: c.conn.NKeyFile, CAFile: c.conn.CAFile,
		FlakeURL: c.FlakeURL, Timeout: c.Timeout,
		DeploySubjects: c.DeploySubjects, DiscoverSubject: c.Discover,
		MetricsEnabled: c.MetricsEnabled, MetricsAddr: c.MetricsAddr,
		ShutdownGrace: c.Grace,
		Version:       r.Env.Version, Logger: r.Logger(),
		ConfirmTimeout: c.ConfirmTimeout, HealthChecks: checks,
	}
	cfg.TrustedDeployers = c.Trusted
	if cfg.Fleet = c.Fleet; cfg.Fleet.Heartbeat == 0 {
		cfg.Fleet.Heartbeat = -1 // no entry
	}
	if !filepath.IsAbs(c.Fleet.SystemRoot) {
		return usagef("--fleet-system-root %q: give an absolute directory (/ on a NixOS host)", c.Fleet.SystemRoot)
	}
	if c.Fleet.Replicas < 0 || c.Fleet.Replicas > 5 {
		return usagef("--fleet-replicas %d: give 1 to 5, or 0 for 3 on a cluster and 1 on a single server", c.Fleet.Replicas)
	}
	if c.LockFile != "" && !filepath.IsAbs(c.LockFile) {
		return usagef("--lock-file %q: give an absolute path, e.g. %s", c.LockFile, deploy.DefaultLockFile)
	}
	cfg.LockFile = c.LockFile
	if c.WatchUnitFile != "" {
		cfg.WatchPaths = selfupdate.WatchPaths(c.WatchUnitFile, os.Args[0])
	}
	if _, err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	// Credentials last: a wrong flag or config file is named first, and
	// nothing is dialled until the seed file is known to be usable.
	if err := c.conn.check(); err != nil {
		return err
	}
	return listener.Run(ctx, cfg)
}
