package cli

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// Root flags after the subject take effect and are validated like the
// same flags before it.
func TestRootFlagsAnywhere(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"deploy", "deploy.test.h1", "--log-level", "verbose"},
		{"deploy", "deploy.test.h1", "--log-level=verbose"},
		{"list-hosts", "--log-format", "yaml"},
		{"listener", "--log-level", "loud"},
	} {
		env, _, stderr := testEnv(nil)
		if code := Run(context.Background(), args, env); code != ExitUsage || !strings.Contains(stderr.String(), "use debug, info, warn or error") && !strings.Contains(stderr.String(), "use auto, text or json") {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 naming the valid values", args, code, stderr)
		}
	}

	// --log-level debug after the subject shows the debug log of the
	// connection, --log-format json makes it JSON.
	n := testenv.StartNATS(t, testenv.User{Name: "deployer", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())})
	env, _, stderr := testEnv(map[string]string{"HOMELAB_DEPLOY_NATS_URL": n.URL, "HOMELAB_DEPLOY_NKEY_FILE": n.Cred("deployer").SeedFile})
	Run(context.Background(), []string{"deploy", "deploy.test.ghost", "--log-level", "debug", "--log-format", "json"}, env)
	// The client logs "connected" from its own goroutine, which may run
	// after the command returned.
	testenv.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(stderr.String(), `"level":"DEBUG","msg":"NATS connected"`)
	}, "--log-level debug --log-format json after the subject ignored; stderr:\n%s", stderr)
	// The environment gives way to the flag, wherever the flag is.
	env, _, stderr = testEnv(map[string]string{"HOMELAB_DEPLOY_NATS_URL": n.URL, "HOMELAB_DEPLOY_NKEY_FILE": n.Cred("deployer").SeedFile, "HOMELAB_DEPLOY_LOG_LEVEL": "error"})
	Run(context.Background(), []string{"deploy", "deploy.test.ghost", "--log-level", "debug"}, env)
	testenv.Eventually(t, 10*time.Second, func() bool { return strings.Contains(stderr.String(), "NATS connected") },
		"--log-level debug after the subject lost to HOMELAB_DEPLOY_LOG_LEVEL=error; stderr:\n%s", stderr)
}

// Colours only on a terminal, with --log-format auto and without NO_COLOR.
func TestColours(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		format, noColor string
		want            bool
	}{
		{"auto", "", true},
		{"auto", "1", false},
		{"auto", "0", false}, // any non-empty value, as no-color.org says
		{"text", "", false},
		{"json", "", false},
	} {
		var stderr strings.Builder
		r := New(Env{Stderr: &stderr, Terminal: func(io.Writer) bool { return true }, Getenv: func(k string) string {
			if k == "NO_COLOR" {
				return c.noColor
			}
			return ""
		}})
		if err := r.Command.Parse([]string{"--log-format", c.format, "keygen"}); err != nil {
			t.Fatal(err)
		}
		if err := r.setupLogging(); err != nil {
			t.Fatal(err)
		}
		r.Logger().Warn("hello")
		line := r.color(colRed, "failed")
		has := strings.Contains(stderr.String()+line, "\x1b[")
		if has != c.want {
			t.Errorf("--log-format %s NO_COLOR=%q: colours %v, want %v; log %q, progress %q", c.format, c.noColor, has, c.want, stderr.String(), line)
		}
	}
}

// Every networked command reports an unusable seed file the same way:
// exit 2, before dialling.
func TestSeedFileProblemsAreUsageErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cred := testenv.NewCred(t, dir, "u", protocol.Permissions{})
	pub := filepath.Join(dir, "u.pub")
	if err := os.WriteFile(pub, []byte(cred.Public+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	flake := []string{"--hostname", "h", "--tier", "test", "--flake-url", "git+file:///x"}
	cfg := filepath.Join(dir, "builder.yaml")
	if err := os.WriteFile(cfg, []byte("repos:\n  fleet:\n    url: git+file:///srv/fleet\n    default_branch: main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Port 1: were anything dialled, the error would be a connection error.
	conn := []string{"--nats-url", "127.0.0.1:1", "--nkey-file", pub}
	for _, args := range [][]string{
		{"deploy", "deploy.test.h1"},
		{"list-hosts"},
		{"build", "fleet", "--all"},
		{"mcp"},
		append([]string{"listener"}, flake...),
		{"builder", "--config", cfg},
	} {
		env, _, stderr := testEnv(nil)
		code := Run(context.Background(), append(args, conn...), env)
		msg := stderr.String()
		if code != ExitUsage || !strings.Contains(msg, "is a public key (U") || !strings.Contains(msg, "starts with SU") || strings.Contains(msg, "chmod") || strings.Contains(msg, "%!") {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 saying it is a public key", args[0], code, msg)
		}
	}
}
