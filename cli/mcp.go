package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/peterbourgon/ff/v4"

	mcpserver "github.com/homelab-deploy/homelab-deploy/mcp"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
)

// mcpCmd is `homelab-deploy mcp`. The HTTP bind and token policy is the mcp
// package's (mcpserver.Listen); this command only passes its flags in.
type mcpCmd struct {
	root *Root
	conn connFlags
	// enable holds --enable-<gate> per gate the registry's tools declare;
	// seeds holds --<credential>-nkey-file per credential.
	enable    map[string]*bool
	seeds     map[string]*string
	HTTPAddr  string
	TokenFile string
	// Settings of the deploy tools: defaults for the fields an assistant
	// leaves out, published as the schema's defaults.
	Branch       string
	Timeout      time.Duration
	AcceptWindow time.Duration
	Flags        *ff.FlagSet
	Command      *ff.Command
}

func newMCP(r *Root) *mcpCmd {
	c := &mcpCmd{root: r}
	c.Flags = ff.NewFlagSet("mcp").SetParent(r.Flags)
	c.conn.register(c.Flags)
	c.registerGates()
	c.Flags.StringVar(&c.HTTPAddr, 0, "http-addr", "", "serve streamable HTTP at /mcp and SSE at /sse on this address instead of stdio; a bare port or ':PORT' binds to 127.0.0.1 (env HOMELAB_DEPLOY_HTTP_ADDR)")
	c.Flags.StringVar(&c.TokenFile, 0, "http-token-file", "", "file (mode 0600) holding the bearer token every HTTP request must carry; required with --http-addr, loopback included (env HOMELAB_DEPLOY_HTTP_TOKEN_FILE)")
	c.Flags.StringVar(&c.Branch, 0, "default-branch", deploy.DefaultBranch, "git branch, tag or commit that deploy and deploy_admin use when the assistant names none; shown as the schema's default (env HOMELAB_DEPLOY_BRANCH)")
	durationVar(c.Flags, &c.Timeout, "deploy-timeout", deploy.DefaultTimeout, "how long deploy and deploy_admin wait for every host's final status unless the assistant asks otherwise, in seconds or as a duration (env HOMELAB_DEPLOY_TIMEOUT)")
	durationVar(c.Flags, &c.AcceptWindow, "accept-window", deploy.DefaultAcceptWindow, "for a group deploy, how long to wait for further hosts after the last new one, in seconds or as a duration (env HOMELAB_DEPLOY_ACCEPT_WINDOW)")
	c.Command = &ff.Command{
		Name:      "mcp",
		Usage:     "homelab-deploy mcp [FLAGS]",
		ShortHelp: "serve the deployment tools to AI assistants over MCP (stdio or HTTP)",
		LongHelp: "Runs an MCP (Model Context Protocol) server with the tools deploy (test tier only),\n" +
			"list_hosts and status; deploy_admin (any tier, admin credential) with --enable-admin;\n" +
			"build with --enable-builds. The same tools are offered on every transport. Deploys and\n" +
			"builds called with \"wait\": false return their id at once; status reads their result\n" +
			"(kept for an hour).\n\n" +
			"By default it speaks MCP on stdin and stdout (logs go to stderr), for an assistant that\n" +
			"starts it as a subprocess. With --http-addr it serves streamable HTTP at /mcp and SSE at\n" +
			"/sse, and needs --http-token-file even on loopback: every request must carry\n" +
			"\"Authorization: Bearer <token>\". Create the file with\n" +
			"  head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE\n" +
			"Stdio needs no token. See docs/mcp.md.",
		Flags: c.Flags,
		Exec:  c.exec,
	}
	r.Command.Subcommands = append(r.Command.Subcommands, c.Command)
	return c
}

// registerGates offers every gate the registry's tools declare as
// --enable-<gate>, followed by the credentials its tools use as
// --<credential>-nkey-file: a new gated tool needs no edit here.
func (c *mcpCmd) registerGates() {
	c.enable, c.seeds = map[string]*bool{}, map[string]*string{}
	creds := c.root.Tools.Credentials()
	for _, g := range c.root.Tools.Gates() {
		c.enable[g.Name] = new(bool)
		c.Flags.BoolVar(c.enable[g.Name], 0, "enable-"+g.Name, fmt.Sprintf("%s (env %s)", g.Help, gateEnv(g.Name)))
		for _, cr := range creds {
			if cr.Gate != nil && cr.Gate.Name == g.Name {
				c.seeds[cr.Name] = new(string)
				c.Flags.StringVar(c.seeds[cr.Name], 0, cr.Name+"-nkey-file", "", fmt.Sprintf("%s (env %s)", cr.Help, seedEnv(cr.Name)))
			}
		}
	}
}

func gateEnv(gate string) string { return "HOMELAB_DEPLOY_ENABLE_" + envName(gate) }
func seedEnv(cred string) string { return "HOMELAB_DEPLOY_" + envName(cred) + "_NKEY_FILE" }
func envName(s string) string    { return strings.ToUpper(strings.ReplaceAll(s, "-", "_")) }

func (c *mcpCmd) env() map[string]string {
	vars := merge(c.conn.env(), map[string]string{
		"http-addr":       "HOMELAB_DEPLOY_HTTP_ADDR",
		"http-token-file": "HOMELAB_DEPLOY_HTTP_TOKEN_FILE",
		"default-branch":  "HOMELAB_DEPLOY_BRANCH",
		"deploy-timeout":  "HOMELAB_DEPLOY_TIMEOUT",
		"accept-window":   "HOMELAB_DEPLOY_ACCEPT_WINDOW",
	})
	for g := range c.enable {
		vars["enable-"+g] = gateEnv(g)
	}
	for cr := range c.seeds {
		vars[cr+"-nkey-file"] = seedEnv(cr)
	}
	return vars
}

// gates returns the gates switched on.
func (c *mcpCmd) gates() tools.Gates {
	var on []string
	for name, enabled := range c.enable {
		if *enabled {
			on = append(on, name)
		}
	}
	return tools.GatesOn(on...)
}

// checkSeeds checks the seed file of every credential a switched-on tool
// uses. A credential of its own (Own) must be given; others fall back to
// --nkey-file. A seed given for a gate that is off is ignored, with a
// warning.
func (c *mcpCmd) checkSeeds(gates tools.Gates) error {
	for _, cr := range c.root.Tools.Credentials() {
		path := *c.seeds[cr.Name]
		flag := "--" + cr.Name + "-nkey-file"
		on := cr.Gate == nil || gates.On(cr.Gate.Name)
		switch {
		case !on && path != "":
			c.root.Logger().Warn(flag+" is ignored: its tools are off", "enable", "--enable-"+cr.Gate.Name)
		case on && (cr.Own || path != ""):
			by := "its tools"
			if cr.Gate != nil {
				by = "--enable-" + cr.Gate.Name
			}
			if err := checkExtraSeed(by, flag, seedEnv(cr.Name), cr.Holder+"'s", path); err != nil {
				return err
			}
		}
	}
	return nil
}

// dialCredentials connects every credential a switched-on tool uses that
// has a seed of its own; the caller closes them.
func (c *mcpCmd) dialCredentials(ctx context.Context, gates tools.Gates, conns map[string]*protocol.Conn) error {
	for _, cr := range c.root.Tools.Credentials() {
		path := *c.seeds[cr.Name]
		if path == "" || (cr.Gate != nil && !gates.On(cr.Gate.Name)) {
			continue
		}
		conn, err := c.dial(ctx, path, "homelab-deploy mcp ("+cr.Name+")")
		if err != nil {
			return fmt.Errorf("%s credential: %w", cr.Name, err)
		}
		conns[cr.Name] = conn
	}
	return nil
}

func (c *mcpCmd) exec(ctx context.Context, args []string) error {
	r := c.root
	if err := applyEnv(c.Flags, r.Getenv, c.env()); err != nil {
		return err
	}
	if len(args) != 0 {
		return usagef("mcp takes no arguments, got %q", args)
	}
	if err := c.conn.check(); err != nil {
		return err
	}
	log := r.Logger()
	defaults, err := c.defaults()
	if err != nil {
		return err
	}
	gates := c.gates()
	if err := c.checkSeeds(gates); err != nil {
		return err
	}
	var token string
	var addr string
	if c.HTTPAddr != "" {
		var err error
		if addr, err = mcpserver.ListenAddr(c.HTTPAddr); err != nil {
			return usagef("--http-addr: %v", err)
		}
		if c.TokenFile != "" {
			if token, err = mcpserver.ReadToken(c.TokenFile); err != nil {
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
		if ln, err = mcpserver.Listen(addr, token); err != nil {
			if errors.Is(err, mcpserver.ErrNeedsToken) {
				return usageError{err}
			}
			return fmt.Errorf("--http-addr: %w", err)
		}
		defer ln.Close()
	}

	conn, err := c.conn.connect(ctx, r, "homelab-deploy mcp")
	if err != nil {
		return err
	}
	conns := map[string]*protocol.Conn{tools.DefaultCredential: conn}
	defer func() {
		for _, cn := range conns {
			cn.Close()
		}
	}()
	if err := c.dialCredentials(ctx, gates, conns); err != nil {
		return err
	}

	calls := tools.NewCalls(0, 0)
	defer calls.Close()
	srv := mcpserver.New(r.Tools, gates, tools.Deps{Logger: log, Conns: conns, Defaults: defaults, Calls: calls}, r.Env.Version)
	var names []string
	for _, t := range r.Tools.Enabled(gates) {
		names = append(names, t.Name)
	}
	if ln == nil {
		log.Info("MCP server ready on stdio", "tools", names)
		err := srv.Run(ctx, mcpserver.StdioTransport(r.Stdin, r.Stdout))
		if err != nil && ctx.Err() == nil && !errors.Is(err, io.EOF) && !errors.Is(err, mcp.ErrConnectionClosed) {
			return fmt.Errorf("mcp: %w", err)
		}
		return nil
	}
	return mcpserver.ServeHTTP(ctx, ln, srv, token, log.With("tools", names))
}

// defaults turns the deploy settings into tool input defaults, checked the
// way the tools check the same fields, so that a bad setting stops the
// server at start instead of failing every call.
func (c *mcpCmd) defaults() (map[string]any, error) {
	if err := protocol.ValidateRevision(c.Branch); err != nil {
		return nil, usagef("--default-branch: %v", err)
	}
	timeout := int(math.Ceil(c.Timeout.Seconds()))
	if timeout < 1 || timeout > deploy.MaxTimeoutSeconds {
		return nil, usagef("--deploy-timeout must be between 1s and %ds, got %s", deploy.MaxTimeoutSeconds, c.Timeout)
	}
	if c.AcceptWindow.Seconds() > deploy.MaxAcceptWindowSeconds {
		return nil, usagef("--accept-window must be at most %ds, got %s", deploy.MaxAcceptWindowSeconds, c.AcceptWindow)
	}
	d := map[string]any{}
	for _, tool := range []string{"deploy", "deploy_admin"} {
		d[tool+".branch"] = c.Branch
		d[tool+".timeout_seconds"] = timeout
		d[tool+".accept_window_seconds"] = c.AcceptWindow.Seconds()
	}
	return d, nil
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
