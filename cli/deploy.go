package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v4"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
)

type deployCmd struct {
	root         *Root
	conn         connFlags
	Branch       string
	Action       string
	Timeout      time.Duration
	AcceptWindow time.Duration
	SkipOffline  bool
	JSON         bool
	Diff         bool
	Follow       bool
	staging      deploy.Staging
	Flags        *ff.FlagSet
	Command      *ff.Command
}

func newDeploy(r *Root) *deployCmd {
	c := &deployCmd{root: r}
	c.Flags = ff.NewFlagSet("deploy").SetParent(r.Flags)
	c.conn.register(c.Flags)
	c.Flags.StringVar(&c.Branch, 0, "branch", deploy.DefaultBranch, "git branch, tag or 40-hex commit to deploy (env HOMELAB_DEPLOY_BRANCH)")
	c.Flags.StringVar(&c.Action, 0, "action", "switch", "nixos-rebuild action: switch, boot, test or dry-activate (env HOMELAB_DEPLOY_ACTION)")
	durationVar(c.Flags, &c.Timeout, "timeout", deploy.DefaultTimeout, "how long to wait for every host's final status, in seconds (900) or as a duration (15m) (env HOMELAB_DEPLOY_TIMEOUT)")
	durationVar(c.Flags, &c.AcceptWindow, "accept-window", deploy.DefaultAcceptWindow, "for group subjects: with the fleet registry, how long a member has to answer before it is reported no_answer; without it, how long to wait for further hosts after the last status; in seconds or as a duration (env HOMELAB_DEPLOY_ACCEPT_WINDOW)")
	c.Flags.BoolVar(&c.SkipOffline, 0, "skip-offline", "for group subjects: leave out the members the fleet registry has offline instead of failing on them (the summary lists them as skipped)")
	c.Flags.BoolVar(&c.JSON, 0, "json", "print the result as JSON on stdout")
	c.Flags.BoolVar(&c.Diff, 0, "diff", "preview instead of deploying: each host builds the new system without activating it and prints the closure diff against its running system and whether a reboot would be needed")
	c.Flags.BoolVar(&c.Follow, 0, "follow", "print every line of nixos-rebuild's output on stderr as it arrives, prefixed with its host")
	c.Flags.StringVar(&c.staging.Batch, 0, "batch", "", "roll a group subject out in batches of N hosts or N% of the group; each batch starts when the previous one completed")
	c.Flags.StringVar(&c.staging.Canary, 0, "canary", "", "with a group subject: deploy this host alone first, and go on only if it completed")
	c.Flags.IntVar(&c.staging.MaxFailures, 0, "max-failures", 0, "in a staged rollout (--batch, --canary), halt once more than this many hosts failed; the rest are reported skipped")
	c.Command = &ff.Command{
		Name:      "deploy",
		Usage:     "homelab-deploy deploy [FLAGS] <SUBJECT|ALIAS>",
		ShortHelp: "deploy to a host, a tier or a role and wait for the results",
		LongHelp: "Sends a deploy request to SUBJECT and waits for every host that answers:\n" +
			"  deploy.<tier>.<hostname>     one host\n" +
			"  deploy.<tier>.all            every host of a tier\n" +
			"  deploy.<tier>.role.<role>    the hosts with a role in a tier\n" +
			"ALIAS is a name whose subject is in HOMELAB_DEPLOY_ALIAS_<NAME> (upper-cased, '-' becomes '_'),\n" +
			"e.g. HOMELAB_DEPLOY_ALIAS_PROD_DNS=deploy.prod.role.dns makes `deploy prod-dns` work.\n\n" +
			"Progress lines go to stderr, the summary (or --json) to stdout. Exit status: 0 when every\n" +
			"host completed, 1 when a host failed, was rejected or timed out, or nobody answered, 2 on a usage error.",
		Flags: c.Flags,
		Exec:  c.exec,
	}
	r.Command.Subcommands = append(r.Command.Subcommands, c.Command)
	return c
}

// resolveAlias maps an alias to its subject; a subject is returned as is.
func resolveAlias(arg string, getenv func(string) string) (string, error) {
	if strings.Contains(arg, ".") {
		return arg, nil
	}
	if err := protocol.ValidateToken("alias", arg); err != nil {
		return "", err
	}
	key := "HOMELAB_DEPLOY_ALIAS_" + strings.ToUpper(strings.ReplaceAll(arg, "-", "_"))
	if v := strings.TrimSpace(getenv(key)); v != "" {
		return v, nil
	}
	return "", fmt.Errorf("%q is neither a subject (deploy.<tier>.<host>, deploy.<tier>.all, deploy.<tier>.role.<role>) nor an alias: set %s to a subject to define it", arg, key)
}

func (c *deployCmd) exec(ctx context.Context, args []string) error {
	r := c.root
	args, err := interspersed(c.Flags, args)
	if err != nil {
		return err
	}
	r.jsonOut = c.JSON
	if err := applyEnv(c.Flags, r.Getenv, merge(c.conn.env(), map[string]string{
		"branch":        "HOMELAB_DEPLOY_BRANCH",
		"action":        "HOMELAB_DEPLOY_ACTION",
		"timeout":       "HOMELAB_DEPLOY_TIMEOUT",
		"accept-window": "HOMELAB_DEPLOY_ACCEPT_WINDOW",
	})); err != nil {
		return err
	}
	if len(args) != 1 {
		return usagef("deploy takes exactly one SUBJECT or ALIAS, got %d arguments", len(args))
	}
	subject, err := resolveAlias(args[0], r.Getenv)
	if err != nil {
		return usageError{err}
	}
	in, err := deployInput(subject)
	if err != nil {
		return usageError{err}
	}
	if c.Timeout < time.Second {
		return usagef("--timeout must be at least one second")
	}
	// An explicitly empty value is a mistake (an unset variable in a
	// script), not a request for the default.
	if c.Branch == "" {
		return usagef("--branch is empty: give a revision (a branch, tag or commit; default %s)", deploy.DefaultBranch)
	}
	if c.Action == "" {
		return usagef("--action is empty: give switch, boot, test or dry-activate")
	}
	in.Branch, in.Action = c.Branch, c.Action
	if c.Diff {
		// A preview takes no action; --action keeps its default then.
		in.Diff = true
		if c.Action == "switch" {
			in.Action = ""
		}
	}
	in.TimeoutSeconds = int((c.Timeout + time.Second - 1) / time.Second)
	in.AcceptWindowSeconds = c.AcceptWindow.Seconds()
	in.Batch, in.Canary, in.MaxFailures = c.staging.Batch, c.staging.Canary, c.staging.MaxFailures
	in.SkipOffline = c.SkipOffline
	raw, err := r.checkTool("deploy_admin", in)
	if err != nil {
		return err
	}
	if err := c.conn.check(); err != nil {
		return err
	}
	conn, err := c.conn.connect(ctx, r, "homelab-deploy deploy")
	if err != nil {
		return err
	}
	defer conn.Close()
	view := r.newProgressView(c.Follow)
	out, err := r.callTool(ctx, "deploy_admin", conn, raw, view.deploy)
	view.close()
	res, _ := out.(deploy.Result)
	return r.report(res, res.ID != "", err, c.JSON, func() { r.printDeployResult(res) })
}

// deployInput turns a deploy subject into the input of the deploy_admin
// tool: the CLI's user picks the tier, and the credential decides whether
// the NATS server lets the request through.
func deployInput(subject string) (deploy.AdminInput, error) {
	t, err := protocol.ParseDeploySubject(subject)
	if err != nil {
		return deploy.AdminInput{}, err
	}
	in := deploy.AdminInput{Tier: t.Tier}
	switch t.Kind {
	case protocol.TargetHost:
		in.Hostname = t.Name
	case protocol.TargetAll:
		in.All = true
	case protocol.TargetRole:
		in.Role = t.Name
	default:
		in = deploy.AdminInput{Subject: subject}
	}
	return in, nil
}

// deployProgress prints one line per host status on stderr, and the
// running hosts' output as progressView does.
func (r *Root) deployProgress() tools.Progress { return r.newProgressView(false).deploy }

func (r *Root) statusWord(s protocol.Status, code protocol.ErrorCode) string {
	w := fmt.Sprintf("%-9s", s)
	switch s {
	case protocol.StatusCompleted:
		return r.color(colGreen, w)
	case protocol.StatusFailed, protocol.StatusRejected:
		return r.color(colRed, w)
	case protocol.StatusAccepted, protocol.StatusStarted:
		return r.color(colYellow, w)
	}
	return w
}

func (r *Root) printDeployResult(res deploy.Result) {
	w := r.Stdout
	for _, h := range res.Hosts {
		line := fmt.Sprintf("%-20s %-9s", h.Hostname, h.Status)
		if h.Error != protocol.ErrNone {
			line += " " + string(h.Error)
		}
		fmt.Fprintln(w, line)
		if h.Message != "" {
			for _, l := range strings.Split(h.Message, "\n") {
				fmt.Fprintf(w, "    %s\n", l)
			}
		}
	}
	fmt.Fprintln(w, res.Message)
}

// report renders a tool's result (as JSON, or with human) and turns it into
// the exit status: 0 only when the result is not an error. sent says whether
// the request went out; if not, err is returned as it is.
func (r *Root) report(res tools.Result, sent bool, err error, asJSON bool, human func()) error {
	if err != nil && !sent {
		return err
	}
	if asJSON {
		writeJSON(r.Stdout, res)
		r.wrote = true
	} else {
		human()
	}
	if errors.Is(err, context.Canceled) {
		return exitError{ExitInterrupted}
	}
	if err != nil {
		fmt.Fprintf(r.Stderr, "error: %v\n", err)
		return exitError{ExitFailure}
	}
	if res.IsError() {
		return exitError{ExitFailure}
	}
	return nil
}

func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	// Subjects hold '>' and messages '&': JSON for people and jq, not HTML.
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
