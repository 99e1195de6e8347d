// Package seen remembers request ids for a while, so a captured request
// cannot be replayed into a second deploy or build within that window.
package seen

import (
	"sync"
	"time"
)

// Set is a bounded, time-limited set of ids. The zero value is not usable;
// call New.
type Set struct {
	mu     sync.Mutex
	window time.Duration
	max    int
	at     map[string]time.Time
	order  []string // insertion order, for eviction
	now    func() time.Time
}

// New returns a set that remembers ids for window, holding at most max ids
// (the oldest are forgotten first).
func New(window time.Duration, max int, now func() time.Time) *Set {
	if now == nil {
		now = time.Now
	}
	return &Set{window: window, max: max, at: map[string]time.Time{}, now: now}
}

// Add records id and reports whether it was new. The empty id is always new
// and never recorded.
func (s *Set) Add(id string) bool {
	if id == "" {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.expire(now)
	if _, ok := s.at[id]; ok {
		return false
	}
	for len(s.order) >= s.max && len(s.order) > 0 {
		delete(s.at, s.order[0])
		s.order = s.order[1:]
	}
	s.at[id] = now
	s.order = append(s.order, id)
	return true
}

// Len returns how many ids are remembered.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.at)
}

func (s *Set) expire(now time.Time) {
	i := 0
	for i < len(s.order) && now.Sub(s.at[s.order[i]]) > s.window {
		delete(s.at, s.order[i])
		i++
	}
	if i > 0 {
		s.order = append(s.order[:0:0], s.order[i:]...)
	}
}
