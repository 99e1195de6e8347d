package protocol

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseClosureDiff(t *testing.T) {
	t.Parallel()
	out := "hello: 2.10 → 2.12\r\n\n\x1b[1mlinux\x1b[0m: \x1b[31;1m6.1\x1b[0m → \x1b[32;1m6.6\x1b[0m, +12.6 KiB\n\x1b]8;;http://x\x07zlib\x1b]8;;\x1b\\: ∅ → 1.3\n  \n"
	got := ParseClosureDiff(out)
	want := []string{"hello: 2.10 → 2.12", "linux: 6.1 → 6.6, +12.6 KiB", "zlib: ∅ → 1.3"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestBoundDiff(t *testing.T) {
	t.Parallel()
	var lines []string
	for i := 0; i < MaxDiffLines+50; i++ {
		lines = append(lines, "pkg: 1 → 2")
	}
	text, omitted := BoundDiff(lines)
	if n := strings.Count(text, "\n") + 1; n != MaxDiffLines || omitted != 50 {
		t.Errorf("%d lines shown, %d omitted; want %d and 50", n, omitted, MaxDiffLines)
	}
	long := []string{strings.Repeat("a", 4000), strings.Repeat("b", 4000), "c: 1 → 2"}
	text, omitted = BoundDiff(long)
	if text != long[0] || omitted != 2 {
		t.Errorf("cut inside a line or miscounted: %d bytes, %d omitted", len(text), omitted)
	}
	if s := DiffSummary(3, 2); s != "5 package(s) changed (2 not shown)" {
		t.Errorf("summary %q", s)
	}
}

// The preview's fields are an extension of a deploy status: a status
// carrying them decodes, its diff is cleaned, and a request with the diff
// action decodes while ValidateAction (what older listeners decode with)
// refuses it.
func TestPreviewOnTheWire(t *testing.T) {
	t.Parallel()
	r, err := DecodeDeployStatus([]byte(`{"hostname":"web1","status":"completed","error":null,"message":"m","action":"diff","diff":"a: 1 → 2\u001b[2J","diff_omitted_lines":3,"reboot_required":true}`))
	if err != nil || r.Diff != "a: 1 → 2[2J" || r.Omitted() != 3 || r.RebootRequired == nil || !*r.RebootRequired {
		t.Fatalf("%+v, %v", r, err)
	}
	b, _ := json.Marshal(DeployResponse{Hostname: "web1", Status: StatusAccepted})
	if strings.Contains(string(b), "diff") || strings.Contains(string(b), "reboot") {
		t.Errorf("a status that is no preview carries preview fields: %s", b)
	}
	req := []byte(`{"id":"a1","action":"diff","revision":"main","reply_to":"deploy.responses.a1"}`)
	if got, err := DecodeDeployRequest(req); err != nil || got.Action != ActionDiff {
		t.Fatalf("diff request: %+v, %v", got, err)
	}
	if ValidateAction("diff") == nil {
		t.Fatal("ValidateAction accepts diff: older listeners' rule would not hold")
	}
	if _, err := DecodeDeployRequest([]byte(`{"action":"Diff","revision":"main","reply_to":"deploy.responses.a1"}`)); ErrorCodeOf(err) != ErrInvalidAction {
		t.Errorf("Diff: %v", err)
	}
}

// FuzzParseClosureDiff: whatever nix prints, the lines are clean single
// lines without escape sequences, and the bounded text keeps to its bounds
// and counts what it left out.
func FuzzParseClosureDiff(f *testing.F) {
	for _, s := range []string{
		"hello: 2.10 → 2.12\n",
		"\x1b[1mlinux\x1b[0m: 6.1 → 6.6, +12.6 KiB\n",
		"\x1b]8;;x\x07a\x1b]8;;\x1b\\: ε → 1\n\x1b",
		"\x1b[", "a\r\nb\u2028c\n\t\n",
		strings.Repeat("pkg: 1 → 2\n", 300),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, out string) {
		lines := ParseClosureDiff(out)
		for _, l := range lines {
			if l == "" || strings.ContainsAny(l, "\x1b\n\r") || !utf8.ValidString(l) || CleanText(l) != l || len(l) > MaxOutputLineBytes {
				t.Fatalf("line %q", l)
			}
		}
		text, omitted := BoundDiff(lines)
		shown := 0
		if text != "" {
			shown = strings.Count(text, "\n") + 1
		}
		if len(text) > MaxDiffBytes || shown > MaxDiffLines || shown+omitted != len(lines) || omitted < 0 {
			t.Fatalf("%d bytes, %d shown, %d omitted of %d", len(text), shown, omitted, len(lines))
		}
		b, _ := json.Marshal(out)
		var d DiffText
		if err := json.Unmarshal(b, &d); err != nil || len(d) > MaxDiffBytes || CleanText(string(d)) != string(d) {
			t.Fatalf("DiffText %q: %v", d, err)
		}
	})
}
