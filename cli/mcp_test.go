package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

func mcpNATS(t *testing.T) *testenv.NATS {
	return testenv.StartNATS(t,
		testenv.User{Name: "mcp", Permissions: testenv.Ptr(protocol.TestDeployerPermissions())},
		testenv.User{Name: "admin", Permissions: testenv.Ptr(protocol.AdminDeployerPermissions())},
	)
}

func TestMCPRefusesToStartWithoutWhatItNeeds(t *testing.T) {
	t.Parallel()
	n := mcpNATS(t)
	seed := n.Cred("mcp").SeedFile
	loose := filepath.Join(t.TempDir(), "admin.nkey")
	real, err := os.ReadFile(n.Cred("admin").SeedFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(loose, real, 0o644); err != nil {
		t.Fatal(err)
	}
	shortToken := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(shortToken, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"mcp", "--nats-url", n.URL, "--nkey-file", seed}
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"admin without seed", []string{"--enable-admin"}, nil, "--enable-admin needs the admin deployer's NKey seed file: give --admin-nkey-file (or HOMELAB_DEPLOY_ADMIN_NKEY_FILE)"},
		{"admin via env without seed", nil, map[string]string{"HOMELAB_DEPLOY_ENABLE_ADMIN": "true"}, "--admin-nkey-file"},
		{"admin seed missing", []string{"--enable-admin", "--admin-nkey-file", "/nonexistent/admin.nkey"}, nil, "no such file"},
		{"admin seed readable by others", []string{"--enable-admin", "--admin-nkey-file", loose}, nil, "chmod 600"},
		{"loopback without token", []string{"--http-addr", "127.0.0.1:0"}, nil, "MCP over HTTP needs a bearer token, on loopback too"},
		{"loopback without token says how to make one", []string{"--http-addr", "127.0.0.1:0"}, nil, "head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE"},
		{"loopback without token points to stdio", []string{"--http-addr", "127.0.0.1:0"}, nil, "the stdio transport (without --http-addr) needs no token"},
		{"bare port without token", []string{"--http-addr", "0"}, nil, "needs a bearer token"},
		{"address via env without token", nil, map[string]string{"HOMELAB_DEPLOY_HTTP_ADDR": "127.0.0.1:0"}, "needs a bearer token"},
		{"non-loopback without token", []string{"--http-addr", "0.0.0.0:0"}, nil, "needs a bearer token"},
		{"short token", []string{"--http-addr", "127.0.0.1:0", "--http-token-file", shortToken}, nil, "at least 16 characters"},
		{"bad address", []string{"--http-addr", "127.0.0.1:notaport:1"}, nil, "--http-addr"},
		{"arguments", []string{"deploy"}, nil, "mcp takes no arguments"},
	}
	for _, tc := range cases {
		env, stdout, stderr := testEnv(tc.env)
		code := Run(context.Background(), append(slices.Clone(base), tc.args...), env)
		if code != ExitUsage || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit 2 and %q", tc.name, code, stderr, tc.want)
		}
		if len(stdout.String()) != 0 {
			t.Errorf("%s: wrote to stdout (the MCP channel): %q", tc.name, stdout)
		}
	}
}

// runMCP runs `homelab-deploy mcp` in-process with the given flags and env,
// its stdio connected to pipes, until the test ends.
func runMCP(t *testing.T, vars map[string]string, args ...string) (stdin io.WriteCloser, stdout io.ReadCloser, stderr *testenv.Buffer) {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	stderr = &testenv.Buffer{}
	env := Env{Stdin: inR, Stdout: outW, Stderr: stderr, Version: "test", Getenv: func(k string) string { return vars[k] }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- Run(ctx, append([]string{"mcp"}, args...), env) }()
	t.Cleanup(func() {
		cancel()
		_ = inW.Close()
		_ = outR.Close()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("mcp exited %d; stderr:\n%s", code, stderr)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("mcp did not stop; stderr:\n%s", stderr)
		}
	})
	return inW, outR, stderr
}

func listTools(t *testing.T, tr mcp.Transport) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "cli-test", Version: "1"}, nil).Connect(ctx, tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.ListTools(ctx, nil)
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

func TestMCPStdioFollowsGates(t *testing.T) {
	t.Parallel()
	n := mcpNATS(t)
	vars := map[string]string{"HOMELAB_DEPLOY_NATS_URL": n.URL, "HOMELAB_DEPLOY_NKEY_FILE": n.Cred("mcp").SeedFile}

	in, out, _ := runMCP(t, vars)
	if got := listTools(t, &mcp.IOTransport{Reader: out, Writer: in}); !slices.Equal(got, []string{"deploy", "list_hosts", "status"}) {
		t.Errorf("default tools %v", got)
	}

	admin := map[string]string{"HOMELAB_DEPLOY_ENABLE_ADMIN": "1", "HOMELAB_DEPLOY_ADMIN_NKEY_FILE": n.Cred("admin").SeedFile, "HOMELAB_DEPLOY_ENABLE_BUILDS": "true"}
	for k, v := range vars {
		admin[k] = v
	}
	in, out, stderr := runMCP(t, admin)
	if got := listTools(t, &mcp.IOTransport{Reader: out, Writer: in}); !slices.Equal(got, []string{"build", "deploy", "deploy_admin", "list_hosts", "status"}) {
		t.Errorf("tools with admin and builds %v", got)
	}
	if !strings.Contains(stderr.String(), "MCP server ready on stdio") {
		t.Errorf("no ready line on stderr:\n%s", stderr)
	}
}

func TestMCPHTTPNeedsTheToken(t *testing.T) {
	t.Parallel()
	n := mcpNATS(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "0123456789abcdef-token"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, _, stderr := runMCP(t, map[string]string{"HOMELAB_DEPLOY_HTTP_ADDR": addr, "HOMELAB_DEPLOY_HTTP_TOKEN_FILE": tokenFile},
		"--nats-url", n.URL, "--nkey-file", n.Cred("mcp").SeedFile)
	testenv.Eventually(t, 30*time.Second, func() bool { return strings.Contains(stderr.String(), "MCP server listening") }, "no listening line:\n%s", stderr)

	resp, err := http.Post(fmt.Sprintf("http://%s/mcp", addr), "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("request without the token: %d, want 401", resp.StatusCode)
	}
	client := &http.Client{Transport: tokenTransport(token)}
	got := listTools(t, &mcp.StreamableClientTransport{Endpoint: fmt.Sprintf("http://%s/mcp", addr), HTTPClient: client})
	if !slices.Equal(got, []string{"deploy", "list_hosts", "status"}) {
		t.Errorf("tools over HTTP %v", got)
	}
}

type tokenTransport string

func (tt tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+string(tt))
	return http.DefaultTransport.RoundTrip(r)
}
