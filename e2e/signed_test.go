package e2e

// Signed requests with the built binary and Debian's nats-server: every
// command signs what it sends with the seed it connects with, and a
// listener or builder started with --trusted-deployer carries out only
// what a listed key signed.

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// shortKey is how list-hosts shows a caller key in its table.
func shortKey(k string) string { return k[:8] + "…" + k[len(k)-4:] }

// auditLine returns the listener's or builder's audit line that contains
// every one of parts, waiting for it to be written.
func auditLine(t *testing.T, p *Proc, parts ...string) string {
	t.Helper()
	var found string
	testenv.Eventually(t, 20*time.Second, func() bool {
		for _, l := range strings.Split(p.Output.String(), "\n") {
			if !strings.Contains(l, "msg=audit") {
				continue
			}
			ok := true
			for _, s := range parts {
				ok = ok && strings.Contains(l, s)
			}
			if ok {
				found = l
				return true
			}
		}
		return false
	}, "no audit line with %q", parts)
	return found
}

func TestE2ETrustedDeployer(t *testing.T) {
	dir := t.TempDir()
	host := testenv.NewCred(t, dir, "testhost1", *testenv.ListenerPerms("test", "testhost1", ""))
	deployer := testenv.NewCred(t, dir, "deployer", protocol.TestDeployerPermissions())
	admin := testenv.NewCred(t, dir, "admin", protocol.AdminDeployerPermissions())
	client := testenv.NewCred(t, dir, "build-client", protocol.BuildClientPermissions([]string{"fleet"}))
	builderCred := testenv.NewCred(t, dir, "builder", protocol.BuilderPermissions([]string{"fleet"}))
	nats := startNATSServer(t, host, deployer, admin, client, builderCred)

	rebuild := testenv.StandIn(t, "nixos-rebuild", "echo activating")
	listener := startDaemon(t, baseEnv(rebuild), "listener", "--hostname", "testhost1", "--tier", "test",
		"--nats-url", nats.URL, "--nkey-file", host.SeedFile, "--flake-url", e2eFlake, "--log-format", "text",
		"--trusted-deployer", admin.Public)
	listener.WaitFor(t, "listener ready", 20*time.Second)
	if !strings.Contains(listener.Output.String(), admin.Public) {
		t.Errorf("the ready line does not name the trusted deployer:\n%s", listener.Output)
	}
	env := func(c testenv.Cred) []string {
		return append(baseEnv(), "HOMELAB_DEPLOY_NATS_URL="+nats.URL, "HOMELAB_DEPLOY_NKEY_FILE="+c.SeedFile, "HOMELAB_DEPLOY_TIMEOUT=60")
	}

	// The test deployer signs with its own key, which is not trusted.
	r := run(t, env(deployer), "deploy", "deploy.test.testhost1", "--branch", "main")
	if r.Code != 1 || !strings.Contains(r.Stdout+r.Stderr, "unauthorized") || !strings.Contains(r.Stdout+r.Stderr, deployer.Public) {
		t.Fatalf("untrusted deploy: exit %d (want 1), output should say unauthorized and name %s:\nstdout:\n%s\nstderr:\n%s", r.Code, deployer.Public, r.Stdout, r.Stderr)
	}
	if calls := testenv.Calls(rebuild); len(calls) != 0 {
		t.Fatalf("nixos-rebuild ran for an untrusted deployer: %q", calls)
	}
	auditLine(t, listener, "caller=unsigned", "claimed_key="+deployer.Public, "status=rejected", "error_code=unauthorized", "subject=deploy.test.testhost1")

	// Its discovery request gets no answer either.
	r = run(t, env(deployer), "list-hosts")
	if strings.Contains(r.Stdout, "testhost1") {
		t.Fatalf("an untrusted deployer's discovery was answered:\n%s", r.Stdout)
	}

	// The admin's request runs, and the audit line and list-hosts name it.
	r = run(t, env(admin), "deploy", "deploy.test.testhost1", "--branch", "main")
	if r.Code != 0 {
		t.Fatalf("trusted deploy: exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if calls := testenv.Calls(rebuild); len(calls) != 1 || calls[0] != "switch --flake "+e2eFlake+"?ref=main#testhost1" {
		t.Fatalf("nixos-rebuild calls %q", calls)
	}
	auditLine(t, listener, "caller="+admin.Public, "action=switch", "revision=main", "status=completed", "subject=deploy.test.testhost1")
	r = run(t, env(admin), "list-hosts")
	if r.Code != 0 || !strings.Contains(r.Stdout, "completed switch main") || !strings.Contains(r.Stdout, "by "+shortKey(admin.Public)) {
		t.Fatalf("list-hosts: exit %d, want the last deploy by %s:\nstdout:\n%s\nstderr:\n%s", r.Code, shortKey(admin.Public), r.Stdout, r.Stderr)
	}
	r = run(t, env(admin), "list-hosts", "--json")
	if !strings.Contains(r.Stdout, `"caller": "`+admin.Public+`"`) {
		t.Fatalf("list-hosts --json does not carry the caller key:\n%s", r.Stdout)
	}

	// The builder: the build client's key is not trusted, nothing builds.
	nix := nixStandIn(t, false)
	builder := startDaemon(t, baseEnv(nix), "builder", "--nats-url", nats.URL, "--nkey-file", builderCred.SeedFile,
		"--config", builderConfig(t), "--log-format", "text", "--trusted-deployer", admin.Public)
	builder.WaitFor(t, "builder ready", 20*time.Second)
	r = run(t, append(env(client), "HOMELAB_DEPLOY_BUILD_TIMEOUT=60"), "build", "fleet", "--all", "--json")
	if r.Code != 1 || !strings.Contains(r.Stdout, `"error_code": "unauthorized"`) || !strings.Contains(r.Stdout, client.Public+", which is not a trusted deployer") {
		t.Fatalf("untrusted build: exit %d (want 1), output should say unauthorized and name %s:\nstdout:\n%s\nstderr:\n%s", r.Code, client.Public, r.Stdout, r.Stderr)
	}
	for _, c := range testenv.Calls(nix) {
		if c != "show-config" {
			t.Fatalf("nix ran for an untrusted build client: %q", c)
		}
	}
	auditLine(t, builder, "caller=unsigned", "claimed_key="+client.Public, "action=build", "status=rejected", "error_code=unauthorized")
}

// A --trusted-deployer that is not a user public key stops the daemon
// before it connects (exit 2), and a seed given by mistake is not echoed.
func TestE2ETrustedDeployerMustBeAPublicKey(t *testing.T) {
	dir := t.TempDir()
	cred := testenv.NewCred(t, dir, "testhost1", *testenv.ListenerPerms("test", "testhost1", ""))
	seed, err := os.ReadFile(cred.SeedFile)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSpace(string(seed))
	for _, bad := range []string{s, "Unot-a-key", cred.Public + "A"} {
		r := run(t, baseEnv(), "listener", "--hostname", "testhost1", "--tier", "test", "--nats-url", "nats://127.0.0.1:1",
			"--nkey-file", cred.SeedFile, "--flake-url", e2eFlake, "--trusted-deployer", bad)
		if r.Code != 2 || !strings.Contains(r.Stderr, "--trusted-deployer") {
			t.Errorf("listener --trusted-deployer %.6s…: exit %d (want 2)\n%s", bad, r.Code, r.Stderr)
		}
		if strings.Contains(r.Stdout+r.Stderr, s) {
			t.Errorf("the seed was echoed:\n%s", r.Stderr)
		}
	}
	r := run(t, baseEnv(), "builder", "--nats-url", "nats://127.0.0.1:1", "--nkey-file", cred.SeedFile,
		"--config", builderConfig(t), "--trusted-deployer", s)
	if r.Code != 2 || strings.Contains(r.Stdout+r.Stderr, s) || !strings.Contains(r.Stderr, "--trusted-deployer") {
		t.Errorf("builder --trusted-deployer <seed>: exit %d (want 2)\n%s", r.Code, r.Stderr)
	}
}
