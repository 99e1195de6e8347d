package mcpserver_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	mcpserver "github.com/homelab-deploy/homelab-deploy/mcp"
	"github.com/homelab-deploy/homelab-deploy/tools"
)

// bearerTransport adds an Authorization header to every request.
type bearerTransport struct{ token string }

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func httpClient(token string) *http.Client {
	if token == "" {
		return &http.Client{}
	}
	return &http.Client{Transport: bearerTransport{token}}
}

func connectHTTP(t *testing.T, base, kind, token string) (*mcp.ClientSession, error) {
	t.Helper()
	var tr mcp.Transport
	switch kind {
	case "streamable":
		tr = &mcp.StreamableClientTransport{Endpoint: base + mcpserver.StreamablePath, HTTPClient: httpClient(token), MaxRetries: -1}
	case "sse":
		tr = &mcp.SSEClientTransport{Endpoint: base + mcpserver.SSEPath, HTTPClient: httpClient(token)}
	}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "http-test", Version: "1"}, nil).Connect(context.Background(), tr, nil)
	if err == nil {
		t.Cleanup(func() { _ = cs.Close() })
	}
	return cs, err
}

func TestHTTPTransportsServeTheSameGatedTools(t *testing.T) {
	f := newFleet(t)
	for _, g := range []tools.Gates{tools.GatesOn(), tools.GatesOn("admin")} {
		srv := newServer(t, f, g)
		ts := httptest.NewServer(mcpserver.HTTPHandler(srv, ""))
		t.Cleanup(ts.Close)
		inMemory := toolNames(t, session(t, srv, nil))
		for _, kind := range []string{"streamable", "sse"} {
			cs, err := connectHTTP(t, ts.URL, kind, "")
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

func TestHTTPBearerToken(t *testing.T) {
	f := newFleet(t)
	const token = "s3cret-token-value"
	ts := httptest.NewServer(mcpserver.HTTPHandler(newServer(t, f, tools.GatesOn()), token))
	t.Cleanup(ts.Close)

	for _, path := range []string{mcpserver.StreamablePath, mcpserver.SSEPath} {
		for _, auth := range []string{"", "Bearer wrong", "Bearer " + token + "x", "Basic " + token, token, "Bearer"} {
			method := http.MethodPost
			if path == mcpserver.SSEPath {
				method = http.MethodGet
			}
			req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s %s with Authorization %q: %d %q, want 401 with a Bearer challenge", method, path, auth, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
		}
	}
	for _, kind := range []string{"streamable", "sse"} {
		if _, err := connectHTTP(t, ts.URL, kind, ""); err == nil {
			t.Errorf("%s: connected without the token", kind)
		}
		cs, err := connectHTTP(t, ts.URL, kind, token)
		if err != nil {
			t.Fatalf("%s with the token: %v", kind, err)
		}
		if res := call(t, cs, "list_hosts", map[string]any{}, nil); res.IsError {
			t.Errorf("%s list_hosts: %s", kind, text(res))
		}
	}
}

func TestHTTPProgressOverStreamable(t *testing.T) {
	f := newFleet(t)
	ts := httptest.NewServer(mcpserver.HTTPHandler(newServer(t, f, tools.GatesOn()), ""))
	t.Cleanup(ts.Close)
	var plog progressLog
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "http-test", Version: "1"}, &mcp.ClientOptions{ProgressNotificationHandler: plog.handle}).
		Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: ts.URL + mcpserver.StreamablePath}, nil)
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
