package cli

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/lmittmann/tint"
)

func (r *Root) setupLogging() error {
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
			h = tint.NewHandler(r.Stderr, &tint.Options{Level: level, TimeFormat: time.TimeOnly})
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

// color wraps s in an ANSI colour when stderr is a terminal.
func (r *Root) color(code, s string) string {
	if !r.Terminal(r.Stderr) {
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
