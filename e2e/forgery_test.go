package e2e

// Forged and polluted results (issue 12, attacks 1 to 3) replayed against
// Debian's nats-server with the permissions nats-config generates and the
// built binary as listeners and deployer: a stolen listener credential
// cannot make another host's deploy look completed, in a single-host or a
// group deploy, and a test deployer that learnt an admin's reply subject
// can neither add a host to the admin's prod result nor stall it. Rows of
// docs/SECURITY.md.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// gatedRebuild is a recording nixos-rebuild that waits for a file named
// release next to it, then exits with code.
func gatedRebuild(t *testing.T, code string) string {
	return testenv.StandIn(t, "nixos-rebuild", `while [ ! -f "$(dirname "$0")/release" ]; do sleep 0.05; done; echo "error: the frobnicator is misaligned" >&2; exit `+code)
}

type forgeryFleet struct {
	nats  *NATSServer
	creds map[string]testenv.Cred
}

// startForgeryFleet runs listeners for testhost1, testhost2 (test) and dns1
// (prod, role dns), each with the nixos-rebuild stand-in in rebuild (or an
// immediate success).
func startForgeryFleet(t *testing.T, rebuild map[string]string) *forgeryFleet {
	t.Helper()
	dir := t.TempDir()
	f := &forgeryFleet{creds: map[string]testenv.Cred{}}
	hosts := []struct{ name, tier, role string }{{"testhost1", "test", ""}, {"testhost2", "test", "web"}, {"dns1", "prod", "dns"}}
	for _, h := range hosts {
		f.creds[h.name] = testenv.NewCred(t, dir, h.name, *testenv.ListenerPerms(h.tier, h.name, h.role))
	}
	f.creds["admin"] = testenv.NewCred(t, dir, "admin", protocol.AdminDeployerPermissions())
	f.creds["deployer"] = testenv.NewCred(t, dir, "deployer", protocol.TestDeployerPermissions())
	f.creds["spy"] = testenv.NewCred(t, dir, "spy", allowAll)
	var all []testenv.Cred
	for _, c := range f.creds {
		all = append(all, c)
	}
	f.nats = startNATSServer(t, all...)
	var procs []*Proc
	for _, h := range hosts {
		standIn := rebuild[h.name]
		if standIn == "" {
			standIn = testenv.StandIn(t, "nixos-rebuild", "echo activating")
		}
		args := []string{"listener", "--hostname", h.name, "--tier", h.tier, "--nats-url", f.nats.URL,
			"--nkey-file", f.creds[h.name].SeedFile, "--flake-url", e2eFlake, "--log-format", "text"}
		if h.role != "" {
			args = append(args, "--role", h.role)
		}
		procs = append(procs, startDaemon(t, baseEnv(standIn), args...))
	}
	for _, p := range procs {
		p.WaitFor(t, "listener ready", 20*time.Second)
	}
	return f
}

// learnRequest returns the first deploy request published on subject, as
// a spy sees it: the leaked reply subject of the attacks.
func (f *forgeryFleet) learnRequest(t *testing.T, subject string) <-chan protocol.DeployRequest {
	t.Helper()
	conn := connectAs(t, f.nats.URL, f.creds["spy"])
	out := make(chan protocol.DeployRequest, 1)
	var once sync.Once
	if _, err := conn.Subscribe(subject, func(m *nats.Msg) {
		var req protocol.DeployRequest
		if json.Unmarshal(m.Data, &req) == nil {
			once.Do(func() { out <- req })
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	return out
}

// forgeryRun is the deploy command running in the background.
type forgeryRun struct {
	stdout, stderr testenv.Buffer
	done           chan struct{}
	code           int
}

// deploy starts `homelab-deploy deploy subject --json` with cred.
func (f *forgeryFleet) deploy(t *testing.T, cred, subject string) *forgeryRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	c := &forgeryRun{done: make(chan struct{})}
	cmd := exec.CommandContext(ctx, binary, "deploy", subject, "--branch", "main", "--json", "--log-format", "text")
	cmd.Env = append(baseEnv(), "HOMELAB_DEPLOY_NATS_URL="+f.nats.URL, "HOMELAB_DEPLOY_NKEY_FILE="+f.creds[cred].SeedFile, "HOMELAB_DEPLOY_TIMEOUT=240")
	cmd.Stdout, cmd.Stderr = &c.stdout, &c.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		defer cancel()
		err := cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			c.code = ee.ExitCode()
		}
		close(c.done)
	}()
	t.Cleanup(func() { cancel(); <-c.done })
	return c
}

// waitStderr waits until the command's log holds want n times; the
// deadline only stops a broken test from hanging.
func (c *forgeryRun) waitStderr(t *testing.T, want string, n int) {
	t.Helper()
	testenv.Eventually(t, time.Minute, func() bool { return strings.Count(c.stderr.String(), want) >= n },
		"the deployer's log never said %q %d times:\n%s", want, n, &c.stderr)
}

// result waits for the command and decodes its --json result.
func (c *forgeryRun) result(t *testing.T) (forgeryResult, int) {
	t.Helper()
	<-c.done
	var res forgeryResult
	if err := json.Unmarshal(c.stdout.Bytes(), &res); err != nil {
		t.Fatalf("stdout is not a deploy result: %v\n%s\nstderr:\n%s", err, c.stdout.String(), c.stderr.String())
	}
	return res, c.code
}

type forgeryResult struct {
	Success bool   `json:"success"`
	Message string `json:"message"`
	Hosts   []struct {
		Hostname string             `json:"hostname"`
		Status   protocol.Status    `json:"status"`
		Error    protocol.ErrorCode `json:"error"`
		Verified bool               `json:"verified"`
	} `json:"hosts"`
}

func (d forgeryResult) hosts() string {
	var out []string
	for _, h := range d.Hosts {
		s := h.Hostname + "=" + string(h.Status)
		if h.Error != "" {
			s += "/" + string(h.Error)
		}
		if !h.Verified {
			s += "/unverified"
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// forgeStatus publishes, with a stolen credential, a completed status that names
// host on subject; refused says whether the server must refuse it.
func forgeStatus(t *testing.T, conn *protocol.Conn, subject string, req protocol.DeployRequest, host, tier string, refused bool) {
	t.Helper()
	refusal, stop := conn.WatchPermission(subject)
	defer stop()
	data, _ := json.Marshal(protocol.DeployResponse{ID: req.ID, Hostname: host, Tier: tier, Status: protocol.StatusCompleted,
		Message: "nixos-rebuild switch of main completed in 1.0s", Action: req.Action, Revision: req.Revision})
	if err := conn.Publish(subject, data); err != nil {
		t.Fatal(err)
	}
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	if !refused {
		return
	}
	select {
	case err := <-refusal:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("forged status on %s: %v, want a permissions violation", subject, err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("nats-server let a stolen listener credential publish on %s", subject)
	}
}

// Attack (a): testhost1's credential publishes completed for dns1 on the
// reply subject of an admin's prod deploy. nats-server refuses the bare
// subject and dns1's; on testhost1's own subject the deployer ignores it
// and logs why. dns1's real failure stands: exit 1.
func TestForgedCompletionOfAnotherHostIsNotCounted(t *testing.T) {
	t.Parallel()
	dns1 := gatedRebuild(t, "1")
	f := startForgeryFleet(t, map[string]string{"dns1": dns1})
	learnt := f.learnRequest(t, "deploy.prod.dns1")
	run := f.deploy(t, "admin", "deploy.prod.dns1")
	req := <-learnt

	stolen := connectAs(t, f.nats.URL, f.creds["testhost1"])
	forgeStatus(t, stolen, req.ReplyTo, req, "dns1", "prod", true)
	forgeStatus(t, stolen, protocol.BoundReply(req.ReplyTo, "dns1"), req, "dns1", "prod", true)
	forgeStatus(t, stolen, protocol.BoundReply(req.ReplyTo, "testhost1"), req, "dns1", "prod", false)
	run.waitStderr(t, "it names host dns1 but came on the reply subject of testhost1", 1)
	touch(t, filepath.Join(dns1, "release"))

	res, code := run.result(t)
	if code != 1 || res.Success || res.hosts() != "dns1=failed/build_failed" {
		t.Fatalf("exit %d, hosts %s, message %q; want exit 1 and dns1's own failure", code, res.hosts(), res.Message)
	}
}

// Attack (b): in a deploy to deploy.test.all, testhost1's credential forges
// testhost2's completion. Not counted: testhost2's real failure stands,
// exit 1.
func TestForgedCompletionInAGroupIsNotCounted(t *testing.T) {
	t.Parallel()
	testhost2 := gatedRebuild(t, "1")
	f := startForgeryFleet(t, map[string]string{"testhost2": testhost2})
	learnt := f.learnRequest(t, "deploy.test.all")
	run := f.deploy(t, "deployer", "deploy.test.all")
	req := <-learnt

	stolen := connectAs(t, f.nats.URL, f.creds["testhost1"])
	forgeStatus(t, stolen, req.ReplyTo, req, "testhost2", "test", true)
	forgeStatus(t, stolen, protocol.BoundReply(req.ReplyTo, "testhost2"), req, "testhost2", "test", true)
	forgeStatus(t, stolen, protocol.BoundReply(req.ReplyTo, "testhost1"), req, "testhost2", "test", false)
	run.waitStderr(t, "it names host testhost2 but came on the reply subject of testhost1", 1)
	touch(t, filepath.Join(testhost2, "release"))

	res, code := run.result(t)
	if code != 1 || res.Success || res.hosts() != "testhost1=completed testhost2=failed/build_failed" {
		t.Fatalf("exit %d, hosts %s, message %q; want exit 1 and testhost2's own failure", code, res.hosts(), res.Message)
	}
	if !strings.Contains(res.Message, "1/2 host(s) completed") {
		t.Errorf("message %q", res.Message)
	}
}

// Attack (c): a test deployer that saw the admin's reply subject sends a
// deploy to testhost1 and a discovery request with that reply subject and
// id. The admin's prod result lists dns1 alone and ends when dns1
// completes: exit 0.
func TestTestDeployerCannotPolluteOrStallAProdDeploy(t *testing.T) {
	t.Parallel()
	dns1 := gatedRebuild(t, "0")
	f := startForgeryFleet(t, map[string]string{"dns1": dns1})
	learnt := f.learnRequest(t, "deploy.prod.dns1")
	run := f.deploy(t, "admin", "deploy.prod.dns1")
	req := <-learnt

	td := connectAs(t, f.nats.URL, f.creds["deployer"])
	dep, _ := json.Marshal(protocol.DeployRequest{ID: req.ID, Action: protocol.ActionSwitch, Revision: "main", ReplyTo: req.ReplyTo})
	disc, _ := json.Marshal(protocol.DiscoverRequest{ID: req.ID, ReplyTo: req.ReplyTo})
	var sent bytes.Buffer
	for _, m := range []*nats.Msg{{Subject: "deploy.test.testhost1", Data: dep}, {Subject: protocol.DefaultDiscoverSubject, Data: disc}} {
		if err := td.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		sent.WriteString(m.Subject + " ")
	}
	if err := td.Flush(); err != nil {
		t.Fatal(err)
	}
	// testhost1 runs the test deployer's deploy (the test tier is its to
	// deploy) and reports accepted, started, completed; three listeners
	// answer discovery.
	run.waitStderr(t, "host testhost1 is not the target dns1", 3)
	run.waitStderr(t, "looks like a discovery answer", 3)
	touch(t, filepath.Join(dns1, "release"))

	res, code := run.result(t)
	if code != 0 || !res.Success || res.hosts() != "dns1=completed" {
		t.Fatalf("exit %d, hosts %s, message %q after the test deployer sent %s; want exit 0 and dns1 alone", code, res.hosts(), res.Message, sent.String())
	}
}
