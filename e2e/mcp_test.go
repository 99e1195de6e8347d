package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
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
)

// mcpClient connects a go-sdk client over tr and closes it when the test
// ends. progress, if set, receives progress notification messages.
func mcpClient(t *testing.T, tr mcp.Transport, progress func(string)) *mcp.ClientSession {
	t.Helper()
	opts := &mcp.ClientOptions{}
	if progress != nil {
		opts.ProgressNotificationHandler = func(_ context.Context, r *mcp.ProgressNotificationClientRequest) { progress(r.Params.Message) }
	}
	// The connect context must outlive the call: the SSE transport's event
	// stream lives on it.
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, opts).Connect(context.Background(), tr, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

func mcpTools(t *testing.T, cs *mcp.ClientSession) []string {
	t.Helper()
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
	}
	slices.Sort(names)
	return names
}

func mcpCall(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any, token any) (*mcp.CallToolResult, map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := &mcp.CallToolParams{Name: name, Arguments: args}
	if token != nil {
		p.SetProgressToken(token)
	}
	res, err := cs.CallTool(ctx, p)
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	var out map[string]any
	b, _ := json.Marshal(res.StructuredContent)
	_ = json.Unmarshal(b, &out)
	return res, out
}

func mcpText(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// checkListHosts asserts that list_hosts finds both listeners.
func checkListHosts(t *testing.T, where string, cs *mcp.ClientSession) {
	t.Helper()
	res, out := mcpCall(t, cs, "list_hosts", map[string]any{}, nil)
	hosts, _ := out["hosts"].([]any)
	var names []string
	for _, h := range hosts {
		m, _ := h.(map[string]any)
		names = append(names, fmt.Sprint(m["tier"], "/", m["hostname"]))
	}
	if res.IsError || !slices.Equal(names, []string{"prod/dns1", "test/testhost1"}) {
		t.Errorf("%s: list_hosts = %v (isError %v): %s", where, names, res.IsError, mcpText(res))
	}
}

// mcpCommand is `homelab-deploy mcp` as an assistant starts it: over stdio.
func mcpCommand(env []string, args ...string) *mcp.CommandTransport {
	cmd := exec.Command(binary, append([]string{"mcp", "--log-format", "text"}, args...)...)
	cmd.Env = env
	return &mcp.CommandTransport{Command: cmd, TerminateDuration: 5 * time.Second}
}

// startMCPHTTP runs `homelab-deploy mcp --http-addr` and returns its base
// URL once it listens.
func startMCPHTTP(t *testing.T, env []string, args ...string) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startDaemon(t, env, append([]string{"mcp", "--log-format", "text", "--http-addr", addr}, args...)...)
	p.WaitFor(t, "MCP server listening", 20*time.Second)
	return "http://" + addr
}

type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func httpTransports(base, token string) map[string]mcp.Transport {
	client := &http.Client{}
	if token != "" {
		client.Transport = bearer{token}
	}
	return map[string]mcp.Transport{
		"streamable HTTP": &mcp.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: client, MaxRetries: -1},
		"SSE":             &mcp.SSEClientTransport{Endpoint: base + "/sse", HTTPClient: client},
	}
}

func TestE2EMCPSameToolsOnEveryTransport(t *testing.T) {
	f := startE2EFleet(t)
	adminEnv := f.cliEnv("deployer", "HOMELAB_DEPLOY_ENABLE_ADMIN=true", "HOMELAB_DEPLOY_ADMIN_NKEY_FILE="+f.creds["admin"].SeedFile)
	for _, tc := range []struct {
		name string
		env  []string
		want []string
	}{
		{"default", f.cliEnv("deployer"), []string{"deploy", "list_hosts"}},
		{"admin", adminEnv, []string{"deploy", "deploy_admin", "list_hosts"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdio := mcpClient(t, mcpCommand(tc.env), nil)
			if got := mcpTools(t, stdio); !slices.Equal(got, tc.want) {
				t.Errorf("stdio tools %v, want %v", got, tc.want)
			}
			checkListHosts(t, "stdio", stdio)
			base := startMCPHTTP(t, tc.env)
			for kind, tr := range httpTransports(base, "") {
				cs := mcpClient(t, tr, nil)
				if got := mcpTools(t, cs); !slices.Equal(got, tc.want) {
					t.Errorf("%s tools %v, want %v", kind, got, tc.want)
				}
				checkListHosts(t, kind, cs)
			}
		})
	}
}

func TestE2EMCPDeployWithProgressOverStdio(t *testing.T) {
	f := startE2EFleet(t)
	var mu sync.Mutex
	var progress []string
	env := f.cliEnv("deployer", "HOMELAB_DEPLOY_ENABLE_ADMIN=1", "HOMELAB_DEPLOY_ADMIN_NKEY_FILE="+f.creds["admin"].SeedFile)
	cs := mcpClient(t, mcpCommand(env), func(m string) {
		mu.Lock()
		progress = append(progress, m)
		mu.Unlock()
	})

	res, out := mcpCall(t, cs, "deploy", map[string]any{"hostname": "testhost1", "branch": "feature-x", "action": "test"}, "e2e")
	if res.IsError || out["success"] != true {
		t.Fatalf("deploy: %s", mcpText(res))
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(progress) >= 3
	}, "expected three progress notifications")
	mu.Lock()
	if len(progress) != 3 || !strings.HasPrefix(progress[0], "testhost1: accepted") || !strings.HasPrefix(progress[2], "testhost1: completed (switch") && !strings.HasPrefix(progress[2], "testhost1: completed (test") {
		t.Errorf("progress %q", progress)
	}
	mu.Unlock()
	calls := testenv.Calls(f.standIns["testhost1"])
	if len(calls) != 1 || !strings.HasPrefix(calls[0], "test --flake "+e2eFlake+"?ref=feature-x#testhost1") {
		t.Errorf("nixos-rebuild calls on testhost1: %q", calls)
	}

	// deploy cannot reach the prod host; deploy_admin can.
	res, _ = mcpCall(t, cs, "deploy", map[string]any{"hostname": "dns1"}, nil)
	if !res.IsError {
		t.Errorf("deploy to dns1 through the test-tier tool: %s", mcpText(res))
	}
	if calls := testenv.Calls(f.standIns["dns1"]); len(calls) != 0 {
		t.Fatalf("dns1 ran nixos-rebuild through deploy: %q", calls)
	}
	res, out = mcpCall(t, cs, "deploy_admin", map[string]any{"tier": "prod", "role": "dns", "action": "dry-activate"}, nil)
	if res.IsError || out["success"] != true {
		t.Fatalf("deploy_admin: %s", mcpText(res))
	}
	if calls := testenv.Calls(f.standIns["dns1"]); len(calls) != 1 || !strings.HasPrefix(calls[0], "dry-activate ") {
		t.Errorf("dns1 calls %q", calls)
	}
}

func TestE2EMCPHTTPToken(t *testing.T) {
	f := startE2EFleet(t)
	const token = "e2e-0123456789-abcdef"
	file := filepath.Join(t.TempDir(), "mcp.token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := startMCPHTTP(t, f.cliEnv("deployer", "HOMELAB_DEPLOY_HTTP_TOKEN_FILE="+file))

	for _, path := range []string{"/mcp", "/sse"} {
		for _, auth := range []string{"", "Bearer not-the-token"} {
			req, _ := http.NewRequest(http.MethodGet, base+path, nil)
			req.Header.Set("Accept", "text/event-stream")
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET %s with %q: %d, want 401", path, auth, resp.StatusCode)
			}
		}
	}
	for kind, tr := range httpTransports(base, token) {
		cs := mcpClient(t, tr, nil)
		if got := mcpTools(t, cs); !slices.Equal(got, []string{"deploy", "list_hosts"}) {
			t.Errorf("%s tools %v", kind, got)
		}
		checkListHosts(t, kind, cs)
	}

	// Without a token, a non-loopback address is refused before anything
	// starts.
	r := run(t, f.cliEnv("deployer"), "mcp", "--http-addr", fmt.Sprintf("0.0.0.0:%d", freePort(t)))
	if r.Code != 2 || !strings.Contains(r.Stderr, "not a loopback address") {
		t.Errorf("non-loopback without a token: exit %d\n%s", r.Code, r.Stderr)
	}
	// --enable-admin without the admin seed says what is missing.
	r = run(t, f.cliEnv("deployer"), "mcp", "--enable-admin")
	if r.Code != 2 || !strings.Contains(r.Stderr, "--admin-nkey-file") {
		t.Errorf("--enable-admin without a seed: exit %d\n%s", r.Code, r.Stderr)
	}
}
