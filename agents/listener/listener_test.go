package listener_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/agents/listener"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
)

// A switch that rewrites the listener's own unit file makes the listener
// report the result and then exit cleanly; a boot does not.
func TestListenerExitsAfterSwitchChangedItsUnit(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t,
		testenv.User{Name: "h1", Permissions: testenv.ListenerPerms("test", "h1", "")},
		testenv.User{Name: "deployer", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())})
	unit := filepath.Join(t.TempDir(), "homelab-deploy-listener.service")
	if err := os.WriteFile(unit, []byte("ExecStart=/nix/store/aaa-homelab-deploy/bin/homelab-deploy\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The executor plays nixos-rebuild: it installs a new unit.
	exec := func(ctx context.Context, argv []string) (string, error) {
		return "", os.WriteFile(unit, []byte("ExecStart=/nix/store/bbb-homelab-deploy/bin/homelab-deploy\n"), 0o644)
	}
	exited := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		exited <- listener.Run(context.Background(), listener.Config{
			Hostname: "h1", Tier: "test", FlakeURL: "git+file:///srv/cfg", Timeout: time.Minute,
			Conn: n.Connect(t, "h1"), Exec: exec, WatchPaths: []string{unit},
			Ready: func(*listener.Listener) { close(ready) },
		})
	}()
	<-ready
	conn := n.Connect(t, "deployer")
	d := deploy.Options{Timeout: time.Minute}

	// boot changes the unit too, but activates nothing: no restart.
	res, err := deploy.Send(context.Background(), conn, deploy.Request{Subject: "deploy.test.h1", Action: "boot", Revision: "main"}, d, nil)
	if err != nil || !res.Success {
		t.Fatalf("boot: %+v %v", res, err)
	}
	select {
	case err := <-exited:
		t.Fatalf("listener exited after a boot: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	// Restore the old unit, then switch: the unit changes, the listener
	// reports completed and exits with no error.
	if err := os.WriteFile(unit, []byte("ExecStart=/nix/store/aaa-homelab-deploy/bin/homelab-deploy\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err = deploy.Send(context.Background(), conn, deploy.Request{Subject: "deploy.test.h1", Action: "switch", Revision: "main"}, d, nil)
	if err != nil || !res.Success {
		t.Fatalf("switch: %+v %v", res, err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("listener returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("listener did not exit after its unit changed")
	}
}
