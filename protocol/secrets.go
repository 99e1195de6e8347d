package protocol

import (
	"net/url"
	"sort"
	"strings"
)

// RedactText finds credentials by the shape of a URL around them. Output
// can quote a credential without that shape: Nix reports a bad file://
// URL with "unexpected authority 'user:s3cret@'". A listener or builder
// knows the flake URL it runs with, hence its credentials as literal
// strings, and a Redactor hides those wherever they appear, on top of
// RedactText.

// minSecretLen is the shortest credential hidden by its literal value: a
// shorter one would mask ordinary words in the output, and is no secret.
const minSecretLen = 4

// Redactor redacts text that may quote one known URL.
type Redactor struct {
	known *strings.Replacer
}

// NewRedactor returns the Redactor for a flake URL (its own credentials,
// plus whatever RedactText finds).
func NewRedactor(flakeURL string) *Redactor {
	secrets := URLSecrets(flakeURL)
	if len(secrets) == 0 {
		return &Redactor{}
	}
	pairs := make([]string, 0, 2*len(secrets))
	for _, s := range secrets {
		pairs = append(pairs, s, Redacted)
	}
	return &Redactor{known: strings.NewReplacer(pairs...)}
}

// Text returns s with every credential replaced by Redacted.
func (r *Redactor) Text(s string) string {
	s = RedactText(s)
	if r != nil && r.known != nil {
		s = r.known.Replace(s)
	}
	return s
}

// URLSecrets returns the credentials a URL or flake reference carries, as
// they may appear in text, longest first: its userinfo (for ssh, the
// password only: the user is an account name), the password alone, a user
// name that is long enough to be a token, and the values of query
// parameters whose names look like credentials; each also
// percent-decoded. Values shorter than 4 bytes are left out.
func URLSecrets(u string) []string {
	set := map[string]bool{}
	add := func(s string) {
		for _, v := range []string{s, unescape(s)} {
			if len(v) >= minSecretLen {
				set[v] = true
			}
		}
	}
	if i := strings.Index(u, "://"); i >= 0 {
		rest := u[i+3 : urlEnd(u, i+3)]
		if at := userinfoEnd(rest); at >= 0 {
			info := rest[:at]
			user, pass, hasPass := strings.Cut(info, ":")
			scheme := schemeBefore(u, i)
			isSSH := scheme == "ssh" || strings.HasSuffix(scheme, "+ssh")
			if hasPass {
				add(pass)
				if !isSSH {
					add(info)
				}
			}
			// A long user name is a token used as one ("<token>@host").
			if !isSSH && len(user) >= 8 {
				add(user)
			}
		}
	}
	if q := strings.IndexByte(u, '?'); q >= 0 {
		query := u[q+1:]
		if h := strings.IndexByte(query, '#'); h >= 0 {
			query = query[:h]
		}
		for _, kv := range strings.FieldsFunc(query, func(r rune) bool { return r == '&' || r == ';' }) {
			if name, val, ok := strings.Cut(kv, "="); ok && redactedParam(name) {
				add(val)
			}
		}
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if len(out[i]) != len(out[j]) {
			return len(out[i]) > len(out[j])
		}
		return out[i] < out[j]
	})
	return out
}

func unescape(s string) string {
	if v, err := url.PathUnescape(s); err == nil {
		return v
	}
	return s
}
