package execx

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// streamHarness drives a Stream with its own ticks and clock. tick returns
// once the stream has handled the tick (the tick channel is unbuffered,
// so the next send waits for the loop to come back).
type streamHarness struct {
	s       *Stream
	ticks   chan time.Time
	mu      sync.Mutex
	now     time.Time
	batches []Batch
}

func newStreamHarness(o StreamOptions) *streamHarness {
	h := &streamHarness{ticks: make(chan time.Time), now: time.Unix(1000, 0)}
	o.Ticks = h.ticks
	o.Now = func() time.Time { h.mu.Lock(); defer h.mu.Unlock(); return h.now }
	o.Send = func(b Batch) { h.mu.Lock(); h.batches = append(h.batches, b); h.mu.Unlock() }
	h.s = StartStream(o)
	return h
}

func (h *streamHarness) advance(d time.Duration) {
	h.mu.Lock()
	h.now = h.now.Add(d)
	h.mu.Unlock()
	h.ticks <- h.now
	h.ticks <- h.now // handled: the loop took the first one and came back
}

func (h *streamHarness) got() []Batch {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Batch(nil), h.batches...)
}

func TestStreamBatchesPerInterval(t *testing.T) {
	t.Parallel()
	h := newStreamHarness(StreamOptions{})
	h.s.Line("one")
	h.s.Line("two")
	h.advance(500 * time.Millisecond)
	h.advance(500 * time.Millisecond) // nothing new, no heartbeat due: nothing sent
	h.s.Line("three")
	h.s.Close()
	b := h.got()
	if len(b) != 2 {
		t.Fatalf("batches = %+v, want 2", b)
	}
	if strings.Join(b[0].Lines, ",") != "one,two" || b[0].Last != "two" || b[0].Elapsed != 500*time.Millisecond {
		t.Errorf("first batch = %+v", b[0])
	}
	// The last line goes out at Close, before the caller's final status.
	if strings.Join(b[1].Lines, ",") != "three" || b[1].Last != "three" {
		t.Errorf("batch at close = %+v", b[1])
	}
}

// While the command is silent a heartbeat goes out every Heartbeat, with
// the time elapsed and the last line.
func TestStreamHeartbeat(t *testing.T) {
	t.Parallel()
	h := newStreamHarness(StreamOptions{})
	h.s.Line("building")
	h.advance(time.Second)
	for i := 0; i < 8; i++ {
		h.advance(500 * time.Millisecond) // 1.5 s … 5 s
	}
	if b := h.got(); len(b) != 1 {
		t.Fatalf("batches = %+v before a heartbeat is due", b)
	}
	// 5.5 s: the next tick would leave 5 s without a status.
	h.advance(500 * time.Millisecond)
	h.advance(500 * time.Millisecond) // 6 s: nothing new, none due
	h.s.Close()
	b := h.got()
	if len(b) != 2 {
		t.Fatalf("batches = %+v, want a batch and one heartbeat", b)
	}
	hb := b[1]
	if len(hb.Lines) != 0 || hb.Last != "building" || hb.Elapsed != 5500*time.Millisecond {
		t.Errorf("heartbeat = %+v", hb)
	}
}

// A flood keeps the newest BatchLines per batch and counts the rest; past
// the run's bound only the count grows; Close reports the final count.
func TestStreamBounds(t *testing.T) {
	t.Parallel()
	h := newStreamHarness(StreamOptions{BatchLines: 3, TotalLines: 5, LineBytes: 8})
	for i := 1; i <= 10; i++ {
		h.s.Line(fmt.Sprintf("line %d", i))
	}
	h.advance(500 * time.Millisecond)
	h.s.Line("line 11 is long")
	h.s.Line("line 12")
	h.s.Line("line 13")
	h.advance(500 * time.Millisecond)
	h.s.Line("line 14")
	h.s.Close()
	b := h.got()
	if len(b) != 3 {
		t.Fatalf("batches = %+v", b)
	}
	if got := strings.Join(b[0].Lines, ","); got != "line 8,line 9,line 10" || b[0].Dropped != 7 {
		t.Errorf("flooded batch = %+v", b[0])
	}
	if got := strings.Join(b[1].Lines, ","); got != "line …,line 12" || b[1].Dropped != 8 || b[1].Last != "line 13" {
		t.Errorf("batch at the run bound = %+v", b[1])
	}
	if len(b[2].Lines) != 0 || b[2].Dropped != 9 || b[2].Last != "line 14" {
		t.Errorf("batch at close = %+v", b[2])
	}
}

// Close with nothing new sends nothing; lines after Close are ignored.
func TestStreamCloseQuiet(t *testing.T) {
	t.Parallel()
	h := newStreamHarness(StreamOptions{Clean: strings.ToUpper})
	h.s.Line("a")
	h.advance(500 * time.Millisecond)
	h.s.Close()
	h.s.Close()
	h.s.Line("late")
	b := h.got()
	if len(b) != 1 || b[0].Lines[0] != "A" {
		t.Fatalf("batches = %+v", b)
	}
}

func TestCutLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"0123456789abc", 10, "0123456…"},
		{"ééééé", 8, "éé…"},
		{"abcdef", 2, "ab"},
	} {
		if got := CutLine(tc.in, tc.max); got != tc.want {
			t.Errorf("CutLine(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

func FuzzCutLine(f *testing.F) {
	f.Add("ééééé", 8)
	f.Add("\xff\xfeabc", 3)
	f.Fuzz(func(t *testing.T, s string, max int) {
		if max < 0 || max > 1<<16 {
			return
		}
		out := CutLine(s, max)
		if len(out) > max && len(s) > max {
			t.Fatalf("CutLine(%q, %d) = %q is longer", s, max, out)
		}
		if len(s) > max && !utf8.ValidString(out) {
			t.Fatalf("CutLine(%q, %d) = %q is not UTF-8", s, max, out)
		}
	})
}

// A batch never holds more than BatchBytes of text, but always the newest
// line.
func TestStreamBatchBytes(t *testing.T) {
	t.Parallel()
	h := newStreamHarness(StreamOptions{BatchBytes: 10, LineBytes: 64})
	h.s.Line("aaaa")
	h.s.Line("bbbb")
	h.s.Line("cccc")
	h.s.Line(strings.Repeat("d", 20))
	h.s.Close()
	b := h.got()
	if len(b) != 1 || len(b[0].Lines) != 1 || b[0].Lines[0] != strings.Repeat("d", 20) || b[0].Dropped != 3 {
		t.Fatalf("batches = %+v", b)
	}
}
