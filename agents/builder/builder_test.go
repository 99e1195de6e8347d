package builder_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/agents/builder"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv/buildtest"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/build"
)

func TestBuilderRefusesABadConfig(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "builder.yaml")
	if err := os.WriteFile(p, []byte("repos:\n  a.b:\n    url: git+file:///x\n    default_branch: main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := builder.Run(context.Background(), builder.Config{ConfigFile: p, Timeout: time.Minute, NATSURL: "nats://127.0.0.1:1", NKeyFile: "/nonexistent"})
	if err == nil || !strings.Contains(err.Error(), p+":2:") {
		t.Fatalf("Run: %v, want the config error naming %s:2", err, p)
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	return string(b)
}

func TestBuilderDaemonBuildsServesMetricsAndDrains(t *testing.T) {
	t.Parallel()
	promtool := testenv.RequireBinary(t, "promtool")
	fix := buildtest.New(t)
	n := testenv.StartNATS(t,
		testenv.User{Name: "builder", Permissions: testenv.Ptr(protocol.BuilderPermissions([]string{"fleet", "other"}))},
		testenv.User{Name: "client", Permissions: testenv.Ptr(protocol.BuildClientPermissions([]string{"fleet"}))},
	)
	ready := make(chan *builder.Builder, 1)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	errc := make(chan error, 1)
	go func() {
		errc <- builder.Run(ctx, builder.Config{
			NATSURL: n.URL, NKeyFile: n.Cred("builder").SeedFile, ConfigFile: fix.WriteConfig(t, "fleet"),
			Timeout: 3 * time.Minute, MaxParallel: 2, MetricsEnabled: true, MetricsAddr: "127.0.0.1:0",
			ShutdownGrace: 500 * time.Millisecond, Nix: fix.Nix, NixEnv: fix.Env,
			Ready: func(b *builder.Builder) { ready <- b },
		})
	}()
	var b *builder.Builder
	select {
	case b = <-ready:
	case err := <-errc:
		t.Fatalf("builder stopped: %v", err)
	}
	if got := strings.Join(b.Subjects, " "); got != "build.fleet.* build.other.*" {
		t.Fatalf("subscribed to %s, want exactly one build.<repo>.* per repo", got)
	}
	base := "http://" + b.MetricsAddr()
	if h := scrape(t, base+"/health"); strings.TrimSpace(h) != "ok" {
		t.Fatalf("/health: %q", h)
	}

	client := n.Connect(t, "client")
	res, err := build.Send(context.Background(), client, build.Request{Repo: "fleet", Target: "good"}, build.Options{}, nil)
	if err != nil || !res.Success {
		t.Fatalf("build good: %v %s", err, res.Summary())
	}
	text := scrape(t, base+"/metrics")
	for _, want := range []string{
		`homelab_deploy_builds_total{repo="fleet",status="success"} 1`,
		`homelab_deploy_builds_total{repo="other",status="failure"} 0`,
		`homelab_deploy_build_host_total{host="good",repo="fleet",status="success"} 1`,
		`homelab_deploy_build_duration_seconds_count{host="good",repo="fleet"} 1`,
		`homelab_deploy_build_last_timestamp{repo="fleet"}`,
		`homelab_deploy_build_last_success_timestamp{repo="fleet"}`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	// SIGTERM during a build: after the grace period the build is killed
	// and reported failed, and the daemon returns cleanly.
	done := make(chan build.Result, 1)
	go func() {
		r, _ := build.Send(context.Background(), client, build.Request{Repo: "fleet", Target: "slow"}, build.Options{}, nil)
		done <- r
	}()
	testenv.Eventually(t, time.Minute, func() bool { return fix.SlowPID() != 0 }, "the slow build never started")
	stop()
	if err := <-errc; err != nil {
		t.Fatalf("Run after SIGTERM: %v", err)
	}
	r := <-done
	if r.Status != protocol.StatusFailed || len(r.Results) != 1 || !strings.Contains(r.Results[0].Error, "shut down") {
		t.Fatalf("build cut short by shutdown: %s %q %+v", r.Status, r.Message, r.Results)
	}
	pid := fix.SlowPID()
	testenv.Eventually(t, 10*time.Second, func() bool { return !buildtest.Alive(pid) }, "the slow builder (pid %d) outlived the builder's shutdown", pid)
}
