package mcpserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The HTTP transports' bind and token policy lives here, in one place for
// every HTTP transport; the CLI only passes its flags in.

// MinTokenLen is the shortest bearer token accepted.
const MinTokenLen = 16

// ErrNeedsToken is returned by Listen and ServeHTTP without a token: the
// HTTP transports always need one, on loopback too, or any local user
// could deploy with the credentials this server holds.
var ErrNeedsToken = errors.New("MCP over HTTP needs a bearer token")

// ListenAddr turns --http-addr into a listen address. A bare port ("8080")
// or an empty host (":8080") means loopback, never every interface:
// exposing the server must be explicit.
func ListenAddr(s string) (string, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, ":") {
		s = ":" + s
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%q is not HOST:PORT: %v", s, err)
	}
	if port == "" {
		return "", fmt.Errorf("%q has no port", s)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// ReadToken reads a bearer token: one line, at least MinTokenLen
// characters, in a file only its owner can read.
func ReadToken(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%s has mode %04o and can be read by other users: run `chmod 600 %s`", path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < MinTokenLen || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("%s must hold one token of at least %d characters without spaces; create one with `head -c 32 /dev/urandom | base64 > %s; chmod 600 %s`", path, MinTokenLen, path, path)
	}
	return tok, nil
}

// Listen binds addr for the HTTP transports. It refuses to bind without a
// token, whatever the address: loopback only keeps out other machines, not
// other users of this one.
func Listen(addr, token string) (net.Listener, error) {
	if token == "" {
		return nil, needsToken(addr)
	}
	return net.Listen("tcp", addr)
}

func needsToken(addr string) error {
	return fmt.Errorf("%w, on loopback too (any local user could deploy through it): "+
		"create one with `head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE` and give "+
		"--http-token-file FILE (or HOMELAB_DEPLOY_HTTP_TOKEN_FILE) with --http-addr %s; "+
		"the stdio transport (without --http-addr) needs no token", ErrNeedsToken, addr)
}

// ServeHTTP serves s on ln (streamable HTTP and SSE, see HTTPHandler)
// until ctx ends, then shuts down.
func ServeHTTP(ctx context.Context, ln net.Listener, s *mcp.Server, token string, log *slog.Logger) error {
	if token == "" {
		return needsToken(ln.Addr().String())
	}
	hs := &http.Server{Handler: HTTPHandler(s, token), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	base := "http://" + ln.Addr().String()
	log.Info("MCP server listening", "streamable_http", base+StreamablePath, "sse", base+SSEPath, "auth", "bearer token")
	select {
	case err := <-errc:
		return fmt.Errorf("mcp http: %w", err)
	case <-ctx.Done():
	}
	// SSE streams stay open until their clients leave; give requests a
	// moment, then close what is left.
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		_ = hs.Close()
	}
	log.Info("MCP server stopped")
	return nil
}
