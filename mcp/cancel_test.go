package mcpserver

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/tools"
)

// rawClient speaks newline-delimited JSON-RPC to a server on
// StdioTransport, as an MCP client's stdio transport does, and keeps
// every line the server wrote.
type rawClient struct {
	t   *testing.T
	in  io.WriteCloser
	mu  sync.Mutex
	out []map[string]any
}

func (c *rawClient) send(msg string) {
	c.t.Helper()
	if _, err := io.WriteString(c.in, msg+"\n"); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawClient) lines() []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]map[string]any(nil), c.out...)
}

// has reports whether the server wrote a message for which match holds.
func (c *rawClient) has(match func(map[string]any) bool) bool {
	for _, m := range c.lines() {
		if match(m) {
			return true
		}
	}
	return false
}

func isResponse(id float64) func(map[string]any) bool {
	return func(m map[string]any) bool {
		_, res := m["result"]
		_, err := m["error"]
		return m["id"] == id && (res || err)
	}
}

// blockingRegistry has one tool that reports started, then waits until
// its call is cancelled.
func blockingRegistry(started chan<- struct{}) *tools.Registry {
	reg := &tools.Registry{}
	reg.Register(tools.Define(tools.Tool{Name: "block", Description: "waits until cancelled"}, nil,
		func(in struct{}) (struct{}, error) { return in, nil },
		func(ctx context.Context, _ tools.Env, _ struct{}, _ tools.Progress) (blockOut, error) {
			close(started)
			<-ctx.Done()
			return blockOut{}, ctx.Err()
		}))
	return reg
}

type blockOut struct{}

func (blockOut) IsError() bool   { return false }
func (blockOut) Summary() string { return "" }

func TestCancelledCallGetsNoResponseOnStdio(t *testing.T) {
	started := make(chan struct{})
	srv := New(blockingRegistry(started), tools.GatesOn(), tools.Deps{}, "test")
	clientIn, serverIn := io.Pipe()
	serverOut, clientOut := io.Pipe()
	tr := StdioTransport(clientIn, clientOut)
	dropped := tr.(interface{ dropped() int })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, tr) }()
	t.Cleanup(func() {
		cancel()
		_ = serverIn.Close()
		<-done
	})
	c := &rawClient{t: t, in: serverIn}
	go func() {
		sc := bufio.NewScanner(serverOut)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				c.mu.Lock()
				c.out = append(c.out, m)
				c.mu.Unlock()
			}
		}
	}()

	c.send(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	testenv.Eventually(t, 10*time.Second, func() bool { return c.has(isResponse(1)) }, "no answer to initialize")
	c.send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	c.send(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"block","arguments":{}}}`)
	<-started
	c.send(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2,"reason":"the user pressed stop"}}`)
	// The handler ends on the cancellation and the SDK writes its
	// answer, which the transport drops.
	testenv.Eventually(t, 10*time.Second, func() bool { return dropped.dropped() == 1 }, "the cancelled call's response was not dropped")
	c.send(`{"jsonrpc":"2.0","id":3,"method":"ping"}`)
	testenv.Eventually(t, 10*time.Second, func() bool { return c.has(isResponse(3)) }, "no answer to ping after the cancellation")
	if c.has(isResponse(2)) {
		t.Errorf("the server answered the cancelled call: %v", c.lines())
	}

	// A call that is not cancelled is answered, also when it reuses the
	// id of the cancelled one; a cancellation for a call already answered
	// changes nothing.
	c.send(`{"jsonrpc":"2.0","id":2,"method":"ping"}`)
	testenv.Eventually(t, 10*time.Second, func() bool { return c.has(isResponse(2)) }, "a reused id got no answer")
	c.send(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}`)
	c.send(`{"jsonrpc":"2.0","id":"three","method":"tools/list"}`)
	testenv.Eventually(t, 10*time.Second, func() bool {
		return c.has(func(m map[string]any) bool { return m["id"] == "three" && m["result"] != nil })
	}, "no answer to tools/list")
	if n := dropped.dropped(); n != 1 {
		t.Errorf("%d responses dropped, want 1", n)
	}
}

func TestCancelTracking(t *testing.T) {
	c := newCancels()
	feed := func(lines ...string) {
		for _, l := range lines {
			c.incoming([]byte(l))
		}
	}
	resp := func(id string) []byte { return []byte(`{"jsonrpc":"2.0","id":` + id + `,"result":{}}` + "\n") }
	feed(`{"jsonrpc":"2.0","id":7,"method":"tools/call"}`, `{"jsonrpc":"2.0","id":"a","method":"tools/call"}`,
		`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7}}`,
		`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"7"}}`, // another id
		`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":99}}`,  // not in flight
		`[{"jsonrpc":"2.0","id":8,"method":"ping"}]`, `not json`, ``)
	for _, tc := range []struct {
		out  []byte
		drop bool
	}{
		{resp(`"a"`), false},
		{[]byte(`{"jsonrpc":"2.0","method":"notifications/progress","params":{}}`), false},
		{resp(`7.0`), true}, // the same number
		{resp(`7`), false},  // answered once: forgotten
		{resp(`99`), false},
		{[]byte(`[` + string(resp(`7`)) + `]`), false},
	} {
		if got := c.drop(tc.out); got != tc.drop {
			t.Errorf("drop(%s) = %v, want %v", strings.TrimSpace(string(tc.out)), got, tc.drop)
		}
	}
	if len(c.inFlight) != 0 || len(c.cancelled) != 0 {
		t.Errorf("left over: in flight %v, cancelled %v", c.inFlight, c.cancelled)
	}
}

// FuzzCancelTracking feeds arbitrary client lines and server messages to
// the tracker: it never panics, and drops only the response to a call it
// saw and saw cancelled.
func FuzzCancelTracking(f *testing.F) {
	f.Add(`{"jsonrpc":"2.0","id":2,"method":"tools/call"}`, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}`, `{"jsonrpc":"2.0","id":2,"result":{}}`)
	f.Add(`{"id":"x","method":"m"}`, `{"method":"notifications/cancelled","params":{"requestId":"x"}}`, `{"id":"x","error":{"code":0}}`)
	f.Add(`[]`, `{"method":"notifications/cancelled","params":{"requestId":{}}}`, `{"id":null,"result":null}`)
	f.Add(`{"id":1e400,"method":"m"}`, `{"method":"notifications/cancelled","params":{"requestId":1e400}}`, `{"id":1e400,"result":1}`)
	f.Fuzz(func(t *testing.T, call, cancel, out string) {
		c := newCancels()
		c.incoming([]byte(call))
		c.incoming([]byte(cancel))
		dropped := c.drop([]byte(out))
		var o, ca, cl message
		if dropped && (json.Unmarshal([]byte(out), &o) != nil || json.Unmarshal([]byte(cancel), &ca) != nil || json.Unmarshal([]byte(call), &cl) != nil ||
			idKey(o.ID) == "" || idKey(o.ID) != idKey(ca.Params.RequestID) || idKey(cl.ID) != idKey(o.ID)) {
			t.Fatalf("dropped %q after call %q and cancel %q", out, call, cancel)
		}
		if c.drop([]byte(out)) {
			t.Fatalf("dropped %q twice", out)
		}
		// Reading in chunks sees the same lines.
		r := &cancelReader{r: strings.NewReader(call + "\n" + cancel + "\n"), c: newCancels()}
		buf := make([]byte, 3)
		for {
			if _, err := r.Read(buf); err != nil {
				break
			}
		}
	})
}
