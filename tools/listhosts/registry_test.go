package listhosts_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/fleet"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
)

// registryFleet is a JetStream server on which web1 (test, web), web2
// (test, web, stopped cleanly) and db1 (prod, db) are registered, and
// each of them also answers discovery.
func registryFleet(t *testing.T, jetstream bool) *testenv.NATS {
	t.Helper()
	users := []testenv.User{
		{Name: "web1", Permissions: testenv.ListenerPerms("test", "web1", "web")},
		{Name: "web2", Permissions: testenv.ListenerPerms("test", "web2", "web")},
		{Name: "db1", Permissions: testenv.ListenerPerms("prod", "db1", "db")},
		{Name: "deployer", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())},
		{Name: "admin", Permissions: testenv.Ptr(protocol.AdminDeployerPermissions())},
	}
	var n *testenv.NATS
	if jetstream {
		n = testenv.StartNATSWith(t, testenv.JetStream(t), users...)
	} else {
		n = testenv.StartNATS(t, users...)
	}
	for _, h := range []struct{ name, tier, role string }{{"web1", "test", "web"}, {"web2", "test", "web"}, {"db1", "prod", "db"}} {
		responder(t, n, h.name, h.tier, h.role)
		if !jetstream {
			continue
		}
		w, err := fleet.NewWriter(fleet.WriterConfig{Conn: n.Connect(t, h.name), Hostname: h.name, Tier: h.tier, Role: h.role,
			Subjects: []string{protocol.DeploySubject(h.tier, h.name)}, Version: "v2", Interval: time.Hour, System: fleet.SystemPaths{Root: t.TempDir()}})
		if err != nil {
			t.Fatal(err)
		}
		w.Start(t.Context())
		if h.name == "web2" {
			if err := w.Stop(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
	}
	return n
}

// call runs list_hosts through the registry as an adapter would.
func call(t *testing.T, conn *protocol.Conn, in listhosts.Input) listhosts.Result {
	t.Helper()
	var r tools.Registry
	r.Register(listhosts.Tool())
	in.QuietSeconds = 0.2
	out, err := r.Call(context.Background(), tools.AllGates(), "list_hosts", tools.Deps{Conns: map[string]*protocol.Conn{"": conn}}, tools.Marshal(in), nil)
	if err != nil {
		t.Fatal(err)
	}
	return out.(listhosts.Result)
}

func names(res listhosts.Result) string {
	var out []string
	for _, h := range res.Hosts {
		s := h.Hostname
		if !h.Online {
			s += "(offline)"
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

func TestListFromRegistry(t *testing.T) {
	t.Parallel()
	n := registryFleet(t, true)
	admin := n.Connect(t, "admin")
	var res listhosts.Result
	// The writers' first entries are on their way.
	testenv.Eventually(t, 10*time.Second, func() bool {
		res = call(t, admin, listhosts.Input{})
		return res.Source == listhosts.SourceRegistry && len(res.Hosts) == 3
	}, "the registry never held the three hosts: %+v", res)
	if got := names(res); got != "db1 web1 web2(offline)" {
		t.Errorf("hosts %s", got)
	}
	web2 := res.Hosts[2]
	if seen, err := time.Parse(time.RFC3339, web2.LastSeen); err != nil || time.Since(seen) > time.Minute || !web2.Stopped || web2.System == nil {
		t.Errorf("web2: %+v (%v)", web2, err)
	}
	if res.Message != "3 host(s) in the fleet registry, 2 online, 1 offline" || len(res.Notes) != 0 {
		t.Errorf("message %q, notes %q", res.Message, res.Notes)
	}
	// --json names the source and every host's online state and last seen.
	js, _ := json.Marshal(res)
	for _, want := range []string{`"source":"registry"`, `"online":false`, `"last_seen":"`, `"reboot_required":false`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("JSON lacks %s: %s", want, js)
		}
	}

	for _, tt := range []struct {
		in   listhosts.Input
		want string
	}{
		{listhosts.Input{Tier: "test"}, "web1 web2(offline)"},
		{listhosts.Input{Role: "web"}, "web1 web2(offline)"},
		{listhosts.Input{State: "offline"}, "web2(offline)"},
		{listhosts.Input{State: "online", Role: "web"}, "web1"},
		{listhosts.Input{Role: "nope"}, ""},
	} {
		if got := names(call(t, admin, tt.in)); got != tt.want {
			t.Errorf("%+v: %s, want %s", tt.in, got, tt.want)
		}
	}

	// The test credential sees no prod host, and says why.
	res = call(t, n.Connect(t, "deployer"), listhosts.Input{})
	if got := names(res); got != "web1 web2(offline)" || res.Source != listhosts.SourceRegistry {
		t.Errorf("test deployer: %s from %s", got, res.Source)
	}
	if len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "the prod tier is left out: this credential may not read it") {
		t.Errorf("notes %q", res.Notes)
	}
	if s := res.Summary(); !strings.Contains(s, "web2\ttest\trole=web\toffline (last seen ") {
		t.Errorf("summary %q", s)
	}
}

// Without JetStream, list_hosts discovers, says so, and reports every host
// that answered as online.
func TestListFallsBackToDiscovery(t *testing.T) {
	t.Parallel()
	n := registryFleet(t, false)
	res := call(t, n.Connect(t, "admin"), listhosts.Input{Role: "web"})
	if res.Source != listhosts.SourceDiscovery || names(res) != "web1 web2" {
		t.Errorf("%s from %s", names(res), res.Source)
	}
	if len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "no JetStream") {
		t.Errorf("notes %q", res.Notes)
	}
	for _, h := range res.Hosts {
		if _, err := time.Parse(time.RFC3339, h.LastSeen); err != nil || h.System != nil {
			t.Errorf("%s: last seen %q, system %+v", h.Hostname, h.LastSeen, h.System)
		}
	}
	// Asked for the registry alone, it says why there is none.
	var r tools.Registry
	r.Register(listhosts.Tool())
	_, err := r.Call(context.Background(), tools.AllGates(), "list_hosts", tools.Deps{Conns: map[string]*protocol.Conn{"": n.Connect(t, "admin")}},
		tools.Marshal(listhosts.Input{Source: listhosts.SourceRegistry}), nil)
	if err == nil || !strings.Contains(err.Error(), "no JetStream") {
		t.Errorf("registry only: %v", err)
	}
}

func TestListInputChecks(t *testing.T) {
	t.Parallel()
	for _, in := range []listhosts.Input{{Role: "a.b"}, {State: "sleeping"}, {Source: "cache"}, {Role: "all"}} {
		if _, err := in.Check(); err == nil {
			t.Errorf("%+v accepted", in)
		}
	}
}
