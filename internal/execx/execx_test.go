package execx

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestRunSuccessAndTail(t *testing.T) {
	t.Parallel()
	res, err := Run(context.Background(), Cmd{Path: "sh", Args: []string{"-c", "for i in $(seq 1 50); do echo line$i; done; echo err >&2"}, TailLines: 3})
	if err != nil {
		t.Fatal(err)
	}
	if res.Tail != "line49\nline50\nerr" && res.Tail != "line50\nerr\nline49" && !strings.HasSuffix(res.Tail, "line50\nerr") {
		t.Fatalf("tail = %q", res.Tail)
	}
	if strings.Count(res.Tail, "\n") != 2 {
		t.Fatalf("tail has more than 3 lines: %q", res.Tail)
	}
}

func TestRunFailureIsExitError(t *testing.T) {
	t.Parallel()
	res, err := Run(context.Background(), Cmd{Path: "sh", Args: []string{"-c", "echo boom >&2; exit 3"}})
	var ee *exec.ExitError
	if !errors.As(err, &ee) || res.ExitCode != 3 || res.Tail != "boom" {
		t.Fatalf("res %+v err %v", res, err)
	}
}

func TestRunMissingProgram(t *testing.T) {
	t.Parallel()
	if _, err := Run(context.Background(), Cmd{Path: "no-such-program-here"}); err == nil || !strings.Contains(err.Error(), "not found on PATH") {
		t.Fatalf("err = %v", err)
	}
}

// A timeout kills the whole process group: the child, and a grandchild the
// child started in the background.
func TestRunTimeoutKillsGroup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := `sleep 300 & echo $! > "$1/grandchild"; echo $$ > "$1/child"; wait`
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := Run(ctx, Cmd{Path: "sh", Args: []string{"-c", script, "sh", dir}, KillGrace: 200 * time.Millisecond})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	for _, name := range []string{"child", "grandchild"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		deadline := time.Now().Add(10 * time.Second)
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("%s %d survived the timeout", name, pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// A grandchild that outlives a successful leader does not hold Run up, and
// is cleaned up with the group.
func TestRunReturnsWhenLeaderExitsAndReapsGroup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	res, err := Run(context.Background(), Cmd{Path: "sh", Args: []string{"-c", `sleep 300 & echo $! > "$1/bg"; echo done`, "sh", dir}})
	if err != nil || res.Tail != "done" {
		t.Fatalf("res %+v err %v", res, err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "bg"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("background process %d survived", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCancelIsNotTimeout(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(200 * time.Millisecond); cancel() }()
	_, err := Run(ctx, Cmd{Path: "sleep", Args: []string{"30"}, KillGrace: 100 * time.Millisecond})
	if !errors.Is(err, ErrCanceled) || errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v", err)
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] != "Z"
}

func FuzzLastLines(f *testing.F) {
	f.Add("a\nb\nc\n", 2, 10)
	f.Add("\x1b[31mred\x00\n", 5, 3)
	f.Fuzz(func(t *testing.T, s string, n, max int) {
		if n <= 0 || max <= 0 || n > 100 || max > 10000 {
			return
		}
		out := lastLines(s, n, max)
		if strings.Count(out, "\n") >= n {
			t.Fatalf("more than %d lines: %q", n, out)
		}
		if len(out) > max+len("…") {
			t.Fatalf("longer than %d bytes: %d", max, len(out))
		}
		for _, r := range out {
			if r < 0x20 && r != '\n' && r != '\t' {
				t.Fatalf("control character %q kept", r)
			}
		}
	})
}
