package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v4"

	"github.com/homelab-deploy/homelab-deploy/internal/demo"
	"github.com/homelab-deploy/homelab-deploy/internal/natsauth"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/build"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
)

// DefaultDemoPort is the port `demo --serve` listens on, NATS's usual one,
// so the printed commands are short and stable.
const DefaultDemoPort = 4222

type demoCmd struct {
	root         *Root
	Serve        bool
	Port         int
	StepDelay    time.Duration
	AcceptWindow time.Duration
	NoBuild      bool
	Flags        *ff.FlagSet
	Command      *ff.Command
}

func newDemo(r *Root) *demoCmd {
	c := &demoCmd{root: r}
	c.Flags = ff.NewFlagSet("demo").SetParent(r.Flags)
	c.Flags.BoolVar(&c.Serve, 0, "serve", "after the tour, keep the fleet running and print how to point the CLI and an assistant (MCP) at it; Ctrl-C stops it")
	c.Flags.IntVar(&c.Port, 0, "port", -1, "NATS port on 127.0.0.1 (default: 4222 with --serve, falling back to a free port if it is taken; otherwise any free port)")
	durationVar(c.Flags, &c.StepDelay, "step-delay", 1500*time.Millisecond, "how long each simulated nixos-rebuild takes (a duration such as 1.5s, or whole seconds)")
	durationVar(c.Flags, &c.AcceptWindow, "accept-window", time.Second, "for group deploys, how long to wait for further hosts after the last new one (a duration such as 500ms, or whole seconds)")
	c.Flags.BoolVar(&c.NoBuild, 0, "no-build", "do not start the builder even when nix is installed")
	c.Command = &ff.Command{
		Name:      "demo",
		Usage:     "homelab-deploy demo [--serve] [--step-delay DURATION]",
		ShortHelp: "try it all: a simulated fleet on an embedded NATS server, deploys, a refused deploy, a build",
		LongHelp: "Starts, in this process and on 127.0.0.1 only, an embedded NATS server with generated NKeys\n" +
			"and the authorization block `nats-config` would print, three listeners (testhost1 in test,\n" +
			"dns1 with role dns and web1 in prod) whose nixos-rebuild is simulated (every message says\n" +
			"[simulated]; nothing runs, no root or NixOS needed) and, when nix is on PATH, a builder that\n" +
			"builds the example flake (examples/demo-flake) with real Nix. Then, with the same code and\n" +
			"output as the CLI commands, it runs:\n" +
			"  1. list-hosts\n" +
			"  2. deploy deploy.test.all        with the test deployer credential\n" +
			"  3. deploy deploy.prod.role.dns   with the admin deployer credential\n" +
			"  4. deploy deploy.prod.web1       with the test deployer credential: the NATS server refuses it\n" +
			"  5. build demo --all              with the build client credential (when nix is installed)\n" +
			"Exits 0 when every step behaved as described. Keys live in a temporary directory that is\n" +
			"removed on exit.",
		Flags: c.Flags,
		Exec:  c.exec,
	}
	r.Command.Subcommands = append(r.Command.Subcommands, c.Command)
	return c
}

func (c *demoCmd) exec(ctx context.Context, args []string) error {
	r := c.root
	if len(args) != 0 {
		return usagef("demo takes no arguments")
	}
	if c.StepDelay < 0 || c.StepDelay > 10*time.Minute {
		return usagef("--step-delay must be between 0 and 10m")
	}
	if c.AcceptWindow <= 0 {
		return usagef("--accept-window must be positive")
	}
	opts := demo.Options{
		RebuildTime: c.StepDelay, Version: r.Env.Version, Logger: r.agentLogger(),
		NixConfig: r.Getenv("NIX_CONFIG"),
	}
	if opts.RebuildTime == 0 {
		opts.RebuildTime = time.Millisecond
	}
	switch {
	case c.Port > 65535 || c.Port < -1:
		return usagef("--port must be between 0 and 65535")
	case c.Port >= 0:
		opts.Port = c.Port
	case c.Serve:
		opts.Port, opts.FallbackPort = DefaultDemoPort, true
	}
	noNix := ""
	if c.NoBuild {
		noNix = "not started (--no-build)"
	} else if _, err := exec.LookPath("nix"); err != nil {
		noNix = "not started: nix is not on PATH (install Nix to see real builds; everything else works without it)"
	} else if _, err := exec.LookPath("git"); err != nil {
		noNix = "not started: git is not on PATH (the builder fetches the example flake from a git repository)"
	} else {
		opts.Nix = true
	}

	w := r.Stdout
	fmt.Fprintln(w, "homelab-deploy demo: a whole fleet in this process, on 127.0.0.1 only")
	d, err := demo.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer d.Close()
	if d.Fallback != "" {
		fmt.Fprintf(w, "  note          %s\n", d.Fallback)
	}
	fmt.Fprintf(w, "  NATS server   %s (embedded), configured from %s: the authorization block `nats-config` prints\n", d.URL, d.ConfigFile)
	fmt.Fprintf(w, "  listeners     testhost1 (test), dns1 (prod, role dns), web1 (prod); their nixos-rebuild is simulated\n")
	if d.Builder {
		fmt.Fprintf(w, "  builder       repo %s = the example flake, built with real Nix (%s)\n", demo.Repo, d.FlakeURL)
	} else {
		if noNix == "" {
			noNix = "not started: this build of homelab-deploy has no builder"
		}
		fmt.Fprintf(w, "  builder       %s\n", noNix)
	}
	fmt.Fprintf(w, "  keys          %s (seeds mode 0600, removed on exit)\n", d.KeysDir())

	steps := 4
	if d.Builder {
		steps = 5
	}
	var unexpected []string
	step := 0
	heading := func(title, cmd string) {
		step++
		fmt.Fprintf(w, "\n=== Step %d/%d: %s\n$ %s\n", step, steps, title, cmd)
	}
	verdict := func(ok bool, good, bad string) {
		if ok {
			fmt.Fprintf(w, "--> ok: %s\n", good)
			return
		}
		fmt.Fprintf(w, "--> UNEXPECTED: %s\n", bad)
		unexpected = append(unexpected, fmt.Sprintf("step %d: %s", step, bad))
	}

	testConn, err := d.Connect(ctx, natsauth.CredTestDeployer, r.Logger())
	if err != nil {
		return err
	}
	adminConn, err := d.Connect(ctx, natsauth.CredAdminDeployer, r.Logger())
	if err != nil {
		return err
	}

	// 1. Discovery.
	heading("list-hosts: which listeners are online? (test deployer credential)", "homelab-deploy list-hosts   # as test-deployer")
	out, err := r.callTool(ctx, "list_hosts", testConn, tools.Marshal(listhosts.Input{}), nil)
	if err != nil {
		return err
	}
	hosts := out.(listhosts.Result)
	r.printHosts(hosts)
	verdict(len(hosts.Hosts) == len(d.Hosts), fmt.Sprintf("all %d listeners answered", len(d.Hosts)),
		fmt.Sprintf("%d of %d listeners answered", len(hosts.Hosts), len(d.Hosts)))

	// 2. A test-tier deploy.
	heading("deploy to every test-tier host (test deployer credential)", "homelab-deploy deploy deploy.test.all   # as test-deployer")
	res, err := c.deploy(ctx, testConn, protocol.DeployAllSubject("test"))
	if err != nil {
		return err
	}
	verdict(res.Success && res.Completed == 1, "testhost1 switched (simulated); the prod hosts never saw the request",
		"the test-tier deploy did not complete on exactly testhost1: "+res.Message)

	// 3. An admin deploy to a prod role.
	heading("deploy to the prod hosts with role dns (admin deployer credential)", "homelab-deploy deploy deploy.prod.role.dns   # as admin-deployer")
	res, err = c.deploy(ctx, adminConn, protocol.DeployRoleSubject("prod", "dns"))
	if err != nil {
		return err
	}
	verdict(res.Success && res.Completed == 1, "dns1 switched (simulated); web1 has no dns role and was not touched",
		"the admin deploy did not complete on exactly dns1: "+res.Message)

	// 4. The test credential may not reach prod: the server says no.
	target := protocol.DeploySubject("prod", "web1")
	heading("try to reach prod with the test deployer credential (must be refused)", "homelab-deploy deploy "+target+"   # as test-deployer")
	denied, stop := testConn.WatchPermission(target)
	res, err = c.deploy(ctx, testConn, target)
	stop()
	if err != nil {
		return err
	}
	var denial error
	select {
	case denial = <-denied:
	default:
	}
	verdict(denial != nil && !res.Success && len(res.Hosts) == 0,
		"the NATS server refused to let the test deployer publish to "+target+" (its permissions allow only deploy.test.> and deploy.discover); web1 never got the request",
		"the test deployer's request to "+target+" was not refused by the server: "+res.Message)

	// 5. A build with real Nix.
	if d.Builder {
		if err := c.buildStep(ctx, d, heading, verdict); err != nil {
			return err
		}
	}

	if err := d.Err(); err != nil {
		unexpected = append(unexpected, err.Error())
	}
	if len(unexpected) > 0 {
		fmt.Fprintf(w, "\nDemo finished with problems:\n  %s\n", strings.Join(unexpected, "\n  "))
		return exitError{ExitFailure}
	}
	fmt.Fprintf(w, "\nDemo finished: every step behaved as expected.\n")
	if !c.Serve {
		fmt.Fprintln(w, "Run `homelab-deploy demo --serve` to keep this fleet running and try the CLI or an assistant on it.")
		return nil
	}
	c.printServe(d)
	<-ctx.Done()
	fmt.Fprintln(w, "\nStopping the demo fleet.")
	return nil
}

// deploy runs one deploy exactly as `homelab-deploy deploy` does: progress on
// stderr, the result on stdout.
func (c *demoCmd) deploy(ctx context.Context, conn *protocol.Conn, subject string) (deploy.Result, error) {
	r := c.root
	in, err := deployInput(subject)
	if err != nil {
		return deploy.Result{}, err
	}
	in.TimeoutSeconds = int((10*c.StepDelay + 2*time.Minute) / time.Second)
	in.AcceptWindowSeconds = c.AcceptWindow.Seconds()
	out, err := r.callTool(ctx, "deploy_admin", conn, tools.Marshal(in), r.deployProgress())
	res, _ := out.(deploy.Result)
	if err != nil {
		return res, fmt.Errorf("demo: deploy to %s: %w", subject, err)
	}
	r.printDeployResult(res)
	return res, nil
}

func (c *demoCmd) printServe(d *demo.Demo) {
	w := c.root.Stdout
	seed := func(cred string) string { return shellQuote(d.SeedFile(cred)) }
	url := shellQuote(d.URL)
	fmt.Fprintf(w, "\nThe fleet keeps running until Ctrl-C. In another shell (from a checkout, `go run .` instead of `homelab-deploy`):\n\n")
	fmt.Fprintf(w, "  export HOMELAB_DEPLOY_NATS_URL=%s HOMELAB_DEPLOY_NKEY_FILE=%s\n", url, seed(natsauth.CredTestDeployer))
	fmt.Fprintf(w, "  homelab-deploy list-hosts\n")
	fmt.Fprintf(w, "  homelab-deploy deploy deploy.test.all\n")
	fmt.Fprintf(w, "  HOMELAB_DEPLOY_NKEY_FILE=%s homelab-deploy deploy deploy.prod.all\n", seed(natsauth.CredAdminDeployer))
	if d.Builder {
		fmt.Fprintf(w, "  HOMELAB_DEPLOY_NKEY_FILE=%s homelab-deploy build %s --all\n", seed(natsauth.CredBuildClient), demo.Repo)
	}
	builds := ""
	if d.Builder {
		builds = " --enable-builds"
	}
	fmt.Fprintf(w, "\nAn assistant (MCP over stdio) runs:\n\n")
	fmt.Fprintf(w, "  homelab-deploy mcp --nats-url %s --nkey-file %s --enable-admin --admin-nkey-file %s%s\n",
		url, seed(natsauth.CredMCP), seed(natsauth.CredAdminDeployer), builds)
	fmt.Fprintf(w, "\nThe server's config, with the authorization block, is %s.\n", shellQuote(d.ConfigFile))
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-:+=@,", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// agentLogger is the logger of the demo's listeners and builder: warnings
// and errors only, unless --log-level debug asks for everything, so their
// routine logs do not drown the tour.
func (r *Root) agentLogger() *slog.Logger {
	if r.LogLevel == "debug" {
		return r.Logger()
	}
	return slog.New(minLevel{h: r.Logger().Handler(), min: slog.LevelWarn})
}

type minLevel struct {
	h   slog.Handler
	min slog.Level
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.h.Enabled(ctx, l)
}
func (m minLevel) Handle(ctx context.Context, rec slog.Record) error { return m.h.Handle(ctx, rec) }
func (m minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h: m.h.WithAttrs(a), min: m.min}
}
func (m minLevel) WithGroup(g string) slog.Handler { return minLevel{h: m.h.WithGroup(g), min: m.min} }

// buildStep runs `build demo --all` with the build client credential.
func (c *demoCmd) buildStep(ctx context.Context, d *demo.Demo, heading func(string, string), verdict func(bool, string, string)) error {
	r := c.root
	heading("build every host of the example flake with real Nix (build client credential)", "homelab-deploy build "+demo.Repo+" --all   # as build-client")
	conn, err := d.Connect(ctx, natsauth.CredBuildClient, r.Logger())
	if err != nil {
		return err
	}
	out, err := r.callTool(ctx, "build", conn, tools.Marshal(build.Input{Repo: demo.Repo, All: true}), r.buildProgress())
	res, _ := out.(build.Result)
	if err != nil {
		return fmt.Errorf("demo: build: %w", err)
	}
	r.printBuildResult(res)
	verdict(res.Success && res.Succeeded == len(d.Hosts), fmt.Sprintf("the builder built all %d hosts' toplevel with nix build", len(d.Hosts)),
		"the build did not succeed on every host: "+res.Message)
	return nil
}
