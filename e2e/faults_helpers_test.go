package e2e

// Helpers of the reliability and security tests: a spy that records every
// message on the server, a TCP proxy that can cut a client off, a nix
// stand-in, and a fleet of one listener and one builder daemon.

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// allowAll is a system-like credential: it may publish and subscribe to
// everything, so a spy with it sees every message of the account.
var allowAll = protocol.Permissions{Publish: []string{">"}, Subscribe: []string{">"}}

// spy records every message published on the server.
type spy struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func startSpy(t *testing.T, url string, cred testenv.Cred) *spy {
	t.Helper()
	s := &spy{}
	conn := connectAs(t, url, cred)
	sub, err := conn.Subscribe(">", func(m *nats.Msg) {
		s.mu.Lock()
		s.msgs = append(s.msgs, m)
		s.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	return s
}

// subjects returns the subjects of the messages seen so far.
func (s *spy) subjects() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.msgs))
	for i, m := range s.msgs {
		out[i] = m.Subject
	}
	return out
}

// unexpected returns the subjects seen that allowed does not accept. A
// listener's look for the fleet registry (a JetStream API request it makes
// at start, whatever anyone sends it) is not caused by the input under
// test; the registry's own traffic is proven in fleet_test.go.
func (s *spy) unexpected(allowed func(subject string) bool) []string {
	var bad []string
	for _, subj := range s.subjects() {
		if subj == "$JS.API.STREAM.INFO."+protocol.FleetStream {
			continue
		}
		if !allowed(subj) {
			bad = append(bad, subj)
		}
	}
	return bad
}

// connectAs opens a protocol connection with cred; closed when the test ends.
func connectAs(t *testing.T, url string, cred testenv.Cred) *protocol.Conn {
	t.Helper()
	c, err := protocol.Connect(context.Background(), protocol.ConnectOptions{URLs: url, NKeyFile: cred.SeedFile, Name: "test " + cred.Name})
	if err != nil {
		t.Fatalf("connect as %s: %v", cred.Name, err)
	}
	t.Cleanup(c.Close)
	return c
}

// nixStandIn is a recording nix: `eval` lists one host, h1, and waits for
// a file named release next to it when hold is true; `build` prints a
// store path.
func nixStandIn(t *testing.T, hold bool) string {
	t.Helper()
	wait := ""
	if hold {
		wait = `while [ ! -f "$(dirname "$0")/release" ]; do sleep 0.05; done; `
	}
	return testenv.StandIn(t, "nix", `case "$1" in
eval) `+wait+`echo '["h1"]';;
build) echo '[{"drvPath":"/nix/store/aaaa-h1.drv","outputs":{"out":"/nix/store/aaaa-nixos-system-h1"}}]';;
*) exit 1;;
esac`)
}

// builderConfig writes a builder config with one repository, fleet, whose
// URL is never fetched (the nix stand-in ignores it).
func builderConfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "builder.yaml")
	if err := os.WriteFile(p, []byte("repos:\n  fleet:\n    url: \"git+file:///nonexistent/fleet\"\n    default_branch: \"main\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// exitCode waits for a daemon or background command started with
// startDaemon to exit on its own and returns its exit code.
func (p *Proc) exitCode(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("process did not exit within %s; output:\n%s", d, p.Output)
		return -1
	}
}

// pid returns the process id.
func (p *Proc) pid() int { return p.cmd.Process.Pid }

// count returns how often s occurs in the output.
func (p *Proc) count(s string) int { return strings.Count(p.Output.String(), s) }

// proxy forwards loopback TCP connections to a NATS server and can cut
// every client off and refuse new ones for a while: a client that loses
// its server longer than the others.
type proxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	blocked  bool
	conns    []net.Conn
}

func startProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, upstream: strings.TrimPrefix(upstream, "nats://")}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *proxy) URL() string { return "nats://" + p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		blocked := p.blocked
		p.mu.Unlock()
		if blocked {
			c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", p.upstream, 2*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close(); c.Close() }()
		go func() { _, _ = io.Copy(c, up); up.Close(); c.Close() }()
	}
}

// block closes every proxied connection and refuses new ones until unblock.
func (p *proxy) block() {
	p.mu.Lock()
	p.blocked = true
	p.mu.Unlock()
	p.cut()
}

func (p *proxy) unblock() {
	p.mu.Lock()
	p.blocked = false
	p.mu.Unlock()
}

func (p *proxy) cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// restart stops the server and starts it again on the same port with the
// same configuration.
func (s *NATSServer) restart(t *testing.T) {
	t.Helper()
	s.Stop()
	s.start(t, testenv.RequireBinary(t, "nats-server"))
}

// newNATSServerStopped prepares a nats-server configuration on a free port
// without starting it (a listener that starts before its server).
func newNATSServerStopped(t *testing.T, creds ...testenv.Cred) *NATSServer {
	t.Helper()
	s := startNATSServer(t, creds...)
	s.Stop()
	return s
}

// waitFile waits until path exists.
func waitFile(t *testing.T, path string, d time.Duration) {
	t.Helper()
	testenv.Eventually(t, d, func() bool { _, err := os.Stat(path); return err == nil }, "%s did not appear within %s", path, d)
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func fmtList(xs []string) string { return fmt.Sprintf("%q", xs) }
