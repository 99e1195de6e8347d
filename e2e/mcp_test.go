package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
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

// startMCPHTTP runs `homelab-deploy mcp --http-addr` on loopback with a
// fresh bearer token in a 0600 file, and returns its base URL and the
// token once it listens.
func startMCPHTTP(t *testing.T, env []string, args ...string) (base, token string) {
	t.Helper()
	token = rand.Text()
	file := filepath.Join(t.TempDir(), "mcp.token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	p := startDaemon(t, env, append([]string{"mcp", "--log-format", "text", "--http-addr", addr, "--http-token-file", file}, args...)...)
	p.WaitFor(t, "MCP server listening", 20*time.Second)
	return "http://" + addr, token
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
		{"default", f.cliEnv("deployer"), []string{"deploy", "list_hosts", "status"}},
		{"admin", adminEnv, []string{"deploy", "deploy_admin", "list_hosts", "status"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdio := mcpClient(t, mcpCommand(tc.env), nil)
			if got := mcpTools(t, stdio); !slices.Equal(got, tc.want) {
				t.Errorf("stdio tools %v, want %v", got, tc.want)
			}
			checkListHosts(t, "stdio", stdio)
			base, token := startMCPHTTP(t, tc.env)
			for kind, tr := range httpTransports(base, token) {
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
	// accepted, started, nixos-rebuild's live output ("running …"), completed.
	testenv.Eventually(t, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(progress) >= 3 && strings.HasPrefix(progress[len(progress)-1], "testhost1: completed")
	}, "expected progress notifications up to completed")
	mu.Lock()
	last := progress[len(progress)-1]
	if !strings.HasPrefix(progress[0], "testhost1: accepted") || !strings.HasPrefix(last, "testhost1: completed (switch") && !strings.HasPrefix(last, "testhost1: completed (test") ||
		!slices.ContainsFunc(progress, func(p string) bool { return strings.Contains(p, "activating the configuration...") }) {
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
	base, token := startMCPHTTP(t, f.cliEnv("deployer"))

	for _, path := range []string{"/mcp", "/sse"} {
		for _, hdr := range []map[string]string{
			{},
			{"Authorization": "Bearer not-the-token"},
			{"Authorization": "Bearer " + token, "Origin": "http://evil.example"},
			{"Origin": "http://evil.example"},
		} {
			req, _ := http.NewRequest(http.MethodGet, base+path, nil)
			req.Header.Set("Accept", "text/event-stream")
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want, wantBody := http.StatusUnauthorized, "missing or wrong bearer token"
			if hdr["Origin"] != "" {
				want, wantBody = http.StatusForbidden, "cross-origin request refused"
			}
			if resp.StatusCode != want || !strings.Contains(string(body), wantBody) {
				t.Errorf("GET %s with %q: %d %q, want %d %q", path, hdr, resp.StatusCode, body, want, wantBody)
			}
			if want == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") != "Bearer" {
				t.Errorf("GET %s with %q: WWW-Authenticate %q, want a bare Bearer challenge", path, hdr, resp.Header.Get("WWW-Authenticate"))
			}
		}
	}
	resp, err := http.Get(base + "/.well-known/oauth-protected-resource")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /.well-known/oauth-protected-resource: %d, want 404", resp.StatusCode)
	}
	for kind, tr := range httpTransports(base, token) {
		cs := mcpClient(t, tr, nil)
		if got := mcpTools(t, cs); !slices.Equal(got, []string{"deploy", "list_hosts", "status"}) {
			t.Errorf("%s tools %v", kind, got)
		}
		checkListHosts(t, kind, cs)
	}

	// --enable-admin without the admin seed says what is missing.
	r := run(t, f.cliEnv("deployer"), "mcp", "--enable-admin")
	if r.Code != 2 || !strings.Contains(r.Stderr, "--admin-nkey-file") {
		t.Errorf("--enable-admin without a seed: exit %d\n%s", r.Code, r.Stderr)
	}
}
