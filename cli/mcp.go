package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/peterbourgon/ff/v4"

	mcpserver "github.com/homelab-deploy/homelab-deploy/mcp"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/registry"
)

// minTokenLen is the shortest bearer token accepted for the HTTP transports.
const minTokenLen = 16

type mcpCmd struct {
	root          *Root
	conn          connFlags
	EnableAdmin   bool
	AdminNKeyFile string
	EnableBuilds  bool
	BuildNKeyFile string
	HTTPAddr      string
	TokenFile     string
	Flags         *ff.FlagSet
	Command       *ff.Command
}

func newMCP(r *Root) *mcpCmd {
	c := &mcpCmd{root: r}
	c.Flags = ff.NewFlagSet("mcp").SetParent(r.Flags)
	c.conn.register(c.Flags)
	c.Flags.BoolVar(&c.EnableAdmin, 0, "enable-admin", "offer the deploy_admin tool, which deploys to any tier with the admin credential (env HOMELAB_DEPLOY_ENABLE_ADMIN)")
	c.Flags.StringVar(&c.AdminNKeyFile, 0, "admin-nkey-file", "", "NKey seed file of the admin deployer, required by --enable-admin (env HOMELAB_DEPLOY_ADMIN_NKEY_FILE)")
	c.Flags.BoolVar(&c.EnableBuilds, 0, "enable-builds", "offer the build tool, which asks the builder to pre-build configurations (env HOMELAB_DEPLOY_ENABLE_BUILDS)")
	c.Flags.StringVar(&c.BuildNKeyFile, 0, "build-nkey-file", "", "NKey seed file of a build client for the build tool; default: the --nkey-file credential (env HOMELAB_DEPLOY_BUILD_NKEY_FILE)")
	c.Flags.StringVar(&c.HTTPAddr, 0, "http-addr", "", "serve streamable HTTP at /mcp and SSE at /sse on this address instead of stdio; a bare port or ':PORT' binds to 127.0.0.1 (env HOMELAB_DEPLOY_HTTP_ADDR)")
	c.Flags.StringVar(&c.TokenFile, 0, "http-token-file", "", "file holding a bearer token every HTTP request must carry; required when --http-addr is not a loopback address (env HOMELAB_DEPLOY_HTTP_TOKEN_FILE)")
	c.Command = &ff.Command{
		Name:      "mcp",
		Usage:     "homelab-deploy mcp [FLAGS]",
		ShortHelp: "serve the deployment tools to AI assistants over MCP (stdio or HTTP)",
		LongHelp: "Runs an MCP (Model Context Protocol) server with the tools deploy (test tier only) and\n" +
			"list_hosts; deploy_admin (any tier, admin credential) with --enable-admin; build with\n" +
			"--enable-builds. The same tools are offered on every transport.\n\n" +
			"By default it speaks MCP on stdin and stdout (logs go to stderr), for an assistant that\n" +
			"starts it as a subprocess. With --http-addr it serves streamable HTTP at /mcp and SSE at\n" +
			"/sse. Binding to anything but loopback requires --http-token-file; when a token is set,\n" +
			"every request must carry \"Authorization: Bearer <token>\". See docs/mcp.md.",
		Flags: c.Flags,
		Exec:  c.exec,
	}
	r.Command.Subcommands = append(r.Command.Subcommands, c.Command)
	return c
}

func (c *mcpCmd) exec(ctx context.Context, args []string) error {
	r := c.root
	if err := applyEnv(c.Flags, r.Getenv, merge(c.conn.env(), map[string]string{
		"enable-admin":    "HOMELAB_DEPLOY_ENABLE_ADMIN",
		"admin-nkey-file": "HOMELAB_DEPLOY_ADMIN_NKEY_FILE",
		"enable-builds":   "HOMELAB_DEPLOY_ENABLE_BUILDS",
		"build-nkey-file": "HOMELAB_DEPLOY_BUILD_NKEY_FILE",
		"http-addr":       "HOMELAB_DEPLOY_HTTP_ADDR",
		"http-token-file": "HOMELAB_DEPLOY_HTTP_TOKEN_FILE",
	})); err != nil {
		return err
	}
	if len(args) != 0 {
		return usagef("mcp takes no arguments, got %q", args)
	}
	if err := c.conn.check(); err != nil {
		return err
	}
	if err := protocol.CheckSeedFile(c.conn.NKeyFile); err != nil {
		return usagef("--nkey-file: %v", err)
	}
	log := r.Logger()
	if c.EnableAdmin {
		if err := checkExtraSeed("--enable-admin", "--admin-nkey-file", "HOMELAB_DEPLOY_ADMIN_NKEY_FILE", "the admin deployer's", c.AdminNKeyFile); err != nil {
			return err
		}
	} else if c.AdminNKeyFile != "" {
		log.Warn("--admin-nkey-file is ignored without --enable-admin: deploy_admin stays off")
	}
	if c.BuildNKeyFile != "" {
		if !c.EnableBuilds {
			log.Warn("--build-nkey-file is ignored without --enable-builds: build stays off")
		} else if err := checkExtraSeed("--enable-builds", "--build-nkey-file", "HOMELAB_DEPLOY_BUILD_NKEY_FILE", "a build client's", c.BuildNKeyFile); err != nil {
			return err
		}
	}
	var token string
	var addr string
	if c.HTTPAddr != "" {
		var err error
		if addr, err = httpListenAddr(c.HTTPAddr); err != nil {
			return usagef("--http-addr: %v", err)
		}
		if c.TokenFile != "" {
			if token, err = readToken(c.TokenFile); err != nil {
				return usagef("--http-token-file: %v", err)
			}
		}
	} else if c.TokenFile != "" {
		log.Warn("--http-token-file is ignored without --http-addr: serving stdio")
	}

	// Bind before connecting to NATS, so that an address that may not be
	// used fails first and nothing half-starts.
	var ln net.Listener
	if addr != "" {
		var err error
		if ln, err = listenHTTP(addr, token); err != nil {
			return err
		}
		defer ln.Close()
	}

	gates := tools.Gates{Admin: c.EnableAdmin, Builds: c.EnableBuilds}
	deps := tools.Deps{Logger: log}
	conn, err := c.conn.connect(ctx, r, "homelab-deploy mcp")
	if err != nil {
		return err
	}
	defer conn.Close()
	deps.Conn = conn
	if gates.Admin {
		admin, err := c.dial(ctx, c.AdminNKeyFile, "homelab-deploy mcp (admin)")
		if err != nil {
			return fmt.Errorf("admin credential: %w", err)
		}
		defer admin.Close()
		deps.AdminConn = admin
	}
	if gates.Builds && c.BuildNKeyFile != "" {
		bc, err := c.dial(ctx, c.BuildNKeyFile, "homelab-deploy mcp (build)")
		if err != nil {
			return fmt.Errorf("build credential: %w", err)
		}
		defer bc.Close()
		deps.BuildConn = bc
	}

	srv := mcpserver.New(registry.New(), gates, deps, r.Env.Version)
	var names []string
	for _, t := range registry.New().Enabled(gates) {
		names = append(names, t.Name)
	}
	if ln == nil {
		log.Info("MCP server ready on stdio", "tools", names)
		err := srv.Run(ctx, &mcp.IOTransport{Reader: io.NopCloser(r.Stdin), Writer: nopWriteCloser{r.Stdout}})
		if err != nil && ctx.Err() == nil && !errors.Is(err, io.EOF) && !errors.Is(err, mcp.ErrConnectionClosed) {
			return fmt.Errorf("mcp: %w", err)
		}
		return nil
	}
	return serveHTTP(ctx, r, ln, token, srv, names)
}

// checkExtraSeed checks a second credential's seed file, saying which flag
// needs it and what is missing.
func checkExtraSeed(enable, flag, env, whose, path string) error {
	if path == "" {
		return usagef("%s needs %s NKey seed file: give %s (or %s)", enable, whose, flag, env)
	}
	if err := protocol.CheckSeedFile(path); err != nil {
		return usagef("%s needs %s NKey seed file in %s: %v", enable, whose, flag, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return usagef("%s needs %s NKey seed file in %s, which cannot be read: %v", enable, whose, flag, err)
	}
	_ = f.Close()
	return nil
}

func (c *mcpCmd) dial(ctx context.Context, seed, name string) (*protocol.Conn, error) {
	return protocol.Connect(ctx, protocol.ConnectOptions{
		URLs: c.conn.URL, NKeyFile: seed, CAFile: c.conn.CAFile, Name: name, Logger: c.root.Logger(),
	})
}

// httpListenAddr turns --http-addr into a listen address. A bare port
// ("8080") or an empty host (":8080") means loopback, never every
// interface: exposing the server must be explicit.
func httpListenAddr(s string) (string, error) {
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

// readToken reads a bearer token: one line, at least minTokenLen
// characters, in a file only its owner can read.
func readToken(path string) (string, error) {
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
	if len(tok) < minTokenLen || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("%s must hold one token of at least %d characters without spaces; create one with `head -c 32 /dev/urandom | base64 > %s`", path, minTokenLen, path)
	}
	return tok, nil
}

// listenHTTP binds addr. Whether it is loopback is decided on the bound
// address (a host name such as localhost resolves to one), and anything
// else needs a token.
func listenHTTP(addr, token string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http-addr: %w", err)
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() && token == "" {
		_ = ln.Close()
		return nil, usagef("--http-addr %s is not a loopback address: anyone who can reach it could deploy; give --http-token-file (or HOMELAB_DEPLOY_HTTP_TOKEN_FILE) with a bearer token, or bind to 127.0.0.1", addr)
	}
	return ln, nil
}

func serveHTTP(ctx context.Context, r *Root, ln net.Listener, token string, srv *mcp.Server, names []string) error {
	log := r.Logger()
	hs := &http.Server{Handler: mcpserver.HTTPHandler(srv, token), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	auth := "none (loopback only)"
	if token != "" {
		auth = "bearer token"
	}
	base := "http://" + ln.Addr().String()
	log.Info("MCP server listening", "streamable_http", base+mcpserver.StreamablePath, "sse", base+mcpserver.SSEPath, "auth", auth, "tools", names)
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

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
