package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// deadURL is a NATS URL nobody listens on: a command that gets as far as
// dialling it fails with a connection error (exit 1), so exit 2 there proves
// nothing was dialled.
const deadURL = "nats://127.0.0.1:1"

// A public key given as --nkey-file is named as such, by every networked
// command, with exit 2; nobody is told to chmod it.
func TestCLIPublicKeyAsSeed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := testenv.NewCred(t, dir, "u", protocol.TestDeployerPermissions())
	pub := filepath.Join(dir, "u.pub")
	if err := os.WriteFile(pub, []byte(c.Public+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "builder.yaml")
	if err := os.WriteFile(cfg, []byte("repos:\n  fleet:\n    url: git+file:///srv/fleet\n    default_branch: main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conn := []string{"--nats-url", deadURL, "--nkey-file", pub}
	for _, args := range [][]string{
		{"deploy", "deploy.test.h1"},
		{"list-hosts"},
		{"build", "fleet", "--all"},
		{"mcp"},
		{"listener", "--hostname", "h1", "--tier", "test", "--flake-url", e2eFlake},
		{"builder", "--config", cfg},
	} {
		r := run(t, baseEnv(), append(args, conn...)...)
		if r.Code != 2 || !strings.Contains(r.Stderr, pub+" is a public key (U") || !strings.Contains(r.Stderr, "starts with SU") ||
			strings.Contains(r.Stderr, "chmod") || strings.Contains(r.Stderr, "%!") {
			t.Errorf("%s: exit %d, stderr:\n%s\nwant exit 2 saying it is a public key", args[0], r.Code, r.Stderr)
		}
	}
}

// host:port without a scheme reaches the server, as with natscli; other
// schemes are refused with the ones that work.
func TestCLINATSURLWithoutScheme(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := testenv.NewCred(t, dir, "deployer", protocol.TestDeployerPermissions())
	s := startNATSServer(t, c)
	hostPort := strings.TrimPrefix(s.URL, "nats://")
	r := run(t, baseEnv(), "deploy", "deploy.test.ghost", "--nats-url", hostPort, "--nkey-file", c.SeedFile)
	if r.Code != 1 || !strings.Contains(r.Stdout, "no listener is subscribed to deploy.test.ghost") {
		t.Errorf("--nats-url %s: exit %d\nstdout:\n%s\nstderr:\n%s\nwant the deploy sent (nobody answers)", hostPort, r.Code, r.Stdout, r.Stderr)
	}
	r = run(t, baseEnv(), "deploy", "deploy.test.ghost", "--nats-url", "http://"+hostPort, "--nkey-file", c.SeedFile)
	if r.Code != 2 || !strings.Contains(r.Stderr, "nats://host:port, tls://host:port, ws://host:port or wss://host:port") {
		t.Errorf("--nats-url http://: exit %d, stderr:\n%s", r.Code, r.Stderr)
	}
}

// A mistyped tier is a usage error naming the tiers; nothing is dialled.
func TestCLIUnknownTier(t *testing.T) {
	t.Parallel()
	c := testenv.NewCred(t, t.TempDir(), "deployer", protocol.TestDeployerPermissions())
	r := run(t, baseEnv(), "deploy", "deploy.tset.host", "--nats-url", deadURL, "--nkey-file", c.SeedFile)
	if r.Code != 2 || !strings.Contains(r.Stderr, `unknown tier "tset"`) || !strings.Contains(r.Stderr, "test, prod") {
		t.Errorf("exit %d, stderr:\n%s", r.Code, r.Stderr)
	}
}

// --log-level and --log-format after the subject count, and are checked.
func TestCLIRootFlagsAfterSubject(t *testing.T) {
	t.Parallel()
	c := testenv.NewCred(t, t.TempDir(), "deployer", protocol.TestDeployerPermissions())
	r := run(t, baseEnv(), "deploy", "deploy.test.h1", "--nats-url", deadURL, "--nkey-file", c.SeedFile, "--log-level", "verbose")
	if r.Code != 2 || !strings.Contains(r.Stderr, `--log-level "verbose"`) {
		t.Errorf("--log-level verbose after the subject: exit %d, stderr:\n%s", r.Code, r.Stderr)
	}
	s := startNATSServer(t, c)
	r = run(t, baseEnv(), "deploy", "deploy.test.ghost", "--nats-url", s.URL, "--nkey-file", c.SeedFile, "--log-level", "debug", "--log-format", "json")
	if !strings.Contains(r.Stderr, `"level":"DEBUG","msg":"NATS connected"`) {
		t.Errorf("--log-level debug --log-format json after the subject had no effect; stderr:\n%s", r.Stderr)
	}
}

// Durations: seconds or Go durations, the default shown as a duration.
func TestCLIDurationFlags(t *testing.T) {
	t.Parallel()
	r := run(t, baseEnv(), "listener", "--help")
	if !strings.Contains(r.Stdout, "--timeout DURATION") || !strings.Contains(r.Stdout, "(default: 10m)") {
		t.Errorf("listener --help:\n%s", r.Stdout)
	}
	r = run(t, baseEnv(), "listener", "--timeout", "soon")
	if r.Code != 2 || !strings.Contains(r.Stderr, "a whole number of seconds (600) or a duration such as 90s") {
		t.Errorf("--timeout soon: exit %d, stderr:\n%s", r.Code, r.Stderr)
	}
}

// A listener started before its NATS server says so at once, keeps saying
// so, and logs when it gets through.
func TestCLIListenerWarnsUntilNATSIsUp(t *testing.T) {
	t.Parallel()
	bin := testenv.RequireBinary(t, "nats-server")
	c := testenv.NewCred(t, t.TempDir(), "h1", *testenv.ListenerPerms("test", "h1", ""))
	s := startNATSServer(t, c)
	s.Stop()
	p := startDaemon(t, baseEnv(), "listener", "--hostname", "h1", "--tier", "test", "--nats-url", s.URL,
		"--nkey-file", c.SeedFile, "--flake-url", e2eFlake, "--log-format", "text")
	p.WaitFor(t, "NATS server not reachable yet", 20*time.Second)
	p.WaitFor(t, "NATS server still not reachable", 20*time.Second)
	s.start(t, bin)
	p.WaitFor(t, "NATS connected", 30*time.Second)
	out := p.Output.String()
	if strings.Index(out, "not reachable yet") > strings.Index(out, "listener ready") {
		t.Errorf("the warning came after \"listener ready\":\n%s", out)
	}
}

// On a terminal, logs are coloured unless NO_COLOR is set or --log-format
// text is asked for. script(1) gives the binary a pseudo-terminal.
func TestCLIColoursOnTerminal(t *testing.T) {
	t.Parallel()
	script := testenv.RequireBinary(t, "script")
	c := testenv.NewCred(t, t.TempDir(), "deployer", protocol.TestDeployerPermissions())
	s := startNATSServer(t, c)
	args := []string{binary, "deploy", "deploy.test.ghost", "--nats-url", s.URL, "--nkey-file", c.SeedFile, "--log-level", "debug"}
	for _, tt := range []struct {
		name   string
		env    []string
		extra  []string
		colour bool
	}{
		{"default", nil, nil, true},
		{"NO_COLOR=1", []string{"NO_COLOR=1"}, nil, false},
		{"--log-format text", nil, []string{"--log-format", "text"}, false},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, script, "-qec", shellJoin(append(args, tt.extra...)), "/dev/null")
		cmd.Env = append(append(baseEnv(), "TERM=xterm"), tt.env...)
		out, _ := cmd.CombinedOutput()
		cancel()
		if !strings.Contains(string(out), "NATS connected") {
			t.Fatalf("%s: no debug log on the terminal:\n%q", tt.name, out)
		}
		if got := strings.Contains(string(out), "\x1b["); got != tt.colour {
			t.Errorf("%s: colour escapes %v, want %v:\n%q", tt.name, got, tt.colour, out)
		}
	}
}

func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// The bash completion script is valid bash and names every subcommand.
func TestCLICompletionBash(t *testing.T) {
	t.Parallel()
	bash := testenv.RequireBinary(t, "bash")
	r := run(t, baseEnv(), "completion", "bash")
	if r.Code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.Code, r.Stderr)
	}
	path := filepath.Join(t.TempDir(), "homelab-deploy.bash")
	if err := os.WriteFile(path, []byte(r.Stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bash, "-n", path).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	for _, sub := range []string{"deploy", "list-hosts", "listener", "builder", "build", "keygen", "nats-config", "demo", "mcp", "completion"} {
		if !strings.Contains(r.Stdout, " "+sub+") words=") {
			t.Errorf("the script has no case for %s", sub)
		}
	}
}

// A plain `go build` says which code it is instead of "dev".
func TestCLIVersionWithoutLdflags(t *testing.T) {
	t.Parallel()
	testenv.RequireBinary(t, "git")
	bin := filepath.Join(t.TempDir(), "homelab-deploy")
	build := exec.Command("go", "build", "-buildvcs=true", "-o", bin, "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	v := strings.TrimSpace(strings.TrimPrefix(string(out), "homelab-deploy "))
	// The commit the toolchain recorded (HEAD may move meanwhile in a
	// shared checkout, so ask the binary, not git).
	info, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	var rev string
	for _, line := range strings.Split(string(info), "\n") {
		if f := strings.Fields(line); len(f) == 2 && strings.HasPrefix(f[1], "vcs.revision=") {
			rev = strings.TrimPrefix(f[1], "vcs.revision=")
		}
	}
	if len(rev) < 7 {
		// A tarball, or a checkout the toolchain cannot read (a linked
		// worktree): there is no commit to name, and "dev" is right.
		if v != "dev" {
			t.Fatalf("--version = %q without a recorded commit, want dev:\n%s", v, info)
		}
		t.Skipf("the toolchain recorded no commit for this checkout; --version says dev:\n%s", info)
	}
	if v == "dev" || !strings.Contains(v, rev[:7]) {
		t.Errorf("--version = %q, want it to name commit %s", v, rev[:7])
	}
}
