package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/peterbourgon/ff/v4"
)

func TestDurationValue(t *testing.T) {
	t.Parallel()
	ok := map[string]time.Duration{
		"600": 600 * time.Second, "600s": 600 * time.Second, "10m": 10 * time.Minute, " 90s ": 90 * time.Second,
		"1h30m": 90 * time.Minute, "1.5s": 1500 * time.Millisecond, "0": 0,
	}
	for in, want := range ok {
		var d time.Duration
		fs := ff.NewFlagSet("t")
		durationVar(fs, &d, "timeout", time.Minute, "")
		if err := fs.Parse([]string{"--timeout", in}); err != nil || d != want {
			t.Errorf("--timeout %q = %v, %v; want %v", in, d, err, want)
		}
	}
	for _, in := range []string{"", "soon", "-5", "-5s", "10 minutes", "99999999999999999999"} {
		var d time.Duration
		fs := ff.NewFlagSet("t")
		durationVar(fs, &d, "timeout", time.Minute, "")
		err := fs.Parse([]string{"--timeout=" + in})
		if err == nil {
			t.Errorf("--timeout %q accepted as %v", in, d)
		}
	}
	for d, want := range map[time.Duration]string{600 * time.Second: "10m", time.Hour: "1h", 90 * time.Minute: "1h30m", 1500 * time.Millisecond: "1.5s", 30 * time.Second: "30s", 0: "0s"} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// The listener's and builder's timeouts read seconds and durations alike,
// from flags and from the environment, and a bad value is a usage error
// that names what to type.
func TestDurationFlagsOnCommands(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args    []string
		mention string
	}{
		{[]string{"listener", "--timeout", "soon"}, "give a whole number of seconds (600) or a duration such as 90s"},
		{[]string{"listener", "--timeout", "0", "--hostname", "h", "--tier", "test", "--flake-url", "git+file:///x"}, "--timeout must be positive, e.g. 600, 600s or 10m"},
		{[]string{"listener", "--shutdown-grace", "-1"}, "negative"},
		{[]string{"builder", "--timeout", "0s", "--config", "/x", "--nats-url", "nats://127.0.0.1:1", "--nkey-file", "/x"}, "--timeout must be positive"},
		{[]string{"demo", "--step-delay", "11m"}, "--step-delay must be between 0 and 10m"},
	} {
		env, stdout, stderr := testEnv(nil)
		if code := Run(context.Background(), c.args, env); code != ExitUsage || !strings.Contains(stderr.String(), c.mention) {
			t.Errorf("%q: exit %d, stderr %q (want exit 2 mentioning %q); stdout %q", c.args, code, stderr, c.mention, stdout)
		}
	}

	// Both spellings reach the listener's configuration.
	for _, v := range []string{"600", "600s", "10m"} {
		r := New(Env{})
		if err := r.Command.Parse([]string{"listener", "--timeout", v}); err != nil {
			t.Fatal(err)
		}
		var got time.Duration
		for _, sc := range r.Command.Subcommands {
			if sc.Name == "listener" {
				f, _ := sc.Flags.GetFlag("timeout")
				got, _ = time.ParseDuration(f.GetValue())
			}
		}
		if got != 10*time.Minute {
			t.Errorf("listener --timeout %s = %v, want 10m", v, got)
		}
	}
}

// An environment variable goes through the same parsing as the flag.
func TestDurationFromEnv(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"900": 15 * time.Minute, "15m": 15 * time.Minute} {
		var d time.Duration
		fs := ff.NewFlagSet("t")
		durationVar(fs, &d, "timeout", time.Minute, "")
		if err := applyEnv(fs, func(string) string { return in }, map[string]string{"timeout": "X_TIMEOUT"}); err != nil || d != want {
			t.Errorf("X_TIMEOUT=%s: %v, %v; want %v", in, d, err, want)
		}
	}
	var d time.Duration
	fs := ff.NewFlagSet("t")
	durationVar(fs, &d, "timeout", time.Minute, "")
	err := applyEnv(fs, func(string) string { return "soon" }, map[string]string{"timeout": "X_TIMEOUT"})
	if err == nil || !strings.Contains(err.Error(), `X_TIMEOUT="soon"`) {
		t.Errorf("X_TIMEOUT=soon: %v", err)
	}
}
