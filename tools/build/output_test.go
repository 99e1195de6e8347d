package build_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv/buildtest"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/build"
)

// startLoggedRig is startRig with the builder's log kept, for one repo
// whose URL is url.
func startLoggedRig(t *testing.T, fix *buildtest.Fixture, url string) (*rig, *testenv.Buffer) {
	t.Helper()
	yaml := strings.Replace(fix.ConfigYAML(repo), "url: \""+fix.URL+"\"", "url: \""+url+"\"", 1)
	cfg, err := build.ParseConfig("builder.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t,
		testenv.User{Name: "builder", Permissions: testenv.Ptr(protocol.BuilderPermissions(cfg.Names()))},
		testenv.User{Name: "client", Permissions: testenv.Ptr(protocol.BuildClientPermissions([]string{repo}))},
	)
	var log testenv.Buffer
	srv := buildtest.Serve(t, n.Connect(t, "builder"), build.ServerConfig{
		Config: cfg, Timeout: time.Minute, MaxParallel: 2, Nix: fix.Nix, Env: fix.Env,
		Logger: slog.New(slog.NewTextHandler(&log, nil)),
	})
	return &rig{fix: fix, nats: n, client: n.Connect(t, "client"), srv: srv}, &log
}

// Each host's nix build output reaches the client as output events for
// that host, before the host's own result, and the builder's log holds
// every line.
func TestBuildStreamsNixOutputPerHost(t *testing.T) {
	t.Parallel()
	fix := buildtest.New(t)
	rg, log := startLoggedRig(t, fix, fix.URL)
	res, events := rg.sendAll(t, build.Request{Repo: repo, Target: buildtest.HostBad})
	if res.Status != protocol.StatusFailed {
		t.Fatalf("result %s: %s", res.Status, res.Summary())
	}
	var sawLine bool
	for _, e := range events {
		if e.Status == protocol.StatusOutput {
			if e.Host != buildtest.HostBad || e.Running <= 0 {
				t.Errorf("output event %+v: want host bad and a running time", e)
			}
			sawLine = sawLine || slices.ContainsFunc(e.Lines, func(l string) bool { return strings.Contains(l, buildtest.BadMessage) })
			continue
		}
		if e.Host == buildtest.HostBad && !sawLine {
			t.Errorf("bad's result came before its output line %q: %+v", buildtest.BadMessage, events)
		}
	}
	if !sawLine {
		t.Errorf("no output event carried %q: %+v", buildtest.BadMessage, events)
	}
	if !strings.Contains(log.String(), `msg="nix build output"`) || !strings.Contains(log.String(), "host=bad") ||
		!strings.Contains(log.String(), "frobnicator of host bad is misaligned") {
		t.Errorf("the builder's log lacks the output lines:\n%s", log.String())
	}
}

// A credential in a repository URL stays on the builder: Nix quotes the
// URL in its error, and neither the result nor the builder's log shows
// the secret.
func TestBuildRedactsRepositoryCredentials(t *testing.T) {
	t.Parallel()
	fix := buildtest.New(t)
	secretURL := strings.Replace(fix.URL, "git+file://", "git+file://user:s3cret@", 1) + "?access_token=tok123"
	rg, log := startLoggedRig(t, fix, secretURL)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := build.Send(ctx, rg.client, build.Request{Repo: repo, Target: "all"}, build.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != protocol.StatusFailed || !strings.Contains(res.Error, "***") {
		t.Fatalf("result %s, error %q: want the listing to fail with Nix's error, redacted", res.Status, res.Error)
	}
	for what, text := range map[string]string{"result": res.Summary() + res.Error + res.Message, "builder log": log.String()} {
		for _, secret := range []string{"s3cret", "tok123"} {
			if strings.Contains(text, secret) {
				t.Errorf("%s shows %q:\n%s", what, secret, text)
			}
		}
	}
}
