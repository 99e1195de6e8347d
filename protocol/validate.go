package protocol

import (
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"
)

// Bounds on user- and network-supplied strings.
const (
	MaxTokenLen    = 63
	MaxRevisionLen = 200
	MaxIDLen       = 64
)

// Patterns of the allowlists, as JSON Schema (ECMA) regular expressions;
// tool schemas publish these so an assistant sees the same rule.
// RevisionPattern is the character set only, a superset of what
// ValidateRevision accepts: the rest of the rule (no "..", no component
// starting with '.' or ending in ".lock", no refs/ other than refs/heads/
// and refs/tags/, no HEAD) needs lookahead, which Go's regexp lacks, and
// would be unreadable in a schema; ValidateRevision runs on every door.
const (
	TokenPattern    = `^[A-Za-z0-9_-]+$`
	RevisionPattern = `^[A-Za-z0-9][A-Za-z0-9._/-]*$`
)

var (
	tokenRe    tokenMatcher // TokenPattern
	revisionRe = regexp.MustCompile(RevisionPattern)
	commitRe   = regexp.MustCompile(`^[0-9a-f]{40}$`)
)

// tokenMatcher matches ^[A-Za-z0-9_-]+$ with a byte loop. Tokens are checked
// several times per message on every listener and requester (reply
// subjects, ids, hostnames, tiers), and the regexp was a fifth of a
// listener's work per deploy request (docs/BENCHMARKS.md).
type tokenMatcher struct{}

func (tokenMatcher) MatchString(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenByte(s[i]) {
			return false
		}
	}
	return true
}

// tokenByte reports whether c is a letter, digit, '_' or '-'.
func tokenByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// Tiers are the deployment tiers.
var Tiers = []string{"test", "prod"}

// ValidateToken checks that s is one NATS subject token made of letters,
// digits, '-' and '_'. what names the value in the error ("hostname", ...).
func ValidateToken(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%s is empty", what)
	case len(s) > MaxTokenLen:
		return fmt.Errorf("%s is %d characters long; at most %d are allowed", what, len(s), MaxTokenLen)
	case !tokenRe.MatchString(s):
		return fmt.Errorf("%s %q may only hold letters, digits, '-' and '_'", what, s)
	}
	return nil
}

// ValidateHostname checks a hostname used as a subject token. "all" and
// "role" are reserved because they name group subjects.
func ValidateHostname(s string) error {
	if err := ValidateToken("hostname", s); err != nil {
		return err
	}
	if s == "all" || s == "role" {
		return fmt.Errorf("hostname %q is reserved: it names a group subject", s)
	}
	return nil
}

// ValidateRole checks a role name. "all" and "role" are reserved like
// hostnames, so that a role can never be mistaken for a group.
func ValidateRole(s string) error {
	if err := ValidateToken("role", s); err != nil {
		return err
	}
	if s == "all" || s == "role" {
		return fmt.Errorf("role %q is reserved: it names a group subject", s)
	}
	return nil
}

// ValidateRepo checks a builder repository name.
func ValidateRepo(s string) error {
	if err := ValidateToken("repo", s); err != nil {
		return err
	}
	if s == "responses" {
		return fmt.Errorf("repo %q is reserved: build.responses carries replies", s)
	}
	return nil
}

// ValidateTier checks that s is one of the tiers.
func ValidateTier(s string) error {
	for _, t := range Tiers {
		if s == t {
			return nil
		}
	}
	return fmt.Errorf("tier %q is not one of %s", bounded(s), strings.Join(Tiers, ", "))
}

// ValidateAction checks a nixos-rebuild action.
func ValidateAction(s string) error {
	for _, a := range Actions() {
		if s == string(a) {
			return nil
		}
	}
	names := make([]string, 0, 4)
	for _, a := range Actions() {
		names = append(names, string(a))
	}
	return fmt.Errorf("action %q is not one of %s", bounded(s), strings.Join(names, ", "))
}

// revisionRule is what every revision error ends with: what is allowed.
const revisionRule = "a revision is a branch or tag name (optionally refs/heads/<branch> or refs/tags/<tag>) or a 40-hex commit: " +
	"letters, digits, '.', '_', '/' and '-', starting with a letter or digit"

// pseudoRefs are names git resolves to something other than a branch or a
// tag. Refused in any case: on a case-insensitive file system "head" is
// HEAD.
var pseudoRefs = []string{"HEAD", "FETCH_HEAD", "ORIG_HEAD", "MERGE_HEAD", "REBASE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD", "BISECT_HEAD", "AUTO_MERGE"}

// forgeNamespaces are the ref namespaces forges fill with refs that anyone
// can create by opening a pull or merge request (or that are not branches
// at all). git resolves a short name "refs/<name>" before "refs/heads/<name>"
// (gitrevisions(7)), so "pull/1/head" can mean refs/pull/1/head wherever a
// short name is resolved (the GitHub API behind github: flake URLs, for
// one); a branch whose first component is one of these is refused too.
var forgeNamespaces = []string{"pull", "pull-requests", "merge-requests", "changes", "remotes", "keep-around", "environments", "pipelines", "notes", "stash", "replace", "for"}

// ValidateRevision checks that s names a branch, a tag or a commit, and
// nothing else git would also accept there: it follows git
// check-ref-format (no component that starts with '.' or ends with
// ".lock", no "..", no "//", no trailing '/' or '.', none of
// "~^:?*[\\ @{" or control characters) and further refuses a leading '-'
// (an option to git or Nix), refs/ other than refs/heads/ and refs/tags/
// (refs/pull/1/head is a pull request anyone can open, not a branch),
// short names in pull/, merge-requests/ and the other forge namespaces
// (forgeNamespaces; refs/heads/pull/x is a branch and is allowed), and HEAD and the other pseudo-refs in any case.
// Errors quote at most MaxRevisionLen characters of s.
func ValidateRevision(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("revision is empty: %s", revisionRule)
	case len(s) > MaxRevisionLen:
		return fmt.Errorf("revision is %d characters long; at most %d are allowed", len(s), MaxRevisionLen)
	case strings.HasPrefix(s, "@") || strings.Contains(s, "@{"):
		return fmt.Errorf("revision %q is a reflog or @ expression, not a branch, tag or commit: %s", s, revisionRule)
	case !tokenByte(s[0]) || s[0] == '_' || s[0] == '-':
		return fmt.Errorf("revision %q must start with a letter or digit: %s", s, revisionRule)
	case !revisionRe.MatchString(s):
		return fmt.Errorf("revision %q holds a character that is not allowed: %s", s, revisionRule)
	case strings.Contains(s, ".."):
		return fmt.Errorf("revision %q may not contain '..': %s", s, revisionRule)
	case strings.HasSuffix(s, "/") || strings.HasSuffix(s, ".") || strings.Contains(s, "//"):
		return fmt.Errorf("revision %q may not end with '/' or '.' or contain '//': %s", s, revisionRule)
	}
	name, full := s, false
	if rest, ok := strings.CutPrefix(s, "refs/"); ok {
		full = true
		heads, isHead := strings.CutPrefix(rest, "heads/")
		tags, isTag := strings.CutPrefix(rest, "tags/")
		switch {
		case isHead:
			name = heads
		case isTag:
			name = tags
		default:
			return fmt.Errorf("revision %q is a ref outside refs/heads/ and refs/tags/ (such as a pull request's), not a branch or tag: %s", s, revisionRule)
		}
	}
	for _, comp := range strings.Split(s, "/") {
		if strings.HasPrefix(comp, ".") || strings.HasSuffix(comp, ".lock") {
			return fmt.Errorf("revision %q has a component that starts with '.' or ends with \".lock\", which git refuses: %s", s, revisionRule)
		}
	}
	first, _, nested := strings.Cut(name, "/")
	for _, p := range pseudoRefs {
		if strings.EqualFold(name, p) {
			return fmt.Errorf("revision %q is git's %s, not a branch, tag or commit: %s", s, p, revisionRule)
		}
	}
	if nested && !full {
		for _, ns := range forgeNamespaces {
			if strings.EqualFold(first, ns) {
				return fmt.Errorf("revision %q is in the %s/ namespace, which git may resolve to refs/%s/ (a forge's pull or merge request refs) instead of a branch: %s", s, first, first, revisionRule)
			}
		}
	}
	return nil
}

// IsCommit reports whether a valid revision is a full commit hash.
func IsCommit(rev string) bool { return commitRe.MatchString(rev) }

// ValidateRequestID checks a request id: one subject token, bounded.
func ValidateRequestID(s string) error {
	if len(s) > MaxIDLen {
		return fmt.Errorf("request id is %d characters long; at most %d are allowed", len(s), MaxIDLen)
	}
	return ValidateToken("request id", s)
}

// ValidateReplySubject checks that s is prefix followed by exactly one token,
// for example deploy.responses.<id>.
func ValidateReplySubject(s, prefix string) error {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok || rest == "" {
		return fmt.Errorf("reply_to %q must be a subject under %s<id>", bounded(s), prefix)
	}
	if len(rest) > MaxIDLen || !tokenRe.MatchString(rest) {
		return fmt.Errorf("reply_to %q must be %s followed by one token of letters, digits, '-' and '_'", bounded(s), prefix)
	}
	return nil
}

// Seconds renders a duration as seconds rounded to the millisecond, the
// precision of every duration in a result document.
func Seconds(d time.Duration) float64 {
	return float64(d.Round(time.Millisecond).Milliseconds()) / 1000
}

// RoundSeconds rounds seconds received from the network to the millisecond.
func RoundSeconds(s float64) float64 { return math.Round(s*1000) / 1000 }
