package build_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv/buildtest"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/build"
)

const repo = "fleet"

type rig struct {
	fix    *buildtest.Fixture
	nats   *testenv.NATS
	client *protocol.Conn
	srv    *build.Server
	reg    *prometheus.Registry
}

// startRig runs a builder serve half for the fixture on an embedded NATS
// server, with SPEC's builder and build-client permissions.
func startRig(t *testing.T, hostTimeout time.Duration, maxParallel int) *rig {
	t.Helper()
	fix := buildtest.New(t)
	cfg, err := build.ParseConfig("builder.yaml", []byte(fix.ConfigYAML(repo)))
	if err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t,
		testenv.User{Name: "builder", Permissions: testenv.Ptr(protocol.BuilderPermissions(cfg.Names()))},
		testenv.User{Name: "client", Permissions: testenv.Ptr(protocol.BuildClientPermissions([]string{repo, "other", "nope"}))},
	)
	reg := prometheus.NewRegistry()
	srv := buildtest.Serve(t, n.Connect(t, "builder"), build.ServerConfig{
		Config: cfg, Timeout: hostTimeout, MaxParallel: maxParallel, Nix: fix.Nix, Env: fix.Env,
		Metrics: build.NewMetrics(reg, cfg.Names()),
	})
	return &rig{fix: fix, nats: n, client: n.Connect(t, "client"), srv: srv, reg: reg}
}

type recorder struct {
	mu     sync.Mutex
	events []tools.Event
}

func (r *recorder) progress(e tools.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) all() []tools.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]tools.Event(nil), r.events...)
}

// send sends req and returns the result and the status events (output
// events are left out; sendAll keeps them).
func (rg *rig) send(t *testing.T, req build.Request) (build.Result, []tools.Event) {
	t.Helper()
	res, all := rg.sendAll(t, req)
	var events []tools.Event
	for _, e := range all {
		if e.Status != protocol.StatusOutput {
			events = append(events, e)
		}
	}
	return res, events
}

func (rg *rig) sendAll(t *testing.T, req build.Request) (build.Result, []tools.Event) {
	t.Helper()
	var rec recorder
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := build.Send(ctx, rg.client, req, build.Options{}, rec.progress)
	if err != nil {
		t.Fatalf("Send(%+v): %v", req, err)
	}
	return res, rec.all()
}

func TestBuildAllHostsWithRealNix(t *testing.T) {
	t.Parallel()
	rg := startRig(t, 8*time.Second, 3)
	res, events := rg.send(t, build.Request{Repo: repo, Target: "all"})

	if res.Status != protocol.StatusFailed || res.Success || !res.IsError() {
		t.Fatalf("status %s success %v, want failed: %s", res.Status, res.Success, res.Summary())
	}
	if res.Succeeded != 1 || res.Failed != 2 || res.HostsTotal != 3 {
		t.Fatalf("succeeded %d failed %d total %d, want 1, 2, 3", res.Succeeded, res.Failed, res.HostsTotal)
	}
	if want := "built 1/3 hosts; failed: bad (build failed), slow (timed out)"; res.Message != want {
		t.Errorf("message %q, want %q", res.Message, want)
	}
	if res.Branch != buildtest.DefaultBranch {
		t.Errorf("branch %q, want the repo default %q", res.Branch, buildtest.DefaultBranch)
	}
	byHost := map[string]protocol.BuildHostResult{}
	var names []string
	for _, r := range res.Results {
		byHost[r.Host] = r
		names = append(names, r.Host)
	}
	if got := strings.Join(names, ","); got != "bad,good,slow" {
		t.Fatalf("results for %s, want bad,good,slow", got)
	}
	if g := byHost["good"]; !g.Success || !strings.HasPrefix(g.OutPath, "/nix/store/") || g.DurationSeconds < 1 {
		t.Errorf("good: %+v, want success with a store path after at least 1s", g)
	}
	if b := byHost["bad"]; b.Success || b.ErrorCode != protocol.ErrBuildFailed || !strings.Contains(b.Error, buildtest.BadMessage) {
		t.Errorf("bad: %+v, want build_failed carrying Nix's error %q", b, buildtest.BadMessage)
	}
	if s := byHost["slow"]; s.Success || s.ErrorCode != protocol.ErrTimeout || !strings.Contains(s.Error, "timeout") {
		t.Errorf("slow: %+v, want timeout", s)
	}

	// One started event, then one per host in order of completion (bad
	// fails at once, good takes a second, slow runs into the timeout).
	if len(events) != 4 || events[0].Status != protocol.StatusStarted || events[0].Total != 3 {
		t.Fatalf("events %+v, want started (total 3) then three hosts", events)
	}
	wantOrder := []string{"bad", "good", "slow"}
	for i, e := range events[1:] {
		if e.Host != wantOrder[i] || e.Done != i+1 || e.Total != 3 {
			t.Errorf("event %d: host %s done %d/%d, want %s %d/3", i+1, e.Host, e.Done, e.Total, wantOrder[i], i+1)
		}
	}
	if e := events[1]; e.Status != protocol.StatusFailed || !strings.Contains(e.Message, "frobnicator") {
		t.Errorf("bad's event %+v should be failed and quote Nix's error", e)
	}
	if e := events[2]; e.Status != protocol.StatusCompleted || e.Duration < time.Second {
		t.Errorf("good's event %+v should be completed with its duration", e)
	}
	if e := events[3]; e.Error != protocol.ErrTimeout {
		t.Errorf("slow's event %+v should carry the timeout code", e)
	}

	// The slow builder was killed with nix build's process group.
	pid := rg.fix.SlowPID()
	if pid == 0 {
		t.Fatal("the slow host's builder never started")
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return !buildtest.Alive(pid) }, "the slow host's builder (pid %d) is still running after its timeout", pid)

	// Nix ran once to list the hosts and once per host.
	calls := rg.fix.NixCalls()
	if len(calls) != 4 || !strings.HasPrefix(calls[0], "eval --json --refresh "+rg.fix.URL+"?ref=main#nixosConfigurations") {
		t.Errorf("nix calls %q, want one eval then three builds", calls)
	}
	for _, c := range calls[1:] {
		if !strings.HasPrefix(c, "build --no-link --json "+rg.fix.URL+"?ref=main#nixosConfigurations.") || !strings.HasSuffix(c, ".config.system.build.toplevel") {
			t.Errorf("nix call %q is not a nix build of a toplevel", c)
		}
	}

	// Metrics moved per repo and host.
	m := metricsOf(t, rg.reg)
	if m["homelab_deploy_builds_total{repo=fleet,status=failure}"] != 1 || m["homelab_deploy_builds_total{repo=fleet,status=success}"] != 0 {
		t.Errorf("builds_total: %v", m)
	}
	for host, st := range map[string]string{"good": "success", "bad": "failure", "slow": "failure"} {
		if m["homelab_deploy_build_host_total{host="+host+",repo=fleet,status="+st+"}"] != 1 {
			t.Errorf("build_host_total for %s/%s missing: %v", host, st, m)
		}
		if m["homelab_deploy_build_duration_seconds_count{host="+host+",repo=fleet}"] != 1 {
			t.Errorf("build_duration_seconds for %s not observed once", host)
		}
	}
	if m["homelab_deploy_build_last_failure_timestamp{repo=fleet}"] < float64(time.Now().Add(-time.Hour).Unix()) ||
		m["homelab_deploy_build_last_timestamp{repo=fleet}"] == 0 {
		t.Errorf("timestamps not set: %v", m)
	}
	if _, ok := m["homelab_deploy_build_last_success_timestamp{repo=fleet}"]; ok {
		t.Errorf("last_success_timestamp set although no build succeeded")
	}
}

// metricsOf flattens a registry into "name{k=v,...}" -> value.
func metricsOf(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.Counter != nil:
				out[mf.GetName()+key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[mf.GetName()+key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[mf.GetName()+"_count"+key] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

func TestBuildOneHostAndOtherBranch(t *testing.T) {
	t.Parallel()
	rg := startRig(t, 2*time.Minute, 2)

	res, events := rg.send(t, build.Request{Repo: repo, Target: "good"})
	if res.Status != protocol.StatusCompleted || !res.Success || res.Message != "built 1/1 hosts successfully" {
		t.Fatalf("good: %s %q", res.Status, res.Message)
	}
	if len(res.Results) != 1 || res.Results[0].Host != "good" || len(events) != 2 || events[1].Done != 1 || events[1].Total != 1 {
		t.Fatalf("results %+v events %+v, want just good", res.Results, events)
	}
	if _, err := os.Stat(res.Results[0].OutPath); err != nil {
		t.Errorf("the built system is not in the store: %v", err)
	}

	// extra exists only on the feature branch.
	res, _ = rg.send(t, build.Request{Repo: repo, Target: "extra"})
	if res.Status != protocol.StatusRejected || res.ErrorCode != protocol.ErrUnknownHost || !strings.Contains(res.Message, "known hosts: bad, good, slow") {
		t.Fatalf("extra on main: %s %s %q, want rejected unknown_host listing the hosts", res.Status, res.ErrorCode, res.Message)
	}
	res, _ = rg.send(t, build.Request{Repo: repo, Target: "extra", Branch: buildtest.Branch})
	if res.Status != protocol.StatusCompleted || res.Branch != buildtest.Branch || res.Succeeded != 1 {
		t.Fatalf("extra on %s: %s %q", buildtest.Branch, res.Status, res.Message)
	}
	calls := rg.fix.NixCalls()
	if last := calls[len(calls)-1]; !strings.Contains(last, "?ref="+buildtest.Branch+"#nixosConfigurations.extra.") {
		t.Errorf("last nix call %q did not build the feature branch", last)
	}
}

func TestBuildRejectsBadRequestsBeforeNixRuns(t *testing.T) {
	t.Parallel()
	rg := startRig(t, 2*time.Minute, 2)

	// Nobody builds "nope": the request comes back at once.
	res, _ := rg.send(t, build.Request{Repo: "nope", Target: "all"})
	if res.Status != protocol.StatusFailed || !strings.Contains(res.Message, "no builder answered for repo nope") {
		t.Fatalf("unknown repo over NATS: %s %q", res.Status, res.Message)
	}
	if res.TotalDurationSeconds > 30 {
		t.Errorf("no-responders took %.1fs", res.TotalDurationSeconds)
	}

	// Hostile branches are input errors for the request half...
	hostile := []string{"-x", "main#other", "a..b", "x?dir=/", strings.Repeat("b", 300), "main branch", "$(reboot)"}
	for _, b := range hostile {
		_, err := build.Send(context.Background(), rg.client, build.Request{Repo: repo, Target: "all", Branch: b}, build.Options{}, nil)
		var ie *tools.InputError
		if !errors.As(err, &ie) {
			t.Errorf("Send with branch %q: %v, want an input error", b, err)
		}
	}
	// ...and rejected by the builder when sent raw.
	cases := map[string]struct {
		subject string
		body    map[string]any
		code    protocol.ErrorCode
		msg     string
	}{
		"unknown repo":     {"build.nope.all", map[string]any{"repo": "nope", "target": "all"}, protocol.ErrUnknownRepo, `unknown repo "nope"; this builder builds: fleet, other`},
		"subject mismatch": {"build.fleet.all", map[string]any{"repo": "other", "target": "all"}, protocol.ErrInvalidRequest, "must be sent on build.other.all"},
		"bad target":       {"build.fleet.a b", map[string]any{"repo": repo, "target": "a b"}, protocol.ErrInvalidRequest, "target"},
		"unknown field":    {"build.fleet.all", map[string]any{"repo": repo, "target": "all", "attr": "x"}, protocol.ErrInvalidRequest, "unknown field"},
	}
	for _, b := range hostile {
		cases["branch "+b] = struct {
			subject string
			body    map[string]any
			code    protocol.ErrorCode
			msg     string
		}{"build.fleet.all", map[string]any{"repo": repo, "target": "all", "branch": b}, protocol.ErrInvalidRevision, "branch"}
	}
	for name, c := range cases {
		got := rawRequest(t, rg, c.subject, c.body)
		if got.Status != protocol.StatusRejected || got.ErrorCode != c.code || !strings.Contains(got.Message, c.msg) {
			t.Errorf("%s: %s %s %q, want rejected %s mentioning %q", name, got.Status, got.ErrorCode, got.Message, c.code, c.msg)
		}
	}
	if calls := rg.fix.NixCalls(); len(calls) != 0 {
		t.Fatalf("nix ran for rejected requests: %q", calls)
	}
}

// rawRequest hands body to the serve half as if it arrived on subject and
// returns the builder's first answer.
func rawRequest(t *testing.T, rg *rig, subject string, body map[string]any) protocol.BuildResponse {
	t.Helper()
	id := protocol.NewID()
	replyTo := protocol.BuildResponsesPrefix + id
	body["id"], body["reply_to"] = id, replyTo
	sub, err := rg.client.SubscribeSync(protocol.BoundReply(replyTo, protocol.BuilderToken))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := rg.client.Flush(); err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(body)
	rg.srv.Handle(subject, data)
	m, err := sub.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("no answer to %s %s: %v", subject, data, err)
	}
	var resp protocol.BuildResponse
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestSecondBuildOfARepoIsRejectedAndReplaysAreRefused(t *testing.T) {
	t.Parallel()
	rg := startRig(t, 6*time.Second, 2)
	done := make(chan build.Result, 1)
	go func() {
		res, _ := build.Send(context.Background(), rg.client, build.Request{Repo: repo, Target: "slow"}, build.Options{}, nil)
		done <- res
	}()
	testenv.Eventually(t, time.Minute, rg.srv.Busy, "the first build never started")
	second := rawRequest(t, rg, "build.fleet.good", map[string]any{"repo": repo, "target": "good"})
	if second.Status != protocol.StatusRejected || second.ErrorCode != protocol.ErrAlreadyRunning {
		t.Fatalf("second build: %s %s %q, want rejected already_running", second.Status, second.ErrorCode, second.Message)
	}
	first := <-done
	if first.Status != protocol.StatusFailed || first.Results[0].ErrorCode != protocol.ErrTimeout {
		t.Fatalf("first build: %s %q", first.Status, first.Message)
	}

	// The same request id twice: the second is refused.
	id := protocol.NewID()
	body2, _ := json.Marshal(protocol.BuildRequest{ID: id, Repo: repo, Target: "good", ReplyTo: protocol.BuildResponsesPrefix + id})
	sub, _ := rg.client.SubscribeSync(protocol.BoundReply(protocol.BuildResponsesPrefix+id, protocol.BuilderToken))
	_ = rg.client.Flush()
	rg.srv.Handle("build.fleet.good", body2)
	rg.srv.Handle("build.fleet.good", body2)
	var replay bool
	for !replay {
		m, err := sub.NextMsg(2 * time.Minute)
		if err != nil {
			t.Fatal("no replay rejection")
		}
		var r protocol.BuildResponse
		_ = json.Unmarshal(m.Data, &r)
		if r.Status == protocol.StatusRejected {
			if !strings.Contains(r.Message, "already seen") {
				t.Fatalf("rejection %q is not about the replay", r.Message)
			}
			replay = true
		}
	}
}
