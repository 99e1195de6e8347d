package deploy_test

import (
	"context"
	"encoding/json"
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
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
)

// cutter forwards TCP connections to a NATS server and can drop its
// clients and keep them out for a while.
type cutter struct {
	ln      net.Listener
	target  string
	mu      sync.Mutex
	blocked bool
	conns   []net.Conn
}

func newCutter(t *testing.T, target string) *cutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln, target: strings.TrimPrefix(target, "nats://")}
	t.Cleanup(func() { ln.Close(); c.setBlocked(true) })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			blocked := c.blocked
			c.mu.Unlock()
			out, err := net.Dial("tcp", c.target)
			if blocked || err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	return c
}

func (c *cutter) setBlocked(b bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.blocked = b
	if b {
		for _, x := range c.conns {
			x.Close()
		}
		c.conns = nil
	}
}

// The deployer loses its connection during a deploy and is kept out until
// the listener has published its final status: after reconnecting it finds
// the host idle and names it, long before its timeout. (End to end with a
// restarted nats-server: e2e/TestDeployerThatMissedTheFinalStatusSaysWhichHost.)
func TestDeployerNamesAHostWhoseFinalStatusItMissed(t *testing.T) {
	t.Parallel()
	body := `dir=$(dirname "$0"); while [ ! -f "$dir/release" ]; do sleep 0.05; done`
	f := startFleet(t, defaultHosts[:1], body, time.Minute)
	cut := newCutter(t, f.nats.URL)
	conn, err := protocol.Connect(context.Background(), protocol.ConnectOptions{URLs: "nats://" + cut.ln.Addr().String(), NKeyFile: f.nats.Cred("deployer").SeedFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)

	// The spy sees the final status go out while the deployer is away.
	finals := make(chan struct{}, 1)
	if _, err := f.spy.Subscribe(protocol.DeployResponsesPrefix+">", func(m *nats.Msg) {
		var r protocol.DeployResponse
		if json.Unmarshal(m.Data, &r) == nil && r.Status == protocol.StatusCompleted {
			finals <- struct{}{}
		}
	}); err != nil {
		t.Fatal(err)
	}
	_ = f.spy.Flush()

	started := make(chan struct{})
	var once sync.Once
	type outcome struct {
		res deploy.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		d := deploy.Options{Timeout: 5 * time.Minute, Discover: listhosts.Options{Quiet: 200 * time.Millisecond}}
		res, err := deploy.Send(context.Background(), conn, deploy.Request{Subject: "deploy.test.testhost1", Action: "switch", Revision: "main"}, d, func(e tools.Event) {
			if e.Status == protocol.StatusStarted {
				once.Do(func() { close(started) })
			}
		})
		done <- outcome{res, err}
	}()
	<-started
	cut.setBlocked(true)
	if err := os.WriteFile(filepath.Join(f.standIn, "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-finals:
	case <-time.After(30 * time.Second):
		t.Fatal("the listener never published its final status")
	}
	cut.setBlocked(false)

	select {
	case o := <-done:
		if o.err != nil {
			t.Fatal(o.err)
		}
		h := o.res.Hosts
		if o.res.Success || len(h) != 1 || h[0].Hostname != "testhost1" || h[0].Status != protocol.StatusFailed || !strings.Contains(h[0].Message, "lost track of testhost1") || !strings.Contains(o.res.Message, "lost track of testhost1") {
			t.Fatalf("result = %+v", o.res)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the deployer did not notice the lost status within a minute (its timeout is 5)")
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return conn.IsConnected() }, "the deployer did not reconnect")
}
