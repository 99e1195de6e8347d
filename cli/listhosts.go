package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/peterbourgon/ff/v4"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
)

type listHostsCmd struct {
	root     *Root
	conn     connFlags
	Tier     string
	Discover string
	Role     string
	State    string
	Source   string
	JSON     bool
	Flags    *ff.FlagSet
	Command  *ff.Command
}

func newListHosts(r *Root) *listHostsCmd {
	c := &listHostsCmd{root: r}
	c.Flags = ff.NewFlagSet("list-hosts").SetParent(r.Flags)
	c.conn.register(c.Flags)
	c.Flags.StringVar(&c.Tier, 0, "tier", "", "only list hosts of this tier (test or prod)")
	c.Flags.StringVar(&c.Discover, 0, "discover-subject", protocol.DefaultDiscoverSubject, "discovery subject the listeners answer on")
	c.Flags.StringVar(&c.Role, 0, "role", "", "only list hosts with this role")
	c.Flags.StringVar(&c.State, 0, "state", "", "only list hosts whose listener is online, or offline")
	c.Flags.StringVar(&c.Source, 0, "source", listhosts.SourceAuto, "where the list comes from: auto (the fleet registry when the NATS server has one, else discovery), registry or discovery")
	c.Flags.BoolVar(&c.JSON, 0, "json", "print the result as JSON on stdout")
	c.Command = &ff.Command{
		Name:      "list-hosts",
		Usage:     "homelab-deploy list-hosts [FLAGS]",
		ShortHelp: "list the hosts of the fleet, from the fleet registry or by discovery",
		LongHelp: "Reads the fleet registry (a JetStream bucket each listener keeps its entry in) and prints every\n" +
			"registered host, offline ones too, with its state, reboot-required flag and last deploy.\n" +
			"Without a registry, asks every listener to describe itself and ends half a second after\n" +
			"the last answer. --json says which source answered.",
		Flags: c.Flags,
		Exec:  c.exec,
	}
	r.Command.Subcommands = append(r.Command.Subcommands, c.Command)
	return c
}

func (c *listHostsCmd) exec(ctx context.Context, args []string) error {
	r := c.root
	args, err := interspersed(c.Flags, args)
	if err != nil {
		return err
	}
	if err := applyEnv(c.Flags, r.Getenv, c.conn.env()); err != nil {
		return err
	}
	r.jsonOut = c.JSON
	if len(args) != 0 {
		return usagef("list-hosts takes no arguments")
	}
	raw, err := r.checkTool("list_hosts", listhosts.Input{Tier: c.Tier, DiscoverSubject: c.Discover, Role: c.Role, State: c.State, Source: c.Source})
	if err != nil {
		return err
	}
	if err := c.conn.check(); err != nil {
		return err
	}
	conn, err := c.conn.connect(ctx, r, "homelab-deploy list-hosts")
	if err != nil {
		return err
	}
	defer conn.Close()
	out, err := r.callTool(ctx, "list_hosts", conn, raw, nil)
	if err != nil {
		return err
	}
	res := out.(listhosts.Result)
	return r.report(res, true, nil, c.JSON, func() { r.printHosts(res) })
}

func (r *Root) printHosts(res listhosts.Result) {
	for _, n := range res.Notes {
		fmt.Fprintln(r.Stderr, "note: "+n)
	}
	if len(res.Hosts) == 0 {
		fmt.Fprintln(r.Stdout, res.Message)
		return
	}
	const row = "%-20s %-5s %-12s %-22s %-6s %-10s %-40s %s\n"
	fmt.Fprintf(r.Stdout, row, "HOSTNAME", "TIER", "ROLE", "STATE", "REBOOT", "VERSION", "LAST DEPLOY", "SUBJECTS")
	for _, h := range res.Hosts {
		role := h.Role
		if role == "" {
			role = "-"
		}
		name := h.Hostname
		if h.Busy {
			name += " (busy)"
		}
		last := "-"
		if l := h.LastDeploy; l != nil {
			last = fmt.Sprintf("%s %s %s %s", l.Status, l.Action, l.Revision, l.FinishedAt)
			if l.Caller != "" {
				last += " by " + shortKey(l.Caller)
			}
		}
		fmt.Fprintf(r.Stdout, row, name, h.Tier, role, hostState(h), rebootFlag(h), h.Version, last, strings.Join(h.Subjects, ","))
	}
	fmt.Fprintf(r.Stdout, "(%s, from %s)\n", res.Message, sourceName(res.Source))
}

// hostState is "online", or "offline since <last seen>".
func hostState(h listhosts.Host) string {
	if h.Online {
		return "online"
	}
	return "offline " + h.LastSeen
}

// rebootFlag is "yes" when the host needs a reboot to run what it was
// switched to, "no", or "-" when unknown (discovery).
func rebootFlag(h listhosts.Host) string {
	switch {
	case h.System == nil:
		return "-"
	case h.System.RebootRequired:
		return "yes"
	}
	return "no"
}

func sourceName(s string) string {
	if s == listhosts.SourceRegistry {
		return "the fleet registry"
	}
	return s
}

// shortKey shortens an NKey public key for a table: its first 8 and last 4
// characters (--json and the listener's audit line carry it in full).
func shortKey(k string) string {
	if len(k) <= 13 {
		return k
	}
	return k[:8] + "…" + k[len(k)-4:]
}
