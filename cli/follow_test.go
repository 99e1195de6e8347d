package cli

import (
	"bytes"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
)

// viewRoot is a Root whose stderr is buf, on a terminal or not.
func viewRoot(buf *bytes.Buffer, terminal bool, env map[string]string) *Root {
	r := New(Env{Stderr: buf, Stdout: io.Discard, Terminal: func(io.Writer) bool { return terminal },
		Getenv: func(k string) string { return env[k] }})
	return r
}

func deployEvents() []tools.Event {
	return []tools.Event{
		{Host: "web1", Status: protocol.StatusAccepted, Message: "switch of main accepted", Elapsed: 10 * time.Millisecond},
		{Host: "web1", Status: protocol.StatusStarted, Message: "running nixos-rebuild switch", Elapsed: 20 * time.Millisecond},
		{Host: "web1", Status: protocol.StatusOutput, Message: "copying path", Lines: []string{"building", "copying path"}, Running: time.Second, Elapsed: time.Second},
		{Host: "web1", Status: protocol.StatusOutput, Message: "copying path", Running: 20 * time.Second, Elapsed: 20 * time.Second},
		{Host: "web1", Status: protocol.StatusOutput, Message: "copying path", Running: 31 * time.Second, Elapsed: 31 * time.Second},
		{Host: "web1", Status: protocol.StatusOutput, Message: "activating", Lines: []string{"activating"}, Running: 40 * time.Second, Elapsed: 40 * time.Second},
		{Host: "web1", Status: protocol.StatusCompleted, Message: "nixos-rebuild switch of main completed in 41.0s", Done: 1, Total: 1, Elapsed: 41 * time.Second},
	}
}

// Off a terminal: a line per status as before, nothing rewritten, and a
// running host gets a line at most every 30 s.
func TestDeployProgressOffTerminal(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	v := viewRoot(&buf, false, nil).newProgressView(false)
	for _, e := range deployEvents() {
		v.deploy(e)
	}
	v.close()
	want := "[   0.0s] web1                 accepted  switch of main accepted\n" +
		"[   0.0s] web1                 started   running nixos-rebuild switch\n" +
		"[  31.0s] web1                 running   31s: copying path\n" +
		"[  41.0s] web1                 completed nixos-rebuild switch of main completed in 41.0s\n"
	if buf.String() != want {
		t.Fatalf("stderr\n%s\nwant\n%s", buf.String(), want)
	}
}

// --follow prints every line with its host, in order, between the
// statuses.
func TestDeployProgressFollow(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	v := viewRoot(&buf, false, nil).newProgressView(true)
	for _, e := range deployEvents() {
		v.deploy(e)
	}
	v.close()
	got := buf.String()
	for i, want := range []string{"started ", "web1 | building\n", "web1 | copying path\n", "running   31s", "web1 | activating\n", "completed "} {
		j := strings.Index(got, want)
		if j < 0 {
			t.Fatalf("line %d %q missing:\n%s", i, want, got)
		}
		got = got[j:]
	}
}

// On a terminal one live line per running host is rewritten in place
// below the status lines, and is gone once the host is finished. With
// NO_COLOR there are no colours, only the cursor movements.
func TestDeployProgressLiveLine(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	v := viewRoot(&buf, true, map[string]string{"NO_COLOR": "1", "COLUMNS": "60"}).newProgressView(false)
	events := deployEvents()
	for _, e := range events[:3] {
		v.deploy(e)
	}
	mid := screen(buf.String())
	wantMid := []string{
		"[   0.0s] web1                 accepted  switch of main accepted",
		"[   0.0s] web1                 started   running nixos-rebuild switch",
		"  web1                 running      1s  copying path",
	}
	if strings.Join(mid, "\n") != strings.Join(wantMid, "\n") {
		t.Fatalf("screen while running:\n%s\nwant\n%s", strings.Join(mid, "\n"), strings.Join(wantMid, "\n"))
	}
	v.deploy(events[5])
	if got := screen(buf.String()); len(got) != 3 || got[2] != "  web1                 running     40s  activating" {
		t.Fatalf("live line not rewritten: %q", got)
	}
	v.deploy(events[6])
	v.close()
	final := screen(buf.String())
	if len(final) != 3 || !strings.Contains(final[2], "completed") {
		t.Fatalf("screen at the end: %q, want the three status lines", final)
	}
	if regexp.MustCompile(`\x1b\[[0-9;]*m`).MatchString(buf.String()) {
		t.Errorf("colours despite NO_COLOR: %q", buf.String())
	}
	if strings.Contains(buf.String(), "running   31s") {
		t.Errorf("a 30-second line on a terminal, where the live line shows it: %q", buf.String())
	}
}

// A live line longer than the terminal is cut, so that it never wraps.
func TestLiveLineFitsTheTerminal(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	v := viewRoot(&buf, true, map[string]string{"COLUMNS": "40", "NO_COLOR": "1"}).newProgressView(false)
	v.deploy(tools.Event{Host: "web1", Status: protocol.StatusOutput, Lines: []string{strings.Repeat("x", 200)}, Running: time.Second})
	got := screen(buf.String())
	if len(got) != 1 || len([]rune(got[0])) != 39 || !strings.HasSuffix(got[0], "…") {
		t.Fatalf("live line %q (%d characters), want 39 ending in …", got, len([]rune(got[0])))
	}
}

// build: output events feed the live line and --follow; a finished host
// leaves the block.
func TestBuildProgressFollowAndLive(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	v := viewRoot(&buf, true, map[string]string{"NO_COLOR": "1"}).newProgressView(true)
	v.build(tools.Event{Status: protocol.StatusStarted, Message: "building 1 host(s) of fleet at main", Total: 1})
	v.build(tools.Event{Host: "h1", Status: protocol.StatusOutput, Lines: []string{"building '/nix/store/x.drv'..."}, Message: "building '/nix/store/x.drv'...", Running: 2 * time.Second, Total: 1})
	v.build(tools.Event{Host: "h1", Status: protocol.StatusCompleted, Done: 1, Total: 1, Duration: 3 * time.Second})
	v.close()
	want := []string{"building 1 host(s) of fleet at main", "h1 | building '/nix/store/x.drv'...", "[1/1] h1 ok 3.0s"}
	if got := screen(buf.String()); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("screen:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestFormatRunning(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{0: "-", 8 * time.Second: "8s", 65 * time.Second: "1m05s", 3720 * time.Second: "1h02m"} {
		if got := formatRunning(d); got != want {
			t.Errorf("formatRunning(%s) = %q, want %q", d, got, want)
		}
	}
}

// screen plays s on a small terminal (text, newline, carriage return,
// cursor up, erase to the end of the screen; colours ignored) and returns
// the lines left on it.
func screen(s string) []string {
	var lines []string
	row, col := 0, 0
	put := func(r rune) {
		for len(lines) <= row {
			lines = append(lines, "")
		}
		line := []rune(lines[row])
		for len(line) < col {
			line = append(line, ' ')
		}
		if col < len(line) {
			line[col] = r
		} else {
			line = append(line, r)
		}
		lines[row] = string(line)
		col++
	}
	esc := regexp.MustCompile(`^\x1b\[([0-9;]*)([A-Za-z])`)
	for len(s) > 0 {
		if m := esc.FindStringSubmatch(s); m != nil {
			s = s[len(m[0]):]
			switch m[2] {
			case "A":
				n, _ := strconv.Atoi(m[1])
				row = max(row-n, 0)
			case "J":
				if row < len(lines) {
					lines = lines[:row+1]
					lines[row] = string([]rune(lines[row])[:min(col, len([]rune(lines[row])))])
				}
			}
			continue
		}
		r := []rune(s)[0]
		s = s[len(string(r)):]
		switch r {
		case '\n':
			row++
			col = 0
		case '\r':
			col = 0
		default:
			put(r)
		}
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}
