package cli

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
)

// heartbeatEvery is how often, off a terminal, a host that is still
// running gets a line: often enough to show life in a CI log, rarely
// enough not to drown the statuses.
const heartbeatEvery = 30 * time.Second

// progressView renders the progress of a deploy or a build on stderr.
// Status lines are printed as they come. On a terminal, below them, one
// live line per running host (its running time and last output line) is
// rewritten in place; off a terminal nothing is rewritten, and a running
// host gets a line at most every heartbeatEvery. With follow, every output
// line is printed, prefixed with its host.
type progressView struct {
	r      *Root
	w      io.Writer
	follow bool
	live   bool
	width  int

	mu    sync.Mutex
	hosts map[string]*runningHost
	drawn int // lines of the live block on screen
}

type runningHost struct {
	running time.Duration
	last    string
	// said is when (request time) the host last got a line off a
	// terminal.
	said time.Duration
}

// newProgressView returns the view for one command; close it before the
// result is printed.
func (r *Root) newProgressView(follow bool) *progressView {
	v := &progressView{r: r, w: r.Stderr, follow: follow, hosts: map[string]*runningHost{}}
	if r.Terminal(r.Stderr) && r.Getenv != nil && r.Getenv("TERM") != "dumb" {
		v.live = true
		v.width = terminalWidth(r.Stderr, r.Getenv)
	}
	return v
}

// line prints one line above the live block.
func (v *progressView) line(s string) {
	v.clear()
	fmt.Fprintln(v.w, s)
	v.draw()
}

// output takes an output event (new lines, or a heartbeat) of host.
func (v *progressView) output(e tools.Event, heartbeat func(h *runningHost) string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	h := v.hosts[e.Host]
	if h == nil {
		h = &runningHost{said: e.Elapsed}
		v.hosts[e.Host] = h
	}
	h.running = e.Running
	if n := len(e.Lines); n > 0 {
		h.last = e.Lines[n-1]
	} else if e.Message != "" {
		h.last = e.Message
	}
	if v.follow && len(e.Lines) > 0 {
		v.clear()
		for _, l := range e.Lines {
			fmt.Fprintf(v.w, "%s | %s\n", v.r.color(colDim, e.Host), l)
		}
	}
	if !v.live && e.Elapsed-h.said >= heartbeatEvery {
		h.said = e.Elapsed
		fmt.Fprintln(v.w, heartbeat(h))
	}
	v.clear()
	v.draw()
}

// status prints a status line for host; a finished host leaves the live
// block, a started one joins it.
func (v *progressView) status(host string, st protocol.Status, line string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case host == "":
	case st.Terminal():
		delete(v.hosts, host)
	case st == protocol.StatusStarted && v.hosts[host] == nil:
		v.hosts[host] = &runningHost{}
	}
	v.line(line)
}

// close removes the live block, so the result follows the status lines.
func (v *progressView) close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.clear()
	v.hosts = map[string]*runningHost{}
}

// clear erases the live block (called with mu held).
func (v *progressView) clear() {
	if v.drawn == 0 {
		return
	}
	// Up to the block's first line, then erase to the end of the screen.
	fmt.Fprintf(v.w, "\r\x1b[%dA\x1b[J", v.drawn)
	v.drawn = 0
}

// draw prints the live block, one line per running host sorted by name,
// each cut to the terminal's width so that none wraps (called with mu
// held, after clear).
func (v *progressView) draw() {
	if !v.live || len(v.hosts) == 0 {
		return
	}
	names := make([]string, 0, len(v.hosts))
	for n := range v.hosts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		h := v.hosts[n]
		text := fmt.Sprintf("  %-20s running %7s  %s", n, formatRunning(h.running), h.last)
		fmt.Fprintln(v.w, v.r.color(colDim, cutWidth(text, v.width-1)))
	}
	v.drawn = len(names)
}

// formatRunning shows a running time: 8s, 1m05s, 1h02m.
func formatRunning(d time.Duration) string {
	s := int(d.Round(time.Second) / time.Second)
	switch {
	case d <= 0:
		return "-"
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	}
	return fmt.Sprintf("%dh%02dm", s/3600, s/60%60)
}

// cutWidth cuts s to n characters (runes), ending it with "…" when cut.
func cutWidth(s string, n int) string {
	if n <= 1 || utf8.RuneCountInString(s) <= n {
		return s
	}
	runes := []rune(s)
	return string(runes[:n-1]) + "…"
}

// deploy renders one deploy event.
func (v *progressView) deploy(e tools.Event) {
	if e.Status == protocol.StatusOutput {
		v.output(e, func(h *runningHost) string {
			return fmt.Sprintf("%s %-20s %s %s: %s", v.r.color(colDim, fmt.Sprintf("[%6.1fs]", e.Elapsed.Seconds())), e.Host,
				v.r.statusWord("running", protocol.ErrNone), formatRunning(h.running), h.last)
		})
		return
	}
	msg := firstLine(e.Message)
	v.status(e.Host, e.Status, fmt.Sprintf("%s %-20s %s %s", v.r.color(colDim, fmt.Sprintf("[%6.1fs]", e.Elapsed.Seconds())), e.Host, v.r.statusWord(e.Status, e.Error), msg))
}

// build renders one build event: a line when the build starts, one per
// finished host ("[3/5] host3 ok 41.2s"; failures red, with the error's
// telling line), and the running hosts' output.
func (v *progressView) build(e tools.Event) {
	if e.Status == protocol.StatusOutput {
		v.output(e, func(h *runningHost) string {
			return fmt.Sprintf("[%d/%d] %s running %s: %s", e.Done, e.Total, e.Host, formatRunning(h.running), h.last)
		})
		return
	}
	if e.Host == "" {
		v.status("", e.Status, v.r.color(colDim, e.Message))
		return
	}
	counter := fmt.Sprintf("[%d/%d]", e.Done, e.Total)
	secs := fmt.Sprintf("%.1fs", e.Duration.Seconds())
	// A finished host's event says completed or failed; either way it
	// leaves the live block.
	if e.Status == protocol.StatusCompleted {
		v.status(e.Host, protocol.StatusCompleted, fmt.Sprintf("%s %s %s %s", counter, e.Host, v.r.color(colGreen, "ok"), secs))
		return
	}
	word := "FAILED"
	if e.Error == protocol.ErrTimeout {
		word = "TIMEOUT"
	}
	why := e.Message
	if i := strings.Index(why, ": "); i >= 0 && strings.HasPrefix(why, e.Host+" failed") {
		why = why[i+2:]
	}
	v.status(e.Host, protocol.StatusFailed, fmt.Sprintf("%s %s %s %s: %s", counter, e.Host, v.r.color(colRed, word), secs, v.r.color(colRed, firstLine(why))))
}

// terminalWidth is the width of the terminal w, from the terminal itself,
// else $COLUMNS, else 80.
func terminalWidth(w io.Writer, getenv func(string) string) int {
	if f, ok := w.(*os.File); ok {
		var ws struct{ Row, Col, X, Y uint16 }
		_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), uintptr(syscall.TIOCGWINSZ), uintptr(unsafe.Pointer(&ws)))
		if errno == 0 && ws.Col > 0 {
			return int(ws.Col)
		}
	}
	if n, err := strconv.Atoi(getenv("COLUMNS")); err == nil && n > 0 {
		return n
	}
	return 80
}
