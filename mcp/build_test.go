package mcpserver_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv/buildtest"
	mcpserver "github.com/homelab-deploy/homelab-deploy/mcp"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/build"
	"github.com/homelab-deploy/homelab-deploy/tools/registry"
)

// TestBuildOverMCP runs the build tool through the MCP server against a
// builder serve half that runs real nix on the builder's flake fixture.
func TestBuildOverMCP(t *testing.T) {
	fix := buildtest.New(t) // skips without Nix, except in CI
	const repo = "fleet"
	cfg, err := build.ParseConfig("builder.yaml", []byte(fix.ConfigYAML(repo)))
	if err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t,
		testenv.User{Name: "builder", Permissions: testenv.Ptr(protocol.BuilderPermissions(cfg.Names()))},
		testenv.User{Name: "client", Permissions: testenv.Ptr(protocol.BuildClientPermissions(cfg.Names()))},
		testenv.User{Name: "mcp", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())},
	)
	buildtest.Serve(t, n.Connect(t, "builder"), build.ServerConfig{Config: cfg, Timeout: 5 * time.Minute, Nix: fix.Nix, Env: fix.Env})

	deps := tools.Deps{Conns: map[string]*protocol.Conn{"": n.Connect(t, "mcp"), "build": n.Connect(t, "client")}}
	var plog progressLog
	cs := session(t, mcpserver.New(registry.New(), tools.GatesOn("builds"), deps, "test"), &plog)
	if names := toolNames(t, cs); !slices.Contains(names, "build") {
		t.Fatalf("build not listed with the builds gate: %v", names)
	}

	res := call(t, cs, "build", map[string]any{"repo": repo, "target": buildtest.HostGood}, "b1")
	var r build.Result
	remarshal(t, res.StructuredContent, &r)
	if res.IsError || !r.Success || r.Succeeded != 1 || len(r.Results) != 1 || r.Results[0].Host != buildtest.HostGood {
		t.Fatalf("build good: isError=%v %s\n%+v", res.IsError, text(res), r)
	}
	eventually(t, "a notification for the finished host", func() bool {
		return slices.ContainsFunc(plog.get(), func(p *mcp.ProgressNotificationParams) bool { return strings.HasPrefix(p.Message, "good: completed (") })
	})
	last := plog.get()[len(plog.get())-1]
	if last.Progress != 1 || last.Total != 1 {
		t.Errorf("final build progress %v/%v, want 1/1", last.Progress, last.Total)
	}

	res = call(t, cs, "build", map[string]any{"repo": repo, "target": buildtest.HostBad}, nil)
	remarshal(t, res.StructuredContent, &r)
	if !res.IsError || r.Success || r.Failed != 1 || !strings.Contains(text(res), "bad: FAILED") {
		t.Errorf("build bad: isError=%v %s", res.IsError, text(res))
	}

	for _, args := range []map[string]any{
		{"repo": "fleet.>"}, {"repo": repo, "target": "x.y"}, {"repo": repo, "target": "*"},
		{"repo": repo, "branch": "--upload-pack=x"}, {"target": buildtest.HostGood},
	} {
		res := call(t, cs, "build", args, nil)
		if !res.IsError || !strings.Contains(text(res), "invalid input for build") {
			t.Errorf("build %v: %s", args, text(res))
		}
	}
}
