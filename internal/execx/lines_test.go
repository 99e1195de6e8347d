package execx

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// OnLine sees every line, stdout and stderr merged in the order the
// command wrote them, the last one without a newline too; the tail is the
// same as without OnLine.
func TestRunOnLineMergedInOrder(t *testing.T) {
	t.Parallel()
	var got []string
	script := `echo one; echo two >&2; printf 'three\r\n'; printf 'progress 10%%\rprogress 100%%\n'; printf 'last'`
	res, err := Run(context.Background(), Cmd{Path: "sh", Args: []string{"-c", script}, OnLine: func(l string) { got = append(got, l) }})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"one", "two", "three", "progress 100%", "last"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("lines = %q, want %q", got, want)
	}
	if !strings.HasPrefix(res.Tail, "one\ntwo\n") || !strings.HasSuffix(res.Tail, "last") {
		t.Fatalf("tail = %q", res.Tail)
	}
}

// With KeepStdout, stdout is collected apart and only stderr, the
// command's log, reaches OnLine.
func TestRunOnLineWithKeepStdout(t *testing.T) {
	t.Parallel()
	var got []string
	res, err := Run(context.Background(), Cmd{Path: "sh", Args: []string{"-c", `echo '{"out":1}'; echo building >&2`}, KeepStdout: true,
		OnLine: func(l string) { got = append(got, l) }})
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Stdout) != "{\"out\":1}\n" {
		t.Fatalf("stdout = %q", res.Stdout)
	}
	if len(got) != 1 || got[0] != "building" {
		t.Fatalf("lines = %q", got)
	}
}

// A line longer than MaxLineBytes reaches OnLine cut to the bound, and the
// next line is whole.
func TestRunOnLineLongLine(t *testing.T) {
	t.Parallel()
	var got []string
	script := `head -c 200000 /dev/zero | tr '\0' x; echo; echo after`
	if _, err := Run(context.Background(), Cmd{Path: "sh", Args: []string{"-c", script}, OnLine: func(l string) { got = append(got, l) }}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || len(got[0]) != MaxLineBytes || strings.Trim(got[0], "x") != "" || got[1] != "after" {
		t.Fatalf("got %d lines, first %d bytes, last %q", len(got), len(got[0]), got[len(got)-1])
	}
}

// ExtraFiles reach the command as fd 3, and OnStart gets its pid.
func TestRunExtraFilesAndOnStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "inherited"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var pid int
	_, err = Run(context.Background(), Cmd{Path: "sh", Args: []string{"-c", `echo $$ >&3`}, ExtraFiles: []*os.File{f}, OnStart: func(p int) { pid = p }})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(f.Name())
	if got, _ := strconv.Atoi(strings.TrimSpace(string(b))); got != pid || pid == 0 {
		t.Fatalf("fd 3 got pid %q, OnStart %d", b, pid)
	}
}

// An flock taken on a file handed down as fd 3 is held by the command: a
// second open of the file cannot take it while the command runs.
func TestRunInheritedLockIsHeld(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	probe := func() error {
		g, err := os.Open(path)
		if err != nil {
			return err
		}
		defer g.Close()
		return syscall.Flock(int(g.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	var during error
	// The command runs until the probe has looked: it waits for a file
	// the probe's caller creates afterwards.
	done := filepath.Join(dir, "done")
	_, err = Run(context.Background(), Cmd{Path: "sh", Args: []string{"-c", `while [ ! -e "$0" ]; do sleep 0.01; done`, done}, ExtraFiles: []*os.File{f},
		OnStart: func(int) {
			// Our own descriptor goes; the command's copy keeps the lock.
			f.Close()
			during = probe()
			if err := os.WriteFile(done, nil, 0o600); err != nil {
				t.Error(err)
			}
		}})
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	if !errors.Is(during, syscall.EWOULDBLOCK) {
		t.Fatalf("lock while the command ran: %v, want EWOULDBLOCK", during)
	}
	if err := probe(); err != nil {
		t.Fatalf("lock after the command ended: %v", err)
	}
}

func FuzzLineSplitter(f *testing.F) {
	f.Add([]byte("a\nb\r\nc"), []byte("d\n"), 3)
	f.Add([]byte("progress 1\rprogress 2\n"), []byte(""), 1)
	f.Add([]byte(strings.Repeat("x", MaxLineBytes+3)), []byte("\ny"), 2)
	f.Fuzz(func(t *testing.T, a, b []byte, stream int) {
		stream = 1 + (stream&1+1)%2
		var got []string
		l := &lineSplitter{fn: func(s string) { got = append(got, s) }}
		l.write(stream, a)
		l.write(3-stream, b)
		l.write(stream, []byte("\n"))
		l.flush()
		l.write(stream, []byte("late\n"))
		for _, s := range got {
			if strings.ContainsAny(s, "\n\r") || len(s) > MaxLineBytes || s == "" {
				t.Fatalf("bad line %q", s)
			}
			if s == "late" {
				t.Fatal("a line after flush")
			}
		}
		// Short lines without carriage returns come through unchanged.
		if len(a) < 100 && !strings.ContainsAny(string(a), "\r\n") && len(a) > 0 {
			found := false
			for _, s := range got {
				found = found || s == string(a)
			}
			if !found {
				t.Fatalf("line %q lost: %q", a, got)
			}
		}
	})
}
