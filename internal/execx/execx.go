// Package execx runs an external command without a shell, in its own process
// group, and kills the whole group when the context ends, so no child or
// grandchild outlives a timeout.
package execx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrTimeout is returned (wrapped) when the command ran past its deadline
// and was killed.
var ErrTimeout = errors.New("timed out")

// ErrCanceled is returned (wrapped) when the context was cancelled for
// another reason (shutdown) and the command was killed.
var ErrCanceled = errors.New("cancelled")

// Result is what a finished command left behind.
type Result struct {
	// Tail holds the last lines of the combined output (bounded).
	Tail string
	// Stdout, when Cmd.KeepStdout is set, holds stdout (its first 1 MiB).
	Stdout []byte
	// ExitCode is the command's exit status, -1 when it did not start or
	// was killed by a signal.
	ExitCode int
}

// Cmd describes one command to run.
type Cmd struct {
	Path string   // looked up on PATH when it has no slash
	Args []string // arguments, not including the program name
	Env  []string // nil means the current environment
	// TailLines and TailBytes bound Result.Tail (defaults 20 lines, 4 KiB).
	TailLines int
	TailBytes int
	// KeepStdout collects stdout separately into Result.Stdout (up to 1 MiB),
	// in addition to the tail.
	KeepStdout bool
	// KillGrace is how long the group gets between SIGTERM and SIGKILL.
	KillGrace time.Duration
	// OnLine, if set, is called with every line of output as the command
	// writes it (stdout and stderr merged; only stderr when KeepStdout is
	// set, stdout being the command's result then), without its line
	// ending and cut to MaxLineBytes.
	// Calls never overlap, and every call has returned when Run returns.
	// A slow OnLine slows the command's output: keep it quick.
	OnLine func(line string)
	// ExtraFiles are inherited by the command as file descriptors 3, 4, ...
	// (a lock it must hold for as long as it, or anything it forks, lives).
	ExtraFiles []*os.File
	// OnStart, if set, is called with the command's pid once it has started.
	OnStart func(pid int)
}

// MaxLineBytes bounds one line handed to Cmd.OnLine; the rest of a longer
// line is dropped. Nix prints long lines (a store path list, a JSON
// result), never megabytes without a newline, unless something is wrong.
const MaxLineBytes = 64 << 10

// Run runs c. It returns an error wrapping ErrTimeout or ErrCanceled when the
// context ended first, or an *exec.ExitError when the command failed.
func Run(ctx context.Context, c Cmd) (Result, error) {
	if c.TailLines <= 0 {
		c.TailLines = 20
	}
	if c.TailBytes <= 0 {
		c.TailBytes = 4096
	}
	if c.KillGrace <= 0 {
		c.KillGrace = 5 * time.Second
	}
	path := c.Path
	if !strings.Contains(path, "/") {
		p, err := exec.LookPath(path)
		if err != nil {
			return Result{ExitCode: -1}, fmt.Errorf("%s not found on PATH: %w", c.Path, err)
		}
		path = p
	}
	tail := &tailBuffer{max: c.TailBytes * 4}
	var stdout limitedBuffer
	stdout.max = 1 << 20

	cmd := exec.Command(path, c.Args...)
	cmd.Env = c.Env
	cmd.Stdin = nil
	cmd.ExtraFiles = c.ExtraFiles
	var lines *lineSplitter
	if c.OnLine != nil {
		lines = &lineSplitter{fn: c.OnLine}
	}
	switch {
	case c.KeepStdout && lines != nil:
		// stdout is the command's result (nix build --json), collected
		// apart; its log is stderr.
		cmd.Stdout = io.MultiWriter(tail, &stdout)
		cmd.Stderr = io.MultiWriter(tail, &streamLines{s: lines, stream: 2})
	case c.KeepStdout:
		cmd.Stdout = io.MultiWriter(tail, &stdout)
		cmd.Stderr = tail
	case lines != nil:
		// One writer for both: os/exec then gives the command a single
		// pipe for stdout and stderr, so their lines arrive merged in the
		// order they were written.
		w := &mergedOutput{tail: tail, lines: &streamLines{s: lines, stream: 1}}
		cmd.Stdout, cmd.Stderr = w, w
	default:
		cmd.Stdout, cmd.Stderr = tail, tail
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A grandchild holding our pipes open must not keep Wait from returning.
	cmd.WaitDelay = time.Second

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Result{ExitCode: -1}, fmt.Errorf("start %s: %w", c.Path, err)
	}
	pgid := cmd.Process.Pid
	if c.OnStart != nil {
		c.OnStart(pgid)
	}

	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var err error
	var killed error
	select {
	case err = <-done:
		// The leader exited; members of its group may linger (a daemonised
		// grandchild). They belong to this run, so they go too.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	case <-ctx.Done():
		killed = ErrCanceled
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			killed = ErrTimeout
		}
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		exited := false
		select {
		case err = <-done:
			exited = true
		case <-time.After(c.KillGrace):
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		if !exited {
			err = <-done
		}
	}
	if lines != nil {
		lines.flush() // a last line without a newline
	}
	res := Result{
		Tail:     lastLines(tail.String(), c.TailLines, c.TailBytes),
		Stdout:   stdout.Bytes(),
		ExitCode: cmd.ProcessState.ExitCode(),
	}
	if killed != nil {
		return res, fmt.Errorf("%s %w after %s", c.Path, killed, time.Since(start).Round(time.Millisecond))
	}
	if errors.Is(err, exec.ErrWaitDelay) && res.ExitCode == 0 {
		// The command succeeded; a background process it left behind kept
		// the output open, and was killed with the group above.
		err = nil
	}
	return res, err
}

// tailBuffer keeps only the last max bytes written.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.max - l.buf.Len(); room > 0 {
		if len(p) > room {
			l.buf.Write(p[:room])
		} else {
			l.buf.Write(p)
		}
	}
	return len(p), nil
}

func (l *limitedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.buf.Bytes())
}

// lastLines returns at most n trailing non-empty lines of s, at most max
// bytes, with control characters other than tab removed.
func lastLines(s string, n, max int) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || r >= 0x20 && r != 0x7f {
			return r
		}
		return -1
	}, s)
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	var keep []string
	for i := len(lines) - 1; i >= 0 && len(keep) < n; i-- {
		if strings.TrimSpace(lines[i]) == "" {
			continue
		}
		keep = append(keep, lines[i])
	}
	for i, j := 0, len(keep)-1; i < j; i, j = i+1, j-1 {
		keep[i], keep[j] = keep[j], keep[i]
	}
	out := strings.Join(keep, "\n")
	if len(out) > max {
		out = "…" + out[len(out)-max:]
	}
	return out
}
