package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
)

// TestHostileMCPArguments drives the built binary's MCP server over stdio,
// with deploy_admin and build enabled, against Debian's nats-server. Every
// hostile argument is a tool error that says what is wrong and that nothing
// was sent; the spy on ">" sees no message at all and no executor runs.
// The in-process table of hostile hostnames, roles, tiers and actions, and
// the proof that deploy never reaches deploy.prod.> whatever its input, are
// mcp.TestHostileInputsAreToolErrorsAndSendNothing and
// mcp.TestDeployNeverReachesProd.
func TestHostileMCPArguments(t *testing.T) {
	f := startSecFleet(t)
	env := append(f.env("deployer"),
		"HOMELAB_DEPLOY_ENABLE_ADMIN=true", "HOMELAB_DEPLOY_ADMIN_NKEY_FILE="+f.creds["admin"].SeedFile,
		"HOMELAB_DEPLOY_ENABLE_BUILDS=true", "HOMELAB_DEPLOY_BUILD_NKEY_FILE="+f.creds["build-client"].SeedFile)
	cs := mcpClient(t, mcpCommand(env), nil)

	type call struct {
		tool string
		args map[string]any
	}
	var calls []call
	for _, rev := range hostileRevisions {
		if rev == "" {
			continue // an empty branch means the default (master, or the repo's)
		}
		calls = append(calls,
			call{"deploy", map[string]any{"hostname": "testhost1", "branch": rev}},
			call{"deploy_admin", map[string]any{"tier": "prod", "hostname": "dns1", "branch": rev}},
			call{"build", map[string]any{"repo": "fleet", "branch": rev}},
		)
	}
	// all and role are reserved as hostnames and roles (they name group
	// subjects); as repository names they are ordinary, responses is not.
	for _, tok := range append(hostileTokens, "all", "role") {
		calls = append(calls,
			call{"deploy", map[string]any{"hostname": tok}},
			call{"deploy", map[string]any{"role": tok}},
			call{"deploy_admin", map[string]any{"tier": tok, "all": true}},
			call{"deploy_admin", map[string]any{"tier": "prod", "hostname": tok}},
			call{"list_hosts", map[string]any{"tier": tok}},
		)
		if tok != "all" && tok != "" { // target "all" (or none) builds every host
			calls = append(calls, call{"build", map[string]any{"repo": "fleet", "target": tok}})
		}
	}
	for _, tok := range append(hostileTokens, "responses") {
		calls = append(calls, call{"build", map[string]any{"repo": tok}})
	}
	calls = append(calls,
		call{"deploy", map[string]any{"hostname": "testhost1", "action": "reboot"}},
		call{"deploy", map[string]any{"hostname": "testhost1", "action": "switch --option x y"}},
		call{"deploy", map[string]any{"hostname": "testhost1", "subject": "deploy.prod.dns1"}}, // unknown argument
		call{"deploy", map[string]any{"hostname": "dns1", "tier": "prod"}},                     // deploy has no tier
		call{"deploy_admin", map[string]any{"hostname": "dns1"}},                               // tier missing
		call{"build", map[string]any{"repo": "fleet", "url": "github:evil/x"}},                 // unknown argument
		call{"build", map[string]any{}},                                                        // repo missing
	)
	for _, c := range calls {
		res, _ := mcpCall(t, cs, c.tool, c.args, nil)
		msg := mcpText(res)
		if !res.IsError || !strings.Contains(msg, "invalid input for "+c.tool) || !strings.Contains(msg, "Nothing was sent") {
			t.Errorf("%s %v: isError %v: %s", c.tool, c.args, res.IsError, msg)
		}
	}
	f.settle(t)
	if got := f.spy.unexpected(func(s string) bool { return strings.HasPrefix(s, "spy.marker.") }); len(got) != 0 {
		t.Errorf("hostile MCP arguments put messages on the wire: %s", fmtList(got))
	}
	if calls := f.executorCalls(); len(calls) != 0 {
		t.Errorf("an executor ran: %q", calls)
	}

	// The door works for valid input, and only the test tier is reached.
	if res, out := mcpCall(t, cs, "deploy", map[string]any{"hostname": "testhost1"}, nil); res.IsError || out["success"] != true {
		t.Fatalf("valid deploy over MCP: %s", mcpText(res))
	}
	f.settle(t)
	if got := f.spy.unexpected(func(s string) bool {
		return strings.HasPrefix(s, "spy.marker.") || s == "deploy.test.testhost1" || strings.HasPrefix(s, "deploy.responses.")
	}); len(got) != 0 {
		t.Errorf("a test-tier deploy over MCP reached %s", fmtList(got))
	}
}

// TestMCPHTTPNeedsATokenOnLoopbackToo: the built binary refuses to serve
// MCP over HTTP without a bearer token on every address, loopback
// included (any local user could otherwise deploy with the admin
// credential), and says how to make a token. It exits before binding or
// connecting, so nothing is ever served.
func TestMCPHTTPNeedsATokenOnLoopbackToo(t *testing.T) {
	f := startSecFleet(t)
	env := append(f.env("deployer"), "HOMELAB_DEPLOY_ENABLE_ADMIN=true", "HOMELAB_DEPLOY_ADMIN_NKEY_FILE="+f.creds["admin"].SeedFile)
	for _, addr := range []string{"127.0.0.1", "localhost", "", "0.0.0.0"} {
		port := testenv.FreePort(t)
		r := run(t, env, "mcp", "--http-addr", fmt.Sprintf("%s:%d", addr, port))
		if r.Code != 2 || !strings.Contains(r.Stderr, "needs a bearer token") ||
			!strings.Contains(r.Stderr, "head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE") ||
			!strings.Contains(r.Stderr, "stdio") {
			t.Errorf("mcp --http-addr %s:%d without a token: exit %d\n%s", addr, port, r.Code, r.Stderr)
		}
		if r.Stdout != "" {
			t.Errorf("mcp --http-addr %s:%d without a token wrote to stdout: %q", addr, port, r.Stdout)
		}
	}
}
