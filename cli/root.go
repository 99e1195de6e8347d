// Package cli is the homelab-deploy command tree (ff/v4). Each subcommand
// parses its flags (with environment fallbacks), builds its dependencies and
// calls a tool handler or an agent; rendering lives here.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/peterbourgon/ff/v4"
	"github.com/peterbourgon/ff/v4/ffhelp"

	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/registry"
)

// Exit codes.
const (
	ExitOK          = 0
	ExitFailure     = 1   // the operation ran and did not fully succeed, or its outcome is unknown
	ExitUsage       = 2   // bad flags, arguments, credential file or config; nothing was sent
	ExitInterrupted = 130 // stopped by Ctrl-C (SIGINT) or SIGTERM
)

// Env is the outside world the CLI sees; tests replace every part.
type Env struct {
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
	Getenv  func(string) string
	Version string
	// Terminal reports whether w is a terminal (colours, tint).
	Terminal func(w io.Writer) bool
}

// OSEnv is the real environment.
func OSEnv(version string) Env {
	return Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Version: version, Terminal: isTerminal}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Root holds what every subcommand shares.
type Root struct {
	Env
	LogLevel  string
	LogFormat string
	Version   bool
	Flags     *ff.FlagSet
	Command   *ff.Command
	// Tools is the registry every command calls its tools through.
	Tools  *tools.Registry
	logger *slog.Logger
	// jsonOut is set by a command given --json: its errors are then one
	// JSON document on stdout too.
	jsonOut bool
	// wrote is set once a command has printed its result document.
	wrote bool
}

// usageError marks errors that mean "bad invocation" (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// exitError carries an exit code without a message of its own (the command
// already said what happened).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// Main runs the CLI with a context cancelled on SIGINT and SIGTERM.
func Main(args []string, env Env) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, args, env)
}

// New builds the command tree.
func New(env Env) *Root {
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	if env.Terminal == nil {
		env.Terminal = func(io.Writer) bool { return false }
	}
	if env.Stdin == nil {
		env.Stdin = strings.NewReader("")
	}
	r := &Root{Env: env, Tools: registry.New()}
	r.Flags = ff.NewFlagSet("homelab-deploy")
	r.Flags.StringVar(&r.LogLevel, 0, "log-level", "info", "log level: debug, info, warn or error (env HOMELAB_DEPLOY_LOG_LEVEL)")
	r.Flags.StringVar(&r.LogFormat, 0, "log-format", "auto", "log format: auto (colours on a terminal, plain text otherwise), text or json (env HOMELAB_DEPLOY_LOG_FORMAT)")
	r.Flags.BoolVar(&r.Version, 0, "version", "print the version and exit")
	r.Command = &ff.Command{
		Name:      "homelab-deploy",
		Usage:     "homelab-deploy [FLAGS] <SUBCOMMAND> ...",
		ShortHelp: "deploy NixOS configurations across a fleet over NATS",
		LongHelp: "Deploys NixOS configurations across a fleet over NATS: a listener on each host runs\n" +
			"nixos-rebuild on request, a builder pre-builds configurations, and the deploy and build\n" +
			"commands (or the MCP server, for AI assistants) send the requests.",
		Flags: r.Flags,
		Exec: func(ctx context.Context, args []string) error {
			if r.Version {
				fmt.Fprintln(r.Stdout, "homelab-deploy", r.Env.Version)
				return nil
			}
			if len(args) > 0 {
				return usagef("unknown command %q; run `homelab-deploy --help` for the list", args[0])
			}
			fmt.Fprint(r.Stdout, ffhelp.Command(r.Command).String())
			return nil
		},
	}
	newDeploy(r)
	newListHosts(r)
	newListener(r)
	newBuilder(r)
	newBuild(r)
	newKeygen(r)
	newNATSConfig(r)
	newDemo(r)
	newMCP(r)
	newCompletion(r)
	return r
}

// Run parses args and runs the selected command, returning the exit code.
func Run(ctx context.Context, args []string, env Env) int {
	r := New(env)
	err := r.Command.Parse(args)
	if err == nil {
		err = r.applyRootEnv()
	}
	if err == nil {
		err = r.setupLogging()
	}
	if errors.Is(err, ff.ErrHelp) {
		sel := r.Command.GetSelected()
		if sel == nil {
			sel = r.Command
		}
		fmt.Fprint(r.Stdout, ffhelp.Command(sel).String())
		return ExitOK
	}
	if err != nil {
		sel := r.Command.GetSelected()
		if sel == nil {
			sel = r.Command
		}
		fmt.Fprintf(r.Stderr, "error: %v\n\nrun `%s --help` for usage\n", trimFFPrefix(err), commandPath(sel))
		return ExitUsage
	}
	err = r.Command.Run(ctx)
	if errors.Is(err, ff.ErrHelp) {
		fmt.Fprint(r.Stdout, ffhelp.Command(r.Command.GetSelected()).String())
		return ExitOK
	}
	return r.exitCode(ctx, err)
}

// exitCode maps a command's error to the exit status, the same way for every
// command, and says what went wrong unless the command already did.
func (r *Root) exitCode(ctx context.Context, err error) int {
	var ue usageError
	var ee exitError
	var ie *tools.InputError
	code, msg := ExitFailure, ""
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue):
		code, msg = ExitUsage, ue.err.Error()
	case errors.As(err, &ie):
		code, msg = ExitUsage, ie.Error()
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		code, msg = ExitInterrupted, "interrupted"
	default:
		msg = err.Error()
	}
	fmt.Fprintf(r.Stderr, "error: %s\n", msg)
	if r.jsonOut && !r.wrote {
		writeJSON(r.Stdout, map[string]any{"error": msg, "exit_code": code})
	}
	return code
}

func trimFFPrefix(err error) string {
	s := err.Error()
	// ff prefixes parse errors with the command names; keep them, they say
	// which command complained.
	return s
}

func commandPath(c *ff.Command) string {
	var names []string
	for ; c != nil; c = c.GetParent() {
		names = append([]string{c.Name}, names...)
	}
	return strings.Join(names, " ")
}

func (r *Root) applyRootEnv() error {
	return applyEnv(r.Flags, r.Getenv, map[string]string{
		"log-level":  "HOMELAB_DEPLOY_LOG_LEVEL",
		"log-format": "HOMELAB_DEPLOY_LOG_FORMAT",
	})
}

// FlagNames returns the long flag names (with "--") that the subcommand
// name accepts, its parents' included; nil if there is no such command. The
// NixOS module's tests use it to prove every flag is reachable.
func FlagNames(name string) []string {
	for _, c := range New(Env{}).Command.Subcommands {
		if c.Name != name {
			continue
		}
		var out []string
		_ = c.Flags.WalkFlags(func(f ff.Flag) error {
			if l, ok := f.GetLongName(); ok && l != "version" {
				out = append(out, "--"+l)
			}
			return nil
		})
		return out
	}
	return nil
}
