package protocol

import (
	"strings"
	"unicode/utf8"
)

// MaxTextLen bounds a free-text field taken from a response.
const MaxTextLen = 8192

// CleanText makes free text from the network safe to show on a terminal or
// hand to an assistant: invalid UTF-8 and control characters (C0 but
// newline and tab, DEL, C1 — ANSI escape sequences among them) are removed,
// and the text is cut to MaxTextLen bytes.
func CleanText(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\n' && c != '\t' || c >= 0x7f {
			clean = false
			break
		}
	}
	if clean && len(s) <= MaxTextLen {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size <= 1 {
				continue
			}
		}
		if r < 0x20 && r != '\n' && r != '\t' || r >= 0x7f && r < 0xa0 {
			continue
		}
		if b.Len()+utf8.RuneLen(r) > MaxTextLen {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Clean sanitizes a deploy response from the network in place and reports
// whether it is usable: the hostname must be one token; text is cleaned.
func (r *DeployResponse) Clean() bool {
	if ValidateHostname(r.Hostname) != nil {
		return false
	}
	r.Message = CleanText(r.Message)
	r.Revision = CleanText(r.Revision)
	r.Tier = CleanText(r.Tier)
	r.Error = ErrorCode(CleanText(string(r.Error)))
	r.Status = Status(CleanText(string(r.Status)))
	r.Action = Action(CleanText(string(r.Action)))
	return true
}

// Clean sanitizes a discovery answer in place and reports whether it is
// usable: hostname, tier and role must pass their validators; subjects that
// are not literal subjects are dropped; the version is cleaned.
func (r *DiscoverResponse) Clean() bool {
	if ValidateHostname(r.Hostname) != nil || ValidateTier(r.Tier) != nil {
		return false
	}
	if r.Role != "" && ValidateRole(r.Role) != nil {
		return false
	}
	subs := r.Subjects[:0:0]
	for _, s := range r.Subjects {
		if ValidateLiteralSubject(s) == nil {
			subs = append(subs, s)
		}
	}
	r.Subjects = subs
	r.Version = CleanText(r.Version)
	if len(r.Version) > 64 {
		r.Version = r.Version[:64]
	}
	if l := r.LastDeploy; l != nil {
		if ValidateAction(string(l.Action)) != nil || ValidateRevision(l.Revision) != nil || !l.Status.Terminal() {
			r.LastDeploy = nil
		} else {
			l.Error = ErrorCode(CleanText(string(l.Error)))
			l.FinishedAt = CleanText(l.FinishedAt)
		}
	}
	return true
}

// Clean sanitizes a build response from the network in place and reports
// whether it is usable: every host named must be one token; text is
// cleaned.
func (r *BuildResponse) Clean() bool {
	if r.Host != "" && ValidateToken("host", r.Host) != nil {
		return false
	}
	r.Status = Status(CleanText(string(r.Status)))
	r.Repo = CleanText(r.Repo)
	r.Branch = CleanText(r.Branch)
	r.Message = CleanText(r.Message)
	r.ErrorCode = ErrorCode(CleanText(string(r.ErrorCode)))
	r.Error = CleanText(r.Error)
	r.OutPath = CleanText(r.OutPath)
	for i := range r.Results {
		h := &r.Results[i]
		if ValidateToken("host", h.Host) != nil {
			return false
		}
		h.Error = CleanText(h.Error)
		h.ErrorCode = ErrorCode(CleanText(string(h.ErrorCode)))
		h.OutPath = CleanText(h.OutPath)
	}
	return true
}
