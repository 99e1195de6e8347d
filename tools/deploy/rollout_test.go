package deploy_test

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
)

// failFor is a nixos-rebuild stand-in that fails for the hosts whose flake
// attribute matches the pattern, and succeeds for the others.
func failFor(pattern string) string {
	return `case "$*" in *` + pattern + `*) echo "error: broken for this host" >&2; exit 1;; esac; echo activated`
}

var rolloutHosts = []host{{"r1", "test", "canary"}, {"r2", "test", "canary"}, {"r3", "test", "canary"}, {"r4", "test", ""}}

func rolloutOpts() deploy.Options {
	return deploy.Options{Timeout: 60 * time.Second, Discover: listhosts.Options{Quiet: 200 * time.Millisecond}}
}

// hostsRun returns the hosts whose nixos-rebuild ran, in call order.
func hostsRun(calls []string) []string {
	var out []string
	for _, c := range calls {
		if i := strings.LastIndexByte(c, '#'); i >= 0 {
			out = append(out, strings.Fields(c[i+1:])[0])
		}
	}
	return out
}

// The first batch fails: no later host runs nixos-rebuild, each is
// reported skipped, and the result says where the rollout stopped.
func TestRolloutHaltsOnFailure(t *testing.T) {
	t.Parallel()
	f := startFleet(t, rolloutHosts, failFor("#r1"), time.Minute)
	req := deploy.Request{Subject: "deploy.test.role.canary", Action: "switch", Revision: "main"}
	res, err := deploy.Rollout(context.Background(), f.deployer, req, deploy.Staging{Batch: "1"}, rolloutOpts(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if ran := hostsRun(f.calls()); !slices.Equal(ran, []string{"r1"}) {
		t.Fatalf("nixos-rebuild ran on %v, want only r1", ran)
	}
	got := map[string]protocol.Status{}
	for _, h := range res.Hosts {
		got[h.Hostname] = h.Status
	}
	want := map[string]protocol.Status{"r1": protocol.StatusFailed, "r2": deploy.StatusSkipped, "r3": deploy.StatusSkipped}
	if res.Success || !maps.Equal(got, want) || res.Failed != 1 || res.IsError() != true {
		t.Fatalf("result %+v, hosts %v, want %v", res, got, want)
	}
	for _, s := range []string{"halted after batch 1/3", "1 host(s) failed", "skipped: r2, r3"} {
		if !strings.Contains(res.Message, s) {
			t.Errorf("message %q does not say %q", res.Message, s)
		}
	}
}

// Batches of two with a canary: the canary runs alone first, then the rest
// two at a time, and every member of the role (not r4) completes.
func TestRolloutCanaryThenBatches(t *testing.T) {
	t.Parallel()
	f := startFleet(t, rolloutHosts, failFor("#nohost"), time.Minute)
	req := deploy.Request{Subject: "deploy.test.role.canary", Action: "boot", Revision: "main"}
	res, err := deploy.Rollout(context.Background(), f.deployer, req, deploy.Staging{Batch: "50%", Canary: "r3"}, rolloutOpts(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ran := hostsRun(f.calls())
	if len(ran) != 3 || ran[0] != "r3" || slices.Contains(ran, "r4") {
		t.Fatalf("nixos-rebuild ran on %v, want r3 first, then r1 and r2", ran)
	}
	if !res.Success || res.Completed != 3 || !strings.Contains(res.Message, "completed on 3/3 host(s) in 2 batch(es)") {
		t.Fatalf("result %+v", res)
	}
}

// A tolerated failure does not halt the rollout.
func TestRolloutToleratesMaxFailures(t *testing.T) {
	t.Parallel()
	f := startFleet(t, rolloutHosts, failFor("#r1"), time.Minute)
	req := deploy.Request{Subject: "deploy.test.all", Action: "switch", Revision: "main"}
	res, err := deploy.Rollout(context.Background(), f.deployer, req, deploy.Staging{Batch: "1", MaxFailures: 1}, rolloutOpts(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if ran := hostsRun(f.calls()); len(ran) != 4 {
		t.Fatalf("nixos-rebuild ran on %v, want all four hosts", ran)
	}
	if res.Success || res.Failed != 1 || res.Completed != 3 {
		t.Fatalf("result %+v", res)
	}
}

func TestParseBatch(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		n    int
		want int
	}{{"1", 5, 1}, {"2", 5, 2}, {"25%", 5, 2}, {"100%", 5, 5}, {"1%", 5, 1}, {"10", 3, 10}} {
		if got, err := deploy.ParseBatch(c.in, c.n); err != nil || got != c.want {
			t.Errorf("ParseBatch(%q, %d) = %d, %v; want %d", c.in, c.n, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "0", "-1", "+2", "02", "101%", "x", "2.5", "1e3", "%", "99999999999999999999"} {
		if got, err := deploy.ParseBatch(bad, 4); err == nil {
			t.Errorf("ParseBatch(%q) = %d, want an error", bad, got)
		}
	}
}

func FuzzParseBatch(f *testing.F) {
	for _, s := range []string{"1", "25%", "100%", "0", "x%", "+1"} {
		f.Add(s, 10)
	}
	f.Fuzz(func(t *testing.T, s string, n int) {
		if n < 0 || n > 100000 {
			return
		}
		got, err := deploy.ParseBatch(s, n)
		if err == nil && got < 1 {
			t.Fatalf("ParseBatch(%q, %d) = %d", s, n, got)
		}
	})
}
