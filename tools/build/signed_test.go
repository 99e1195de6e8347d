package build_test

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv/buildtest"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/build"
)

// auditLines returns the audit lines in a JSON log, decoded.
func auditLines(t *testing.T, log string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if m["msg"] == "audit" {
			out = append(out, m)
		}
	}
	return out
}

// A builder that trusts one client's key refuses the signed requests of
// another client and unsigned requests (unauthorized, nix never runs), and
// builds for the trusted client; each request is one audit line naming
// its caller.
func TestBuilderWithTrustedDeployers(t *testing.T) {
	t.Parallel()
	fix := buildtest.New(t)
	cfg, err := build.ParseConfig("builder.yaml", []byte(fix.ConfigYAML(repo)))
	if err != nil {
		t.Fatal(err)
	}
	clientPerms := testenv.Ptr(protocol.BuildClientPermissions([]string{repo}))
	n := testenv.StartNATS(t,
		testenv.User{Name: "builder", Permissions: testenv.Ptr(protocol.BuilderPermissions(cfg.Names()))},
		testenv.User{Name: "client", Permissions: clientPerms},
		testenv.User{Name: "ci", Permissions: clientPerms},
	)
	trusted := n.Cred("ci").Public
	log := &testenv.Buffer{}
	srv := buildtest.Serve(t, n.Connect(t, "builder"), build.ServerConfig{
		Config: cfg, Timeout: 2 * time.Minute, Nix: fix.Nix, Env: fix.Env,
		Trusted: protocol.TrustedKeys{trusted: {}}, Logger: slog.New(slog.NewJSONHandler(log, nil)),
	})
	ctx := context.Background()
	req := build.Request{Repo: repo, Target: buildtest.HostGood}

	client := n.Connect(t, "client")
	res, err := build.Send(ctx, client, req, build.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != protocol.StatusRejected || res.ErrorCode != protocol.ErrUnauthorized || !strings.Contains(res.Message, client.PublicKey()) {
		t.Fatalf("untrusted client: %s %s %q, want rejected/unauthorized naming its key", res.Status, res.ErrorCode, res.Message)
	}
	// Unsigned, straight into the serve half: refused the same way.
	unsigned := rawRequest(t, &rig{client: client, srv: srv}, "build.fleet.good", map[string]any{"repo": repo, "target": buildtest.HostGood})
	if unsigned.Status != protocol.StatusRejected || unsigned.ErrorCode != protocol.ErrUnauthorized || !strings.Contains(unsigned.Message, "not signed") {
		t.Fatalf("unsigned request: %s %s %q, want rejected/unauthorized", unsigned.Status, unsigned.ErrorCode, unsigned.Message)
	}
	if calls := fix.NixCalls(); len(calls) != 0 {
		t.Fatalf("nix ran for refused requests: %q", calls)
	}

	res, err = build.Send(ctx, n.Connect(t, "ci"), req, build.Options{}, nil)
	if err != nil || res.Status != protocol.StatusCompleted {
		t.Fatalf("trusted client: %+v, %v; want completed", res, err)
	}
	if len(fix.NixCalls()) == 0 {
		t.Fatal("nix did not run for the trusted client")
	}

	a := auditLines(t, log.String())
	if len(a) != 3 {
		t.Fatalf("audit lines %v, want three", a)
	}
	want := []map[string]any{
		{"caller": "unsigned", "claimed_key": client.PublicKey(), "status": "rejected", "error_code": "unauthorized"},
		{"caller": "unsigned", "status": "rejected", "error_code": "unauthorized"},
		{"caller": trusted, "status": "completed", "error_code": "", "revision": buildtest.DefaultBranch},
	}
	for i, w := range want {
		w["subject"], w["action"] = "build.fleet.good", "build"
		for k, v := range w {
			if a[i][k] != v {
				t.Errorf("audit line %d: %s = %v, want %v (line %v)", i, k, a[i][k], v, a[i])
			}
		}
		if id, _ := a[i]["id"].(string); id == "" {
			t.Errorf("audit line %d has no id: %v", i, a[i])
		}
	}
}
