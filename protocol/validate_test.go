package protocol

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidateRevision(t *testing.T) {
	t.Parallel()
	good := []string{"main", "master", "feature/x", "v1.2.3", "release-2024.11", "a_b", strings.Repeat("a", MaxRevisionLen), "0123456789abcdef0123456789abcdef01234567"}
	bad := []string{"", "-o", "--option", "--option x y", "main#other", "x?dir=/etc", "ref&rev=0", "a..b", "../etc", "/abs", "main ", " main", "mа in", "mаin" /* cyrillic a */, strings.Repeat("a", MaxRevisionLen+1), "a\nb", "a;b", "$(id)", "`id`", "a/", "a.", "a//b", "x.lock", ".hidden", "main\x00"}
	for _, s := range good {
		if err := ValidateRevision(s); err != nil {
			t.Errorf("ValidateRevision(%q) = %v, want ok", s, err)
		}
	}
	for _, s := range bad {
		if err := ValidateRevision(s); err == nil {
			t.Errorf("ValidateRevision(%q) = nil, want error", s)
		}
	}
}

func TestValidateHostnameRoleTierRepo(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"testhost1", "dns-1", "web_2", "A"} {
		if err := ValidateHostname(s); err != nil {
			t.Errorf("hostname %q: %v", s, err)
		}
		if err := ValidateRole(s); err != nil {
			t.Errorf("role %q: %v", s, err)
		}
		if err := ValidateRepo(s); err != nil {
			t.Errorf("repo %q: %v", s, err)
		}
	}
	for _, s := range []string{"", "x.y", "*", ">", "a b", "prod.all", "a\tb", "ä", strings.Repeat("h", MaxTokenLen+1), "a/b", "a$"} {
		if ValidateHostname(s) == nil || ValidateRole(s) == nil || ValidateRepo(s) == nil {
			t.Errorf("token %q accepted", s)
		}
	}
	for _, s := range []string{"all", "role"} {
		if ValidateHostname(s) == nil || ValidateRole(s) == nil {
			t.Errorf("reserved hostname or role %q accepted", s)
		}
	}
	if ValidateRepo("responses") == nil {
		t.Error("repo responses accepted")
	}
	for _, s := range []string{"test", "prod"} {
		if err := ValidateTier(s); err != nil {
			t.Errorf("tier %q: %v", s, err)
		}
	}
	for _, s := range []string{"", "staging", "Test", "prod ", "*"} {
		if ValidateTier(s) == nil {
			t.Errorf("tier %q accepted", s)
		}
	}
}

func TestValidateAction(t *testing.T) {
	t.Parallel()
	for _, a := range []string{"switch", "boot", "test", "dry-activate"} {
		if err := ValidateAction(a); err != nil {
			t.Errorf("%s: %v", a, err)
		}
	}
	for _, a := range []string{"", "build", "Switch", "switch --rollback", "dry-build", "edit"} {
		if ValidateAction(a) == nil {
			t.Errorf("action %q accepted", a)
		}
	}
}

func TestValidateReplySubject(t *testing.T) {
	t.Parallel()
	if err := ValidateReplySubject("deploy.responses.abc123", DeployResponsesPrefix); err != nil {
		t.Error(err)
	}
	for _, s := range []string{"", "deploy.responses.", "deploy.responses.a.b", "deploy.responses.>", "deploy.responses.*", "deploy.prod.all", "_INBOX.x", "build.responses.x", "deploy.responses.a b", "deploy.responses." + strings.Repeat("x", MaxIDLen+1)} {
		if ValidateReplySubject(s, DeployResponsesPrefix) == nil {
			t.Errorf("reply subject %q accepted", s)
		}
	}
}

func FuzzValidateRevision(f *testing.F) {
	for _, s := range []string{"main", "-o", "a..b", "x?dir=/", "main#x", "feature/x", "0123456789abcdef0123456789abcdef01234567"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateRevision(s) != nil {
			return
		}
		// Anything accepted must be safe on a command line and in a URL.
		if s == "" || len(s) > MaxRevisionLen || strings.HasPrefix(s, "-") || strings.Contains(s, "..") || !utf8.ValidString(s) {
			t.Fatalf("accepted unsafe revision %q", s)
		}
		for _, r := range s {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._/-", r)) {
				t.Fatalf("accepted revision %q with %q", s, r)
			}
		}
	})
}

func FuzzValidateToken(f *testing.F) {
	for _, s := range []string{"host1", "a.b", "*", ">", "all", " "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateHostname(s) != nil {
			return
		}
		if s == "" || s == "all" || s == "role" || strings.ContainsAny(s, ".*> \t\r\n") || len(s) > MaxTokenLen {
			t.Fatalf("accepted hostname %q", s)
		}
	})
}

func FuzzValidateReplySubject(f *testing.F) {
	f.Add("deploy.responses.abc")
	f.Add("deploy.responses.a.b")
	f.Add("deploy.prod.all")
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateReplySubject(s, DeployResponsesPrefix) != nil {
			return
		}
		rest := strings.TrimPrefix(s, DeployResponsesPrefix)
		if !strings.HasPrefix(s, DeployResponsesPrefix) || rest == "" || strings.ContainsAny(rest, ".*> ") {
			t.Fatalf("accepted reply subject %q", s)
		}
	})
}
