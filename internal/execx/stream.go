package execx

import (
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Stream turns the lines of a long-running command into a bounded series
// of batches for a requester: at most one batch per Interval with at most
// BatchLines lines and BatchBytes bytes (the newest, when more arrived),
// each line cut to LineBytes, at most TotalLines lines and TotalBytes
// bytes per run (then only the count of lines left out grows), and a batch
// without lines at least every Heartbeat while nothing else goes out. The most recent line
// is never lost: every batch carries it in Last, and Close sends what is
// still pending before it returns.
type Stream struct {
	o     StreamOptions
	start time.Time
	stop  chan struct{}
	done  chan struct{}

	closeOnce sync.Once

	mu       sync.Mutex
	pending  []string
	pendingB int // bytes in pending
	last     string
	dropped  int // lines left out so far
	sentDrop int // dropped as of the last batch
	sent     int // lines sent
	bytes    int // bytes of lines sent
	lastSend time.Time
	closed   bool
}

// StreamOptions configure a Stream. Zero values take the defaults noted.
type StreamOptions struct {
	Interval   time.Duration // 500 ms
	Heartbeat  time.Duration // 5 s
	BatchLines int           // 50
	BatchBytes int           // 4 KiB of line text per batch
	LineBytes  int           // 512
	TotalLines int           // 5000
	TotalBytes int           // 512 KiB
	// Clean is applied to every line before it is cut or counted
	// (redaction, control characters); nil keeps lines as they are.
	Clean func(string) string
	// Send receives each batch. It is called from one goroutine at a
	// time, never after Close has returned.
	Send func(Batch)
	// Now and Ticks replace the clock and the Interval ticker (tests).
	Now   func() time.Time
	Ticks <-chan time.Time
}

// Batch is one streamed piece of output.
type Batch struct {
	// Lines are the new lines, oldest first; empty for a heartbeat.
	Lines []string
	// Dropped counts the lines of this run left out so far (over the
	// batch or run bounds); it never decreases.
	Dropped int
	// Elapsed is the time since the stream started.
	Elapsed time.Duration
	// Last is the most recent line the command wrote ("" before any).
	Last string
}

// StartStream starts a stream; the caller feeds it with Line and ends it
// with Close.
func StartStream(o StreamOptions) *Stream {
	if o.Interval <= 0 {
		o.Interval = 500 * time.Millisecond
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 5 * time.Second
	}
	if o.BatchLines <= 0 {
		o.BatchLines = 50
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 4 << 10
	}
	if o.LineBytes <= 0 {
		o.LineBytes = 512
	}
	if o.TotalLines <= 0 {
		o.TotalLines = 5000
	}
	if o.TotalBytes <= 0 {
		o.TotalBytes = 512 << 10
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Stream{o: o, stop: make(chan struct{}), done: make(chan struct{})}
	s.start = o.Now()
	s.lastSend = s.start
	ticks := o.Ticks
	var ticker *time.Ticker
	if ticks == nil {
		ticker = time.NewTicker(o.Interval)
		ticks = ticker.C
	}
	go func() {
		defer close(s.done)
		if ticker != nil {
			defer ticker.Stop()
		}
		for {
			select {
			case <-s.stop:
				return
			case <-ticks:
				s.tick()
			}
		}
	}()
	return s
}

// Line adds one line of output. It is safe to call from any goroutine;
// lines after Close are ignored.
func (s *Stream) Line(line string) {
	if s.o.Clean != nil {
		line = s.o.Clean(line)
	}
	line = CutLine(line, s.o.LineBytes)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.last = line
	s.pending = append(s.pending, line)
	s.pendingB += len(line)
	// Faster than a batch per Interval can carry: the oldest go.
	n := 0
	for len(s.pending)-n > s.o.BatchLines || s.pendingB > s.o.BatchBytes && len(s.pending)-n > 1 {
		s.pendingB -= len(s.pending[n])
		n++
	}
	if n > 0 {
		s.dropped += n
		s.pending = append(s.pending[:0], s.pending[n:]...)
	}
}

// tick sends a batch when there is news, or a heartbeat on the last tick
// before nothing would have gone out for longer than Heartbeat (ticks come
// every Interval), so that the gap stays within Heartbeat.
func (s *Stream) tick() {
	now := s.o.Now()
	b, ok := s.take(now, now.Sub(s.lastSend)+s.o.Interval >= s.o.Heartbeat)
	if ok {
		s.o.Send(b)
	}
}

// take builds the next batch; ok is false when there is nothing to send
// and no heartbeat is due.
func (s *Stream) take(now time.Time, heartbeat bool) (Batch, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) == 0 && s.dropped == s.sentDrop && !heartbeat {
		return Batch{}, false
	}
	var lines []string
	for _, l := range s.pending {
		if s.sent >= s.o.TotalLines || s.bytes+len(l) > s.o.TotalBytes {
			s.dropped++
			continue
		}
		s.sent++
		s.bytes += len(l)
		lines = append(lines, l)
	}
	s.pending, s.pendingB = s.pending[:0], 0
	s.sentDrop = s.dropped
	s.lastSend = now
	return Batch{Lines: lines, Dropped: s.dropped, Elapsed: now.Sub(s.start), Last: s.last}, true
}

// Close stops the stream and sends the lines still pending (or a count of
// lines left out since the last batch) before it returns, so the last
// batch precedes whatever the caller sends next.
func (s *Stream) Close() {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		b, ok := s.take(s.o.Now(), false)
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		if ok {
			s.o.Send(b)
		}
	})
}

// CutLine cuts s to at most max bytes on a character boundary, marking a
// cut with "…" (counted in max).
func CutLine(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const mark = "…"
	n, suffix := max-len(mark), mark
	if n < 0 {
		n, suffix = max, ""
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return strings.ToValidUTF8(s[:n], "") + suffix
}
