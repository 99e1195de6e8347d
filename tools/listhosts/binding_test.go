package listhosts_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
)

// answerAs subscribes conn to discovery and answers every request with
// resp, on the subject reply(reply_to).
func answerAs(t *testing.T, conn *protocol.Conn, resp protocol.DiscoverResponse, reply func(string) string) {
	t.Helper()
	if _, err := conn.Subscribe(protocol.DefaultDiscoverSubject, func(m *nats.Msg) {
		req, err := protocol.DecodeDiscoverRequest(m.Data)
		if err != nil {
			return
		}
		resp.ID = req.ID
		data, _ := json.Marshal(resp)
		_ = conn.Publish(reply(req.ReplyTo), data)
	}); err != nil {
		t.Fatal(err)
	}
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
}

// A listener answers discovery on <reply_to>.<hostname>. An answer there
// that describes another host (a stolen testhost1 credential inventing
// "ghost") is ignored and logged; an older listener's answer on the bare
// reply subject is still listed.
func TestDiscoveryAnswerMustDescribeItsSender(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t,
		testenv.User{Name: "testhost1", Permissions: testenv.ListenerPerms("test", "testhost1", "")},
		testenv.User{Name: "stolen", Permissions: testenv.ListenerPerms("test", "testhost1", "")},
		testenv.User{Name: "oldhost", Permissions: &protocol.Permissions{Publish: []string{"deploy.responses.>"}, Subscribe: []string{protocol.DefaultDiscoverSubject}}},
		testenv.User{Name: "deployer", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())})
	responder(t, n, "testhost1", "test", "")
	answerAs(t, n.Connect(t, "stolen"), protocol.DiscoverResponse{Hostname: "ghost", Tier: "test", Subjects: []string{"deploy.test.ghost"}, Version: "v1"},
		func(r string) string { return protocol.BoundReply(r, "testhost1") })
	answerAs(t, n.Connect(t, "oldhost"), protocol.DiscoverResponse{Hostname: "oldhost", Tier: "test", Subjects: []string{"deploy.test.oldhost"}, Version: "v0"},
		func(r string) string { return r })
	var log testenv.Buffer
	res, err := listhosts.Discover(context.Background(), n.Connect(t, "deployer"), "", protocol.DefaultDiscoverSubject,
		listhosts.Options{Quiet: 500 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range res.Hosts {
		names = append(names, h.Hostname)
	}
	if strings.Join(names, ",") != "oldhost,testhost1" {
		t.Fatalf("hosts %v, want oldhost and testhost1", names)
	}
	if !strings.Contains(log.String(), `msg="ignoring a discovery answer in another host's name"`) || !strings.Contains(log.String(), "hostname=ghost sender=testhost1") {
		t.Errorf("log does not record the ignored answer:\n%s", log.String())
	}
}
