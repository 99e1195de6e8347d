package protocol

import (
	"strings"
	"testing"
)

func TestURLSecrets(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url  string
		want []string
	}{
		{"git+https://user:s3cret@git.example.com/x.git?access_token=tok123", []string{"user:s3cret", "s3cret", "tok123"}},
		{"git+https://ghp_0123456789abcdef@github.com/o/r", []string{"ghp_0123456789abcdef"}},
		{"git+ssh://git@host/x", nil},
		{"git+ssh://git:pw%2Fx@host/x", []string{"pw%2Fx", "pw/x"}},
		{"github:o/r?ref=main&private_token=abcd1234;dir=sub", []string{"abcd1234"}},
		{"git+https://a:b@host/x?token=xy", nil}, // too short to hide by value
		{"git+file:///srv/nixos?ref=main", nil},
	} {
		got := URLSecrets(tc.url)
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("URLSecrets(%q) = %q, want %q", tc.url, got, tc.want)
		}
	}
}

// Nix quotes the authority of a bad file:// URL on its own; the Redactor
// hides it because it knows the URL.
func TestRedactorHidesKnownCredentials(t *testing.T) {
	t.Parallel()
	u := "git+file://user:s3cret@/srv/cfg?access_token=tok%2B123"
	r := NewRedactor(u)
	in := "error: file:// URL '" + u + "#x' has unexpected authority 'user:s3cret@'; token tok+123"
	out := r.Text(in)
	for _, s := range []string{"s3cret", "tok%2B123", "tok+123"} {
		if strings.Contains(out, s) {
			t.Errorf("%q kept in %q", s, out)
		}
	}
	if !strings.Contains(out, "/srv/cfg") || !strings.Contains(out, "unexpected authority '***@'") {
		t.Errorf("redacted too much or too little: %q", out)
	}
	var none *Redactor
	if none.Text("a=b user:pw@x") != RedactText("a=b user:pw@x") {
		t.Error("a nil Redactor is not RedactText")
	}
}

func FuzzRedactorText(f *testing.F) {
	f.Add("git+https://user:s3cret@host/x?access_token=tok123", "see user:s3cret and tok123")
	f.Add("git+ssh://git:pass1234@h/x", "pass1234")
	f.Fuzz(func(t *testing.T, u, text string) {
		out := NewRedactor(u).Text(text)
		for _, s := range URLSecrets(u) {
			if strings.Contains(out, s) && !strings.Contains(Redacted, s) {
				// A secret may reappear only where redaction itself wrote
				// it, i.e. inside "***".
				if !strings.Contains(strings.ReplaceAll(out, Redacted, ""), s) {
					continue
				}
				t.Fatalf("secret %q kept: %q → %q", s, text, out)
			}
		}
	})
}
