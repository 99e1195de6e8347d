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

// ErrNeedsToken is returned by Listen for a non-loopback address without a
// token.
var ErrNeedsToken = errors.New("a bearer token is required")

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
		return "", fmt.Errorf("%s must hold one token of at least %d characters without spaces; create one with `head -c 32 /dev/urandom | base64 > %s`", path, MinTokenLen, path)
	}
	return tok, nil
}

// Listen binds addr. Whether it is loopback is decided on the bound address
// (a host name such as localhost resolves to one), and anything else needs
// a token.
func Listen(addr, token string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() && token == "" {
		_ = ln.Close()
		return nil, fmt.Errorf("%w: --http-addr %s is not a loopback address, and anyone who can reach it could deploy; give --http-token-file (or HOMELAB_DEPLOY_HTTP_TOKEN_FILE) with a bearer token, or bind to 127.0.0.1", ErrNeedsToken, addr)
	}
	return ln, nil
}

// ServeHTTP serves s on ln (streamable HTTP and SSE) until ctx ends, then
// shuts down.
func ServeHTTP(ctx context.Context, ln net.Listener, s *mcp.Server, token string, log *slog.Logger) error {
	hs := &http.Server{Handler: HTTPHandler(s, token), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	auth := "none (loopback only)"
	if token != "" {
		auth = "bearer token"
	}
	base := "http://" + ln.Addr().String()
	log.Info("MCP server listening", "streamable_http", base+StreamablePath, "sse", base+SSEPath, "auth", auth)
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
