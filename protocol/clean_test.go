package protocol

import (
	"fmt"
	"strings"
	"testing"
	"unicode"
)

func TestCleanText(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"plain text\nline 2\tok":                   "plain text\nline 2\tok",
		"\x1b[31mred\x1b[0m":                       "[31mred[0m",
		"bell\x07 and nul\x00":                     "bell and nul",
		"c1\u009b31m":                              "c131m",
		"bad utf8 \xff\xfe end":                    "bad utf8  end",
		"ünïcödé ✓":                                "ünïcödé ✓",
		"invoice\u202egpj.exe":                     "invoicegpj.exe",
		"\u2066isolate\u2069 \u200bzw\u200d\ufeff": "isolate zw",
		"soft\u00adhyphen, tag\U000E0041":          "softhyphen, tag",
		"line\u2028sep":                            "line\nsep",
		strings.Repeat("a", MaxTextLen+10):         strings.Repeat("a", MaxTextLen),
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

// TestCleanBounds: every text field of an answer is bounded after Clean;
// one discovery answer describes one host with a bounded subject list.
func TestCleanBounds(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 3*MaxTextLen)
	d := DeployResponse{Hostname: "h", Message: "a\u202eb" + long, Revision: long, Error: ErrorCode(long), Status: Status(long), Tier: long, Action: Action(long), ID: long}
	if !d.Clean() || len(d.Message) != MaxTextLen || strings.ContainsRune(d.Message, '\u202e') || len(d.Revision) > MaxFieldLen || len(d.Error) > MaxFieldLen || len(d.ID) > MaxFieldLen {
		t.Errorf("deploy response not bounded: %d %d", len(d.Message), len(d.Revision))
	}
	b := BuildResponse{Message: long, Error: long, Branch: long, OutPath: long, Results: []BuildHostResult{{Host: "a", Error: long, OutPath: long}}}
	if !b.Clean() || len(b.Message) > MaxTextLen || len(b.Error) > MaxTextLen || len(b.Branch) > MaxFieldLen || len(b.Results[0].Error) > MaxTextLen || len(b.Results[0].OutPath) > MaxFieldLen {
		t.Error("build response not bounded")
	}
	var subs []string
	for i := 0; i < 3*MaxDiscoverSubjects; i++ {
		subs = append(subs, fmt.Sprintf("deploy.test.s%d", i), "deploy.test.s0")
	}
	r := DiscoverResponse{Hostname: "h", Tier: "test", Subjects: append([]string{"deploy.responses.x", "build.responses.y"}, subs...), Version: long}
	if !r.Clean() || len(r.Subjects) != MaxDiscoverSubjects || r.Subjects[0] != "deploy.test.s0" || r.Subjects[1] != "deploy.test.s1" || len(r.Version) != MaxVersionLen {
		t.Errorf("discover answer not bounded: %d subjects, first %q", len(r.Subjects), r.Subjects[:2])
	}
	if MaxDiscoveredHosts < 1000 {
		t.Errorf("MaxDiscoveredHosts = %d", MaxDiscoveredHosts)
	}
}

func FuzzCleanText(f *testing.F) {
	f.Add("\x1b[2J\x1b[Hhello")
	f.Add("ok\n")
	f.Add("a\u202eb\u2066c\u200bd\ufeffe\u00ad")
	f.Fuzz(func(t *testing.T, s string) {
		out := CleanText(s)
		if len(out) > MaxTextLen {
			t.Fatalf("too long: %d", len(out))
		}
		for _, r := range out {
			if r < 0x20 && r != '\n' && r != '\t' || r >= 0x7f && r < 0xa0 || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' {
				t.Fatalf("control or format character %U kept in %q", r, out)
			}
		}
		if CleanText(out) != out {
			t.Fatalf("not idempotent on %q", s)
		}
	})
}
