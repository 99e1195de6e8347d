package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// Long calls over MCP (issue 13): a rebuild that takes 12 s, printing a
// line a second, reached by clients whose request timeout is shorter
// than the rebuild, on every transport, with the Go SDK's client and the
// official TypeScript SDK's.

// slowRebuild is the stand-in nixos-rebuild: a line a second for 12 s.
const slowRebuild = `i=1
while [ $i -le 12 ]; do
  echo "step $i of 12: building the system configuration"
  i=$((i+1))
  sleep 1
done
echo "activating the configuration..."`

// requestTimeout is the clients' request timeout, shorter than the
// rebuild: only progress notifications keep a blocking call alive.
const requestTimeout = 6 * time.Second

// longFleet is Debian's nats-server with one test-tier listener per host,
// each running slowRebuild, and a test deployer for the MCP server.
type longFleet struct {
	nats     *NATSServer
	deployer testenv.Cred
	standIns map[string]string
}

func startLongFleet(t *testing.T, hosts ...string) *longFleet {
	t.Helper()
	dir := t.TempDir()
	f := &longFleet{standIns: map[string]string{}}
	var creds []testenv.Cred
	for _, h := range hosts {
		creds = append(creds, testenv.NewCred(t, dir, h, *testenv.ListenerPerms("test", h, "")))
	}
	f.deployer = testenv.NewCred(t, dir, "deployer", protocol.TestDeployerPermissions())
	f.nats = startNATSServer(t, append(creds, f.deployer)...)
	for i, h := range hosts {
		f.standIns[h] = testenv.StandIn(t, "nixos-rebuild", slowRebuild)
		p := startDaemon(t, baseEnv(f.standIns[h]), "listener", "--hostname", h, "--tier", "test", "--nats-url", f.nats.URL,
			"--nkey-file", creds[i].SeedFile, "--flake-url", e2eFlake, "--timeout", "120", "--log-format", "text")
		p.WaitFor(t, "listener ready", 20*time.Second)
	}
	return f
}

func (f *longFleet) env() []string {
	return append(baseEnv(), "HOMELAB_DEPLOY_NATS_URL="+f.nats.URL, "HOMELAB_DEPLOY_NKEY_FILE="+f.deployer.SeedFile)
}

// callWithProgressTimeout calls a tool the way a client with
// resetTimeoutOnProgress does: the call fails when requestTimeout passes
// without a progress notification.
func callWithProgressTimeout(t *testing.T, cs *mcp.ClientSession, progress <-chan string, name string, args map[string]any) (*mcp.CallToolResult, []string, error) {
	t.Helper()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	var seen []string
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		timer := time.NewTimer(requestTimeout)
		defer timer.Stop()
		for {
			select {
			case m := <-progress:
				seen = append(seen, m)
				timer.Reset(requestTimeout)
			case <-timer.C:
				cancel(fmt.Errorf("no progress notification for %s", requestTimeout))
			case <-done:
				return
			}
		}
	}()
	p := &mcp.CallToolParams{Name: name, Arguments: args}
	p.SetProgressToken("long")
	res, err := cs.CallTool(ctx, p)
	if cause := context.Cause(ctx); err != nil && cause != nil {
		err = fmt.Errorf("%w (%v)", err, cause)
	}
	close(done)
	<-finished
	// The output lines came long before the result.
	return res, seen, err
}

func structured(t *testing.T, res *mcp.CallToolResult) map[string]any {
	t.Helper()
	var out map[string]any
	b, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("structured content %s: %v", b, err)
	}
	return out
}

// checkNoWait runs scenario a with the Go client: deploy with "wait":
// false returns an id within a couple of seconds; status reports the
// deploy until it is done and succeeded.
func checkNoWait(t *testing.T, cs *mcp.ClientSession, host string) {
	t.Helper()
	start := time.Now()
	res, out := mcpCall(t, cs, "deploy", map[string]any{"hostname": host, "wait": false}, nil)
	took := time.Since(start)
	id, _ := out["id"].(string)
	if res.IsError || id == "" || out["done"] != false {
		t.Fatalf("deploy wait=false: isError=%v %v\n%s", res.IsError, out, mcpText(res))
	}
	// The rebuild takes 12 s; the answer came after the host's first
	// status, long before.
	if took > 6*time.Second {
		t.Errorf("deploy wait=false took %s; it should return after the first answer", took)
	}
	var last map[string]any
	testenv.Eventually(t, 60*time.Second, func() bool {
		st, o := mcpCall(t, cs, "status", map[string]any{"id": id}, nil)
		if st.IsError && o["done"] != true {
			t.Fatalf("status while running is an error: %s", mcpText(st))
		}
		last = o
		return o["done"] == true
	}, "status of %s never said done", id)
	if last["success"] != true || last["tool"] != "deploy" || last["id"] != id {
		t.Errorf("final status: %v", last)
	}
}

// checkBlocking runs scenario b with the Go client.
func checkBlocking(t *testing.T, cs *mcp.ClientSession, progress <-chan string, host string) {
	t.Helper()
	res, seen, err := callWithProgressTimeout(t, cs, progress, "deploy", map[string]any{"hostname": host})
	if err != nil {
		t.Fatalf("blocking deploy with a %s timeout reset on progress: %v; progress seen: %q", requestTimeout, err, seen)
	}
	if out := structured(t, res); res.IsError || out["success"] != true {
		t.Fatalf("blocking deploy: %s", mcpText(res))
	}
	checkOutputInProgress(t, seen)
}

// checkOutputInProgress asserts that progress messages carried the
// rebuild's own output lines.
func checkOutputInProgress(t *testing.T, seen []string) {
	t.Helper()
	lines := 0
	for _, m := range seen {
		if strings.Contains(m, ": running ") && strings.Contains(m, "of 12: building the system configuration") {
			lines++
		}
	}
	if lines < 3 {
		t.Errorf("%d progress messages carry the rebuild's output lines, want several: %q", lines, seen)
	}
}

func progressClient(t *testing.T, tr mcp.Transport) (*mcp.ClientSession, <-chan string) {
	ch := make(chan string, 1000)
	cs := mcpClient(t, tr, func(m string) {
		select {
		case ch <- m:
		default:
		}
	})
	return cs, ch
}

func TestE2EMCPLongDeploysWithTheGoClient(t *testing.T) {
	f := startLongFleet(t, "long1", "long2", "long3")
	base, token := startMCPHTTP(t, f.env())
	transports := httpTransports(base, token)
	for _, tc := range []struct {
		kind, host string
		tr         mcp.Transport
	}{
		{"stdio", "long1", mcpCommand(f.env())},
		{"streamable HTTP", "long2", transports["streamable HTTP"]},
		{"SSE", "long3", transports["SSE"]},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			cs, progress := progressClient(t, tc.tr)
			checkNoWait(t, cs, tc.host)
			checkBlocking(t, cs, progress, tc.host)
			if calls := testenv.Calls(f.standIns[tc.host]); len(calls) != 2 || !slices.ContainsFunc(calls, func(c string) bool { return strings.HasPrefix(c, "switch --flake "+e2eFlake+"?ref=master#"+tc.host) }) {
				t.Errorf("nixos-rebuild calls on %s: %q", tc.host, calls)
			}
		})
	}
}

// tsResult is what e2e/tsclient/client.mjs prints.
type tsResult struct {
	Error   string   `json:"error"`
	Tools   []string `json:"tools"`
	Invalid struct {
		IsError bool   `json:"isError"`
		Text    string `json:"text"`
	} `json:"invalid"`
	A struct {
		ElapsedMS  float64        `json:"elapsedMs"`
		IsError    bool           `json:"isError"`
		Structured map[string]any `json:"structured"`
		Polls      int            `json:"polls"`
		Last       struct {
			IsError    bool           `json:"isError"`
			Structured map[string]any `json:"structured"`
		} `json:"last"`
	} `json:"a"`
	B struct {
		IsError    bool           `json:"isError"`
		Structured map[string]any `json:"structured"`
		Progress   []struct {
			Progress float64 `json:"progress"`
			Message  string  `json:"message"`
		} `json:"progress"`
	} `json:"b"`
}

// tsClient returns the directory of the TypeScript client with its
// dependencies installed (npm ci, when node_modules is missing).
func tsClient(t *testing.T) (node, dir string) {
	t.Helper()
	node = testenv.RequireBinary(t, "node")
	npm := testenv.RequireBinary(t, "npm")
	dir, err := filepath.Abs("tsclient")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@modelcontextprotocol", "sdk")); err != nil {
		cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
		}
	}
	return node, dir
}

var tsInstall sync.Mutex

func runTSClient(t *testing.T, cfg map[string]any) tsResult {
	t.Helper()
	tsInstall.Lock()
	node, dir := tsClient(t)
	tsInstall.Unlock()
	arg, _ := json.Marshal(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(dir, "client.mjs"), string(arg))
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var r tsResult
	if jerr := json.Unmarshal(out, &r); jerr != nil || err != nil || r.Error != "" {
		t.Fatalf("TypeScript client: %v %v %s\nstdout: %s\nstderr: %s", err, jerr, r.Error, out, stderr.String())
	}
	return r
}

func checkTSResult(t *testing.T, r tsResult) {
	t.Helper()
	if !slices.Equal(r.Tools, []string{"deploy", "list_hosts", "status"}) {
		t.Errorf("tools %v", r.Tools)
	}
	if !r.Invalid.IsError || !strings.Contains(r.Invalid.Text, "give exactly one target") {
		t.Errorf("deploy {}: %+v", r.Invalid)
	}
	// a: the id at once, then status until done, with success.
	if r.A.IsError || r.A.Structured["done"] != false || r.A.Structured["id"] == nil || r.A.ElapsedMS > 6000 {
		t.Errorf("deploy wait=false: after %.0f ms isError=%v %v", r.A.ElapsedMS, r.A.IsError, r.A.Structured)
	}
	if last := r.A.Last; last.IsError || last.Structured["done"] != true || last.Structured["success"] != true || last.Structured["id"] != r.A.Structured["id"] {
		t.Errorf("status after %d polls: isError=%v %v", r.A.Polls, last.IsError, last.Structured)
	}
	// b: the blocking call outlived its 6 s timeout on progress, which
	// carried the rebuild's output.
	if r.B.IsError || r.B.Structured["success"] != true {
		t.Errorf("blocking deploy: isError=%v %v", r.B.IsError, r.B.Structured)
	}
	var seen []string
	for i, p := range r.B.Progress {
		seen = append(seen, p.Message)
		if i > 0 && p.Progress <= r.B.Progress[i-1].Progress {
			t.Errorf("progress does not increase: %v", r.B.Progress)
		}
	}
	checkOutputInProgress(t, seen)
}

func TestE2EMCPLongDeploysWithTheTypeScriptClient(t *testing.T) {
	f := startLongFleet(t, "long1", "long2")
	base, token := startMCPHTTP(t, f.env())
	env := map[string]string{}
	for _, kv := range f.env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	for _, tc := range []struct {
		name string
		cfg  map[string]any
	}{
		{"stdio", map[string]any{"transport": "stdio", "command": binary, "args": []string{"mcp", "--log-format", "text"}, "env": env, "host": "long1"}},
		{"streamable HTTP", map[string]any{"transport": "http", "url": base + "/mcp", "token": token, "host": "long2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkTSResult(t, runTSClient(t, tc.cfg))
		})
	}
}
