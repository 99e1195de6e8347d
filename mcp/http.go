package mcpserver

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// HTTP paths of the two HTTP transports.
const (
	StreamablePath = "/mcp" // streamable HTTP (MCP 2025-03-26 and later)
	SSEPath        = "/sse" // HTTP with server-sent events (MCP 2024-11-05)
)

// Unauthorized is the body of a 401: the only hint the server gives.
const Unauthorized = "missing or wrong bearer token"

// HTTPHandler serves s over streamable HTTP at StreamablePath and over SSE
// at SSEPath; every other path is 404. A request is refused with 403 when
// it carries an Origin header that is not the server's own origin, and
// with 401 unless it carries "Authorization: Bearer <token>". An empty
// token lets no request through: the HTTP transports have no tokenless
// mode (stdio is the tokenless local transport).
//
// Nothing here speaks OAuth: the 401 challenge is a bare "Bearer" without
// resource_metadata, and no /.well-known/oauth-* document exists, so a
// client does not start an authorization flow the server cannot finish.
// The go-sdk handlers add their own DNS-rebinding check (a request that
// arrives on a loopback address naming a non-loopback Host gets 403).
func HTTPHandler(s *mcp.Server, token string) http.Handler {
	get := func(*http.Request) *mcp.Server { return s }
	auth := requireBearer(token)
	mux := http.NewServeMux()
	mux.Handle(StreamablePath, auth(mcp.NewStreamableHTTPHandler(get, nil)))
	mux.Handle(SSEPath, auth(mcp.NewSSEHandler(get, nil)))
	return sameOrigin(mux)
}

// requireBearer lets through only requests carrying the bearer token. The
// comparison takes the same time whatever the presented token is (both
// sides are hashed to a fixed length first).
func requireBearer(token string) func(http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got, ok := bearer(r.Header.Get("Authorization"))
			sum := sha256.Sum256([]byte(got))
			if !ok || token == "" || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
				w.Header().Set("WWW-Authenticate", "Bearer")
				http.Error(w, Unauthorized, http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// sameOrigin refuses with 403 a request whose Origin header is present and
// names another origin than the server's own (the scheme it is served
// with, and the request's Host), before the token is looked at: the MCP
// transport rules ask servers to validate Origin against DNS rebinding and
// cross-site requests from a browser. Requests without Origin (every
// non-browser client) go on to the token check.
func sameOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if origins, present := r.Header["Origin"]; present {
			scheme := "http"
			if r.TLS != nil {
				scheme = "https"
			}
			if len(origins) != 1 || !isOrigin(origins[0], scheme, r.Host) {
				http.Error(w, fmt.Sprintf("cross-origin request refused: Origin %q is not %s://%s", strings.Join(origins, ", "), scheme, r.Host), http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// isOrigin reports whether origin (scheme://host[:port], as a browser
// sends it) is scheme://host, default ports made explicit.
func isOrigin(origin, scheme, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.User != nil || u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return false
	}
	if !strings.EqualFold(u.Scheme, scheme) || u.Host == "" || host == "" {
		return false
	}
	return strings.EqualFold(withPort(u.Host, scheme), withPort(host, scheme))
}

// withPort returns host:port, with the scheme's default port when host has
// none.
func withPort(host, scheme string) string {
	if h, p, err := net.SplitHostPort(host); err == nil {
		return net.JoinHostPort(h, p)
	}
	port := "80"
	if scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}
