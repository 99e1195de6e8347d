package protocol

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
)

// Live output (extension). While nixos-rebuild or nix build runs, the
// listener (per deploy) and the builder (per host) send non-terminal
// statuses "output" that carry the new lines of the command's output, and
// the same status without lines as a heartbeat while the command is
// silent. The fields live in Output, embedded in DeployResponse and
// BuildResponse.
//
// An older requester sees an output status as a non-terminal status it
// does not know: a deployer keeps waiting for the final status as before
// (it shows "output" and the message, the latest line, as a progress
// line); a build client ignores it (older versions log a warning for
// each). Unknown fields were always ignored in answers, so the new ones
// change nothing for them.

// StatusOutput is a non-terminal status with new output lines, or a
// heartbeat (no lines) while the command runs.
const StatusOutput Status = "output"

// Bounds and rates of live output; a sender keeps to them, a requester
// enforces the per-status ones on what it receives.
const (
	// OutputInterval is the shortest gap between two output statuses of
	// one deploy (or one host of a build).
	OutputInterval = 500 * time.Millisecond
	// OutputHeartbeat is the longest gap between two statuses while the
	// command runs: a status without lines goes out when nothing else did.
	// Five seconds keeps an MCP client that resets its timeout on progress
	// alive with room to spare.
	OutputHeartbeat = 5 * time.Second
	// MaxOutputBatchLines and MaxOutputBatchBytes bound the lines of one
	// status; when more arrive within an interval, the oldest are left
	// out (and counted in dropped_lines).
	MaxOutputBatchLines = 50
	MaxOutputBatchBytes = 4 << 10
	// MaxOutputLineBytes bounds one line; a longer one is cut and ends
	// with "…".
	MaxOutputLineBytes = 512
	// MaxOutputLines and MaxOutputBytes bound what one deploy (one host of
	// a build) sends in all; past them only dropped_lines grows. The
	// whole output is in the sender's log (the journal).
	MaxOutputLines = 5000
	MaxOutputBytes = 512 << 10
)

// Output holds the fields of an output status (extension). It is embedded
// in DeployResponse and BuildResponse; its fields are left out of every
// other status.
type Output struct {
	// Lines are the new output lines since the previous output status,
	// oldest first, without line endings; absent in a heartbeat.
	Lines OutputLines `json:"lines,omitempty"`
	// DroppedLines counts the lines of this run that were not sent (over
	// the bounds above) so far; it never decreases within a run.
	DroppedLines int `json:"dropped_lines,omitempty"`
	// ElapsedSeconds is how long the command has been running.
	ElapsedSeconds float64 `json:"elapsed_seconds,omitempty"`
}

// Elapsed returns ElapsedSeconds as a duration, 0 when it is not a
// plausible running time (negative, or more than a year).
func (o Output) Elapsed() time.Duration {
	s := o.ElapsedSeconds
	if !(s > 0) || s > 366*24*3600 || math.IsInf(s, 0) {
		return 0
	}
	return time.Duration(RoundSeconds(s) * float64(time.Second))
}

// Dropped returns DroppedLines, 0 when negative.
func (o Output) Dropped() int { return max(o.DroppedLines, 0) }

// OutputLines are output lines from the network. Decoding cleans and
// bounds them as every text from the network is: at most
// MaxOutputBatchLines lines (the last ones), each cleaned (CleanText), on
// one line, and cut to MaxOutputLineBytes.
type OutputLines []string

// UnmarshalJSON decodes a JSON array of strings and cleans it.
func (l *OutputLines) UnmarshalJSON(b []byte) error {
	var raw []string
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	if len(raw) > MaxOutputBatchLines {
		raw = raw[len(raw)-MaxOutputBatchLines:]
	}
	out := make(OutputLines, 0, len(raw))
	for _, s := range raw {
		out = append(out, CleanOutputLine(s))
	}
	*l = out
	return nil
}

// CleanOutputLine makes one output line safe to show and send: control and
// format characters removed (CleanText), newlines and tabs turned into
// spaces, cut to MaxOutputLineBytes with a trailing "…". Senders apply it
// after RedactText; requesters apply it to what they receive.
func CleanOutputLine(s string) string {
	if len(s) > 4*MaxOutputLineBytes {
		s = s[:4*MaxOutputLineBytes] // a broken last character is removed below
	}
	s = cleanText(s, len(s)) // no cut yet: the cut below marks itself
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return ' '
		}
		return r
	}, s)
	if len(s) <= MaxOutputLineBytes {
		return s
	}
	const mark = "…"
	return cleanText(s, MaxOutputLineBytes-len(mark)) + mark
}

// LinesSince returns the lines of an output status for display: when
// DroppedLines grew past prevDropped (the count of the previous output
// status of the same run), a note saying how many lines were left out
// comes first, where they were. It also returns the new count.
func (o Output) LinesSince(prevDropped int) ([]string, int) {
	n := o.Dropped()
	if n <= prevDropped {
		return o.Lines, prevDropped
	}
	note := fmt.Sprintf("[%d line(s) of output not sent; the whole output is in the log of the host that ran it]", n-prevDropped)
	return append([]string{note}, o.Lines...), n
}
