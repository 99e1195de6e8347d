package protocol

import (
	"os/exec"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidateRevision(t *testing.T) {
	t.Parallel()
	good := []string{"main", "master", "feature/x", "v1.2.3", "release-2024.11", "a_b", strings.Repeat("a", MaxRevisionLen), "0123456789abcdef0123456789abcdef01234567",
		"refs/heads/main", "refs/tags/v1.0", "refs/heads/pull/1/head", "heads/main", "tags/v1", "ahead", "my_head", "HEADS-up", "pullover/x", "a-/b", "x.lockfile"}
	bad := []string{"", "-o", "--option", "--option x y", "main#other", "x?dir=/etc", "ref&rev=0", "a..b", "../etc", "/abs", "main ", " main", "mа in", "mаin" /* cyrillic a */, strings.Repeat("a", MaxRevisionLen+1), "a\nb", "a;b", "$(id)", "`id`", "a/", "a.", "a//b", "x.lock", ".hidden", "main\x00",
		// Not branches, tags or commits.
		"refs/pull/1/head", "refs/pull/1/merge", "refs/merge-requests/1/head", "refs/remotes/origin/main", "refs/changes/01/1/1", "refs/notes/x", "refs/stash", "refs/heads/", "refs/tags",
		"pull/1/head", "merge-requests/1/head", "Pull/1/head", "remotes/origin/main",
		"HEAD", "head", "Head", "FETCH_HEAD", "orig_head", "refs/heads/HEAD",
		"@", "@{-1}", "main@{1}", "main@{yesterday}", "@{upstream}", "a@b",
		// What git check-ref-format refuses and the character set lets through.
		"a/.b", "a/.", "a.lock/b", "feature/x.lock", "a/b.", "main~1", "main^", "a:b", "a*", "a?", "a[b", "a\\b"}
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

// TestValidateRevisionErrors: the error says what is allowed, and quotes a
// bounded part of the input.
func TestValidateRevisionErrors(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"refs/pull/1/head":         "outside refs/heads/ and refs/tags/",
		"pull/1/head":              "pull/ namespace",
		"HEAD":                     "git's HEAD",
		"@{-1}":                    "reflog",
		"a/.b":                     "starts with '.'",
		"-o":                       "must start with a letter or digit",
		strings.Repeat("b", 1<<20): "at most 200",
	} {
		err := ValidateRevision(in)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "branch or tag name") && len(in) <= MaxRevisionLen {
			t.Errorf("ValidateRevision(%.40q) = %v, want %q and what is allowed", in, err, want)
		}
		if err != nil && len(err.Error()) > 2*MaxRevisionLen+len(revisionRule) {
			t.Errorf("error for %.40q is %d bytes long", in, len(err.Error()))
		}
	}
	for _, s := range []string{strings.Repeat("x", 5000), strings.Repeat("é", 3000)} {
		for _, err := range []error{ValidateTier(s), ValidateAction(s), ValidateReplySubject(s, DeployResponsesPrefix), ValidateHostname(s)} {
			if err == nil || len(err.Error()) > 250 {
				t.Errorf("error %.80q... is %d bytes long", err, len(err.Error()))
			}
		}
	}
}

// TestValidateRevisionGit: git check-ref-format accepts every revision we
// accept (as a branch, and under refs/heads/).
func TestValidateRevisionGit(t *testing.T) {
	t.Parallel()
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git is not installed")
	}
	for _, s := range []string{"main", "feature/x", "v1.2.3", "a_b", "x.lockfile", "a-/b", "refs/heads/x", "refs/tags/v1", "0123456789abcdef0123456789abcdef01234567"} {
		if ValidateRevision(s) != nil {
			t.Fatalf("%q refused", s)
		}
		ref := s
		if !strings.HasPrefix(s, "refs/") {
			ref = "refs/heads/" + s
		}
		if out, err := exec.Command(git, "check-ref-format", ref).CombinedOutput(); err != nil {
			t.Errorf("git check-ref-format %s: %v %s", ref, err, out)
		}
	}
}

func FuzzValidateRevision(f *testing.F) {
	for _, s := range []string{"main", "-o", "a..b", "x?dir=/", "main#x", "feature/x", "0123456789abcdef0123456789abcdef01234567",
		"refs/pull/1/head", "HEAD", "@{-1}", "a/.b", "a.lock/b", "refs/heads/x", "pull/1/head"} {
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
		// A branch, a tag or a commit: git check-ref-format's rules, and no
		// other ref namespace or pseudo-ref.
		if strings.HasPrefix(s, "refs/") && !strings.HasPrefix(s, "refs/heads/") && !strings.HasPrefix(s, "refs/tags/") {
			t.Fatalf("accepted ref %q", s)
		}
		if strings.EqualFold(s, "HEAD") || strings.HasPrefix(strings.ToLower(s), "pull/") || strings.HasPrefix(strings.ToLower(s), "merge-requests/") {
			t.Fatalf("accepted %q", s)
		}
		for _, c := range strings.Split(s, "/") {
			if c == "" || strings.HasPrefix(c, ".") || strings.HasSuffix(c, ".lock") || strings.HasSuffix(c, ".") && c == strings.Split(s, "/")[len(strings.Split(s, "/"))-1] {
				t.Fatalf("accepted %q: component %q", s, c)
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
