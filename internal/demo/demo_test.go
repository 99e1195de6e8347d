package demo

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/execx"
	"github.com/homelab-deploy/homelab-deploy/internal/natsauth"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
)

func start(t *testing.T, o Options) *Demo {
	t.Helper()
	d, err := Start(context.Background(), o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(d.Close)
	return d
}

// The server's configuration is exactly what nats-config renders for the
// demo fleet with the demo's keys: one code path for both.
func TestServerConfigIsTheNATSConfigBlock(t *testing.T) {
	t.Parallel()
	d := start(t, Options{RebuildTime: time.Millisecond})
	conf, err := os.ReadFile(d.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	users, generated, err := natsauth.ResolveKeys(Fleet().Credentials(), d.KeysDir(), false)
	if err != nil || len(generated) != 0 {
		t.Fatalf("resolve the demo's keys: %v (generated %v)", err, generated)
	}
	if !strings.HasSuffix(string(conf), natsauth.Render(users)) {
		t.Errorf("the demo server config does not end with the nats-config block:\n%s", conf)
	}
	if len(users) != 8 {
		t.Errorf("%d users, want 3 listeners, builder, test, admin, build client, mcp", len(users))
	}
	entries, _ := os.ReadDir(d.KeysDir())
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".nkey") {
			fi, _ := e.Info()
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %04o, want 0600", e.Name(), fi.Mode().Perm())
			}
		}
	}
	dir := d.Dir
	d.Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Close left %s behind (%v)", dir, err)
	}
}

func TestPortTaken(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port

	if d, err := Start(context.Background(), Options{Port: port}); err == nil {
		d.Close()
		t.Fatalf("Start on a taken port without fallback succeeded")
	} else if !strings.Contains(err.Error(), "taken") || !strings.Contains(err.Error(), "--port") {
		t.Errorf("error %q does not say the port is taken and how to pick another", err)
	}

	d := start(t, Options{Port: port, FallbackPort: true})
	if !strings.Contains(d.Fallback, strconv.Itoa(port)) || strings.HasSuffix(d.URL, ":"+strconv.Itoa(port)) {
		t.Errorf("fallback %q, URL %s; want a note naming port %d and another port", d.Fallback, d.URL, port)
	}
}

func TestSimulate(t *testing.T) {
	t.Parallel()
	tail, err := Simulate(time.Millisecond)(context.Background(), []string{"nixos-rebuild", "switch", "--flake", "x#h"})
	if err != nil || !strings.Contains(tail, "simulated") || !strings.Contains(tail, "nixos-rebuild switch --flake x#h") {
		t.Errorf("Simulate: %q, %v", tail, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if _, err := Simulate(time.Hour)(ctx, nil); !errors.Is(err, execx.ErrTimeout) {
		t.Errorf("past the deadline: %v, want execx.ErrTimeout", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := Simulate(time.Hour)(ctx, nil); !errors.Is(err, execx.ErrCanceled) {
		t.Errorf("cancelled: %v, want execx.ErrCanceled", err)
	}
}

func TestNixEnv(t *testing.T) {
	t.Parallel()
	env := NixEnv(func(string) string { return "" })
	n := 0
	for _, kv := range env {
		if strings.HasPrefix(kv, "NIX_CONFIG=") {
			n++
			if kv != "NIX_CONFIG="+NixConfig {
				t.Errorf("NIX_CONFIG is %q", kv)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d NIX_CONFIG entries, want 1", n)
	}
	if got := NixEnv(func(k string) string { return map[string]string{"NIX_CONFIG": "x"}[k] }); len(got) != len(os.Environ()) {
		t.Errorf("a user's NIX_CONFIG was not left alone")
	}
}

// A simulated rebuild prints its lines, each saying it is simulated, and
// runs nothing.
func TestSimulateRebuildPrintsLines(t *testing.T) {
	t.Parallel()
	var lines []string
	tail, err := SimulateRebuild(3*time.Millisecond)(context.Background(), deploy.Rebuild{
		Argv: []string{"nixos-rebuild", "switch", "--flake", "x#h"}, Line: func(l string) { lines = append(lines, l) }})
	if err != nil || !strings.Contains(tail, "nothing was run") {
		t.Fatalf("SimulateRebuild: %q, %v", tail, err)
	}
	if len(lines) != len(simulatedLines) {
		t.Fatalf("lines %q", lines)
	}
	for _, l := range lines {
		if !strings.Contains(l, "simulated") {
			t.Errorf("line %q does not say it is simulated", l)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := SimulateRebuild(time.Hour)(ctx, deploy.Rebuild{}); !errors.Is(err, execx.ErrCanceled) {
		t.Errorf("cancelled: %v, want execx.ErrCanceled", err)
	}
}

// A deploy to a demo listener streams the simulated rebuild's lines, and
// every status, output included, says it is simulated.
func TestDemoDeployStreamsSimulatedOutput(t *testing.T) {
	t.Parallel()
	d := start(t, Options{RebuildTime: 30 * time.Millisecond})
	conn, err := d.Connect(context.Background(), natsauth.CredTestDeployer, nil)
	if err != nil {
		t.Fatal(err)
	}
	var events []tools.Event
	res, err := deploy.Send(context.Background(), conn, deploy.Request{Subject: "deploy.test.testhost1", Action: "switch", Revision: "master"},
		deploy.Options{Timeout: time.Minute}, func(e tools.Event) { events = append(events, e) })
	if err != nil || !res.Success {
		t.Fatalf("deploy: %+v, %v", res, err)
	}
	var lines []string
	for _, e := range events {
		if !strings.HasPrefix(e.Message, SimulatedPrefix) {
			t.Errorf("%s status without %q: %q", e.Status, SimulatedPrefix, e.Message)
		}
		if e.Status == protocol.StatusOutput {
			lines = append(lines, e.Lines...)
		}
	}
	if strings.Join(lines, "|") != strings.Join(simulatedLines, "|") {
		t.Errorf("streamed lines %q, want %q", lines, simulatedLines)
	}
}
