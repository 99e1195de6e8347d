package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// The host's deploy slot is free before the final status is published: a
// requester that sends the next deploy the instant it hears "completed" (here
// from inside Publish itself) is never told a deploy is still running.
func TestSlotIsFreeWhenTheFinalStatusGoesOut(t *testing.T) {
	t.Parallel()
	var (
		mu       sync.Mutex
		statuses []string
		srv      *Server
		next     = 1
	)
	done := make(chan struct{})
	request := func(n int) []byte {
		b, _ := json.Marshal(protocol.DeployRequest{ID: fmt.Sprint("r", n), Action: "test", Revision: "main", ReplyTo: fmt.Sprint("deploy.responses.r", n)})
		return b
	}
	srv, err := NewServer(ServerConfig{
		Hostname: "h1", Tier: "test", FlakeURL: "git+file:///srv/cfg",
		Exec: func(context.Context, []string) (string, error) { return "", nil },
		Publish: func(subject string, data []byte) error {
			var r protocol.DeployResponse
			_ = json.Unmarshal(data, &r)
			mu.Lock()
			statuses = append(statuses, r.ID+":"+string(r.Status)+":"+string(r.Error))
			again := r.Status == protocol.StatusCompleted && next < 3
			if again {
				next++
			}
			n := next
			finished := r.Status == protocol.StatusCompleted && n == 3 && r.ID == "r3"
			mu.Unlock()
			if again {
				srv.Handle("deploy.test.h1", request(n))
			}
			if finished {
				close(done)
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Handle("deploy.test.h1", request(1))
	select {
	case <-done:
	case <-time.After(30 * time.Second):
	}
	mu.Lock()
	defer mu.Unlock()
	want := "[r1:accepted: r1:started: r1:completed: r2:accepted: r2:started: r2:completed: r3:accepted: r3:started: r3:completed:]"
	if got := fmt.Sprint(statuses); got != want {
		t.Fatalf("statuses\n got %s\nwant %s", got, want)
	}
}

// Handle racing Shutdown: once Shutdown has returned, no deploy starts
// (nixos-rebuild never runs after the listener said it stopped), and the race
// detector sees no unsynchronised WaitGroup use.
func TestNoDeployStartsAfterShutdown(t *testing.T) {
	t.Parallel()
	late := 0
	for i := range 500 {
		var shutDown, ranLate atomic.Bool
		srv, _ := NewServer(ServerConfig{Hostname: "h1", Tier: "test", FlakeURL: "git+file:///srv/cfg",
			Exec: func(context.Context, []string) (string, error) {
				if shutDown.Load() {
					ranLate.Store(true)
				}
				return "", nil
			},
			Publish: func(string, []byte) error { return nil }})
		b, _ := json.Marshal(protocol.DeployRequest{ID: fmt.Sprint("r", i), Action: "test", Revision: "main", ReplyTo: "deploy.responses.x"})
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); srv.Handle("deploy.test.h1", b) }()
		go func() { defer wg.Done(); srv.Shutdown(context.Background()); shutDown.Store(true) }()
		wg.Wait()
		// A second Shutdown returns once every deploy that was taken has
		// finished, so a late one has run by now.
		srv.Shutdown(context.Background())
		if ranLate.Load() {
			late++
		}
	}
	if late > 0 {
		t.Errorf("nixos-rebuild started after Shutdown returned in %d/500 runs", late)
	}
}
