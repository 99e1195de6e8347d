package fleet

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/natsauth"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// debianNATS is Debian's nats-server (2.9.10) run as a process with the
// authorization block natsauth renders, JetStream on or off.
type debianNATS struct {
	URL   string
	creds map[string]testenv.Cred
	cmd   *exec.Cmd
	log   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startDebianNATS(t testing.TB, jetstream bool, users ...testenv.User) *debianNATS {
	t.Helper()
	bin := testenv.RequireBinary(t, "nats-server")
	dir := t.TempDir()
	d := &debianNATS{creds: map[string]testenv.Cred{}, log: &syncBuffer{}}
	var creds []testenv.Cred
	for _, u := range users {
		p := protocol.Permissions{Publish: []string{">"}, Subscribe: []string{">"}}
		if u.Permissions != nil {
			p = *u.Permissions
		}
		c := testenv.NewCred(t, dir, u.Name, p)
		d.creds[u.Name] = c
		creds = append(creds, c)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	var conf strings.Builder
	fmt.Fprintf(&conf, "listen: 127.0.0.1:%d\nmax_payload: 1048576\n", port)
	if jetstream {
		fmt.Fprintf(&conf, "jetstream { store_dir: %q }\n", filepath.Join(dir, "js"))
	}
	conf.WriteString(natsauth.Render(testenv.AuthUsers(creds...)))
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(bin, "-c", path)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		_ = d.cmd.Wait()
		if t.Failed() {
			t.Logf("nats-server output:\n%s", d.log)
		}
	})
	d.URL = fmt.Sprintf("nats://127.0.0.1:%d", port)
	ready := "Server is ready"
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(d.log.String(), ready) {
		if time.Now().After(deadline) {
			t.Fatalf("nats-server did not start; output:\n%s", d.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return d
}

func (d *debianNATS) Connect(t testing.TB, name string) *protocol.Conn {
	t.Helper()
	c, err := protocol.Connect(t.Context(), protocol.ConnectOptions{URLs: d.URL, NKeyFile: d.creds[name].SeedFile, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
