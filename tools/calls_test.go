package tools

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

type countOut struct {
	N    int
	Done bool
}

func (o countOut) IsError() bool   { return false }
func (o countOut) Summary() string { return fmt.Sprint(o.N) }

// counter counts the events it saw.
type counter struct{ n int }

func (c *counter) Apply(Event)      { c.n++ }
func (c *counter) Result() countOut { return countOut{N: c.n} }

func TestCallsExpireAfterKeepAndEvictTheOldestFinishedFirst(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	c := NewCalls(time.Hour, 3)
	c.now = func() time.Time { return now }
	start := func(id string) *Call {
		call, _ := c.start(context.Background(), "deploy", id, nil)
		return call
	}
	a, b := start("a"), start("b")
	a.finish(now, countOut{N: 1, Done: true}, nil)
	now = now.Add(59 * time.Minute)
	if got := c.Lookup("a"); got == nil || !got.State().Done || got.State().Result.(countOut).N != 1 {
		t.Fatalf("a finished call is kept for its hour: %+v", got)
	}
	now = now.Add(2 * time.Minute)
	if c.Lookup("a") != nil {
		t.Error("a call finished more than an hour ago is still kept")
	}
	if c.Lookup("b") == nil {
		t.Error("a running call expired")
	}
	// Over the bound: finished calls go first, then the oldest running.
	start("c")
	d := start("d")
	d.finish(now, countOut{}, nil)
	start("e")
	if c.Lookup("d") != nil || c.Lookup("b") == nil || c.Lookup("c") == nil || c.Lookup("e") == nil {
		t.Errorf("after eviction: b=%v c=%v d=%v e=%v", c.Lookup("b") != nil, c.Lookup("c") != nil, c.Lookup("d") != nil, c.Lookup("e") != nil)
	}
	start("f")
	if c.Lookup("b") != nil || c.Len() != 3 {
		t.Errorf("the oldest running call was not evicted: %d kept", c.Len())
	}
	_ = b
}

func TestTrackWithoutWaitReturnsAfterTheFirstEventAndKeepsTheRest(t *testing.T) {
	calls := NewCalls(0, 0)
	defer calls.Close()
	env := Env{Tool: "deploy", Calls: calls}
	release := make(chan struct{})
	var seen []Event
	r, err := Track(context.Background(), env, "id1", false, &counter{}, func(e Event) { seen = append(seen, e) },
		func(ctx context.Context, progress Progress) (countOut, error) {
			progress.Emit(Event{Host: "h", Status: protocol.StatusAccepted})
			<-release
			progress.Emit(Event{Host: "h", Status: protocol.StatusStarted})
			return countOut{N: 99, Done: true}, nil
		})
	if err != nil || r.Done || r.N != 1 || len(seen) != 1 {
		t.Fatalf("returned %+v %v after %d events; want the result so far after the first", r, err, len(seen))
	}
	call := calls.Lookup("id1")
	if s := call.State(); s.Done || s.Tool != "deploy" || s.Result.(countOut).N != 1 {
		t.Errorf("while running: %+v", s)
	}
	close(release)
	<-call.Done()
	if s := call.State(); !s.Done || s.Result.(countOut).N != 99 || s.Err != nil {
		t.Errorf("when done: %+v", s)
	}
	// Events after the return are the store's, not the caller's.
	if len(seen) != 1 {
		t.Errorf("the caller's progress got %d events after it returned", len(seen)-1)
	}
}

func TestTrackWaitsAndKeepsTheFinalResult(t *testing.T) {
	calls := NewCalls(0, 0)
	env := Env{Tool: "build", Calls: calls}
	boom := errors.New("nats: connection closed")
	_, err := Track(context.Background(), env, "id2", true, &counter{}, nil, func(ctx context.Context, progress Progress) (countOut, error) {
		return countOut{}, boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
	if s := calls.Lookup("id2").State(); !s.Done || !errors.Is(s.Err, boom) {
		t.Errorf("kept %+v", s)
	}
	// Without a store, wait false is refused before anything runs.
	ran := false
	_, err = Track(context.Background(), Env{}, "id3", false, &counter{}, nil, func(context.Context, Progress) (countOut, error) {
		ran = true
		return countOut{}, nil
	})
	var inputErr *InputError
	if !errors.As(err, &inputErr) || ran {
		t.Errorf("wait false without a store: %v, ran %v", err, ran)
	}
}

func TestDefaultsPerToolComeFirst(t *testing.T) {
	tl := Tool{Name: "deploy"}
	d := map[string]any{"branch": "main", "deploy.branch": "prod-ready", "timeout_seconds": 5}
	if v, _ := tl.Default(d, "branch"); v != "prod-ready" {
		t.Errorf("branch default %v", v)
	}
	if v, _ := tl.Default(d, "timeout_seconds"); v != 5 {
		t.Errorf("timeout default %v", v)
	}
	if _, ok := (&Tool{Name: "build"}).Default(map[string]any{"deploy.branch": "x"}, "branch"); ok {
		t.Error("a deploy default applied to build")
	}
}
