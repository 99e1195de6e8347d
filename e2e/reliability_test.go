package e2e

// Reliability of the built binary against Debian's nats-server: server
// restarts, a listener that starts first, SIGTERM during a deploy, a
// discovery flood. Each test is a row of docs/RELIABILITY.md.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// holdBody is a nixos-rebuild stand-in that writes "started", waits for a
// file named release next to it, and writes "finished".
const holdBody = `dir=$(dirname "$0"); echo $$ > "$dir/started"; while [ ! -f "$dir/release" ]; do sleep 0.05; done; touch "$dir/finished"; echo activated`

// relFleet is one listener, testhost1, with a deployer and an admin
// credential, on Debian's nats-server.
type relFleet struct {
	nats     *NATSServer
	creds    map[string]testenv.Cred
	standIn  string
	listener *Proc
}

func startRelFleet(t *testing.T, body string, listenerArgs ...string) *relFleet {
	t.Helper()
	dir := t.TempDir()
	f := &relFleet{creds: map[string]testenv.Cred{
		"testhost1": testenv.NewCred(t, dir, "testhost1", *testenv.ListenerPerms("test", "testhost1", "")),
		"deployer":  testenv.NewCred(t, dir, "deployer", protocol.TestDeployerPermissions()),
	}}
	f.nats = startNATSServer(t, f.creds["testhost1"], f.creds["deployer"])
	f.standIn = testenv.StandIn(t, "nixos-rebuild", body)
	f.listener = f.startListener(t, f.nats.URL, listenerArgs...)
	f.listener.WaitFor(t, "listener ready", 20*time.Second)
	return f
}

func (f *relFleet) startListener(t *testing.T, url string, args ...string) *Proc {
	t.Helper()
	return startDaemon(t, baseEnv(f.standIn), append([]string{"listener", "--hostname", "testhost1", "--tier", "test",
		"--nats-url", url, "--nkey-file", f.creds["testhost1"].SeedFile, "--flake-url", e2eFlake,
		"--timeout", "120", "--log-format", "text"}, args...)...)
}

// deployEnv is the deployer's environment; url defaults to the server.
func (f *relFleet) deployEnv(url string) []string {
	if url == "" {
		url = f.nats.URL
	}
	return append(baseEnv(), "HOMELAB_DEPLOY_NATS_URL="+url, "HOMELAB_DEPLOY_NKEY_FILE="+f.creds["deployer"].SeedFile)
}

func (f *relFleet) mustDeploy(t *testing.T, what string) {
	t.Helper()
	r := run(t, f.deployEnv(""), "deploy", "deploy.test.testhost1", "--timeout", "60")
	if r.Code != 0 || !strings.Contains(r.Stdout, "completed") {
		t.Fatalf("%s: deploy exit %d\nstdout:\n%s\nstderr:\n%s\nlistener:\n%s", what, r.Code, r.Stdout, r.Stderr, f.listener.Output)
	}
}

// TestNATSRestartWhileListenerIdle: the server goes away and comes back on
// the same port; the same listener process takes the next deploy.
func TestNATSRestartWhileListenerIdle(t *testing.T) {
	t.Parallel()
	f := startRelFleet(t, "echo activated")
	f.mustDeploy(t, "before the restart")
	pid := f.listener.pid()

	f.nats.restart(t)
	f.listener.WaitFor(t, "NATS reconnected", 30*time.Second)
	f.mustDeploy(t, "after the restart")

	if f.listener.pid() != pid || f.listener.count("listener ready") != 1 {
		t.Fatalf("the listener restarted:\n%s", f.listener.Output)
	}
	if !strings.Contains(f.listener.Output.String(), "NATS disconnected") {
		t.Errorf("the disconnect was not logged:\n%s", f.listener.Output)
	}
	if n := len(testenv.Calls(f.standIn)); n != 2 {
		t.Errorf("nixos-rebuild ran %d times, want 2", n)
	}
}

// TestNATSRestartDuringDeploy: the server restarts while nixos-rebuild
// runs; both sides reconnect, and the final status still reaches the
// deployer.
func TestNATSRestartDuringDeploy(t *testing.T) {
	t.Parallel()
	f := startRelFleet(t, holdBody)
	d := startDaemon(t, f.deployEnv(""), "deploy", "deploy.test.testhost1", "--timeout", "120")
	waitFile(t, filepath.Join(f.standIn, "started"), 30*time.Second)

	f.nats.restart(t)
	f.listener.WaitFor(t, "NATS reconnected", 30*time.Second)
	d.WaitFor(t, "NATS reconnected", 30*time.Second)
	touch(t, filepath.Join(f.standIn, "release"))

	if code := d.exitCode(t, 60*time.Second); code != 0 {
		t.Fatalf("deploy exit %d, want 0:\n%s\nlistener:\n%s", code, d.Output, f.listener.Output)
	}
	if !strings.Contains(d.Output.String(), "completed") {
		t.Fatalf("no completed status:\n%s", d.Output)
	}
}

// TestDeployerThatMissedTheFinalStatusSaysWhichHost: the server restarts
// during a deploy and the deployer gets back later than the listener (a
// proxy keeps it out), so the final status is published while nobody
// listens and is gone. After reconnecting the deployer finds, well before
// its timeout, that the host is no longer deploying, and says which host
// it lost track of.
func TestDeployerThatMissedTheFinalStatusSaysWhichHost(t *testing.T) {
	t.Parallel()
	f := startRelFleet(t, holdBody)
	p := startProxy(t, f.nats.URL)
	const timeout = 300 // seconds; the test fails long before
	d := startDaemon(t, f.deployEnv(p.URL()), "deploy", "deploy.test.testhost1", "--timeout", strconv.Itoa(timeout))
	waitFile(t, filepath.Join(f.standIn, "started"), 30*time.Second)

	p.block()
	f.nats.restart(t)
	f.listener.WaitFor(t, "NATS reconnected", 30*time.Second)
	touch(t, filepath.Join(f.standIn, "release"))
	f.listener.WaitFor(t, "deploy finished", 30*time.Second)
	p.unblock()
	d.WaitFor(t, "NATS reconnected", 30*time.Second)

	code := d.exitCode(t, 60*time.Second)
	out := d.Output.String()
	if code != 1 || !strings.Contains(out, "lost track of testhost1") {
		t.Fatalf("deploy exit %d, want 1 and a message naming the lost host:\n%s", code, out)
	}
	t.Logf("the deployer said:\n%s", out)
}

// TestListenerStartsBeforeNATS: a listener started while its server is
// down comes up, and connects and takes deploys once the server starts.
func TestListenerStartsBeforeNATS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f := &relFleet{creds: map[string]testenv.Cred{
		"testhost1": testenv.NewCred(t, dir, "testhost1", *testenv.ListenerPerms("test", "testhost1", "")),
		"deployer":  testenv.NewCred(t, dir, "deployer", protocol.TestDeployerPermissions()),
	}}
	f.nats = newNATSServerStopped(t, f.creds["testhost1"], f.creds["deployer"])
	f.standIn = testenv.StandIn(t, "nixos-rebuild", "echo activated")
	f.listener = f.startListener(t, f.nats.URL)
	f.listener.WaitFor(t, "listener ready", 20*time.Second)
	if strings.Contains(f.listener.Output.String(), "NATS connected") {
		t.Fatalf("connected to a server that is not running:\n%s", f.listener.Output)
	}
	time.Sleep(1500 * time.Millisecond) // a few failed connection attempts
	f.nats.start(t, testenv.RequireBinary(t, "nats-server"))
	f.listener.WaitFor(t, "NATS connected", 30*time.Second)
	f.mustDeploy(t, "after the server came up")
}

// TestSIGTERMDuringDeployWithinGrace: SIGTERM while a deploy runs; the
// deploy finishes within the grace period, its completed status reaches
// the deployer, and the listener exits 0.
func TestSIGTERMDuringDeployWithinGrace(t *testing.T) {
	t.Parallel()
	f := startRelFleet(t, holdBody, "--shutdown-grace", "60")
	d := startDaemon(t, f.deployEnv(""), "deploy", "deploy.test.testhost1", "--timeout", "120")
	waitFile(t, filepath.Join(f.standIn, "started"), 30*time.Second)

	stopped := make(chan int, 1)
	go func() { stopped <- f.listener.Stop(90 * time.Second) }()
	f.listener.WaitFor(t, "stopping: signal received", 20*time.Second)
	select {
	case code := <-stopped:
		t.Fatalf("the listener exited (%d) without waiting for the running deploy:\n%s", code, f.listener.Output)
	case <-time.After(500 * time.Millisecond):
	}
	touch(t, filepath.Join(f.standIn, "release"))
	if code := d.exitCode(t, 60*time.Second); code != 0 {
		t.Fatalf("deploy exit %d, want 0:\n%s", code, d.Output)
	}
	if code := <-stopped; code != 0 {
		t.Fatalf("listener exit %d, want 0:\n%s", code, f.listener.Output)
	}
}

// TestSIGTERMDuringDeployPastGrace: the deploy outlasts the grace period;
// the listener kills nixos-rebuild with its process group, reports failed
// to the deployer, and exits 0.
func TestSIGTERMDuringDeployPastGrace(t *testing.T) {
	t.Parallel()
	body := `dir=$(dirname "$0"); sleep 300 & echo $! > "$dir/child.pid"; echo $$ > "$dir/started"; wait`
	f := startRelFleet(t, body, "--shutdown-grace", "1")
	d := startDaemon(t, f.deployEnv(""), "deploy", "deploy.test.testhost1", "--timeout", "120")
	waitFile(t, filepath.Join(f.standIn, "started"), 30*time.Second)

	if code := f.listener.Stop(60 * time.Second); code != 0 {
		t.Fatalf("listener exit %d, want 0:\n%s", code, f.listener.Output)
	}
	if code := d.exitCode(t, 30*time.Second); code != 1 {
		t.Fatalf("deploy exit %d, want 1:\n%s", code, d.Output)
	}
	out := d.Output.String()
	if !strings.Contains(out, "failed") || !strings.Contains(out, "stopped") {
		t.Fatalf("the deployer was not told the deploy was cut short:\n%s", out)
	}
	for _, name := range []string{"started", "child.pid"} {
		b, _ := os.ReadFile(filepath.Join(f.standIn, name))
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if pid == 0 {
			t.Fatalf("no pid in %s", name)
		}
		testenv.Eventually(t, 10*time.Second, func() bool { return !procAlive(pid) }, "%s (pid %d) outlived the listener", name, pid)
	}
}

// procAlive reports whether pid exists and is not a zombie.
func procAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && strings.HasPrefix(s[i+1:], " Z") {
		return false
	}
	return true
}

// rssKiB returns a process's resident set size.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestDiscoveryFloodBoundedMemory: thousands of discovery requests over a
// few seconds are answered, the listener's memory stays bounded, and it
// still takes a deploy afterwards.
func TestDiscoveryFloodBoundedMemory(t *testing.T) {
	t.Parallel()
	f := startRelFleet(t, "echo activated")
	f.mustDeploy(t, "warm-up")
	before := rssKiB(t, f.listener.pid())

	conn := connectAs(t, f.nats.URL, f.creds["deployer"])
	reply := protocol.DeployResponsesPrefix + "flood"
	var answered atomic.Int64
	sub, err := conn.Subscribe(protocol.BoundReply(reply, "testhost1"), func(*nats.Msg) { answered.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	_ = conn.Flush()

	// 6000 requests in 20 batches over about three seconds.
	const batches, perBatch = 20, 300
	for b := 0; b < batches; b++ {
		for i := 0; i < perBatch; i++ {
			req := fmt.Sprintf(`{"id":"f%d_%d","reply_to":%q}`, b, i, reply)
			if err := conn.Publish(protocol.DefaultDiscoverSubject, []byte(req)); err != nil {
				t.Fatal(err)
			}
		}
		_ = conn.Flush()
		time.Sleep(150 * time.Millisecond)
	}
	const total = batches * perBatch
	testenv.Eventually(t, 30*time.Second, func() bool { return answered.Load() >= total }, "only %d of %d discovery requests were answered", answered.Load(), total)
	after := rssKiB(t, f.listener.pid())
	t.Logf("listener RSS %d KiB before, %d KiB after %d discovery requests", before, after, total)
	// Loose: a leak of a few KiB per request would show as tens of MiB.
	if after-before > 48*1024 {
		t.Errorf("listener RSS grew from %d KiB to %d KiB", before, after)
	}
	f.mustDeploy(t, "after the flood")
	if out := f.listener.Output.String(); strings.Contains(out, "slow consumer") {
		t.Logf("the listener dropped requests as a slow consumer (allowed):\n%s", out)
	}
}
