package protocol

import (
	"net/url"
	"strings"
)

// Redaction keeps credentials that a flake URL may carry (a token in the
// userinfo, an access_token query parameter) on the host that has them: in
// statuses, logs, errors and anything shown to an assistant, a URL goes
// through RedactURL, and text that may quote one (nixos-rebuild's and Nix's
// output) through RedactText.
//
// It works on the text, not through net/url: flake references such as
// github:owner/repo?access_token=x, or a URL with an unescaped character in
// its password, do not always parse, and a URL quoted in Nix's output has
// no clear end for a parser. What it does:
//
//   - userinfo (between "scheme://" and '@'): all of it becomes "***" ("user:token@"
//     → "***@": forges take tokens as the user name as well as the password,
//     "x-oauth-basic" style), except over ssh (ssh://, git+ssh://), where the
//     user is an account name and only a password is masked ("git@" stays,
//     "git:pw@" → "git:***@");
//   - the value of every query parameter whose name looks like a credential
//     (redactedParam) becomes "***", wherever a '?', '&' or ';' introduces it.
//
// Everything else, ref= and rev= and dir= among them, is kept.

// Redacted replaces a secret.
const Redacted = "***"

// RedactURL returns s, a URL or flake reference, with its credentials
// replaced by Redacted.
func RedactURL(s string) string { return RedactText(s) }

// RedactText returns s with the credentials of every URL it quotes replaced
// by Redacted.
func RedactText(s string) string {
	if !strings.Contains(s, "@") && !strings.Contains(s, "=") {
		return s // nothing to redact: the common case, without allocating
	}
	var b strings.Builder
	last := 0 // s[:last] has been written to b
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "://"):
			start := i + 3
			end := urlEnd(s, start)
			if at := userinfoEnd(s[start:end]); at >= 0 {
				b.WriteString(s[last:start])
				b.WriteString(redactUserinfo(schemeBefore(s, i), s[start:start+at]))
				last = start + at
				i = start + at
				continue
			}
			i = start
		case s[i] == '?' || s[i] == '&' || s[i] == ';':
			nameEnd := i + 1
			for nameEnd < len(s) && isURLByte(s[nameEnd]) && !strings.ContainsRune("=&;#?", rune(s[nameEnd])) {
				nameEnd++
			}
			if nameEnd < len(s) && s[nameEnd] == '=' && redactedParam(s[i+1:nameEnd]) {
				valStart := nameEnd + 1
				valEnd := valStart
				for valEnd < len(s) && isURLByte(s[valEnd]) && !strings.ContainsRune("&;#", rune(s[valEnd])) {
					valEnd++
				}
				if valEnd > valStart {
					b.WriteString(s[last:valStart])
					b.WriteString(Redacted)
					last = valEnd
				}
				i = valEnd
				continue
			}
			i++
		default:
			i++
		}
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// isURLByte reports whether c may be part of a URL quoted in text. Quotes,
// brackets, whitespace, control bytes and non-ASCII end it (Nix quotes URLs
// with '…' or ‘…’).
func isURLByte(c byte) bool {
	if c <= ' ' || c >= 0x7f {
		return false
	}
	switch c {
	case '"', '\'', '`', '<', '>', '(', ')', '[', ']', '{', '}', '|', '\\', '^':
		return false
	}
	return true
}

// urlEnd returns the end of the URL part that starts at i.
func urlEnd(s string, i int) int {
	for i < len(s) && isURLByte(s[i]) {
		i++
	}
	return i
}

// userinfoEnd returns the index of the '@' that ends the userinfo of an
// authority-and-rest rest (what follows "://"), or -1. The userinfo ends at
// the last '@' before the first '/', '?' or '#'. A password holding a raw
// '/' (a broken URL, but a secret all the same) is caught too: when a ':'
// comes before the first '/', the last '@' before the first '?' or '#'
// ends the userinfo. That can mask a path after a port ("host:8080/a@b"),
// which is only harm to display.
func userinfoEnd(rest string) int {
	query := len(rest)
	if q := strings.IndexAny(rest, "?#"); q >= 0 {
		query = q
	}
	auth := query
	if sl := strings.IndexByte(rest[:query], '/'); sl >= 0 {
		auth = sl
	}
	if at := strings.LastIndexByte(rest[:auth], '@'); at >= 0 {
		return at
	}
	if strings.IndexByte(rest[:auth], ':') >= 0 {
		return strings.LastIndexByte(rest[:query], '@')
	}
	return -1
}

// schemeBefore returns the scheme that ends at s[i] ("://" starts at i).
func schemeBefore(s string, i int) string {
	j := i
	for j > 0 {
		c := s[j-1]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.' {
			j--
			continue
		}
		break
	}
	return strings.ToLower(s[j:i])
}

// redactUserinfo masks userinfo u of a URL with the given scheme.
func redactUserinfo(scheme, u string) string {
	if scheme == "ssh" || strings.HasSuffix(scheme, "+ssh") {
		if user, _, hasPassword := strings.Cut(u, ":"); hasPassword {
			return user + ":" + Redacted
		}
		return u
	}
	return Redacted
}

// redactedParam reports whether a query parameter name looks like it holds
// a credential: token, access_token, private_token, password, secret, key,
// auth, sig and anything containing token, secret, passw, auth, key,
// credential or signature, in any case and percent-encoding.
func redactedParam(name string) bool {
	if n, err := url.QueryUnescape(name); err == nil {
		name = n
	}
	name = strings.ToLower(name)
	switch name {
	case "sig", "pass", "pwd", "pw":
		return true
	}
	for _, w := range []string{"token", "secret", "passw", "auth", "key", "credential", "signature"} {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}
