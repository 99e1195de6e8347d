package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// Peers' cost, for the record: an SSH-based push tool opens one SSH
// session per host, colmena-style at most sshParallel at a time.
const (
	sshHosts    = 100
	sshParallel = 10
)

// BenchmarkSSHPeers compares reaching 100 hosts over SSH (100 sessions to
// Debian's sshd on loopback, 10 at a time, each running `true`, as our
// instant executor does nothing) with one NATS fan-out to 100 listeners
// (request to every host completed). It skips without sshd and ssh.
func BenchmarkSSHPeers(b *testing.B) {
	sshd := testenv.RequireBinary(b, "sshd")
	if _, err := os.Stat(sshd); err != nil || !filepath.IsAbs(sshd) {
		b.Skip("sshd must be run by absolute path")
	}
	ssh := testenv.RequireBinary(b, "ssh")
	keygen := testenv.RequireBinary(b, "ssh-keygen")
	if os.Geteuid() != 0 {
		b.Skip("sshd on loopback needs root here (it logs in as the current user via its own config)")
	}
	dir := b.TempDir()
	for _, k := range []string{"host", "client"} {
		if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			b.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "client.pub"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		b.Fatal(err)
	}
	port := testenv.FreePort(b)
	conf := fmt.Sprintf(`ListenAddress 127.0.0.1:%d
HostKey %s
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 100
PidFile none
`, port, filepath.Join(dir, "host"), filepath.Join(dir, "authorized_keys"))
	confPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	srv := exec.Command(sshd, "-D", "-e", "-f", confPath)
	var log testenv.Buffer
	srv.Stdout, srv.Stderr = &log, &log
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	waitPort(b, port)
	session := func() error {
		cmd := exec.Command(ssh, "-F", "/dev/null", "-i", filepath.Join(dir, "client"), "-p", fmt.Sprint(port),
			"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
			"root@127.0.0.1", "true")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("ssh: %v\n%s\nsshd:\n%s", err, out, log.String())
		}
		return nil
	}
	if err := session(); err != nil {
		b.Fatal(err)
	}

	f := startFleet(b, sshHosts)
	subject := protocol.DeployAllSubject("test")
	var viaSSH, viaNATS samples
	for b.Loop() {
		start := time.Now()
		hosts := make(chan int, sshHosts)
		for i := range sshHosts {
			hosts <- i
		}
		close(hosts)
		var wg sync.WaitGroup
		errs := make(chan error, sshHosts)
		for range sshParallel {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range hosts {
					if err := session(); err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		viaSSH = append(viaSSH, time.Since(start))
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		settle()
		if _, d, _, ok := f.ourDeploy(b, subject, sshHosts); ok {
			viaNATS = append(viaNATS, d)
		}
		settle()
	}
	record(b, row{Bench: "peers, N=100", Measure: "our fan-out vs SSH sessions, 10 at a time", Ours: viaNATS.median(), Baseline: viaSSH.median(), Unit: "ms",
		Note: "baseline: 100 ssh sessions to loopback sshd running `true`; ours: request to every host completed"})
}
