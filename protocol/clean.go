package protocol

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds on the text of an answer from the network, after cleaning.
const (
	// MaxTextLen bounds a free-text field: a status message, a build
	// error with the tail of Nix's output (listeners send 2 KiB tails,
	// builders 600 bytes per host).
	MaxTextLen = 8192
	// MaxFieldLen bounds a short field: a code, status, action, revision,
	// repo, branch, tier, timestamp, store path or id.
	MaxFieldLen = 256
	// MaxVersionLen bounds a listener's version string.
	MaxVersionLen = 64
	// MaxDiscoverSubjects bounds the subjects one discovery answer lists
	// (a listener has three by default); the rest are dropped.
	MaxDiscoverSubjects = 32
	// MaxDiscoveredHosts bounds how many hosts one discovery collects:
	// each answer describes one host, and answers past this many are not
	// kept, so a flood of answers cannot grow a result without bound.
	MaxDiscoveredHosts = 5000
)

// CleanText makes free text from the network safe to show on a terminal or
// hand to an assistant, and cuts it to MaxTextLen bytes.
func CleanText(s string) string { return cleanText(s, MaxTextLen) }

// CleanField is CleanText for a short field, cut to MaxFieldLen bytes.
func CleanField(s string) string { return cleanText(s, MaxFieldLen) }

// cleanText removes invalid UTF-8, control characters (C0 but newline and
// tab, DEL, C1: ANSI escape sequences among them) and Unicode format
// characters (category Cf: bidi overrides and isolates U+202A–U+202E,
// U+2066–U+2069, zero-width U+200B–U+200F, U+FEFF, the soft hyphen, tag
// characters), which can make text read differently from what it holds
// (a file name that displays reversed), and turns the line and paragraph
// separators U+2028 and U+2029 into newlines. The result is cut to max
// bytes on a character boundary.
func cleanText(s string, max int) string {
	clean := len(s) <= max
	for i := 0; clean && i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\n' && c != '\t' || c >= 0x7f {
			clean = false
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size <= 1 {
				continue
			}
		}
		if r < 0x20 && r != '\n' && r != '\t' || r >= 0x7f && r < 0xa0 || r >= 0xa0 && unicode.Is(unicode.Cf, r) {
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			r = '\n'
		}
		if b.Len()+utf8.RuneLen(r) > max {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// check validates a deploy response's identity: the hostname must be one
// token.
func (r *DeployResponse) check() error {
	if err := ValidateHostname(r.Hostname); err != nil {
		return fmt.Errorf("status refused: %w", err)
	}
	return nil
}

// Clean sanitizes a deploy response from the network in place and reports
// whether it is usable: the hostname must be one token; text is cleaned
// and bounded.
func (r *DeployResponse) Clean() bool {
	if r.check() != nil {
		return false
	}
	r.clean()
	return true
}

func (r *DeployResponse) clean() {
	r.ID = CleanField(r.ID)
	r.Message = CleanText(r.Message)
	r.Revision = CleanField(r.Revision)
	r.Tier = CleanField(r.Tier)
	r.Error = ErrorCode(CleanField(string(r.Error)))
	r.Status = Status(CleanField(string(r.Status)))
	r.Action = Action(CleanField(string(r.Action)))
}

// check validates a discovery answer's identity: hostname, tier and role
// must pass their validators.
func (r *DiscoverResponse) check() error {
	if err := ValidateHostname(r.Hostname); err != nil {
		return fmt.Errorf("discovery answer refused: %w", err)
	}
	if err := ValidateTier(r.Tier); err != nil {
		return fmt.Errorf("discovery answer refused: %w", err)
	}
	if r.Role != "" {
		if err := ValidateRole(r.Role); err != nil {
			return fmt.Errorf("discovery answer refused: %w", err)
		}
	}
	return nil
}

// Clean sanitizes a discovery answer in place and reports whether it is
// usable. An answer describes exactly one host, the one its hostname
// names: hostname, tier and role must pass their validators; subjects that
// are not literal subjects, that are reply subjects, or repeat, are
// dropped and at most MaxDiscoverSubjects are kept; the version is cleaned
// and cut to MaxVersionLen; a last deploy that does not validate is
// dropped.
func (r *DiscoverResponse) Clean() bool {
	if r.check() != nil {
		return false
	}
	r.clean()
	return true
}

func (r *DiscoverResponse) clean() {
	r.ID = CleanField(r.ID)
	subs := r.Subjects[:0:0]
	for _, s := range r.Subjects {
		if len(subs) == MaxDiscoverSubjects {
			break
		}
		if ValidateLiteralSubject(s) != nil || strings.HasPrefix(s, DeployResponsesPrefix) || strings.HasPrefix(s, BuildResponsesPrefix) {
			continue
		}
		dup := false
		for _, t := range subs {
			dup = dup || t == s
		}
		if !dup {
			subs = append(subs, s)
		}
	}
	r.Subjects = subs
	r.Version = cleanText(r.Version, MaxVersionLen)
	if l := r.LastDeploy; l != nil {
		if ValidateAction(string(l.Action)) != nil || ValidateRevision(l.Revision) != nil || !l.Status.Terminal() {
			r.LastDeploy = nil
		} else {
			l.Error = ErrorCode(CleanField(string(l.Error)))
			l.FinishedAt = CleanField(l.FinishedAt)
			if l.Caller != "" && checkUserKey(l.Caller) != nil {
				l.Caller = ""
			}
			if l.ID != "" && ValidateRequestID(l.ID) != nil {
				l.ID = ""
			}
		}
	}
}

// check validates a build response's identity: every host it names must
// be one token.
func (r *BuildResponse) check() error {
	if r.Host != "" {
		if err := ValidateToken("host", r.Host); err != nil {
			return fmt.Errorf("build response refused: %w", err)
		}
	}
	for i := range r.Results {
		if err := ValidateToken("host", r.Results[i].Host); err != nil {
			return fmt.Errorf("build response refused: results[%d]: %w", i, err)
		}
	}
	return nil
}

// Clean sanitizes a build response from the network in place and reports
// whether it is usable: every host named must be one token; text is
// cleaned and bounded.
func (r *BuildResponse) Clean() bool {
	if r.check() != nil {
		return false
	}
	r.clean()
	return true
}

func (r *BuildResponse) clean() {
	r.ID = CleanField(r.ID)
	r.Status = Status(CleanField(string(r.Status)))
	r.Repo = CleanField(r.Repo)
	r.Branch = CleanField(r.Branch)
	r.Message = CleanText(r.Message)
	r.ErrorCode = ErrorCode(CleanField(string(r.ErrorCode)))
	r.Error = CleanText(r.Error)
	r.OutPath = CleanField(r.OutPath)
	for i := range r.Results {
		h := &r.Results[i]
		h.Error = CleanText(h.Error)
		h.ErrorCode = ErrorCode(CleanField(string(h.ErrorCode)))
		h.OutPath = CleanField(h.OutPath)
	}
}
