package listener_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/agents/listener"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
	"github.com/homelab-deploy/homelab-deploy/tools/fleet"
)

// fakeRoot is a NixOS-like root: the running system has a new kernel the
// booted one lacks, at generation 12.
func fakeRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	store := filepath.Join(root, "nix", "store")
	mk := func(name, kernel string) string {
		sys := filepath.Join(store, name)
		for link, pkg := range map[string]string{"kernel": kernel, "initrd": "initrd", "kernel-modules": kernel + "-modules"} {
			if err := os.MkdirAll(filepath.Join(store, pkg), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(sys, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(store, pkg), filepath.Join(sys, link)); err != nil {
				t.Fatal(err)
			}
		}
		return sys
	}
	for _, d := range []string{"run", "nix/var/nix/profiles", "proc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"run/current-system":          mk("new-nixos-system", "linux-6.6"),
		"run/booted-system":           mk("old-nixos-system", "linux-6.1"),
		"nix/var/nix/profiles/system": "system-12-link",
	}
	for link, target := range links {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "proc", "uptime"), []byte("100.00 50.00\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func fleetServer(t *testing.T) *testenv.NATS {
	t.Helper()
	return testenv.StartNATSWith(t, testenv.JetStream(t),
		testenv.User{Name: "web1", Permissions: testenv.ListenerPerms("test", "web1", "web")},
		testenv.User{Name: "deployer", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())},
		testenv.User{Name: "all"})
}

func readWeb1(t *testing.T, conn *protocol.Conn) fleet.Host {
	t.Helper()
	hosts, err := fleet.ReadTier(t.Context(), conn, "test", fleet.ReadOptions{})
	if err != nil || len(hosts) != 1 {
		t.Fatalf("registry: %+v, %v", hosts, err)
	}
	return hosts[0]
}

// The listener registers on start, records each deploy, serves the
// reboot and generation metrics, and marks itself stopped on a clean stop.
func TestListenerKeepsItsRegistryEntry(t *testing.T) {
	t.Parallel()
	n := fleetServer(t)
	root := fakeRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan *listener.Listener, 1)
	exited := make(chan error, 1)
	go func() {
		exited <- listener.Run(ctx, listener.Config{
			Hostname: "web1", Tier: "test", Role: "web", FlakeURL: "git+file:///srv/cfg", Timeout: time.Minute,
			Conn: n.Connect(t, "web1"), Exec: func(context.Context, []string) (string, error) { return "", nil },
			MetricsEnabled: true, MetricsAddr: "127.0.0.1:0", Version: "v-test",
			Fleet: listener.FleetConfig{Heartbeat: time.Hour, SystemRoot: root},
			Ready: func(l *listener.Listener) { ready <- l },
		})
	}()
	l := <-ready
	reader := n.Connect(t, "deployer")
	testenv.Eventually(t, 10*time.Second, func() bool {
		hosts, err := fleet.ReadTier(t.Context(), reader, "test", fleet.ReadOptions{})
		return err == nil && len(hosts) == 1
	}, "web1 never registered")
	h := readWeb1(t, reader)
	if !h.Online || !h.RebootRequired || h.Generation != 12 || h.Version != "v-test" || h.Role != "web" ||
		!strings.HasSuffix(h.CurrentSystem, "new-nixos-system") || len(h.Subjects) != 3 {
		t.Errorf("entry %+v", h)
	}

	res, err := deploy.Send(t.Context(), reader, deploy.Request{Subject: "deploy.test.web1", Action: "switch", Revision: "main"}, deploy.Options{Timeout: time.Minute}, nil)
	if err != nil || !res.Success {
		t.Fatalf("deploy: %+v %v", res, err)
	}
	// The finished deploy is written without waiting for the (hour-long)
	// heartbeat.
	testenv.Eventually(t, 10*time.Second, func() bool {
		ld := readWeb1(t, reader).LastDeploy
		return ld != nil && ld.Caller == reader.PublicKey()
	}, "the deploy %s never reached the registry", res.ID)
	if ld := readWeb1(t, reader).LastDeploy; ld.Status != protocol.StatusCompleted || ld.Action != protocol.ActionSwitch || ld.Revision != "main" {
		t.Errorf("last deploy %+v", ld)
	}

	resp, err := http.Get("http://" + l.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"homelab_deploy_reboot_required 1\n", "homelab_deploy_generation 12\n"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(string(body))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}

	cancel()
	if err := <-exited; err != nil {
		t.Fatal(err)
	}
	if h := readWeb1(t, reader); h.Online || !h.Stopped {
		t.Errorf("after a clean stop: online %v, stopped %v", h.Online, h.Stopped)
	}
}

// JetStream delivers to any subject a consumer names. A registry entry
// shaped like a deploy request, delivered by a consumer to a deploy
// subject, is dropped by the listener: nothing runs.
func TestJetStreamDeliveryIsNotARequest(t *testing.T) {
	t.Parallel()
	n := fleetServer(t)
	var logs testenv.Buffer
	var runs atomic.Int32
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_ = listener.Run(ctx, listener.Config{
			Hostname: "web1", Tier: "test", Role: "web", FlakeURL: "git+file:///srv/cfg", Timeout: time.Minute,
			Conn: n.Connect(t, "web1"), Logger: slog.New(slog.NewTextHandler(&logs, nil)),
			Exec:  func(context.Context, []string) (string, error) { runs.Add(1); return "", nil },
			Fleet: listener.FleetConfig{Heartbeat: -1},
			Ready: func(*listener.Listener) { close(ready) },
		})
	}()
	<-ready
	all := n.Connect(t, "all")
	// The bucket, and an entry that reads as a deploy request.
	info, err := all.Request(protocol.FleetStreamCreateSubject, []byte(`{"name":"`+protocol.FleetStream+`","subjects":["`+protocol.FleetKeyPrefix+`>"],"max_msgs_per_subject":1,"storage":"memory","num_replicas":1}`), 5*time.Second)
	if err != nil || strings.Contains(string(info.Data), `"error"`) {
		t.Fatalf("create the bucket: %v %s", err, info.Data)
	}
	if _, err := all.Request(protocol.FleetKeySubject("test", "evil"), []byte(`{"action":"switch","revision":"main","reply_to":"deploy.responses.x"}`), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(map[string]any{"stream_name": protocol.FleetStream, "config": map[string]any{
		"name": "c1", "deliver_subject": "deploy.test.web1", "deliver_policy": "all", "ack_policy": "none", "filter_subject": protocol.FleetTierFilter("test"),
	}})
	resp, err := all.Request(protocol.FleetConsumerCreateSubject("c1", "test"), cfg, 5*time.Second)
	if err != nil || strings.Contains(string(resp.Data), `"error"`) {
		t.Fatalf("create the consumer: %v %s", err, resp.Data)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return strings.Contains(logs.String(), "dropped a message JetStream delivered") },
		"the listener did not drop the delivery; log:\n%s", &logs)
	if runs.Load() != 0 {
		t.Errorf("nixos-rebuild ran %d time(s) for a JetStream delivery", runs.Load())
	}
}
