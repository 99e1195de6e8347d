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
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
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
	return fmt.Errorf("tier %q is not one of %s", s, strings.Join(Tiers, ", "))
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
	return fmt.Errorf("action %q is not one of %s", s, strings.Join(names, ", "))
}

// ValidateRevision checks a git branch, tag or commit.
func ValidateRevision(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("revision is empty")
	case len(s) > MaxRevisionLen:
		return fmt.Errorf("revision is %d characters long; at most %d are allowed", len(s), MaxRevisionLen)
	case !revisionRe.MatchString(s):
		return fmt.Errorf("revision %q must start with a letter or digit and hold only letters, digits, '.', '_', '/' and '-'", s)
	case strings.Contains(s, ".."):
		return fmt.Errorf("revision %q may not contain '..'", s)
	case strings.HasSuffix(s, "/") || strings.HasSuffix(s, ".") || strings.Contains(s, "//") || strings.HasSuffix(s, ".lock"):
		return fmt.Errorf("revision %q is not a valid git ref name", s)
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
		return fmt.Errorf("reply_to %q must be a subject under %s<id>", s, prefix)
	}
	if len(rest) > MaxIDLen || !tokenRe.MatchString(rest) {
		return fmt.Errorf("reply_to %q must be %s followed by one token of letters, digits, '-' and '_'", s, prefix)
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
