package mcpserver

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// HTTP paths of the two HTTP transports.
const (
	StreamablePath = "/mcp" // streamable HTTP (MCP 2025-03-26 and later)
	SSEPath        = "/sse" // HTTP with server-sent events (MCP 2024-11-05)
)

// HTTPHandler serves s over streamable HTTP at StreamablePath and over SSE
// at SSEPath. When token is not empty, every request must carry
// "Authorization: Bearer <token>"; others get 401 and never reach s.
func HTTPHandler(s *mcp.Server, token string) http.Handler {
	get := func(*http.Request) *mcp.Server { return s }
	mux := http.NewServeMux()
	mux.Handle(StreamablePath, mcp.NewStreamableHTTPHandler(get, nil))
	sse := mcp.NewSSEHandler(get, nil)
	mux.Handle(SSEPath, sse)
	if token == "" {
		return mux
	}
	return RequireBearer(token, mux)
}

// RequireBearer wraps next so that only requests carrying the bearer token
// reach it. The comparison takes the same time whatever the presented
// token is (both sides are hashed to a fixed length first).
func RequireBearer(token string, next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := bearer(r.Header.Get("Authorization"))
		sum := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="homelab-deploy"`)
			http.Error(w, "unauthorized: send the token from --http-token-file as \"Authorization: Bearer <token>\"", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
