package mcpserver_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/homelab-deploy/homelab-deploy/cli"
	mcpserver "github.com/homelab-deploy/homelab-deploy/mcp"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/registry"
)

// outcome is what a user of either adapter sees, reduced to one word.
type outcome string

const (
	succeeded outcome = "success" // CLI exit 0; MCP result without isError
	failed    outcome = "failure" // CLI exit 1; MCP isError with a result document
	invalid   outcome = "invalid" // CLI exit 2; MCP isError, "Nothing was sent"
)

// TestSameInputSameOutcomeOnCLIAndMCP runs each input through the command
// line and through the MCP server, against the same fleet, and checks that
// both adapters reach the same outcome, say the same thing, and make the
// hosts run the same nixos-rebuild (or nothing at all).
func TestSameInputSameOutcomeOnCLIAndMCP(t *testing.T) {
	f := newFleet(t)
	cases := []struct {
		name    string
		cli     []string
		tool    string
		args    map[string]any
		want    outcome
		mention string
		// host whose nixos-rebuild runs once per adapter ("" for none).
		host string
	}{
		{"one host", []string{"deploy", "deploy.test.testhost1", "--action", "boot", "--branch", "main"},
			"deploy_admin", map[string]any{"tier": "test", "hostname": "testhost1", "action": "boot", "branch": "main"},
			succeeded, "boot on 1/1 host(s) of deploy.test.testhost1 completed", "testhost1"},
		{"a role", []string{"deploy", "deploy.test.role.db", "--branch", "v1.2"},
			"deploy_admin", map[string]any{"tier": "test", "role": "db", "branch": "v1.2"},
			succeeded, "deploy.test.role.db completed", "testhost2"},
		{"nobody listens", []string{"deploy", "deploy.test.ghost"},
			"deploy_admin", map[string]any{"tier": "test", "hostname": "ghost"},
			failed, "no listener is subscribed to deploy.test.ghost", ""},
		{"dot-dot branch", []string{"deploy", "deploy.test.testhost1", "--branch", "a..b"},
			"deploy_admin", map[string]any{"tier": "test", "hostname": "testhost1", "branch": "a..b"},
			invalid, "may not contain '..'", ""},
		{"unknown action", []string{"deploy", "deploy.test.testhost1", "--action", "reboot"},
			"deploy_admin", map[string]any{"tier": "test", "hostname": "testhost1", "action": "reboot"},
			invalid, "action", ""},
		{"build without a target", []string{"build", "fleet"},
			"build", map[string]any{"repo": "fleet"},
			invalid, "name a target host to build", ""},
		{"build with a target and all", []string{"build", "fleet", "h1", "--all"},
			"build", map[string]any{"repo": "fleet", "target": "h1", "all": true},
			invalid, "not both", ""},
		{"build a host named all", []string{"build", "fleet", "all"},
			"build", map[string]any{"repo": "fleet", "target": "all"},
			invalid, "rather than a target named", ""},
		{"no builder", []string{"build", "fleet", "h1"},
			"build", map[string]any{"repo": "fleet", "target": "h1"},
			failed, "no builder answered for repo fleet", ""},
		{"unknown tier", []string{"list-hosts", "--tier", "staging"},
			"list_hosts", map[string]any{"tier": "staging"},
			invalid, "tier", ""},
		{"list hosts", []string{"list-hosts", "--tier", "test"},
			"list_hosts", map[string]any{"tier": "test"},
			succeeded, "testhost2", ""},
	}

	// Both adapters act with the same credentials: the admin deployer for
	// deploys, an allow-all user for builds and discovery.
	conns := map[string]*protocol.Conn{
		tools.DefaultCredential: f.nats.Connect(t, "root"),
		"admin":                 f.nats.Connect(t, "admin"),
		"build":                 f.nats.Connect(t, "root"),
	}
	cs := session(t, mcpserver.New(registry.New(), tools.AllGates(),
		tools.Deps{Conns: conns, Defaults: map[string]any{"accept_window_seconds": 0.3, "quiet_seconds": 0.2}}, "test"), nil)

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(f.calls(c.host))

			seed := f.nats.Cred("admin").SeedFile
			if c.cli[0] != "deploy" {
				seed = f.nats.Cred("root").SeedFile
			}
			var stdout, stderr bytes.Buffer
			env := cli.Env{Stdout: &stdout, Stderr: &stderr, Version: "test", Getenv: func(k string) string {
				return map[string]string{"HOMELAB_DEPLOY_NATS_URL": f.nats.URL, "HOMELAB_DEPLOY_NKEY_FILE": seed}[k]
			}}
			args := append(slices.Clone(c.cli), "--accept-window", "300ms")
			if c.cli[0] != "deploy" {
				args = c.cli
			}
			code := cli.Run(context.Background(), args, env)
			cliSaid := stdout.String() + stderr.String()
			cliGot := map[int]outcome{0: succeeded, 1: failed, 2: invalid}[code]

			res := call(t, cs, c.tool, c.args, nil)
			mcpSaid := text(res)
			mcpGot := succeeded
			switch {
			case res.IsError && strings.Contains(mcpSaid, "Nothing was sent"):
				mcpGot = invalid
			case res.IsError:
				mcpGot = failed
			}

			if cliGot != c.want || mcpGot != c.want {
				t.Errorf("CLI %q: exit %d (%s); MCP %s %v: %s; want %s on both\nCLI said: %s\nMCP said: %s",
					c.cli, code, cliGot, c.tool, c.args, mcpGot, c.want, cliSaid, mcpSaid)
			}
			for adapter, said := range map[string]string{"CLI": cliSaid, "MCP": mcpSaid} {
				if !strings.Contains(said, c.mention) {
					t.Errorf("%s did not say %q:\n%s", adapter, c.mention, said)
				}
			}
			if c.host == "" {
				return // the total below proves nothing ran
			}
			switch runs := f.calls(c.host)[before:]; {
			case len(runs) != 2:
				t.Errorf("%s ran nixos-rebuild %d times, want once per adapter: %q", c.host, len(runs), runs)
			case fmt.Sprint(runs[0]) != fmt.Sprint(runs[1]):
				t.Errorf("the adapters ran different commands:\nCLI %q\nMCP %q", runs[0], runs[1])
			}
		})
	}
	// Nothing ran for the inputs that were refused or went nowhere: every
	// recorded nixos-rebuild belongs to a successful case.
	total := 0
	for _, h := range fleetHosts {
		total += len(f.calls(h.name))
	}
	if total != 4 {
		t.Errorf("nixos-rebuild ran %d times in all, want 4 (two successful deploys through two adapters)", total)
	}
}
