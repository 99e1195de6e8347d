package mcpserver_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	mcpserver "github.com/homelab-deploy/homelab-deploy/mcp"
	"github.com/homelab-deploy/homelab-deploy/tools"
)

const testToken = "s3cret-token-value"

// headerTransport adds headers (the bearer token, an Origin) to every
// request, as an assistant's HTTP client configuration does.
type headerTransport map[string]string

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h {
		r.Header.Set(k, v)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// httpClient sends the token, when not empty, and the extra headers.
func httpClient(token string, extra ...string) *http.Client {
	h := headerTransport{}
	if token != "" {
		h["Authorization"] = "Bearer " + token
	}
	for i := 0; i+1 < len(extra); i += 2 {
		h[extra[i]] = extra[i+1]
	}
	return &http.Client{Transport: h}
}

func connectHTTP(t *testing.T, base, kind string, client *http.Client) (*mcp.ClientSession, error) {
	t.Helper()
	var tr mcp.Transport
	switch kind {
	case "streamable":
		tr = &mcp.StreamableClientTransport{Endpoint: base + mcpserver.StreamablePath, HTTPClient: client, MaxRetries: -1}
	case "sse":
		tr = &mcp.SSEClientTransport{Endpoint: base + mcpserver.SSEPath, HTTPClient: client}
	}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "http-test", Version: "1"}, nil).Connect(context.Background(), tr, nil)
	if err == nil {
		t.Cleanup(func() { _ = cs.Close() })
	}
	return cs, err
}

// rawRequest sends one request the way a transport opens: a POST of a
// JSON-RPC message to /mcp, a GET of the event stream at /sse.
func rawRequest(t *testing.T, base, path string, header map[string]string) (status int, body string, h http.Header) {
	t.Helper()
	method := http.MethodPost
	if path == mcpserver.SSEPath {
		method = http.MethodGet
	}
	req, err := http.NewRequest(method, base+path, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // an accepted SSE stream stays open; only its status is read
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, "", resp.Header
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func TestHTTPTransportsServeTheSameGatedTools(t *testing.T) {
	f := newFleet(t)
	for _, g := range []tools.Gates{tools.GatesOn(), tools.GatesOn("admin")} {
		srv := newServer(t, f, g)
		ts := httptest.NewServer(mcpserver.HTTPHandler(srv, testToken))
		t.Cleanup(ts.Close)
		inMemory := toolNames(t, session(t, srv, nil))
		for _, kind := range []string{"streamable", "sse"} {
			cs, err := connectHTTP(t, ts.URL, kind, httpClient(testToken))
			if err != nil {
				t.Fatalf("%s: %v", kind, err)
			}
			got := toolNames(t, cs)
			if !slices.Equal(got, inMemory) {
				t.Errorf("%s lists %v, in-memory %v", kind, got, inMemory)
			}
			if slices.Contains(got, "deploy_admin") != g.On("admin") {
				t.Errorf("%s: deploy_admin listed=%v with admin=%v", kind, !g.On("admin"), g.On("admin"))
			}
			res := call(t, cs, "list_hosts", map[string]any{"tier": "test"}, nil)
			if res.IsError || !strings.Contains(text(res), "testhost1") {
				t.Errorf("%s list_hosts: %s", kind, text(res))
			}
		}
	}
}

func TestHTTPRefusesRequestsWithoutTheToken(t *testing.T) {
	f := newFleet(t)
	ts := httptest.NewServer(mcpserver.HTTPHandler(newServer(t, f, tools.GatesOn()), testToken))
	t.Cleanup(ts.Close)

	for _, path := range []string{mcpserver.StreamablePath, mcpserver.SSEPath} {
		for _, auth := range []string{"", "Bearer wrong", "Bearer " + testToken + "x", "Basic " + testToken, testToken, "Bearer"} {
			hdr := map[string]string{}
			if auth != "" {
				hdr["Authorization"] = auth
			}
			status, body, h := rawRequest(t, ts.URL, path, hdr)
			if status != http.StatusUnauthorized || strings.TrimSpace(body) != "missing or wrong bearer token" {
				t.Errorf("%s with Authorization %q: %d %q, want 401 %q", path, auth, status, body, "missing or wrong bearer token")
			}
			// A bare challenge: any OAuth hint (resource_metadata, a realm
			// of an authorization server) sends clients into a flow this
			// server does not have.
			if got := h.Values("WWW-Authenticate"); !slices.Equal(got, []string{"Bearer"}) {
				t.Errorf("%s with Authorization %q: WWW-Authenticate %q, want exactly \"Bearer\"", path, auth, got)
			}
			for k, v := range h {
				if j := strings.ToLower(strings.Join(v, " ")); strings.Contains(j, "resource_metadata") || strings.Contains(j, "oauth") || strings.Contains(j, "well-known") {
					t.Errorf("%s: header %s: %q hints at OAuth", path, k, v)
				}
			}
		}
	}
	for _, kind := range []string{"streamable", "sse"} {
		for name, client := range map[string]*http.Client{"no token": httpClient(""), "wrong token": httpClient("wrong-" + testToken)} {
			if _, err := connectHTTP(t, ts.URL, kind, client); err == nil {
				t.Errorf("%s: connected with %s", kind, name)
			}
		}
	}
	if calls := f.calls("testhost1"); len(calls) != 0 {
		t.Errorf("refused requests deployed: %q", calls)
	}
}

func TestHTTPWithTheTokenTheToolsRun(t *testing.T) {
	f := newFleet(t)
	ts := httptest.NewServer(mcpserver.HTTPHandler(newServer(t, f, tools.GatesOn()), testToken))
	t.Cleanup(ts.Close)
	for i, kind := range []string{"streamable", "sse"} {
		cs, err := connectHTTP(t, ts.URL, kind, httpClient(testToken))
		if err != nil {
			t.Fatalf("%s with the token: %v", kind, err)
		}
		if res := call(t, cs, "deploy", map[string]any{"hostname": "testhost1"}, nil); res.IsError {
			t.Fatalf("%s deploy: %s", kind, text(res))
		}
		if calls := f.calls("testhost1"); len(calls) != i+1 {
			t.Errorf("%s: testhost1 ran nixos-rebuild %d times, want %d", kind, len(calls), i+1)
		}
	}
}

func TestHTTPRefusesCrossOriginRequests(t *testing.T) {
	f := newFleet(t)
	ts := httptest.NewServer(mcpserver.HTTPHandler(newServer(t, f, tools.GatesOn()), testToken))
	t.Cleanup(ts.Close)
	u, err := url.Parse(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	port := u.Port()
	auth := "Bearer " + testToken

	for _, path := range []string{mcpserver.StreamablePath, mcpserver.SSEPath} {
		for _, origin := range []string{
			"http://evil.example", "https://evil.example:" + port, "null", "",
			"https://127.0.0.1:" + port, // another scheme
			"http://127.0.0.1:1",        // another port
			"http://127.0.0.1",          // the default port, 80
			"http://localhost:" + port,  // another host name
			"http://127.0.0.1:" + port + "/page",
		} {
			status, body, _ := rawRequest(t, ts.URL, path, map[string]string{"Authorization": auth, "Origin": origin})
			if status != http.StatusForbidden || !strings.Contains(body, "cross-origin request refused") {
				t.Errorf("%s with the token and Origin %q: %d %q, want 403", path, origin, status, body)
			}
		}
		// A cross-site Origin is refused before the token is looked at.
		if status, _, _ := rawRequest(t, ts.URL, path, map[string]string{"Origin": "http://evil.example"}); status != http.StatusForbidden {
			t.Errorf("%s with Origin http://evil.example and no token: %d, want 403", path, status)
		}
		// DNS rebinding: evil.example resolved to 127.0.0.1, so Host and
		// Origin agree with each other but not with loopback.
		evil := "evil.example:" + port
		if status, body, _ := rawRequest(t, ts.URL, path, map[string]string{"Authorization": auth, "Host": evil, "Origin": "http://" + evil}); status != http.StatusForbidden {
			t.Errorf("%s rebound to Host %s: %d %q, want 403", path, evil, status, body)
		}
	}
	for _, kind := range []string{"streamable", "sse"} {
		if _, err := connectHTTP(t, ts.URL, kind, httpClient(testToken, "Origin", "http://evil.example")); err == nil {
			t.Errorf("%s: connected from a cross-site Origin", kind)
		}
		// The server's own origin, as a browser page served by it sends it.
		cs, err := connectHTTP(t, ts.URL, kind, httpClient(testToken, "Origin", ts.URL))
		if err != nil {
			t.Fatalf("%s with Origin %s: %v", kind, ts.URL, err)
		}
		if res := call(t, cs, "list_hosts", map[string]any{}, nil); res.IsError {
			t.Errorf("%s same-origin list_hosts: %s", kind, text(res))
		}
	}
	if calls := f.calls("testhost1"); len(calls) != 0 {
		t.Errorf("cross-origin requests deployed: %q", calls)
	}
}

func TestHTTPAdvertisesNoOAuth(t *testing.T) {
	f := newFleet(t)
	ts := httptest.NewServer(mcpserver.HTTPHandler(newServer(t, f, tools.GatesOn()), testToken))
	t.Cleanup(ts.Close)
	for _, path := range []string{
		"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp",
		"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration",
	} {
		for _, client := range []*http.Client{httpClient(""), httpClient(testToken)} {
			resp, err := client.Get(ts.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
			}
		}
	}
}

func TestHTTPProgressOverStreamable(t *testing.T) {
	f := newFleet(t)
	ts := httptest.NewServer(mcpserver.HTTPHandler(newServer(t, f, tools.GatesOn()), testToken))
	t.Cleanup(ts.Close)
	var plog progressLog
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "http-test", Version: "1"}, &mcp.ClientOptions{ProgressNotificationHandler: plog.handle}).
		Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: ts.URL + mcpserver.StreamablePath, HTTPClient: httpClient(testToken)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	res := call(t, cs, "deploy", map[string]any{"hostname": "testhost2"}, "http")
	if res.IsError {
		t.Fatalf("deploy: %s", text(res))
	}
	eventually(t, "three notifications", func() bool { return len(plog.get()) == 3 })
	if m := messages(plog.get()); !strings.HasPrefix(m[2], "testhost2: completed") {
		t.Errorf("messages %q", m)
	}
}
