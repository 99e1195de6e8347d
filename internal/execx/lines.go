package execx

import (
	"bytes"
	"strings"
	"sync"
)

// lineSplitter turns the output of one or two streams into whole lines for
// Cmd.OnLine. A line ends at '\n'; a trailing '\r' goes, and of a line that
// a progress meter rewrote with '\r' only the last version is kept, which
// is what a terminal would have shown.
type lineSplitter struct {
	fn     func(string)
	mu     sync.Mutex
	part   [3][]byte // partial line per stream (1 stdout, 2 stderr)
	skip   [3]bool   // the rest of an over-long line is being dropped
	closed bool
}

func (l *lineSplitter) write(stream int, p []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if !l.skip[stream] {
			room := MaxLineBytes - len(l.part[stream])
			if len(chunk) > room {
				l.part[stream] = append(l.part[stream], chunk[:room]...)
				l.skip[stream] = true
			} else {
				l.part[stream] = append(l.part[stream], chunk...)
			}
		}
		if i < 0 {
			if l.skip[stream] && len(l.part[stream]) >= MaxLineBytes {
				// A line longer than the bound: hand over what fits now
				// rather than holding it until a newline that may never
				// come; the rest of the line is dropped.
				l.emit(stream)
			}
			return
		}
		l.emit(stream)
		l.skip[stream] = false
		p = p[i+1:]
	}
}

// emit hands the partial line of stream to fn. Called with mu held, so
// calls never overlap.
func (l *lineSplitter) emit(stream int) {
	b := l.part[stream]
	if len(b) == 0 {
		return
	}
	s := strings.TrimSuffix(string(b), "\r")
	if i := strings.LastIndexByte(s, '\r'); i >= 0 {
		s = s[i+1:]
	}
	l.part[stream] = b[:0]
	l.fn(s)
}

// flush hands over unterminated lines and stops taking output.
func (l *lineSplitter) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	for stream := range l.part {
		l.emit(stream)
	}
	l.closed = true
}

// streamLines is the io.Writer of one stream.
type streamLines struct {
	s      *lineSplitter
	stream int
}

func (w *streamLines) Write(p []byte) (int, error) {
	w.s.write(w.stream, p)
	return len(p), nil
}

// mergedOutput is the single writer for stdout and stderr together: the
// tail and the line splitter.
type mergedOutput struct {
	tail  *tailBuffer
	lines *streamLines
}

func (m *mergedOutput) Write(p []byte) (int, error) {
	_, _ = m.tail.Write(p)
	return m.lines.Write(p)
}
