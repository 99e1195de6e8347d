package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/natsauth"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
)

// binary is the homelab-deploy binary built once for the package.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "homelab-deploy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "homelab-deploy")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=e2e", "-o", binary, "..")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building homelab-deploy failed:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// NATSServer is Debian's nats-server running with an NKey authorization
// block rendered by internal/natsauth.
type NATSServer struct {
	URL    string
	Config string
	cmd    *exec.Cmd
	log    *bytes.Buffer
	port   int
}

// startNATSServer starts nats-server with creds as its users; it is stopped
// when the test ends.
func startNATSServer(t testing.TB, creds ...testenv.Cred) *NATSServer {
	t.Helper()
	bin := testenv.RequireBinary(t, "nats-server")
	dir := t.TempDir()
	s := &NATSServer{port: testenv.FreePort(t), log: &bytes.Buffer{}}
	s.URL = fmt.Sprintf("nats://127.0.0.1:%d", s.port)
	conf := fmt.Sprintf("listen: 127.0.0.1:%d\nmax_payload: 1048576\n\n%s", s.port, natsauth.Render(testenv.AuthUsers(creds...)))
	s.Config = filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(s.Config, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start(t, bin)
	t.Cleanup(func() { s.Stop() })
	return s
}

func (s *NATSServer) start(t testing.TB, bin string) {
	t.Helper()
	s.cmd = exec.Command(bin, "-c", s.Config)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitPort(t, s.port, s.log)
}

// Stop kills the server.
func (s *NATSServer) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

func waitPort(t testing.TB, port int, log *bytes.Buffer) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("port %d did not open; output:\n%s", port, log)
}

// Proc is a running homelab-deploy daemon.
type Proc struct {
	cmd    *exec.Cmd
	Output *testenv.Buffer
	done   chan struct{}
	err    error
}

// baseEnv is a minimal environment: PATH (with extra dirs first) and HOME,
// nothing else of the test process (no HOMELAB_DEPLOY_* leaks in).
func baseEnv(extraPath ...string) []string {
	path := strings.Join(append(extraPath, os.Getenv("PATH")), string(os.PathListSeparator))
	return []string{"PATH=" + path, "HOME=" + os.TempDir()}
}

// startDaemon runs the binary with args in the background; it is stopped
// with SIGTERM when the test ends.
func startDaemon(t testing.TB, env []string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Output: &testenv.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.Output, p.Output
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("%s output:\n%s", strings.Join(args, " "), p.Output)
		}
	})
	return p
}

// Stop sends SIGTERM and waits up to d; it returns the exit code.
func (p *Proc) Stop(d time.Duration) int {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscallTERM)
		select {
		case <-p.done:
		case <-time.After(d):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	return p.cmd.ProcessState.ExitCode()
}

// WaitFor waits until the daemon's output contains s.
func (p *Proc) WaitFor(t testing.TB, s string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if strings.Contains(p.Output.String(), s) {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("daemon exited (%v) before printing %q; output:\n%s", p.err, s, p.Output)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("daemon did not print %q within %s; output:\n%s", s, d, p.Output)
}

// Result of one CLI run.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// run runs the binary to completion with env and args.
func run(t testing.TB, env []string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return Result{Stdout: stdout.String(), Stderr: stderr.String(), Code: code}
}
