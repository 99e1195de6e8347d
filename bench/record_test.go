package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// row is one line of the results table: our figure, the baseline measured
// in the same run, and their ratio against the target.
type row struct {
	Bench    string  `json:"bench"`
	Measure  string  `json:"measure"`
	Ours     float64 `json:"ours"`
	Baseline float64 `json:"baseline"`
	Unit     string  `json:"unit"`
	Ratio    float64 `json:"ratio"`
	// Target is the highest acceptable ratio; Limit the highest acceptable
	// absolute figure (in Unit). Both 0 means "for the record".
	Target float64 `json:"target,omitempty"`
	Limit  float64 `json:"limit,omitempty"`
	Met    *bool   `json:"met,omitempty"`
	Note   string  `json:"note,omitempty"`
}

// resultsMu serialises appends to $BENCH_RESULTS.
var resultsMu sync.Mutex

// record reports r as benchmark metrics and, when $BENCH_RESULTS names a
// file, appends it there as one JSON line for scripts/bench's table.
func record(b *testing.B, r row) {
	b.Helper()
	if r.Baseline > 0 {
		r.Ratio = r.Ours / r.Baseline
	}
	if r.Target > 0 || r.Limit > 0 {
		met := (r.Target == 0 || r.Ratio <= r.Target) && (r.Limit == 0 || r.Ours <= r.Limit)
		r.Met = &met
	}
	unit := metricUnit(r.Measure)
	b.ReportMetric(r.Ours, unit+"-"+r.Unit)
	b.ReportMetric(r.Baseline, unit+"-base-"+r.Unit)
	b.ReportMetric(r.Ratio, unit+"-x")
	path := os.Getenv("BENCH_RESULTS")
	if path == "" {
		return
	}
	line, err := json.Marshal(r)
	if err != nil {
		b.Fatal(err)
	}
	resultsMu.Lock()
	defer resultsMu.Unlock()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		b.Fatal(err)
	}
}

// metricUnit turns a measure's name into a benchmark unit (no spaces).
func metricUnit(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, s)
}

// samples collects one duration per iteration.
type samples []time.Duration

// median returns the median in milliseconds: one slow iteration on a noisy
// machine moves it less than it moves a mean.
func (s samples) median() float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	c := slices.Clone(s)
	slices.Sort(c)
	m := c[len(c)/2]
	if len(c)%2 == 0 {
		m = (c[len(c)/2-1] + c[len(c)/2]) / 2
	}
	return float64(m) / float64(time.Millisecond)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func fmtMS(f float64) string { return fmt.Sprintf("%.2f ms", f) }
