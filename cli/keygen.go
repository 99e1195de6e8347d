package cli

import (
	"context"
	"fmt"

	"github.com/peterbourgon/ff/v4"

	"github.com/homelab-deploy/homelab-deploy/internal/natsauth"
)

type keygenCmd struct {
	root    *Root
	Out     string
	Force   bool
	Flags   *ff.FlagSet
	Command *ff.Command
}

func newKeygen(r *Root) *keygenCmd {
	c := &keygenCmd{root: r}
	c.Flags = ff.NewFlagSet("keygen").SetParent(r.Flags)
	c.Flags.StringVar(&c.Out, 0, "out", "", "file to write the seed to, created with mode 0600 (required; '-' writes the seed to stdout)")
	c.Flags.BoolVar(&c.Force, 0, "force", "replace an existing seed file (its old key stops working once the server config is updated)")
	c.Command = &ff.Command{
		Name:      "keygen",
		Usage:     "homelab-deploy keygen --out FILE [--force]",
		ShortHelp: "make an NKey user key pair: seed to a 0600 file, public key to stdout",
		LongHelp: "Generates an NKey user key pair (what `nk -gen user -pubout` makes). The seed (SU...) is\n" +
			"written to FILE with mode 0600; an existing FILE is never replaced without --force. The\n" +
			"public key (U...) is printed on stdout: it goes into the NATS server's authorization block\n" +
			"(see `homelab-deploy nats-config`), the seed file to the host as --nkey-file.\n\n" +
			"  homelab-deploy keygen --out /run/secrets/listener.nkey > listener.pub\n\n" +
			"With --out - the seed is printed on stdout (to pipe into a secret store) and the public key\n" +
			"on stderr; the seed is never printed unless asked for that way.",
		Flags: c.Flags,
		Exec:  c.exec,
	}
	r.Command.Subcommands = append(r.Command.Subcommands, c.Command)
	return c
}

func (c *keygenCmd) exec(ctx context.Context, args []string) error {
	r := c.root
	if len(args) != 0 {
		return usagef("keygen takes no arguments; use --out FILE")
	}
	if c.Out == "" {
		return usagef("--out is required: the file to write the seed to (e.g. --out listener.nkey), or --out - for stdout")
	}
	kp, err := natsauth.NewUserKey()
	if err != nil {
		return err
	}
	if c.Out == "-" {
		if c.Force {
			return usagef("--force has no meaning with --out -")
		}
		fmt.Fprintf(r.Stdout, "%s\n", kp.Seed)
		fmt.Fprintln(r.Stderr, kp.Public)
		return nil
	}
	if err := natsauth.WriteSeedFile(c.Out, kp.Seed, c.Force); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	fmt.Fprintln(r.Stdout, kp.Public)
	return nil
}
