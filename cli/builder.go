package cli

import (
	"context"
	"time"

	"github.com/peterbourgon/ff/v4"

	"github.com/homelab-deploy/homelab-deploy/agents/builder"
	"github.com/homelab-deploy/homelab-deploy/tools/build"
)

type builderCmd struct {
	root           *Root
	conn           connFlags
	ConfigFile     string
	Timeout        time.Duration
	MaxParallel    int
	MetricsEnabled bool
	MetricsAddr    string
	Grace          time.Duration
	Trusted        []string
	Flags          *ff.FlagSet
	Command        *ff.Command
}

func newBuilder(r *Root) *builderCmd {
	c := &builderCmd{root: r}
	c.Flags = ff.NewFlagSet("builder").SetParent(r.Flags)
	c.conn.register(c.Flags)
	c.Flags.StringVar(&c.ConfigFile, 0, "config", "", "path to the builder configuration file (YAML: repos: {name: {url, default_branch}}) (required)")
	durationVar(c.Flags, &c.Timeout, "timeout", build.DefaultHostTimeout, "build timeout per host, in seconds (1800) or as a duration (30m); nix build is killed with its process group after it")
	c.Flags.IntVar(&c.MaxParallel, 0, "max-parallel", build.DefaultMaxParallel, "how many hosts nix builds at once, across all repositories (each evaluation of a NixOS system takes 1-2 GB of memory)")
	c.Flags.BoolVar(&c.MetricsEnabled, 0, "metrics-enabled", "enable the Prometheus /metrics and /health endpoint")
	c.Flags.StringVar(&c.MetricsAddr, 0, "metrics-addr", builder.DefaultMetricsAddr, "metrics HTTP address")
	durationVar(c.Flags, &c.Grace, "shutdown-grace", 30*time.Second, "how long SIGTERM waits for running builds before killing them (their hosts are then reported as failed), in seconds or as a duration")
	c.Flags.StringListVar(&c.Trusted, 0, "trusted-deployer", "NKey user public key (U...) of a client whose signed build requests are carried out, repeatable; when given, unsigned requests and requests signed by other keys are refused (unauthorized)")
	c.Command = &ff.Command{
		Name:      "builder",
		Usage:     "homelab-deploy builder [FLAGS]",
		ShortHelp: "run the builder that pre-builds NixOS configurations",
		LongHelp: "Subscribes to build.<repo>.* for each repository in --config. For each valid request it lists\n" +
			"the repository's hosts with\n" +
			"  nix eval --json <url>?ref=<branch>#nixosConfigurations --apply builtins.attrNames\n" +
			"and builds the requested host (or all of them), --max-parallel at a time, with\n" +
			"  nix build --no-link --json <url>?ref=<branch>#nixosConfigurations.<host>.config.system.build.toplevel\n" +
			"reporting started, one progress per host and completed or failed to the requester.\n" +
			"One build per repository runs at a time; a second is rejected (already_running).\n" +
			"Refuses to start on a bad configuration file. Drains and exits 0 on SIGTERM.",
		Flags: c.Flags,
		Exec:  c.exec,
	}
	r.Command.Subcommands = append(r.Command.Subcommands, c.Command)
	return c
}

func (c *builderCmd) exec(ctx context.Context, args []string) error {
	r := c.root
	args, err := interspersed(c.Flags, args)
	if err != nil {
		return err
	}
	if err = applyEnv(c.Flags, r.Getenv, c.conn.env()); err != nil {
		return err
	}
	if len(args) != 0 {
		return usagef("builder takes no arguments, got %q", args)
	}
	if err := required("--config", c.ConfigFile); err != nil {
		return err
	}
	if c.Timeout <= 0 {
		return usagef("--timeout must be positive, e.g. 1800, 1800s or 30m")
	}
	if c.MaxParallel <= 0 {
		return usagef("--max-parallel must be a positive number")
	}
	if c.Grace <= 0 {
		return usagef("--shutdown-grace must be positive, e.g. 30 or 30s")
	}
	cfg := builder.Config{
		NATSURL: c.conn.URL, NKeyFile: c.conn.NKeyFile, CAFile: c.conn.CAFile,
		ConfigFile: c.ConfigFile, Timeout: c.Timeout, MaxParallel: c.MaxParallel,
		MetricsEnabled: c.MetricsEnabled, MetricsAddr: c.MetricsAddr,
		ShutdownGrace: c.Grace,
		Version:       r.Env.Version, Logger: r.Logger(),
	}
	cfg.TrustedDeployers = c.Trusted
	// A bad configuration file is the operator's to fix: say so and stop.
	if _, err := cfg.Load(); err != nil {
		return usageError{err}
	}
	// Credentials last: a wrong flag or config file is named first, and
	// nothing is dialled until the seed file is known to be usable.
	if err := c.conn.check(); err != nil {
		return err
	}
	return builder.Run(ctx, cfg)
}
