package cli

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// testEnv's buffers are safe to read while something still writes: the
// NATS client logs from its own goroutines.
func testEnv(vars map[string]string) (Env, *testenv.Buffer, *testenv.Buffer) {
	stdout, stderr := &testenv.Buffer{}, &testenv.Buffer{}
	return Env{
		Stdout: stdout, Stderr: stderr, Version: "test",
		Getenv: func(k string) string { return vars[k] },
	}, stdout, stderr
}

func TestResolveAlias(t *testing.T) {
	t.Parallel()
	env := map[string]string{"HOMELAB_DEPLOY_ALIAS_PROD_DNS": "deploy.prod.role.dns", "HOMELAB_DEPLOY_ALIAS_WEB": "deploy.test.all"}
	getenv := func(k string) string { return env[k] }
	for in, want := range map[string]string{"prod-dns": "deploy.prod.role.dns", "PROD_DNS": "deploy.prod.role.dns", "web": "deploy.test.all", "deploy.test.h1": "deploy.test.h1"} {
		if got, err := resolveAlias(in, getenv); err != nil || got != want {
			t.Errorf("resolveAlias(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"staging", "a b", "*", ""} {
		if got, err := resolveAlias(in, getenv); err == nil {
			t.Errorf("resolveAlias(%q) = %q, want error", in, got)
		}
	}
}

func TestInterspersedFlags(t *testing.T) {
	t.Parallel()
	c := newDeploy(New(Env{}))
	pos, err := interspersed(c.Flags, []string{"deploy.test.h1", "--branch", "feature/x", "--json", "--action=boot", "--", "--not-a-flag"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(pos, []string{"deploy.test.h1", "--not-a-flag"}) || c.Branch != "feature/x" || !c.JSON || c.Action != "boot" {
		t.Fatalf("pos=%q branch=%q json=%v action=%q", pos, c.Branch, c.JSON, c.Action)
	}
	for _, bad := range [][]string{{"x", "--nope"}, {"x", "--branch"}, {"x", "--timeout", "soon"}} {
		if _, err := interspersed(newDeploy(New(Env{})).Flags, bad); err == nil {
			t.Errorf("interspersed(%q) accepted", bad)
		}
	}
}

// Usage errors exit 2 and nothing is sent: no NATS server is needed for
// them, and none is given.
func TestDeployUsageErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args    []string
		env     map[string]string
		mention string
	}{
		{[]string{"deploy"}, nil, "exactly one"},
		{[]string{"deploy", "deploy.test.h1"}, nil, "--nats-url"},
		{[]string{"deploy", "deploy.test.h1", "--nats-url", "nats://127.0.0.1:1"}, nil, "--nkey-file"},
		{[]string{"deploy", "deploy.test.h1", "--action", "reboot"}, nil, "action"},
		{[]string{"deploy", "deploy.test.h1"}, map[string]string{"HOMELAB_DEPLOY_ACTION": "reboot"}, "action"},
		{[]string{"deploy", "deploy.test.h1"}, map[string]string{"HOMELAB_DEPLOY_BRANCH": "-x"}, "revision"},
		{[]string{"deploy", "deploy.test.h1"}, map[string]string{"HOMELAB_DEPLOY_TIMEOUT": "soon"}, "HOMELAB_DEPLOY_TIMEOUT"},
		{[]string{"deploy", "deploy.test.h1", "--timeout", "0"}, nil, "timeout"},
		{[]string{"deploy", "deploy.test.h1", "--nats-url", "http://x", "--nkey-file", "/nonexistent"}, nil, "nats://"},
		{[]string{"deploy", "deploy.test.>"}, nil, "wildcards"},
		{[]string{"deploy", "deploy.responses.x"}, nil, "reserved"},
		{[]string{"list-hosts", "--tier", "staging"}, nil, "tier"},
		{[]string{"listener", "--hostname", "all", "--tier", "test", "--flake-url", "git+file:///x", "--nats-url", "nats://127.0.0.1:1", "--nkey-file", "/x"}, nil, "reserved"},
		{[]string{"listener", "--hostname", "h", "--tier", "staging", "--flake-url", "git+file:///x", "--nats-url", "nats://127.0.0.1:1", "--nkey-file", "/x"}, nil, "tier"},
		{[]string{"listener", "--hostname", "h", "--tier", "test", "--flake-url", "git+file:///x#h", "--nats-url", "nats://127.0.0.1:1", "--nkey-file", "/x"}, nil, "'#'"},
		{[]string{"--log-level", "loud", "list-hosts"}, nil, "log-level"},
		{[]string{"nosuchcommand"}, nil, "unknown command"},
	}
	for _, c := range cases {
		env, stdout, stderr := testEnv(c.env)
		code := Run(context.Background(), c.args, env)
		if code != ExitUsage || !strings.Contains(stderr.String(), c.mention) {
			t.Errorf("%q: exit %d, stderr %q (want exit 2 mentioning %q); stdout %q", c.args, code, stderr, c.mention, stdout)
		}
	}
}

func TestDeployThroughCLIAgainstEmbeddedNATS(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t, testenv.User{Name: "deployer", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())})
	env, stdout, stderr := testEnv(map[string]string{
		"HOMELAB_DEPLOY_NATS_URL":  n.URL,
		"HOMELAB_DEPLOY_NKEY_FILE": n.Cred("deployer").SeedFile,
	})
	code := Run(context.Background(), []string{"deploy", "deploy.test.ghost"}, env)
	if code != ExitFailure || !strings.Contains(stdout.String(), "no listener is subscribed to deploy.test.ghost") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
}

func TestVersionAndHelp(t *testing.T) {
	t.Parallel()
	env, stdout, _ := testEnv(nil)
	if code := Run(context.Background(), []string{"--version"}, env); code != 0 || strings.TrimSpace(stdout.String()) != "homelab-deploy test" {
		t.Fatalf("--version: %d %q", code, stdout)
	}
	for _, cmd := range []string{"deploy", "list-hosts", "listener"} {
		env, stdout, _ := testEnv(nil)
		if code := Run(context.Background(), []string{cmd, "--help"}, env); code != 0 || !strings.Contains(stdout.String(), "homelab-deploy "+cmd) {
			t.Errorf("%s --help: exit %d\n%s", cmd, code, stdout)
		}
	}
}

func FuzzInterspersed(f *testing.F) {
	f.Add("deploy.test.h1 --branch main --json")
	f.Add("x --action=boot -- --y")
	f.Fuzz(func(t *testing.T, line string) {
		c := newDeploy(New(Env{}))
		pos, err := interspersed(c.Flags, strings.Fields(line))
		if err != nil {
			return
		}
		if len(pos) > len(strings.Fields(line)) {
			t.Fatalf("more positionals than words: %q", pos)
		}
	})
}

func FuzzResolveAlias(f *testing.F) {
	f.Add("prod-dns")
	f.Add("deploy.test.all")
	f.Fuzz(func(t *testing.T, name string) {
		got, err := resolveAlias(name, func(k string) string {
			if k == "HOMELAB_DEPLOY_ALIAS_X" {
				return "deploy.test.all"
			}
			return ""
		})
		if err == nil && got != name && got != "deploy.test.all" {
			t.Fatalf("resolveAlias(%q) = %q", name, got)
		}
	})
}
