// Package serve is the lifecycle every serve half shares (the listener's
// deploys, the builder's builds): taking a job only while the server is
// open, refusing replayed request ids, publishing only under the server's
// reply prefix, and a shutdown that lets running jobs finish within a grace
// period before killing them. What a job does, and what it answers, stays
// in the tool's own serve half.
package serve

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/seen"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// maxIDs bounds the replay window's memory: far more requests than a
// listener or builder sees in ten minutes.
const maxIDs = 100000

// Config configures a Core.
type Config struct {
	// ReplyPrefix is the only subject prefix replies may be published under
	// (protocol.DeployResponsesPrefix, protocol.BuildResponsesPrefix).
	ReplyPrefix string
	// ReplayWindow is how long request ids are remembered (default 10 min).
	ReplayWindow time.Duration
	// Now is the clock of the replay window (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Core is the shared part of a serve half. The zero value is not usable;
// call New.
type Core struct {
	replyPrefix string
	log         *slog.Logger
	ids         *seen.Set
	wg          sync.WaitGroup
	ctx         context.Context
	cancel      context.CancelFunc
	// mu orders taking a job (wg.Add) against closing: once closing is
	// set, no job starts and wg.Wait sees every one that did.
	mu      sync.Mutex
	closing bool
}

// New returns an open Core.
func New(cfg Config) *Core {
	if cfg.ReplayWindow <= 0 {
		cfg.ReplayWindow = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Core{replyPrefix: cfg.ReplyPrefix, log: cfg.Logger, ids: seen.New(cfg.ReplayWindow, maxIDs, cfg.Now)}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

// Replayed records id and reports whether it was already seen within the
// replay window: a captured request is carried out once, not twice.
func (c *Core) Replayed(id string) bool { return !c.ids.Add(id) }

// ReplyAllowed reports whether subject is under the server's reply prefix,
// and logs the refusal when it is not: a request must not make the server
// publish anywhere else.
func (c *Core) ReplyAllowed(subject string) bool {
	if protocol.ValidateReplySubject(subject, c.replyPrefix) != nil {
		c.log.Warn("not replying to a subject outside "+c.replyPrefix, "reply_to", subject)
		return false
	}
	return true
}

// Take counts a job in, unless the server is closing; then it returns
// false and the caller refuses the request. After true, the caller must
// call Done when the job is over (also when it then refuses the request
// for a reason of its own, such as a busy slot).
func (c *Core) Take() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.wg.Add(1)
	return true
}

// Done counts a job out.
func (c *Core) Done() { c.wg.Done() }

// Context is the context running jobs derive theirs from: it ends when
// Shutdown's grace period is over, which kills what they run.
func (c *Core) Context() context.Context { return c.ctx }

// Close makes Take refuse every further job. Running jobs go on.
func (c *Core) Close() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
}

// Shutdown closes the server, waits for running jobs until ctx ends, then
// cancels Context and waits for the jobs to report. It returns whether the
// grace period ran out with jobs still running.
func (c *Core) Shutdown(ctx context.Context) (killed bool) {
	c.Close()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		killed = true
		c.log.Warn("shutdown grace period over: killing the running work")
	}
	c.cancel()
	<-done
	return killed
}
