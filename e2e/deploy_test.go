package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

const e2eFlake = "git+https://git.example.com/user/nixos-configs.git"

// standInBody records argv (via testenv.StandIn) and fails for the
// revision "broken".
const standInBody = `case "$*" in *ref=broken*) echo "error: flake 'broken' does not provide attribute" >&2; exit 1;; esac; echo "activating the configuration..."`

type e2eFleet struct {
	nats            *NATSServer
	creds           map[string]testenv.Cred
	standIns        map[string]string
	listeners       map[string]*Proc
	metricsTesthost string
}

func startE2EFleet(t *testing.T) *e2eFleet {
	t.Helper()
	dir := t.TempDir()
	f := &e2eFleet{creds: map[string]testenv.Cred{}, standIns: map[string]string{}, listeners: map[string]*Proc{}}
	hosts := []struct{ name, tier, role string }{{"testhost1", "test", ""}, {"dns1", "prod", "dns"}}
	var all []testenv.Cred
	for _, h := range hosts {
		c := testenv.NewCred(t, dir, h.name, *testenv.ListenerPerms(h.tier, h.name, h.role))
		f.creds[h.name] = c
		all = append(all, c)
	}
	f.creds["deployer"] = testenv.NewCred(t, dir, "deployer", protocol.TestDeployerPermissions())
	f.creds["admin"] = testenv.NewCred(t, dir, "admin", protocol.AdminDeployerPermissions())
	all = append(all, f.creds["deployer"], f.creds["admin"])
	f.nats = startNATSServer(t, all...)

	for _, h := range hosts {
		f.standIns[h.name] = testenv.StandIn(t, "nixos-rebuild", standInBody)
		args := []string{"listener", "--hostname", h.name, "--tier", h.tier, "--nats-url", f.nats.URL,
			"--nkey-file", f.creds[h.name].SeedFile, "--flake-url", e2eFlake, "--timeout", "30", "--log-format", "text"}
		if h.role != "" {
			args = append(args, "--role", h.role)
		}
		if h.name == "testhost1" {
			f.metricsTesthost = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
			args = append(args, "--metrics-enabled", "--metrics-addr", f.metricsTesthost)
		}
		p := startDaemon(t, baseEnv(f.standIns[h.name]), args...)
		p.WaitFor(t, "listener ready", 20*time.Second)
		f.listeners[h.name] = p
	}
	return f
}

// cliEnv is the environment of a deployer using cred through env vars.
func (f *e2eFleet) cliEnv(cred string, extra ...string) []string {
	return append(baseEnv(), append([]string{
		"HOMELAB_DEPLOY_NATS_URL=" + f.nats.URL,
		"HOMELAB_DEPLOY_NKEY_FILE=" + f.creds[cred].SeedFile,
	}, extra...)...)
}

func TestE2EDeployWithEnvFallbacks(t *testing.T) {
	f := startE2EFleet(t)
	r := run(t, f.cliEnv("deployer", "HOMELAB_DEPLOY_BRANCH=feature/x", "HOMELAB_DEPLOY_ACTION=test"), "deploy", "deploy.test.testhost1")
	if r.Code != 0 || !strings.Contains(r.Stdout, "testhost1") || !strings.Contains(r.Stdout, "completed") {
		t.Fatalf("deploy: exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, status := range []string{"accepted", "started", "completed"} {
		if !strings.Contains(r.Stderr, status) {
			t.Errorf("no %s progress line on stderr:\n%s", status, r.Stderr)
		}
	}
	want := "test --flake " + e2eFlake + "?ref=feature/x#testhost1"
	if got := testenv.Calls(f.standIns["testhost1"]); len(got) != 1 || got[0] != want {
		t.Fatalf("nixos-rebuild argv = %q, want %q", got, want)
	}
	if got := testenv.Calls(f.standIns["dns1"]); len(got) != 0 {
		t.Fatalf("prod host ran: %q", got)
	}
}

func TestE2EAliasAdminAndJSON(t *testing.T) {
	f := startE2EFleet(t)
	r := run(t, f.cliEnv("admin", "HOMELAB_DEPLOY_ALIAS_PROD_DNS=deploy.prod.role.dns"), "deploy", "prod-dns", "--action", "dry-activate", "--branch", "main", "--json", "--accept-window", "300ms")
	if r.Code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	var res struct {
		Subject string `json:"subject"`
		Success bool   `json:"success"`
		Hosts   []struct {
			Hostname string `json:"hostname"`
			Status   string `json:"status"`
			Error    any    `json:"error"`
		} `json:"hosts"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, r.Stdout)
	}
	if res.Subject != "deploy.prod.role.dns" || !res.Success || len(res.Hosts) != 1 || res.Hosts[0].Hostname != "dns1" || res.Hosts[0].Status != "completed" || res.Hosts[0].Error != nil {
		t.Fatalf("result = %+v", res)
	}
	want := "dry-activate --flake " + e2eFlake + "?ref=main#dns1"
	if got := testenv.Calls(f.standIns["dns1"]); len(got) != 1 || got[0] != want {
		t.Fatalf("argv = %q, want %q", got, want)
	}
}

func TestE2EListHosts(t *testing.T) {
	f := startE2EFleet(t)
	r := run(t, f.cliEnv("deployer"), "list-hosts", "--json")
	if r.Code != 0 {
		t.Fatalf("exit %d: %s", r.Code, r.Stderr)
	}
	var res struct {
		Hosts []struct{ Hostname, Tier, Role, Version string }
	}
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
		t.Fatal(err, r.Stdout)
	}
	got := fmt.Sprint(res.Hosts)
	if len(res.Hosts) != 2 || !strings.Contains(got, "dns1 prod dns e2e") || !strings.Contains(got, "testhost1 test  e2e") {
		t.Fatalf("hosts = %s", got)
	}
	r = run(t, f.cliEnv("deployer"), "list-hosts", "--tier", "test")
	if r.Code != 0 || !strings.Contains(r.Stdout, "testhost1") || strings.Contains(r.Stdout, "dns1") {
		t.Fatalf("list-hosts --tier test: exit %d\n%s", r.Code, r.Stdout)
	}
}

func TestE2EExitCodes(t *testing.T) {
	f := startE2EFleet(t)
	cases := []struct {
		name    string
		cred    string
		args    []string
		code    int
		mention string
	}{
		{"failed build", "deployer", []string{"deploy", "deploy.test.testhost1", "--branch", "broken"}, 1, "does not provide attribute"},
		{"nobody listens", "deployer", []string{"deploy", "deploy.test.nohost"}, 1, "deploy.test.nohost"},
		{"test credential to prod", "deployer", []string{"deploy", "deploy.prod.dns1"}, 1, "refused"},
		{"no subject", "deployer", []string{"deploy"}, 2, "exactly one"},
		{"bad action", "deployer", []string{"deploy", "deploy.test.testhost1", "--action", "reboot"}, 2, "action"},
		{"hostile branch", "deployer", []string{"deploy", "deploy.test.testhost1", "--branch", "--option"}, 2, "revision"},
		{"unknown alias", "deployer", []string{"deploy", "staging"}, 2, "HOMELAB_DEPLOY_ALIAS_STAGING"},
		{"wildcard subject", "deployer", []string{"deploy", "deploy.test.*"}, 2, "wildcards"},
		{"unknown command", "deployer", []string{"frobnicate"}, 2, "unknown command"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, f.cliEnv(c.cred), c.args...)
			if r.Code != c.code || !strings.Contains(r.Stdout+r.Stderr, c.mention) {
				t.Fatalf("exit %d (want %d), output should mention %q:\nstdout:\n%s\nstderr:\n%s", r.Code, c.code, c.mention, r.Stdout, r.Stderr)
			}
		})
	}
	// Only the "broken" deploy may have reached nixos-rebuild.
	if got := testenv.Calls(f.standIns["testhost1"]); len(got) != 1 || !strings.Contains(got[0], "ref=broken") {
		t.Fatalf("nixos-rebuild calls = %q", got)
	}
	if got := testenv.Calls(f.standIns["dns1"]); len(got) != 0 {
		t.Fatalf("prod host ran: %q", got)
	}
}

func TestE2EListenerMetricsAndSIGTERM(t *testing.T) {
	f := startE2EFleet(t)
	if r := run(t, f.cliEnv("deployer"), "deploy", "deploy.test.testhost1", "--action", "switch"); r.Code != 0 {
		t.Fatalf("deploy: %d %s", r.Code, r.Stderr)
	}
	if r := run(t, f.cliEnv("deployer"), "deploy", "deploy.test.testhost1", "--branch", "broken"); r.Code != 1 {
		t.Fatalf("broken deploy: %d", r.Code)
	}
	body := httpGet(t, "http://"+f.metricsTesthost+"/metrics")
	for _, want := range []string{
		`homelab_deploy_deployments_total{action="switch",error_code="",status="completed"} 1`,
		`homelab_deploy_deployments_total{action="switch",error_code="build_failed",status="failed"} 1`,
		`homelab_deploy_deployment_duration_seconds_count{action="switch",success="true"} 1`,
		`homelab_deploy_deployment_duration_seconds_count{action="switch",success="false"} 1`,
		`homelab_deploy_deployment_in_progress 0`,
		`homelab_deploy_info{hostname="testhost1",role="",tier="test",version="e2e"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if h := httpGet(t, "http://"+f.metricsTesthost+"/health"); strings.TrimSpace(h) != "ok" {
		t.Errorf("/health = %q", h)
	}
	promtool := testenv.RequireBinary(t, "promtool")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	if code := f.listeners["testhost1"].Stop(15 * time.Second); code != 0 {
		t.Fatalf("listener exit code after SIGTERM = %d\n%s", code, f.listeners["testhost1"].Output)
	}
	if !strings.Contains(f.listeners["testhost1"].Output.String(), "listener stopped") {
		t.Fatalf("no clean stop in output:\n%s", f.listeners["testhost1"].Output)
	}
}

func TestE2ERefusesReadableSeed(t *testing.T) {
	dir := t.TempDir()
	c := testenv.NewCred(t, dir, "loose", protocol.TestDeployerPermissions())
	if err := os.Chmod(c.SeedFile, 0o644); err != nil {
		t.Fatal(err)
	}
	r := run(t, baseEnv(), "listener", "--hostname", "h1", "--tier", "test", "--nats-url", "nats://127.0.0.1:1", "--nkey-file", c.SeedFile, "--flake-url", e2eFlake)
	if r.Code == 0 || !strings.Contains(r.Stderr, "chmod 600") {
		t.Fatalf("exit %d, stderr:\n%s", r.Code, r.Stderr)
	}
	seed, _ := os.ReadFile(c.SeedFile)
	if strings.Contains(r.Stdout+r.Stderr, strings.TrimSpace(string(seed))) {
		t.Fatal("the seed appeared in the output")
	}
	_ = filepath.Base(dir)
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
