package cli

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/lmittmann/tint"
	"github.com/peterbourgon/ff/v4"
)

// setupLogging builds the logger from --log-level and --log-format. Those
// are root flags, but people put them anywhere (`deploy X --log-level
// debug`), where ff leaves them to the command's interspersed parsing, which
// runs after this: so they are picked out of the selected command's
// leftover arguments here, and validated like the others (exit 2).
func (r *Root) setupLogging() error {
	if err := r.applyLateRootFlags(); err != nil {
		return err
	}
	var level slog.Level
	switch r.LogLevel {
	case "debug":
		level = slog.LevelDebug
	case "info", "":
		level = slog.LevelInfo
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		return usagef("--log-level %q: use debug, info, warn or error", r.LogLevel)
	}
	var h slog.Handler
	switch r.LogFormat {
	case "auto", "":
		if r.Terminal(r.Stderr) {
			h = tint.NewHandler(r.Stderr, &tint.Options{Level: level, TimeFormat: time.TimeOnly, NoColor: !r.colorful()})
		} else {
			h = slog.NewTextHandler(r.Stderr, &slog.HandlerOptions{Level: level})
		}
	case "text":
		h = slog.NewTextHandler(r.Stderr, &slog.HandlerOptions{Level: level})
	case "json":
		h = slog.NewJSONHandler(r.Stderr, &slog.HandlerOptions{Level: level})
	default:
		return usagef("--log-format %q: use auto, text or json", r.LogFormat)
	}
	r.logger = slog.New(h)
	return nil
}

// Logger returns the configured logger.
func (r *Root) Logger() *slog.Logger {
	if r.logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.logger
}

// applyLateRootFlags sets the root flags found among the selected
// subcommand's positional leftovers. Flags it cannot make sense of are left
// for the command's own parsing to report.
func (r *Root) applyLateRootFlags() error {
	sel := r.Command.GetSelected()
	if sel == nil || sel == r.Command || sel.Flags == nil {
		return nil
	}
	_, flags, err := splitArgs(sel.Flags, sel.Flags.GetArgs())
	if err != nil {
		return nil
	}
	for _, f := range flags {
		if f.flag.GetFlags() != ff.Flags(r.Flags) {
			continue
		}
		if err := f.flag.SetValue(f.value); err != nil {
			return usagef("flag %s: %v", f.arg, err)
		}
	}
	return nil
}

// colorful reports whether stderr may carry ANSI colours: only on a
// terminal, with --log-format auto, and without NO_COLOR set to anything
// (https://no-color.org). Log lines and progress lines decide alike.
func (r *Root) colorful() bool {
	if r.LogFormat != "auto" && r.LogFormat != "" {
		return false
	}
	if r.Getenv != nil && r.Getenv("NO_COLOR") != "" {
		return false
	}
	return r.Terminal(r.Stderr)
}

// color wraps s in an ANSI colour when colours are wanted (colorful).
func (r *Root) color(code, s string) string {
	if !r.colorful() {
		return s
	}
	return fmt.Sprintf("\x1b[%sm%s\x1b[0m", code, s)
}

const (
	colRed    = "31"
	colGreen  = "32"
	colYellow = "33"
	colDim    = "2"
)
