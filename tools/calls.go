package tools

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// Calls keeps the long calls (deploys, builds) an adapter started, by
// request id, with their current result while they run and their final
// result after, so that a caller that did not wait (`"wait": false`) or
// lost its connection can read them later (the status tool). It knows no
// tool: a call is an id, a tool name and a tools.Result.
//
// It holds what an MCP tasks implementation needs as well: an id, a state
// that changes while the work runs (CallState.Updated), a final result or
// error, a channel that closes when the work ends (Call.Done), a way to
// stop waiting (Call.Cancel), and a time to live (Keep). Such an
// implementation maps Done/Err/Result.IsError to the task statuses
// (working, completed, failed, cancelled) and renders the result the way
// the adapter renders a tool result.
type Calls struct {
	keep time.Duration
	max  int
	now  func() time.Time

	base context.Context
	stop context.CancelFunc

	mu    sync.Mutex
	byID  map[string]*Call
	order []*Call // by start, oldest first
}

// Defaults of NewCalls.
const (
	// DefaultKeepCalls is how long a finished call is kept.
	DefaultKeepCalls = time.Hour
	// DefaultMaxCalls bounds the calls kept; past it the oldest go first,
	// finished ones before running ones.
	DefaultMaxCalls = 1000
)

// NewCalls returns an empty store that keeps finished calls for keep and at
// most max calls (zero values take the defaults). Close it to stop the
// work it runs in the background.
func NewCalls(keep time.Duration, max int) *Calls {
	if keep <= 0 {
		keep = DefaultKeepCalls
	}
	if max <= 0 {
		max = DefaultMaxCalls
	}
	base, stop := context.WithCancel(context.Background())
	return &Calls{keep: keep, max: max, now: time.Now, base: base, stop: stop, byID: map[string]*Call{}}
}

// Keep is how long a finished call is kept.
func (c *Calls) Keep() time.Duration { return c.keep }

// Close stops every call running in the background (their wait ends, the
// work on the hosts does not) and waits for nothing.
func (c *Calls) Close() { c.stop() }

// Call is one tracked call.
type Call struct {
	id, tool string
	started  time.Time
	done     chan struct{}
	cancel   context.CancelFunc

	mu      sync.Mutex
	current func() Result // the result so far, while running
	result  Result
	err     error
	updated time.Time
	ended   time.Time
}

// CallState is a call as Lookup sees it.
type CallState struct {
	ID, Tool string
	Started  time.Time
	// Updated is when the call last changed (an event, its end).
	Updated time.Time
	// Done is true once the work ended; Ended says when.
	Done  bool
	Ended time.Time
	// Result is the final result when Done, else the result so far; nil
	// when the work ended without one (Err says why).
	Result Result
	Err    error
}

// start registers a call; current gives its result so far.
func (c *Calls) start(ctx context.Context, tool, id string, current func() Result) (*Call, context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	now := c.now()
	call := &Call{id: id, tool: tool, started: now, updated: now, done: make(chan struct{}), cancel: cancel, current: current}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.evictLocked(now)
	if old := c.byID[id]; old != nil {
		c.order = slices.DeleteFunc(c.order, func(x *Call) bool { return x == old })
	}
	c.byID[id] = call
	c.order = append(c.order, call)
	return call, ctx
}

// evictLocked forgets calls that ended more than keep ago, then the oldest
// finished calls, then the oldest running ones, until one more fits.
func (c *Calls) evictLocked(now time.Time) {
	c.order = slices.DeleteFunc(c.order, func(x *Call) bool {
		x.mu.Lock()
		expired := !x.ended.IsZero() && now.Sub(x.ended) > c.keep
		x.mu.Unlock()
		if expired {
			delete(c.byID, x.id)
		}
		return expired
	})
	for _, finished := range []bool{true, false} {
		for i := 0; i < len(c.order) && len(c.order) >= c.max; {
			x := c.order[i]
			x.mu.Lock()
			ended := !x.ended.IsZero()
			x.mu.Unlock()
			if ended != finished {
				i++
				continue
			}
			delete(c.byID, x.id)
			c.order = slices.Delete(c.order, i, i+1)
		}
	}
}

// Lookup returns the call with id, or nil when it is unknown or expired.
func (c *Calls) Lookup(id string) *Call {
	c.mu.Lock()
	defer c.mu.Unlock()
	call := c.byID[id]
	if call == nil {
		return nil
	}
	call.mu.Lock()
	expired := !call.ended.IsZero() && c.now().Sub(call.ended) > c.keep
	call.mu.Unlock()
	if expired {
		return nil
	}
	return call
}

// Len returns the number of calls kept.
func (c *Calls) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byID)
}

// State returns the call's current or final state.
func (x *Call) State() CallState {
	x.mu.Lock()
	defer x.mu.Unlock()
	s := CallState{ID: x.id, Tool: x.tool, Started: x.started, Updated: x.updated, Ended: x.ended, Done: !x.ended.IsZero(), Err: x.err}
	switch {
	case s.Done:
		s.Result = x.result
	case x.current != nil:
		s.Result = x.current()
	}
	return s
}

// Done is closed when the call's work ends.
func (x *Call) Done() <-chan struct{} { return x.done }

// Cancel stops waiting for the call (the work on the hosts goes on); its
// final result says it was interrupted.
func (x *Call) Cancel() { x.cancel() }

// update runs apply (which changes what current returns) under the
// call's lock.
func (x *Call) update(now time.Time, apply func()) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.ended.IsZero() {
		apply()
		x.updated = now
	}
}

func (x *Call) finish(now time.Time, r Result, err error) {
	x.mu.Lock()
	if x.ended.IsZero() {
		x.result, x.err, x.ended, x.updated = r, err, now, now
		x.current = nil
		close(x.done)
	}
	x.mu.Unlock()
	x.cancel()
}

// Tracker folds a running call's events into its result so far. Apply and
// Result are never called at the same time.
type Tracker[R Result] interface {
	Apply(Event)
	// Result returns the result so far as a value that later events do
	// not change.
	Result() R
}

// FirstAnswerWait bounds how long a call that does not wait (`"wait":
// false`) waits for its first event before it returns what it knows.
const FirstAnswerWait = 3 * time.Second

// ErrNoCallStore is returned for `"wait": false` by an adapter that keeps
// no calls (the CLI): nobody could read the result later.
var ErrNoCallStore = errors.New(`"wait": false needs a server that keeps results for the status tool (the MCP server); here the call always waits`)

// Track carries out work, the request half of a long call whose request id
// is id, for the tool env.Tool.
//
// With wait, work runs in ctx and its result is returned. Without, work
// runs in the background (bounded by its own timeout, and by the store's
// Close), and Track returns the tracker's result so far after the first
// event, the end of the work, or FirstAnswerWait, whichever comes first;
// progress receives events only until then. Either way, when env has a
// store, the call is kept there under id, with the tracker's result while
// it runs.
func Track[R Result](ctx context.Context, env Env, id string, wait bool, tr Tracker[R], progress Progress, work func(context.Context, Progress) (R, error)) (R, error) {
	store := env.Calls
	if store == nil {
		if !wait {
			var zero R
			return zero, &InputError{ErrNoCallStore}
		}
		return work(ctx, progress)
	}
	var mu sync.Mutex // orders Apply and Result
	caller := ctx
	if !wait {
		ctx = store.base
	}
	call, ctx := store.start(ctx, env.Tool, id, func() Result {
		mu.Lock()
		defer mu.Unlock()
		return tr.Result()
	})
	first := make(chan struct{})
	var once sync.Once
	var attached sync.Mutex // held while progress may be called
	detached := false
	track := func(e Event) {
		call.update(store.now(), func() {
			mu.Lock()
			tr.Apply(e)
			mu.Unlock()
		})
		attached.Lock()
		if !detached {
			progress.Emit(e)
		}
		attached.Unlock()
		once.Do(func() { close(first) })
	}
	if wait {
		r, err := work(ctx, track)
		call.finish(store.now(), r, err)
		return r, err
	}
	go func() {
		r, err := work(ctx, track)
		call.finish(store.now(), r, err)
	}()
	bound := time.NewTimer(FirstAnswerWait)
	defer bound.Stop()
	select {
	case <-first:
	case <-call.Done():
	case <-bound.C:
	case <-caller.Done():
	}
	attached.Lock()
	detached = true
	attached.Unlock()
	if s := call.State(); s.Done {
		if r, ok := s.Result.(R); ok {
			return r, s.Err
		}
		var zero R
		return zero, s.Err
	}
	mu.Lock()
	defer mu.Unlock()
	return tr.Result(), caller.Err()
}
