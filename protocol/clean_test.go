package protocol

import (
	"strings"
	"testing"
)

func TestCleanText(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"plain text\nline 2\tok":           "plain text\nline 2\tok",
		"\x1b[31mred\x1b[0m":               "[31mred[0m",
		"bell\x07 and nul\x00":             "bell and nul",
		"c1\u009b31m":                      "c131m",
		"bad utf8 \xff\xfe end":            "bad utf8  end",
		"ünïcödé ✓":                        "ünïcödé ✓",
		strings.Repeat("a", MaxTextLen+10): strings.Repeat("a", MaxTextLen),
	} {
		if got := CleanText(in); got != want {
			t.Errorf("CleanText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDiscoverResponseClean(t *testing.T) {
	t.Parallel()
	r := DiscoverResponse{Hostname: "h", Tier: "test", Role: "web", Subjects: []string{"deploy.test.h", "deploy.>", "x y"}, Version: "v1\x1b]0;pwned\x07"}
	if !r.Clean() || len(r.Subjects) != 1 || r.Version != "v1]0;pwned" {
		t.Fatalf("%+v", r)
	}
	for _, bad := range []DiscoverResponse{{Hostname: "h\x1b", Tier: "test"}, {Hostname: "h", Tier: "staging"}, {Hostname: "h", Tier: "test", Role: "a.b"}} {
		if bad.Clean() {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func FuzzCleanText(f *testing.F) {
	f.Add("\x1b[2J\x1b[Hhello")
	f.Add("ok\n")
	f.Fuzz(func(t *testing.T, s string) {
		out := CleanText(s)
		if len(out) > MaxTextLen {
			t.Fatalf("too long: %d", len(out))
		}
		for _, r := range out {
			if r < 0x20 && r != '\n' && r != '\t' || r >= 0x7f && r < 0xa0 {
				t.Fatalf("control character %U kept in %q", r, out)
			}
		}
		if CleanText(out) != out {
			t.Fatalf("not idempotent on %q", s)
		}
	})
}
