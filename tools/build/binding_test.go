package build

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
)

// logWatch is a log a test can wait on: each write wakes the waiter.
type logWatch struct {
	testenv.Buffer
	wrote chan struct{}
}

func (l *logWatch) Write(p []byte) (int, error) {
	n, err := l.Buffer.Write(p)
	select {
	case l.wrote <- struct{}{}:
	default:
	}
	return n, err
}

// wait waits until the log holds want; the deadline only stops a broken
// test from hanging.
func (l *logWatch) wait(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(time.Minute)
	for !strings.Contains(l.String(), want) {
		select {
		case <-l.wrote:
		case <-deadline:
			t.Errorf("the client's log never said %q:\n%s", want, l.String())
			return
		}
	}
}

func buildStatus(req protocol.BuildRequest, st protocol.Status) []byte {
	b, _ := json.Marshal(protocol.BuildResponse{ID: req.ID, Status: st, Repo: req.Repo, Message: "build " + string(st)})
	return b
}

// The builder answers on <reply_to>.builder, which nats-config lets only
// the builder's credential publish on. Once it has, a status on the bare
// reply subject, or on another sender's subject, is someone else's: it is
// ignored and logged, and the builder's own final status stands, verified.
func TestBuildCountsOnlyTheBuildersSubject(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t,
		testenv.User{Name: "client", Permissions: testenv.Ptr(protocol.BuildClientPermissions([]string{"fleet"}))},
		testenv.User{Name: "builder", Permissions: testenv.Ptr(protocol.BuilderPermissions([]string{"fleet"}))},
		testenv.User{Name: "other"})
	builder, other := n.Connect(t, "builder"), n.Connect(t, "other")
	started := make(chan struct{})
	log := &logWatch{wrote: make(chan struct{}, 1)}
	if _, err := builder.Subscribe("build.fleet.all", func(m *nats.Msg) {
		req, err := protocol.DecodeBuildRequest(m.Data)
		if err != nil {
			t.Error(err)
			return
		}
		own := protocol.BoundReply(req.ReplyTo, protocol.BuilderToken)
		_ = builder.Publish(own, buildStatus(req, protocol.StatusStarted))
		<-started // the client has counted the builder's own status
		_ = other.Publish(req.ReplyTo, buildStatus(req, protocol.StatusCompleted))
		_ = other.Publish(protocol.BoundReply(req.ReplyTo, "web1"), buildStatus(req, protocol.StatusCompleted))
		_ = other.Flush()
		log.wait(t, "it came on the bare reply subject, and the builder's statuses come on its own")
		log.wait(t, "it came on the reply subject of web1, and only the builder's (builder) carries build statuses")
		_ = builder.Publish(own, buildStatus(req, protocol.StatusFailed))
	}); err != nil {
		t.Fatal(err)
	}
	_ = builder.Flush()
	var once sync.Once
	progress := tools.Progress(func(e tools.Event) {
		if e.Status == protocol.StatusStarted {
			once.Do(func() { close(started) })
		}
	})
	res, err := Send(context.Background(), n.Connect(t, "client"), Request{Repo: "fleet"}, Options{Timeout: 5 * time.Minute, Logger: slog.New(slog.NewTextHandler(log, nil))}, progress)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != protocol.StatusFailed || res.Success || !res.Verified || strings.Contains(res.Message, "not verified") {
		t.Fatalf("result %+v; want the builder's own verified failure", res)
	}
}

// An older builder answers on the bare reply subject: its final status
// counts, unverified, and the summary says so and what to do.
func TestOlderBuilderCountsUnverified(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t,
		testenv.User{Name: "client", Permissions: testenv.Ptr(protocol.BuildClientPermissions([]string{"fleet"}))},
		testenv.User{Name: "builder", Permissions: &protocol.Permissions{Publish: []string{"build.responses.>"}, Subscribe: []string{"build.fleet.*"}}})
	builder := n.Connect(t, "builder")
	if _, err := builder.Subscribe("build.fleet.all", func(m *nats.Msg) {
		req, _ := protocol.DecodeBuildRequest(m.Data)
		_ = builder.Publish(req.ReplyTo, buildStatus(req, protocol.StatusStarted))
		_ = builder.Publish(req.ReplyTo, buildStatus(req, protocol.StatusCompleted))
	}); err != nil {
		t.Fatal(err)
	}
	_ = builder.Flush()
	res, err := Send(context.Background(), n.Connect(t, "client"), Request{Repo: "fleet"}, Options{Timeout: 5 * time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Success || res.Verified {
		t.Fatalf("result %+v; want completed, unverified", res)
	}
	for _, want := range []string{"not verified", "an older builder", "build.responses.>", "nats-config"} {
		if !strings.Contains(res.Message, want) {
			t.Errorf("message %q lacks %q", res.Message, want)
		}
	}
}
