package build

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// The request half's three ways of getting nowhere each say something of
// their own: the credential may not build the repo (the publish was
// refused), no builder serves the repo (no responders), or the credential
// may not hear the answers (nothing was sent).
func TestSendSaysWhyNothingWasBuilt(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t,
		testenv.User{Name: "client", Permissions: testenv.Ptr(protocol.BuildClientPermissions([]string{"fleet"}))},
		// deaf may request builds but not hear their answers.
		testenv.User{Name: "deaf", Permissions: &protocol.Permissions{Publish: []string{"build.fleet.*"}, Subscribe: []string{"build.nothing"}}})
	client, deaf := n.Connect(t, "client"), n.Connect(t, "deaf")
	cases := []struct {
		name string
		conn *protocol.Conn
		req  Request
		want func(id string) string
	}{
		{"repo not allowed", client, Request{Repo: "secret", Target: "web1"}, func(string) string {
			return "this credential may not request builds of repo secret: the NATS server refused to let this credential publish to build.secret.web1; " +
				"a build client may only build the repos listed in its permissions (see `homelab-deploy nats-config`)"
		}},
		{"no builder", client, Request{Repo: "fleet"}, func(string) string {
			return "no builder answered for repo fleet: no builder is subscribed to build.fleet.* (is one running with fleet in its config?)"
		}},
		{"answers cannot be heard", deaf, Request{Repo: "fleet"}, func(id string) string {
			return "nothing was sent: the NATS server refused to let this credential subscribe to build.responses." + id + " ("
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := Send(ctx, c.conn, c.req, Options{Timeout: 30 * time.Second}, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := c.want(res.ID)
			if res.Success || res.Status != protocol.StatusFailed || !strings.HasPrefix(res.Message, want) {
				t.Fatalf("result %+v\nwant message %q", res, want)
			}
			if c.conn == deaf && !strings.HasSuffix(res.Message, "); a build client needs subscribe permission on build.responses.>") {
				t.Fatalf("message does not say which permission is missing: %q", res.Message)
			}
		})
	}
}

// The largest legitimate answer is the builder's final response; with 50
// hosts that all failed with the longest tail, each byte of it one that
// JSON escapes sixfold, it still fits the request core's size cap.
func TestLargestFinalResponseFitsTheCap(t *testing.T) {
	t.Parallel()
	final := protocol.BuildResponse{ID: protocol.NewID(), Status: protocol.StatusFailed, Repo: strings.Repeat("r", protocol.MaxTokenLen),
		Branch: strings.Repeat("b", 255), ErrorCode: protocol.ErrBuildFailed, Failed: 50}
	tail := strings.Repeat(strings.Repeat("\x1b<", 200)+"\n", 10)
	var bad []string
	for i := range 50 {
		host := fmt.Sprintf("%02d%s", i, strings.Repeat("h", protocol.MaxTokenLen-2))
		final.Results = append(final.Results, protocol.BuildHostResult{Host: host, DurationSeconds: 1800, ErrorCode: protocol.ErrTimeout,
			Error: clip(tail, resultTailLines, resultTailBytes), OutPath: "/nix/store/" + strings.Repeat("a", 32) + "-nixos-system-" + host})
		bad = append(bad, host+" (timed out)")
	}
	final.Message = fmt.Sprintf("built 0/50 hosts; failed: %s", strings.Join(bad, ", "))
	b, err := json.Marshal(final)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > protocol.MaxResponseSize {
		t.Fatalf("a 50-host final response is %d bytes, over the %d-byte cap", len(b), protocol.MaxResponseSize)
	}
	// The old cap of the other request halves (16 KiB) would have dropped it.
	if len(b) <= protocol.MaxMessageSize*4 {
		t.Fatalf("worst case is only %d bytes: the test no longer builds the worst case", len(b))
	}
	t.Logf("worst-case 50-host final response: %d bytes (cap %d)", len(b), protocol.MaxResponseSize)
}
