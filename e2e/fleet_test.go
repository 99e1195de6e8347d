package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
)

// registryFleet is Debian's nats-server with JetStream, configured from
// nothing but `homelab-deploy nats-config` output, and the built binary's
// listeners on it: web1 and web2 (test, role web), db1 (test, role db)
// and dns1 (prod, role dns).
type registryFleet struct {
	nats      *NATSServer
	keys      string
	listeners map[string]*Proc
	standIn   string
}

var registryHosts = []struct{ name, tier, role string }{
	{"web1", "test", "web"}, {"web2", "test", "web"}, {"db1", "test", "db"}, {"dns1", "prod", "dns"},
}

func startRegistryFleet(t *testing.T, jetstream bool, heartbeat string) *registryFleet {
	t.Helper()
	bin := testenv.RequireBinary(t, "nats-server")
	dir := t.TempDir()
	f := &registryFleet{keys: filepath.Join(dir, "keys"), listeners: map[string]*Proc{}}
	var fleet strings.Builder
	fleet.WriteString("hosts:\n")
	for _, h := range registryHosts {
		fmt.Fprintf(&fleet, "  %s: {tier: %s, role: %s}\n", h.name, h.tier, h.role)
	}
	fleet.WriteString("deployers: {test: true, admin: true}\n")
	fleetFile := filepath.Join(dir, "fleet.yaml")
	if err := os.WriteFile(fleetFile, []byte(fleet.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	r := run(t, baseEnv(), "nats-config", "--fleet", fleetFile, "--keys-dir", f.keys, "--generate-keys")
	if r.Code != 0 {
		t.Fatalf("nats-config: exit %d\n%s", r.Code, r.Stderr)
	}
	s := &NATSServer{port: testenv.FreePort(t), log: &bytes.Buffer{}}
	s.URL = fmt.Sprintf("nats://127.0.0.1:%d", s.port)
	conf := fmt.Sprintf("listen: 127.0.0.1:%d\n", s.port)
	if jetstream {
		conf += fmt.Sprintf("jetstream { store_dir: %q }\n", filepath.Join(dir, "js"))
	}
	s.Config = filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(s.Config, []byte(conf+r.Stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start(t, bin)
	t.Cleanup(func() { s.Stop() })
	f.nats = s
	f.standIn = testenv.StandIn(t, "nixos-rebuild", "exit 0")
	for _, h := range registryHosts {
		f.listeners[h.name] = f.startListener(t, h.name, h.tier, h.role, heartbeat)
	}
	return f
}

func (f *registryFleet) startListener(t *testing.T, name, tier, role, heartbeat string) *Proc {
	t.Helper()
	p := startDaemon(t, baseEnv(f.standIn), "listener", "--hostname", name, "--tier", tier, "--role", role,
		"--nats-url", f.nats.URL, "--nkey-file", filepath.Join(f.keys, "listener-"+name+".nkey"),
		"--flake-url", e2eFlake, "--fleet-heartbeat", heartbeat, "--fleet-system-root", t.TempDir(), "--log-format", "text")
	p.WaitFor(t, "listener ready", 20*time.Second)
	return p
}

func (f *registryFleet) env(cred string) []string {
	return append(baseEnv(), "HOMELAB_DEPLOY_NATS_URL="+f.nats.URL, "HOMELAB_DEPLOY_NKEY_FILE="+filepath.Join(f.keys, cred+".nkey"))
}

type listed struct {
	Source string `json:"source"`
	Hosts  []struct {
		Hostname string `json:"hostname"`
		Online   bool   `json:"online"`
		LastSeen string `json:"last_seen"`
	} `json:"hosts"`
	Notes []string `json:"notes"`
}

func (f *registryFleet) list(t *testing.T, cred string, args ...string) (listed, Result) {
	t.Helper()
	r := run(t, f.env(cred), append([]string{"list-hosts", "--json"}, args...)...)
	var l listed
	if err := json.Unmarshal([]byte(r.Stdout), &l); err != nil {
		t.Fatalf("list-hosts --json: exit %d, %v\nstdout:\n%s\nstderr:\n%s", r.Code, err, r.Stdout, r.Stderr)
	}
	return l, r
}

func names(l listed) string {
	var out []string
	for _, h := range l.Hosts {
		s := h.Hostname
		if !h.Online {
			s += "(offline)"
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

type deployed struct {
	Success         bool    `json:"success"`
	Members         string  `json:"members"`
	DurationSeconds float64 `json:"duration_seconds"`
	Hosts           []struct {
		Hostname string  `json:"hostname"`
		Status   string  `json:"status"`
		Error    *string `json:"error"`
		LastSeen string  `json:"last_seen"`
	} `json:"hosts"`
	Skipped []struct {
		Hostname string `json:"hostname"`
	} `json:"skipped"`
}

func (f *registryFleet) deploy(t *testing.T, cred string, args ...string) (deployed, Result) {
	t.Helper()
	r := run(t, f.env(cred), append([]string{"deploy", "--json"}, args...)...)
	var d deployed
	if err := json.Unmarshal([]byte(r.Stdout), &d); err != nil {
		t.Fatalf("deploy --json: exit %d, %v\nstdout:\n%s\nstderr:\n%s", r.Code, err, r.Stdout, r.Stderr)
	}
	return d, r
}

func hostStates(d deployed) string {
	var out []string
	for _, h := range d.Hosts {
		s := h.Hostname + "=" + h.Status
		if h.Error != nil {
			s += "/" + *h.Error
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// The scenario: four listeners register, one stops; list-hosts
// shows it offline at once, the test credential sees no prod host, a group
// deploy ends without an accept window (ten minutes here), names the
// offline host and exits 1, and a role deploy names exactly its members.
func TestE2EFleetRegistry(t *testing.T) {
	f := startRegistryFleet(t, true, "30s")
	// Every listener's first entry is written as it starts; wait for the
	// last of them.
	var l listed
	testenv.Eventually(t, 20*time.Second, func() bool {
		l, _ = f.list(t, "admin-deployer")
		return l.Source == "registry" && len(l.Hosts) == 4
	}, "the registry never listed the four hosts: %+v", l)

	if code := f.listeners["web2"].Stop(10 * time.Second); code != 0 {
		t.Fatalf("web2 listener exited %d on SIGTERM", code)
	}
	asked := time.Now()
	l, r := f.list(t, "test-deployer")
	if r.Code != 0 || l.Source != "registry" || names(l) != "db1 web1 web2(offline)" {
		t.Fatalf("test deployer's list: exit %d, %s from %s\n%s", r.Code, names(l), l.Source, r.Stderr)
	}
	seen, err := time.Parse(time.RFC3339, l.Hosts[2].LastSeen)
	if err != nil {
		t.Fatalf("web2's last_seen %q: %v", l.Hosts[2].LastSeen, err)
	}
	t.Logf("web2 last seen %s before list-hosts was run", asked.Sub(seen))
	if d := asked.Sub(seen); d > 2*time.Second || d < -time.Second {
		t.Errorf("web2 last seen %s, %s before the list was asked for", seen, d)
	}
	if len(l.Notes) != 1 || !strings.Contains(l.Notes[0], "prod tier is left out") {
		t.Errorf("notes %q", l.Notes)
	}
	text := run(t, f.env("test-deployer"), "list-hosts")
	if !strings.Contains(text.Stdout, "offline ") || !strings.Contains(text.Stdout, "REBOOT") || strings.Contains(text.Stdout, "dns1") {
		t.Errorf("list-hosts text:\n%s", text.Stdout)
	}
	l, _ = f.list(t, "admin-deployer", "--state", "online")
	if names(l) != "db1 web1 dns1" && names(l) != "dns1 db1 web1" {
		t.Errorf("admin, online only: %s", names(l))
	}

	d, r := f.deploy(t, "test-deployer", "--accept-window", "10m", "deploy.test.all")
	t.Logf("deploy.test.all took %.3f s", d.DurationSeconds)
	if r.Code != 1 || d.Success || d.Members != "registry" || hostStates(d) != "db1=completed web1=completed web2=failed/offline" {
		t.Errorf("deploy.test.all: exit %d, %s, members %q\n%s", r.Code, hostStates(d), d.Members, r.Stderr)
	}
	for _, h := range d.Hosts {
		if h.Hostname == "web2" && h.LastSeen == "" {
			t.Errorf("web2 without last_seen: %+v", h)
		}
	}

	d, r = f.deploy(t, "test-deployer", "--accept-window", "10m", "deploy.test.role.web")
	if r.Code != 1 || hostStates(d) != "web1=completed web2=failed/offline" {
		t.Errorf("deploy.test.role.web: exit %d, %s", r.Code, hostStates(d))
	}
	d, r = f.deploy(t, "test-deployer", "--accept-window", "10m", "--skip-offline", "deploy.test.role.web")
	if r.Code != 0 || hostStates(d) != "web1=completed" || len(d.Skipped) != 1 || d.Skipped[0].Hostname != "web2" {
		t.Errorf("--skip-offline: exit %d, %s, skipped %+v\n%s", r.Code, hostStates(d), d.Skipped, r.Stderr)
	}
	summary := run(t, f.env("test-deployer"), "deploy", "--skip-offline", "deploy.test.role.web")
	if summary.Code != 0 || !strings.Contains(summary.Stdout, "skipped offline: web2") {
		t.Errorf("summary with --skip-offline: exit %d\n%s", summary.Code, summary.Stdout)
	}
}

// A listener killed without a chance to mark itself stopped goes offline
// once its entry is older than three heartbeats.
func TestE2ECrashedListenerGoesOffline(t *testing.T) {
	f := startRegistryFleet(t, true, "300ms")
	testenv.Eventually(t, 20*time.Second, func() bool {
		l, _ := f.list(t, "admin-deployer")
		return len(l.Hosts) == 4
	}, "the registry never listed the four hosts")
	if err := f.listeners["db1"].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	var l listed
	testenv.Eventually(t, 20*time.Second, func() bool {
		l, _ = f.list(t, "test-deployer", "--state", "offline")
		return names(l) == "db1(offline)"
	}, "the killed db1 never went offline: %s", names(l))
	l, _ = f.list(t, "test-deployer", "--state", "online")
	if names(l) != "web1 web2" {
		t.Errorf("online after db1 was killed: %s", names(l))
	}
}

// Without JetStream everything works as before: list-hosts discovers and
// says so, a group deploy uses the accept window.
func TestE2EFleetWithoutJetStream(t *testing.T) {
	f := startRegistryFleet(t, false, "30s")
	l, r := f.list(t, "test-deployer", "--role", "web")
	if r.Code != 0 || l.Source != "discovery" || names(l) != "web1 web2" {
		t.Errorf("list-hosts: exit %d, %s from %s\n%s", r.Code, names(l), l.Source, r.Stderr)
	}
	d, r := f.deploy(t, "test-deployer", "--accept-window", "300ms", "deploy.test.role.web")
	if r.Code != 0 || d.Members != "" || hostStates(d) != "web1=completed web2=completed" {
		t.Errorf("deploy: exit %d, %s, members %q", r.Code, hostStates(d), d.Members)
	}
	for _, p := range f.listeners {
		if strings.Contains(p.Output.String(), "fleet registry entry not written") {
			t.Errorf("a listener warned about the registry without JetStream:\n%s", p.Output)
		}
	}
}
