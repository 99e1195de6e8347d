package protocol

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Preview before activation (extension). A deploy request with the action
// "diff" asks a listener to build its new system without activating it and
// to report how it differs from the running one: a bounded closure diff
// (`nix store diff-closures`) and whether only a reboot would activate it
// (the kernel, initrd or kernel modules differ from the booted system's).
// Nothing is activated and no profile changes.
//
// ActionDiff is not in Actions(): it is not a nixos-rebuild action, and a
// listener that predates it refuses it with invalid_action (ValidateAction
// is what older listeners decode requests with), so a preview never
// activates anything on an older host.

// ActionDiff asks for a preview instead of an activation.
const ActionDiff Action = "diff"

// ValidateRequestAction checks the action of a deploy request on the wire:
// one of Actions(), or ActionDiff.
func ValidateRequestAction(s string) error {
	if s == string(ActionDiff) {
		return nil
	}
	return ValidateAction(s)
}

// Bounds of the diff a listener sends in the final status of a preview. It
// is sent twice (in message, for every deployer, and in diff), and the
// message, summary included, must stay under MaxTextLen.
const (
	MaxDiffLines = 200
	MaxDiffBytes = 6 << 10
)

// Preview holds the fields of a preview's final status (extension). It is
// embedded in DeployResponse; its fields are left out of every other
// status.
type Preview struct {
	// Diff is the closure diff, one package per line ("name: old → new,
	// +size"), at most MaxDiffLines lines and MaxDiffBytes bytes; empty
	// when no package changed.
	Diff DiffText `json:"diff,omitempty"`
	// DiffOmittedLines counts the lines of the diff left out over the
	// bounds.
	DiffOmittedLines int `json:"diff_omitted_lines,omitempty"`
	// RebootRequired is set in a preview's completed status: true when the
	// new system's kernel, initrd or kernel modules differ from the booted
	// system's.
	RebootRequired *bool `json:"reboot_required,omitempty"`
}

// Omitted returns DiffOmittedLines, 0 when negative.
func (p Preview) Omitted() int { return max(p.DiffOmittedLines, 0) }

// DiffText is a closure diff from the network. Decoding cleans it as every
// text from the network is (CleanText) and cuts it to MaxDiffBytes.
type DiffText string

// UnmarshalJSON decodes a JSON string and cleans it.
func (d *DiffText) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*d = DiffText(cleanText(s, MaxDiffBytes))
	return nil
}

// ParseClosureDiff reads the output of `nix store diff-closures`: one line
// per package whose versions changed or whose size changed by more than
// 8 KiB. It removes terminal escape sequences (newer Nix versions colour
// the output) and blank lines, cleans each line (CleanOutputLine) and
// returns the lines in their order.
func ParseClosureDiff(out string) []string {
	var lines []string
	for _, l := range strings.Split(stripEscapes(out), "\n") {
		l = strings.TrimSpace(CleanOutputLine(strings.TrimRight(l, "\r")))
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// stripEscapes removes ANSI escape sequences: CSI (ESC [ … final byte),
// OSC (ESC ] … BEL or ESC \), and two-byte ESC sequences. CleanText alone
// would leave their printable part ("[1m") in the text.
func stripEscapes(s string) string {
	if !strings.Contains(s, "\x1b") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != 0x1b {
			b.WriteByte(s[i])
			continue
		}
		if i+1 >= len(s) {
			break
		}
		switch s[i+1] {
		case '[':
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			i = j
		case ']':
			j := i + 2
			for j < len(s) && s[j] != 0x07 && !(s[j] == 0x1b && j+1 < len(s) && s[j+1] == '\\') {
				j++
			}
			if j < len(s) && s[j] == 0x1b {
				j++
			}
			i = j
		default:
			i++
		}
	}
	return b.String()
}

// BoundDiff joins diff lines into the text a preview sends: at most
// MaxDiffLines lines and MaxDiffBytes bytes, whole lines only. It returns
// the text and how many lines were left out.
func BoundDiff(lines []string) (string, int) {
	var b strings.Builder
	n := 0
	for _, l := range lines {
		if n == MaxDiffLines || b.Len()+len(l)+1 > MaxDiffBytes {
			break
		}
		if n > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(l)
		n++
	}
	return b.String(), len(lines) - n
}

// DiffSummary says what a diff holds in a few words: "no package changed",
// "3 package(s) changed" (with the omitted count when some were left out).
func DiffSummary(lines, omitted int) string {
	switch {
	case lines+omitted == 0:
		return "no package changed"
	case omitted > 0:
		return fmt.Sprintf("%d package(s) changed (%d not shown)", lines+omitted, omitted)
	}
	return fmt.Sprintf("%d package(s) changed", lines)
}
