package serve

import (
	"context"
	"testing"
	"time"
)

func TestTakeRefusesOnceClosed(t *testing.T) {
	t.Parallel()
	c := New(Config{})
	if !c.Take() {
		t.Fatal("an open core refused a job")
	}
	c.Done()
	c.Close()
	if c.Take() {
		t.Fatal("a closed core took a job")
	}
}

func TestReplayedAndReplyAllowed(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	c := New(Config{ReplyPrefix: "deploy.responses.", ReplayWindow: time.Minute, Now: func() time.Time { return now }})
	if c.Replayed("a") || !c.Replayed("a") {
		t.Error("an id was not refused the second time")
	}
	now = now.Add(2 * time.Minute)
	if c.Replayed("a") {
		t.Error("an id was still refused after the replay window")
	}
	for subject, want := range map[string]bool{
		"deploy.responses.x": true, "build.responses.x": false, "deploy.responses.>": false, "": false,
	} {
		if got := c.ReplyAllowed(subject); got != want {
			t.Errorf("ReplyAllowed(%q) = %v, want %v", subject, got, want)
		}
	}
}

// A job that finishes within the grace period is not cancelled.
func TestShutdownWaitsForRunningJob(t *testing.T) {
	t.Parallel()
	c := New(Config{})
	if !c.Take() {
		t.Fatal("Take refused")
	}
	release := make(chan struct{})
	cancelled := make(chan bool, 1)
	go func() {
		<-release
		cancelled <- c.Context().Err() != nil
		c.Done()
	}()
	result := make(chan bool, 1)
	go func() { result <- c.Shutdown(context.Background()) }()
	close(release)
	if killed := <-result; killed {
		t.Error("Shutdown reports killing a job that finished")
	}
	if <-cancelled {
		t.Error("the job's context ended before it finished")
	}
	if c.Take() {
		t.Error("Take after Shutdown")
	}
}

// A job still running when the grace period ends sees its context end, and
// Shutdown returns only after it reported.
func TestShutdownCancelsAfterGrace(t *testing.T) {
	t.Parallel()
	c := New(Config{})
	if !c.Take() {
		t.Fatal("Take refused")
	}
	reported := make(chan struct{})
	go func() {
		<-c.Context().Done()
		close(reported)
		c.Done()
	}()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if killed := c.Shutdown(ctx); !killed {
		t.Error("Shutdown does not report the killed job")
	}
	select {
	case <-reported:
	default:
		t.Error("Shutdown returned before the job reported")
	}
}
