package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v4"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/build"
)

type buildCmd struct {
	root    *Root
	conn    connFlags
	Branch  string
	All     bool
	Timeout time.Duration
	JSON    bool
	Follow  bool
	Flags   *ff.FlagSet
	Command *ff.Command
}

func newBuild(r *Root) *buildCmd {
	c := &buildCmd{root: r}
	c.Flags = ff.NewFlagSet("build").SetParent(r.Flags)
	c.conn.register(c.Flags)
	c.Flags.StringVar(&c.Branch, 0, "branch", "", "git branch, tag or 40-hex commit to build (default: the repository's default_branch) (env HOMELAB_DEPLOY_BRANCH)")
	c.Flags.BoolVar(&c.All, 0, "all", "build every host of the repository")
	durationVar(c.Flags, &c.Timeout, "timeout", build.DefaultTimeout, "how long to wait for the builder's final status, in seconds (3600) or as a duration (1h) (env HOMELAB_DEPLOY_BUILD_TIMEOUT)")
	c.Flags.BoolVar(&c.JSON, 0, "json", "print the result as JSON on stdout")
	c.Flags.BoolVar(&c.Follow, 0, "follow", "print every line of nix build's output on stderr as it arrives, prefixed with its host")
	c.Command = &ff.Command{
		Name:      "build",
		Usage:     "homelab-deploy build [FLAGS] <REPO> (<HOST> | --all)",
		ShortHelp: "pre-build one host or every host of a repository on the builder",
		LongHelp: "Asks the builder to nix build the NixOS configuration of HOST (or of every host with --all)\n" +
			"from REPO, a repository named in the builder's configuration, and waits for the result.\n" +
			"A line per finished host goes to stderr as it happens, the summary (or --json) to stdout.\n" +
			"Exit status: 0 when every host built, 1 when a host failed, the build was rejected or no\n" +
			"builder answered, 2 on a usage error.",
		Flags: c.Flags,
		Exec:  c.exec,
	}
	r.Command.Subcommands = append(r.Command.Subcommands, c.Command)
	return c
}

func (c *buildCmd) exec(ctx context.Context, args []string) error {
	r := c.root
	args, err := interspersed(c.Flags, args)
	if err != nil {
		return err
	}
	r.jsonOut = c.JSON
	if err = applyEnv(c.Flags, r.Getenv, merge(c.conn.env(), map[string]string{
		"branch":  "HOMELAB_DEPLOY_BRANCH",
		"timeout": "HOMELAB_DEPLOY_BUILD_TIMEOUT",
	})); err != nil {
		return err
	}
	if len(args) < 1 || len(args) > 2 {
		return usagef("build takes a REPO and a HOST (or --all), got %d arguments", len(args))
	}
	if c.Timeout < time.Second {
		return usagef("--timeout must be at least one second")
	}
	// The tool decides what a missing or empty HOST means, the same way for
	// every adapter: `build fleet "$HOST"` with HOST unset builds nothing.
	in := build.Input{Repo: args[0], All: c.All, Branch: c.Branch, TimeoutSeconds: int((c.Timeout + time.Second - 1) / time.Second)}
	if len(args) == 2 {
		in.Target = args[1]
		if in.Target == "" {
			return usagef("HOST is empty: name a host, or give --all to build every host of %s", args[0])
		}
	}
	raw, err := r.checkTool("build", in)
	if err != nil {
		return err
	}
	if err := c.conn.check(); err != nil {
		return err
	}
	conn, err := c.conn.connect(ctx, r, "homelab-deploy build")
	if err != nil {
		return err
	}
	defer conn.Close()
	view := r.newProgressView(c.Follow)
	out, err := r.callTool(ctx, "build", conn, raw, view.build)
	view.close()
	res, _ := out.(build.Result)
	return r.report(res, res.ID != "", err, c.JSON, func() { r.printBuildResult(res) })
}

// buildProgress prints a line when the build starts and one per finished
// host, and the running hosts' output, as progressView does.
func (r *Root) buildProgress() tools.Progress { return r.newProgressView(false).build }

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func (r *Root) printBuildResult(res build.Result) {
	w := r.Stdout
	for _, h := range res.Results {
		if h.Success {
			fmt.Fprintf(w, "%-20s ok      %7.1fs  %s\n", h.Host, h.DurationSeconds, h.OutPath)
			continue
		}
		word := "failed"
		if h.ErrorCode == protocol.ErrTimeout {
			word = "timeout"
		}
		fmt.Fprintf(w, "%-20s %-7s %7.1fs\n", h.Host, word, h.DurationSeconds)
		for _, l := range strings.Split(strings.TrimSpace(h.Error), "\n") {
			if l != "" {
				fmt.Fprintf(w, "    %s\n", l)
			}
		}
	}
	if res.Error != "" {
		for _, l := range strings.Split(strings.TrimSpace(res.Error), "\n") {
			fmt.Fprintf(w, "    %s\n", l)
		}
	}
	fmt.Fprintln(w, res.Message)
}
