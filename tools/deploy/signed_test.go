package deploy_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/agents/listener"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
)

// A listener that trusts only the admin's key, over a real NATS server
// with SPEC's permissions: the request halves sign with the key they
// connected with, so the test deployer's deploy is refused (unauthorized,
// nothing runs) and gets no discovery answer, and the admin's deploy runs
// and is named in the host's last deploy.
func TestSignedRequestsOverNATS(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t,
		testenv.User{Name: "deployer", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())},
		testenv.User{Name: "admin", Permissions: testenv.Ptr(protocol.AdminDeployerPermissions())},
		testenv.User{Name: "testhost1", Permissions: testenv.ListenerPerms("test", "testhost1", "")},
	)
	standIn := testenv.StandIn(t, "nixos-rebuild", "exit 0")
	admin := n.Cred("admin").Public
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- listener.Run(ctx, listener.Config{
			Hostname: "testhost1", Tier: "test", FlakeURL: flakeURL, Timeout: time.Minute,
			Conn: n.Connect(t, "testhost1"), Version: "test", ShutdownGrace: 5 * time.Second,
			TrustedDeployers: []string{admin},
			Exec: func(ctx context.Context, argv []string) (string, error) {
				return deploy.NixosRebuild(ctx, append([]string{standIn + "/nixos-rebuild"}, argv[1:]...))
			},
			Ready:  func(*listener.Listener) { close(ready) },
			Logger: slog.New(slog.DiscardHandler),
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("listener: %v", err)
		}
	})
	<-ready
	deployer, adminConn := n.Connect(t, "deployer"), n.Connect(t, "admin")
	req := deploy.Request{Subject: "deploy.test.testhost1", Action: "switch", Revision: "main"}

	res, err := deploy.Send(ctx, deployer, req, deps(deployer), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Success || len(res.Hosts) != 1 || res.Hosts[0].Status != protocol.StatusRejected || res.Hosts[0].Error != protocol.ErrUnauthorized ||
		!strings.Contains(res.Hosts[0].Message, deployer.PublicKey()) {
		t.Fatalf("test deployer's deploy: %+v, want rejected/unauthorized naming its key", res)
	}
	if calls := testenv.Calls(standIn); len(calls) != 0 {
		t.Fatalf("nixos-rebuild ran for an untrusted deployer: %q", calls)
	}
	// The test deployer's signed discovery request goes out before the
	// admin's; the listener handles them in order, so once the admin has
	// its answer, one to the test deployer would have been sent already.
	unanswered := sendDiscovery(t, deployer)

	res, err = deploy.Send(ctx, adminConn, req, deps(adminConn), nil)
	if err != nil || !res.Success {
		t.Fatalf("admin's deploy: %+v, %v; want completed", res, err)
	}
	if calls := testenv.Calls(standIn); len(calls) != 1 || calls[0] != "switch --flake "+flakeURL+"?ref=main#testhost1" {
		t.Fatalf("nixos-rebuild calls %q", calls)
	}
	hosts, err := listhosts.Discover(ctx, adminConn, "", protocol.DefaultDiscoverSubject, listhosts.Options{})
	if err != nil || len(hosts.Hosts) != 1 {
		t.Fatalf("discovery by the admin: %+v, %v", hosts, err)
	}
	if l := hosts.Hosts[0].LastDeploy; l == nil || l.Caller != admin || l.Status != protocol.StatusCompleted {
		t.Fatalf("last deploy %+v, want completed by %s", l, admin)
	}

	// A round trip on the test deployer's connection delivers anything
	// the server queued for it before.
	if err := deployer.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, sub := range unanswered {
		if n, _, _ := sub.Pending(); n != 0 {
			t.Fatalf("the untrusted deployer's discovery got %d answer(s) on %s", n, sub.Subject)
		}
	}
}

// sendDiscovery publishes a discovery request signed with conn's key and
// returns the subscriptions its answers would arrive on: the reply subject
// and the subjects below it (a listener may answer on <reply_to>.<hostname>).
func sendDiscovery(t *testing.T, conn *protocol.Conn) []*nats.Subscription {
	t.Helper()
	id := protocol.NewID()
	replyTo := protocol.DeployResponsesPrefix + id
	var subs []*nats.Subscription
	for _, subject := range []string{replyTo, replyTo + ".>"} {
		sub, err := conn.SubscribeSync(subject)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		subs = append(subs, sub)
	}
	body, _ := json.Marshal(protocol.DiscoverRequest{ID: id, ReplyTo: replyTo})
	h, err := conn.SignRequest(protocol.DefaultDiscoverSubject, body)
	if err != nil || h == nil {
		t.Fatalf("SignRequest: %v, %v", h, err)
	}
	if err := conn.PublishMsg(&nats.Msg{Subject: protocol.DefaultDiscoverSubject, Header: h, Data: body}); err != nil {
		t.Fatal(err)
	}
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	return subs
}
