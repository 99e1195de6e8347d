package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
)

// statusLog collects what a Server publishes, decoded as a deployer
// decodes it.
type statusLog struct {
	ch chan protocol.DeployResponse
}

func newStatusLog() *statusLog { return &statusLog{ch: make(chan protocol.DeployResponse, 1000)} }

func (l *statusLog) publish(_ string, data []byte) error {
	r, err := protocol.DecodeDeployResponse(data)
	if err != nil {
		return err
	}
	l.ch <- r
	return nil
}

// until returns the statuses of request id up to and including its
// terminal one.
func (l *statusLog) until(t *testing.T, id string) []protocol.DeployResponse {
	t.Helper()
	var got []protocol.DeployResponse
	for {
		select {
		case r := <-l.ch:
			if r.ID != id {
				continue
			}
			got = append(got, r)
			if r.Status.Terminal() {
				return got
			}
		case <-time.After(time.Minute): // a hang guard, not a timing assertion
			t.Fatalf("no final status for %s; got %+v", id, got)
		}
	}
}

func switchRequest(id string) []byte {
	b, _ := json.Marshal(protocol.DeployRequest{ID: id, Action: protocol.ActionSwitch, Revision: "main", ReplyTo: "deploy.responses." + id})
	return b
}

const secretFlake = "git+https://user:s3cret@git.example.com/x.git?access_token=tok123"

// nixos-rebuild's output reaches the requester as output statuses before
// the final one, and the listener's log line by line with the request
// id; credentials of the flake URL appear in neither, nor in started or
// the failure's tail, while nixos-rebuild itself gets the real URL.
func TestLiveOutputAndRedaction(t *testing.T) {
	t.Parallel()
	var logBuf testenv.Buffer
	statuses := newStatusLog()
	var argv []string
	srv, err := NewServer(ServerConfig{
		Hostname: "web1", Tier: "test", FlakeURL: secretFlake,
		Logger:  slog.New(slog.NewTextHandler(&logBuf, nil)),
		Publish: statuses.publish,
		Rebuild: func(_ context.Context, r Rebuild) (string, error) {
			argv = r.Argv
			r.Line("fetching " + r.Argv[3])
			r.Line("building the system configuration...")
			return "error: cannot fetch 'https://user:s3cret@git.example.com/x.git'", errors.New("exit status 1")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Handle("deploy.test.web1", switchRequest("r1"))
	got := statuses.until(t, "r1")

	var kinds []string
	var lines []string
	for _, r := range got {
		kinds = append(kinds, string(r.Status))
		lines = append(lines, r.Lines...)
		if r.Status == protocol.StatusOutput && r.Message != "building the system configuration..." {
			t.Errorf("output status message %q, want the latest line", r.Message)
		}
	}
	if k := strings.Join(kinds, " "); k != "accepted started output failed" {
		t.Fatalf("statuses %s, want accepted started output failed", k)
	}
	wantLines := "fetching git+https://***@git.example.com/x.git?access_token=***&ref=main#web1|building the system configuration..."
	if strings.Join(lines, "|") != wantLines {
		t.Errorf("lines %q, want %q", lines, wantLines)
	}
	final := got[len(got)-1]
	if final.Error != protocol.ErrBuildFailed || !strings.Contains(final.Message, "cannot fetch 'https://***@git.example.com") {
		t.Errorf("final %+v: want build_failed with the redacted tail", final)
	}
	if !strings.Contains(argv[3], "user:s3cret@") || !strings.Contains(argv[3], "access_token=tok123") {
		t.Errorf("nixos-rebuild got %q, want the real flake URL", argv)
	}
	all, _ := json.Marshal(got)
	for what, text := range map[string]string{"statuses": string(all), "log": logBuf.String()} {
		if strings.Contains(text, "s3cret") || strings.Contains(text, "tok123") {
			t.Errorf("%s show a credential:\n%s", what, text)
		}
	}
	n := 0
	for _, l := range strings.Split(logBuf.String(), "\n") {
		if strings.Contains(l, `msg="nixos-rebuild output"`) && strings.Contains(l, " id=r1 ") {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d output records with the request id in the log, want 2:\n%s", n, logBuf.String())
	}
}

// A second listener process (here a second Server on the same lock file,
// as after a restart) refuses deploys while a rebuild of the first holds
// the rebuild lock, says who holds it, and reports busy; once it is free,
// deploys run again.
func TestRebuildLockRefusesWhileHeldElsewhere(t *testing.T) {
	t.Parallel()
	lockFile := filepath.Join(t.TempDir(), "run", "listener.lock")
	release := make(chan struct{})
	started := make(chan Rebuild, 1)
	first := newStatusLog()
	a, err := NewServer(ServerConfig{Hostname: "web1", Tier: "test", FlakeURL: "git+file:///srv/cfg", LockFile: lockFile, Publish: first.publish,
		Rebuild: func(_ context.Context, r Rebuild) (string, error) {
			r.Started(os.Getpid())
			started <- r
			<-release
			return "", nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	a.Handle("deploy.test.web1", switchRequest("rA"))
	r := <-started
	if len(r.Inherit) != 1 || r.Inherit[0].Name() != lockFile {
		t.Fatalf("nixos-rebuild inherits %v, want the lock file %s", r.Inherit, lockFile)
	}

	var ran int
	second := newStatusLog()
	var logBuf testenv.Buffer
	b, err := NewServer(ServerConfig{Hostname: "web1", Tier: "test", FlakeURL: "git+file:///srv/cfg", LockFile: lockFile, Publish: second.publish,
		Logger:  slog.New(slog.NewTextHandler(&logBuf, nil)),
		Rebuild: func(context.Context, Rebuild) (string, error) { ran++; return "", nil }})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logBuf.String(), "deploys are refused with already_running until the rebuild lock is free") {
		t.Errorf("no start-up warning about the held lock:\n%s", logBuf.String())
	}
	if !b.Busy() {
		t.Error("the second listener does not report busy while the lock is held")
	}
	b.Handle("deploy.test.web1", switchRequest("rB1"))
	got := second.until(t, "rB1")
	refusal := got[len(got)-1]
	if len(got) != 1 || refusal.Status != protocol.StatusRejected || refusal.Error != protocol.ErrAlreadyRunning ||
		!strings.Contains(refusal.Message, fmt.Sprintf("pid %d", os.Getpid())) || !strings.Contains(refusal.Message, "request rA") {
		t.Fatalf("second listener answered %+v, want rejected/already_running naming pid %d and request rA", got, os.Getpid())
	}
	if !strings.Contains(logBuf.String(), "rejected deploy: the rebuild lock is taken") {
		t.Errorf("the refusal is not logged:\n%s", logBuf.String())
	}

	close(release)
	first.until(t, "rA")
	if b.Busy() {
		t.Error("still busy after the rebuild ended")
	}
	b.Handle("deploy.test.web1", switchRequest("rB2"))
	if got := second.until(t, "rB2"); got[len(got)-1].Status != protocol.StatusCompleted || ran != 1 {
		t.Fatalf("after the lock was freed: %+v, ran %d", got, ran)
	}
}

func TestParseLockRecord(t *testing.T) {
	t.Parallel()
	h := ParseLockRecord("1234 r1 2026-12-01T10:00:00Z\n")
	if h.PID != 1234 || h.ID != "r1" || h.Started.IsZero() {
		t.Errorf("parsed %+v", h)
	}
	if h := ParseLockRecord("-5 a.b yesterday"); h.PID != 0 || h.ID != "" || !h.Started.IsZero() {
		t.Errorf("invalid fields kept: %+v", h)
	}
}

func FuzzParseLockRecord(f *testing.F) {
	f.Add("1234 r1 2026-12-01T10:00:00Z\n")
	f.Add("99999999999 - x")
	f.Add("12 \u202e 2026-12-01T10:00:00Z")
	f.Fuzz(func(t *testing.T, s string) {
		h := ParseLockRecord(s)
		if h.PID < 0 || (h.ID != "" && protocol.ValidateRequestID(h.ID) != nil) {
			t.Fatalf("ParseLockRecord(%q) = %+v", s, h)
		}
		msg := (&LockHeldError{Path: "/run/x", Holder: h}).Error()
		if strings.ContainsAny(msg, "\n\x00\u202e") {
			t.Fatalf("message %q", msg)
		}
	})
}

// An output status from a host not heard from before (its accepted and
// started were lost) makes it a running host, not a finished one.
func TestOutputIsProofOfLife(t *testing.T) {
	t.Parallel()
	h := &hostState{}
	var got []tools.Event
	r := protocol.DeployResponse{Hostname: "web1", Status: protocol.StatusOutput, Message: "b",
		Output: protocol.Output{Lines: protocol.OutputLines{"a", "b"}, DroppedLines: 3, ElapsedSeconds: 4}}
	h.output(r, 5*time.Second, func(e tools.Event) { got = append(got, e) }, tools.Event{Total: 1})
	if h.terminal || h.resp.Status != protocol.StatusStarted || h.lastAt != 5*time.Second {
		t.Fatalf("host state %+v", h)
	}
	if len(got) != 1 || got[0].Status != protocol.StatusOutput || got[0].Running != 4*time.Second || len(got[0].Lines) != 3 || got[0].Lines[2] != "b" {
		t.Fatalf("events %+v: want one output event with a dropped-lines note and both lines", got)
	}
	// The same count again adds no second note.
	h.output(r, 6*time.Second, func(e tools.Event) { got = append(got, e) }, tools.Event{})
	if len(got[1].Lines) != 2 {
		t.Fatalf("second event lines %q", got[1].Lines)
	}
}
