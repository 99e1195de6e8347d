package cli

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/peterbourgon/ff/v4"

	"github.com/homelab-deploy/homelab-deploy/internal/natsauth"
)

type natsConfigCmd struct {
	root     *Root
	Fleet    string
	KeysDir  string
	Generate bool
	JSON     bool
	Flags    *ff.FlagSet
	Command  *ff.Command
}

func newNATSConfig(r *Root) *natsConfigCmd {
	c := &natsConfigCmd{root: r}
	c.Flags = ff.NewFlagSet("nats-config").SetParent(r.Flags)
	c.Flags.StringVar(&c.Fleet, 0, "fleet", "", "fleet description (YAML, see examples/fleet.yaml); - reads stdin (required)")
	c.Flags.StringVar(&c.KeysDir, 0, "keys-dir", "", "directory with <name>.pub (or <name>.nkey) files for credentials without an inline nkey")
	c.Flags.BoolVar(&c.Generate, 0, "generate-keys", "create missing key pairs in --keys-dir (seed <name>.nkey mode 0600, <name>.pub); existing keys are kept")
	c.Flags.BoolVar(&c.JSON, 0, "json", "print JSON for NixOS services.nats.settings instead of nats-server config syntax")
	c.Command = &ff.Command{
		Name:      "nats-config",
		Usage:     "homelab-deploy nats-config --fleet FILE [--keys-dir DIR [--generate-keys]] [--json]",
		ShortHelp: "print the NATS server authorization block for a fleet",
		LongHelp: "Reads a fleet description and prints the `authorization { users = [...] }` block that\n" +
			"gives every credential exactly the permissions of its kind:\n" +
			"  listener-<host>   publish deploy.responses.*.<host>, deploy.discover; subscribe its own subjects, deploy.discover\n" +
			"  builder           publish build.responses.*.builder; subscribe build.<repo>.*\n" +
			"  test-deployer     publish deploy.test.>, deploy.discover; subscribe deploy.responses.>, deploy.discover\n" +
			"  admin-deployer    publish and subscribe deploy.>\n" +
			"  build-client      publish build.<repo>.*; subscribe build.responses.>\n" +
			"  mcp               the test deployer's, plus the build client's when there is a builder\n" +
			"                    (unless `mcp: {builds: false}`); deploy_admin uses admin-deployer\n" +
			"and, for the fleet registry on a server with JetStream, each listener its own key of the\n" +
			"homelab_deploy_fleet bucket and each deployer the entries of the tiers it may deploy to.\n\n" +
			"Public keys come from `nkey:` in the fleet file, else <keys-dir>/<name>.pub, else the seed\n" +
			"<keys-dir>/<name>.nkey; with --generate-keys missing pairs are created. --json prints\n" +
			"{\"authorization\": {\"users\": [...]}} to merge into services.nats.settings.\n\n" +
			"Fleet file:\n" +
			"  hosts:\n" +
			"    testhost1: {tier: test}\n" +
			"    dns1: {tier: prod, role: dns}\n" +
			"  builder: {repos: [nixos-servers]}\n" +
			"  deployers: {test: true, admin: true, build_client: true, mcp: true}",
		Flags: c.Flags,
		Exec:  c.exec,
	}
	r.Command.Subcommands = append(r.Command.Subcommands, c.Command)
	return c
}

func (c *natsConfigCmd) exec(ctx context.Context, args []string) error {
	r := c.root
	if len(args) != 0 {
		return usagef("nats-config takes no arguments; give the fleet file with --fleet")
	}
	if c.Fleet == "" {
		return usagef("--fleet is required: a YAML fleet description (see `homelab-deploy nats-config --help`)")
	}
	if c.Generate && c.KeysDir == "" {
		return usagef("--generate-keys needs --keys-dir: the directory to write the key pairs to")
	}
	var fleet *natsauth.Fleet
	var err error
	if c.Fleet == "-" {
		fleet, err = natsauth.ParseFleet(r.Stdin, "stdin")
	} else {
		f, oerr := os.Open(c.Fleet)
		if oerr != nil {
			return usagef("--fleet: %v", oerr)
		}
		fleet, err = natsauth.ParseFleet(f, c.Fleet)
		f.Close()
	}
	if err != nil {
		return usageError{err}
	}
	if c.Generate {
		if err := os.MkdirAll(c.KeysDir, 0o700); err != nil {
			return fmt.Errorf("--keys-dir: %w", err)
		}
	}
	users, generated, err := natsauth.ResolveKeys(fleet.Credentials(), c.KeysDir, c.Generate)
	if len(generated) > 0 {
		fmt.Fprintf(r.Stderr, "generated key pairs in %s: %s (seeds are <name>.nkey, mode 0600; copy each to its host and point --nkey-file at it)\n",
			c.KeysDir, strings.Join(generated, ", "))
	}
	if err != nil {
		return err
	}
	if c.JSON {
		out, err := natsauth.RenderJSON(users)
		if err != nil {
			return err
		}
		fmt.Fprintf(r.Stdout, "%s\n", out)
		return nil
	}
	fmt.Fprint(r.Stdout, natsauth.Render(users))
	return nil
}
