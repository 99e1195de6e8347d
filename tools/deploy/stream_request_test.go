package deploy_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/agents/listener"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
)

// A deploy through a real listener whose nixos-rebuild prints lines: the
// request half turns its output statuses into events with the lines and
// the running time, none of them terminal, and ends on the final status
// as before.
func TestDeployEventsCarryLiveOutput(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t,
		testenv.User{Name: "deployer", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())},
		testenv.User{Name: "testhost1", Permissions: testenv.ListenerPerms("test", "testhost1", "")},
	)
	standIn := testenv.StandIn(t, "nixos-rebuild", "echo 'building the system configuration...'; echo 'activating the configuration...' >&2; printf 'done'")
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		err := listener.Run(ctx, listener.Config{
			Hostname: "testhost1", Tier: "test", FlakeURL: flakeURL, Timeout: time.Minute, Conn: n.Connect(t, "testhost1"),
			Version: "test", ShutdownGrace: time.Second, Ready: func(*listener.Listener) { close(ready) },
			Rebuild: func(ctx context.Context, r deploy.Rebuild) (string, error) {
				r.Argv[0] = filepath.Join(standIn, "nixos-rebuild")
				return deploy.RunNixosRebuild(ctx, r)
			},
		})
		if err != nil {
			t.Errorf("listener: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-stopped })
	<-ready

	var rec recorder
	res, err := deploy.Send(context.Background(), n.Connect(t, "deployer"), deploy.Request{Subject: "deploy.test.testhost1", Action: "switch", Revision: "main"}, deps(nil), rec.progress())
	if err != nil || !res.Success {
		t.Fatalf("result %+v, err %v", res, err)
	}
	var lines []string
	var kinds []protocol.Status
	for _, e := range rec.events {
		kinds = append(kinds, e.Status)
		if e.Status != protocol.StatusOutput {
			continue
		}
		lines = append(lines, e.Lines...)
		if e.Host != "testhost1" || e.Running <= 0 || e.Done != 0 || e.Message != "done" {
			t.Errorf("output event %+v: want testhost1, a running time, not done, the latest line as message", e)
		}
	}
	if want := "building the system configuration...|activating the configuration...|done"; strings.Join(lines, "|") != want {
		t.Errorf("lines %q, want %q", lines, want)
	}
	out := slices.Index(kinds, protocol.StatusOutput)
	if out < 0 || kinds[len(kinds)-1] != protocol.StatusCompleted || slices.Index(kinds, protocol.StatusStarted) > out {
		t.Errorf("statuses %v: want output events between started and completed", kinds)
	}
	if len(res.Hosts) != 1 || res.Hosts[0].Status != protocol.StatusCompleted || res.Completed != 1 {
		t.Errorf("result hosts %+v", res.Hosts)
	}
}
