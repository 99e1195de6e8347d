package cli

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v4"
)

// durationValue is a flag value for a span of time. It accepts a Go duration
// (90s, 5m, 1h30m) or a plain whole number, read as seconds: SPEC documents
// the timeouts in seconds (`--timeout 600`), and people type durations.
// Environment variables go through the same Set (applyEnv), so
// HOMELAB_DEPLOY_TIMEOUT=600 and =10m mean the same.
type durationValue struct {
	p   *time.Duration
	def time.Duration
}

// durationVar registers a duration flag --long on fs, storing into p, which
// starts as def. Help shows the default as a duration (e.g. 10m).
func durationVar(fs *ff.FlagSet, p *time.Duration, long string, def time.Duration, usage string) ff.Flag {
	*p = def
	return fs.Value(0, long, &durationValue{p: p, def: def}, usage)
}

// parseDuration reads a Go duration or a whole number of seconds; negative
// spans are refused (no flag of ours means anything by them).
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration: give e.g. 600, 600s or 10m")
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("duration %q is negative", s)
		}
		if n > math.MaxInt64/int64(time.Second) {
			return 0, fmt.Errorf("duration %q is too long", s)
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: give a whole number of seconds (600) or a duration such as 90s, 10m or 1h30m", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("duration %q is negative", s)
	}
	return d, nil
}

// Set implements flag.Value.
func (v *durationValue) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*v.p = d
	return nil
}

// String implements flag.Value; ff shows it as the default in help.
func (v *durationValue) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	return formatDuration(*v.p)
}

// GetPlaceholder names the value in help (ff's placeholder hook).
func (v *durationValue) GetPlaceholder() string { return "DURATION" }

// Reset restores the default (ff's Resetter).
func (v *durationValue) Reset() error {
	*v.p = v.def
	return nil
}

// formatDuration is time.Duration's String without trailing zero units:
// 10m rather than 10m0s, 1h rather than 1h0m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
