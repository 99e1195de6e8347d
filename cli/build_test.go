package cli

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/agents/builder"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv/buildtest"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/build"
)

func buildEnv(vars map[string]string) (Env, *testenv.Buffer, *testenv.Buffer) {
	var stdout, stderr testenv.Buffer
	return Env{
		Stdout: &stdout, Stderr: &stderr, Version: "test",
		Getenv: func(k string) string { return vars[k] },
	}, &stdout, &stderr
}

// startBuilder runs the builder agent for a fresh fixture repository named
// fleet on an embedded NATS server, and returns the server and fixture.
func startBuilder(t *testing.T, hostTimeout time.Duration) (*testenv.NATS, *buildtest.Fixture) {
	t.Helper()
	fix := buildtest.New(t)
	n := testenv.StartNATS(t,
		testenv.User{Name: "builder", Permissions: testenv.Ptr(protocol.BuilderPermissions([]string{"fleet", "other"}))},
		testenv.User{Name: "client", Permissions: testenv.Ptr(protocol.BuildClientPermissions([]string{"fleet", "nope"}))},
	)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- builder.Run(ctx, builder.Config{
			NATSURL: n.URL, NKeyFile: n.Cred("builder").SeedFile, ConfigFile: fix.WriteConfig(t, "fleet"),
			Timeout: hostTimeout, MaxParallel: 3, ShutdownGrace: time.Second, Nix: fix.Nix, NixEnv: fix.Env,
			Ready: func(*builder.Builder) { close(ready) },
		})
	}()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("builder: %v", err)
	}
	t.Cleanup(func() { cancel(); <-errc })
	return n, fix
}

func TestBuildCommandAllHosts(t *testing.T) {
	t.Parallel()
	n, fix := startBuilder(t, 8*time.Second)
	env, stdout, stderr := buildEnv(nil)
	code := Run(context.Background(), []string{"build", "fleet", "--all", "--nats-url", n.URL, "--nkey-file", n.Cred("client").SeedFile}, env)
	if code != ExitFailure {
		t.Fatalf("exit %d, want 1 (two hosts failed)\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	// One live line per host, in order of completion, with counters.
	lines := regexp.MustCompile(`(?m)^\[\d/3\] .*$`).FindAllString(stderr.String(), -1)
	want := []*regexp.Regexp{
		regexp.MustCompile(`^\[1/3\] bad FAILED \d+\.\ds: error: the frobnicator of host bad is misaligned$`),
		regexp.MustCompile(`^\[2/3\] good ok \d+\.\ds$`),
		regexp.MustCompile(`^\[3/3\] slow TIMEOUT \d+\.\ds: nix build exceeded the 8s per-host timeout and was killed$`),
	}
	if len(lines) != 3 {
		t.Fatalf("progress lines %q, want three\nstderr:\n%s", lines, stderr)
	}
	for i, re := range want {
		if !re.MatchString(lines[i]) {
			t.Errorf("line %d %q does not match %s", i+1, lines[i], re)
		}
	}
	if strings.Contains(stderr.String(), "\x1b[") {
		t.Errorf("colours on a non-terminal: %q", stderr)
	}
	out := stdout.String()
	for _, s := range []string{"built 1/3 hosts; failed: bad (build failed), slow (timed out)", buildtest.BadMessage, "good                 ok"} {
		if !strings.Contains(out, s) {
			t.Errorf("summary lacks %q:\n%s", s, out)
		}
	}
	if pid := fix.SlowPID(); pid == 0 || buildtest.Alive(pid) {
		testenv.Eventually(t, 10*time.Second, func() bool { return pid != 0 && !buildtest.Alive(pid) }, "slow builder %d still running", pid)
	}
}

func TestBuildCommandOneHostFromEnvAndJSON(t *testing.T) {
	t.Parallel()
	n, _ := startBuilder(t, 2*time.Minute)
	vars := map[string]string{
		"HOMELAB_DEPLOY_NATS_URL":  n.URL,
		"HOMELAB_DEPLOY_NKEY_FILE": n.Cred("client").SeedFile,
		"HOMELAB_DEPLOY_BRANCH":    buildtest.Branch,
	}
	env, stdout, stderr := buildEnv(vars)
	env.Terminal = func(io.Writer) bool { return true }
	code := Run(context.Background(), []string{"build", "fleet", "extra", "--json"}, env)
	if code != ExitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	var res build.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("--json output: %v\n%s", err, stdout)
	}
	if !res.Success || res.Status != protocol.StatusCompleted || res.Branch != buildtest.Branch || res.Message != "built 1/1 hosts successfully" ||
		len(res.Results) != 1 || res.Results[0].Host != "extra" || !strings.HasPrefix(res.Results[0].OutPath, "/nix/store/") {
		t.Fatalf("result %+v", res)
	}
	if !strings.Contains(stderr.String(), "[1/1] extra \x1b[32mok\x1b[0m") {
		t.Errorf("no green live line on a terminal: %q", stderr)
	}

	// An unknown host is rejected by the builder: exit 1 with its reason.
	env, stdout, stderr = buildEnv(map[string]string{"HOMELAB_DEPLOY_NATS_URL": n.URL, "HOMELAB_DEPLOY_NKEY_FILE": n.Cred("client").SeedFile})
	code = Run(context.Background(), []string{"build", "fleet", "extra"}, env)
	if code != ExitFailure || !strings.Contains(stdout.String(), `host "extra" is not in nixosConfigurations of fleet at main; known hosts: bad, good, slow`) {
		t.Fatalf("unknown host: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	// Nobody builds nope: exit 1 at once.
	env, stdout, _ = buildEnv(map[string]string{"HOMELAB_DEPLOY_NATS_URL": n.URL, "HOMELAB_DEPLOY_NKEY_FILE": n.Cred("client").SeedFile})
	if code := Run(context.Background(), []string{"build", "nope", "--all"}, env); code != ExitFailure || !strings.Contains(stdout.String(), "no builder answered for repo nope") {
		t.Fatalf("unknown repo: exit %d: %s", code, stdout)
	}
	// HOMELAB_DEPLOY_BUILD_TIMEOUT bounds the wait.
	env, stdout, _ = buildEnv(map[string]string{"HOMELAB_DEPLOY_NATS_URL": n.URL, "HOMELAB_DEPLOY_NKEY_FILE": n.Cred("client").SeedFile, "HOMELAB_DEPLOY_BUILD_TIMEOUT": "1"})
	if code := Run(context.Background(), []string{"build", "fleet", "slow"}, env); code != ExitFailure || !strings.Contains(stdout.String(), "no final status from the builder within 1s") {
		t.Fatalf("build timeout: exit %d: %s", code, stdout)
	}
}

// Usage errors exit 2 and nothing is sent (no server is given).
func TestBuildUsageErrors(t *testing.T) {
	t.Parallel()
	seed := filepath.Join(t.TempDir(), "c.nkey")
	if err := os.WriteFile(seed, []byte("SUAXXX\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conn := []string{"--nats-url", "nats://127.0.0.1:1", "--nkey-file", seed}
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"build"}, nil, "REPO"},
		{[]string{"build", "fleet"}, nil, "--all"},
		{[]string{"build", "fleet", "good", "--all"}, nil, "not both"},
		{[]string{"build", "fleet", "all"}, nil, "--all"},
		{[]string{"build", "fleet", "a", "b"}, nil, "3 arguments"},
		{[]string{"build", "my.repo", "--all"}, nil, "repo"},
		{[]string{"build", "fleet", "a*b"}, nil, "hostname"},
		{[]string{"build", "fleet", "--all", "--branch=-x"}, nil, "revision"},
		{[]string{"build", "fleet", "--all", "--branch", "main#other"}, nil, "revision"},
		{[]string{"build", "fleet", "--all", "--branch", "a..b"}, nil, ".."},
		{[]string{"build", "fleet", "--all", "--branch", "x?dir=/"}, nil, "revision"},
		{[]string{"build", "fleet", "--all", "--branch", strings.Repeat("b", 300)}, nil, "at most"},
		{[]string{"build", "fleet", "--all"}, map[string]string{"HOMELAB_DEPLOY_BRANCH": "-x"}, "revision"},
		{[]string{"build", "fleet", "--all"}, map[string]string{"HOMELAB_DEPLOY_BUILD_TIMEOUT": "soon"}, "HOMELAB_DEPLOY_BUILD_TIMEOUT"},
		{[]string{"build", "fleet", "--all", "--timeout", "0"}, nil, "--timeout"},
	}
	for _, c := range cases {
		env, stdout, stderr := buildEnv(c.env)
		args := c.args
		if len(args) > 1 {
			args = append(append([]string{}, args...), conn...)
		}
		if code := Run(context.Background(), args, env); code != ExitUsage || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%q: exit %d, stderr %q (stdout %q); want exit 2 mentioning %q", c.args, code, stderr, stdout, c.want)
		}
	}
}

func TestBuilderCommandRefusesBadConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	seed := filepath.Join(dir, "b.nkey")
	cfg := filepath.Join(dir, "builder.yaml")
	_ = os.WriteFile(seed, []byte("SUAXXX\n"), 0o600)
	_ = os.WriteFile(cfg, []byte("repos:\n  fleet:\n    url: git+file:///srv/fleet\n    default_brnach: main\n"), 0o644)
	env, _, stderr := buildEnv(nil)
	code := Run(context.Background(), []string{"builder", "--nats-url", "nats://127.0.0.1:1", "--nkey-file", seed, "--config", cfg}, env)
	if code != ExitUsage || !strings.Contains(stderr.String(), cfg+`:4: repository "fleet": unknown key "default_brnach"`) {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	env, _, stderr = buildEnv(nil)
	if code := Run(context.Background(), []string{"builder", "--nats-url", "nats://127.0.0.1:1", "--nkey-file", seed}, env); code != ExitUsage || !strings.Contains(stderr.String(), "--config is required") {
		t.Fatalf("no --config: exit %d, stderr %q", code, stderr)
	}
}
