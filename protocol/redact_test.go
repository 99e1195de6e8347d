package protocol

import (
	"net/url"
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"git+https://user:ghp_s3cr3t@github.com/o/r.git?ref=main":            "git+https://***@github.com/o/r.git?ref=main",
		"git+https://ghp_s3cr3t@github.com/o/r.git":                          "git+https://***@github.com/o/r.git",
		"https://oauth2:glpat-XYZ@gitlab.example.com/o/r?dir=sub":            "https://***@gitlab.example.com/o/r?dir=sub",
		"git+ssh://git@github.com/o/r.git":                                   "git+ssh://git@github.com/o/r.git",
		"ssh://deploy:pw@host/r":                                             "ssh://deploy:***@host/r",
		"git+https://h/o/r.git?access_token=abc123&ref=main":                 "git+https://h/o/r.git?access_token=***&ref=main",
		"github:owner/repo?access_token=abc&dir=x":                           "github:owner/repo?access_token=***&dir=x",
		"gitlab:o/r?ref=main&private_token=abc#h":                            "gitlab:o/r?ref=main&private_token=***#h",
		"tarball+https://h/x.tar.gz?X-Amz-Signature=dead&X-Amz-Credential=k": "tarball+https://h/x.tar.gz?X-Amz-Signature=***&X-Amz-Credential=***",
		"https://h/r?Token=a&PASSWORD=b&api_key=c&auth=d&client_secret=e":    "https://h/r?Token=***&PASSWORD=***&api_key=***&auth=***&client_secret=***",
		"https://h/r?acc%65ss_token=a":                                       "https://h/r?acc%65ss_token=***",
		"git+https://user:pa/ss@host/r":                                      "git+https://***@host/r",
		"git+https://user:p@ss@host/r":                                       "git+https://***@host/r",
		"path:/srv/nixos-configs":                                            "path:/srv/nixos-configs",
		"git+file:///srv/cfg?ref=main&rev=0123":                              "git+file:///srv/cfg?ref=main&rev=0123",
		"https://example.com/@scope/pkg":                                     "https://example.com/@scope/pkg",
		"":                                                                   "",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRedactText(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"error: cannot fetch 'git+https://u:tok3n@h/r.git?ref=main' (exit 128)": "error: cannot fetch 'git+https://***@h/r.git?ref=main' (exit 128)",
		"fetching Git repository ‘https://x:y1234@h/r?token=t0k’…":              "fetching Git repository ‘https://***@h/r?token=***’…",
		"two: https://a:b@h and github:o/r?access_token=zz\nend":                "two: https://***@h and github:o/r?access_token=***\nend",
		"a plain message with an email me@example.org and x=1":                  "a plain message with an email me@example.org and x=1",
	} {
		if got := RedactText(in); got != want {
			t.Errorf("RedactText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFlakeRefForDisplay(t *testing.T) {
	t.Parallel()
	got, err := FlakeRefForDisplay("git+https://u:tok3n@h/r.git?access_token=abc&dir=sub", "main", "host1")
	if err != nil || got != "git+https://***@h/r.git?access_token=***&dir=sub&ref=main#host1" {
		t.Fatalf("%q %v", got, err)
	}
	for _, bad := range []string{"git+https://u:tok3n@h/r z", "git+https://u:tok3n@h/r#x", "git+https://u:tok3n@h:bad%zzport/r"} {
		if err := ValidateFlakeURL(bad); err == nil || strings.Contains(err.Error(), "tok3n") {
			t.Errorf("ValidateFlakeURL(%q) = %v", bad, err)
		}
	}
}

// FuzzRedactURL builds URLs and flake references holding a password and a
// token from the fuzzer's input: neither may survive redaction, alone or
// quoted in text, and redaction is idempotent.
func FuzzRedactURL(f *testing.F) {
	f.Add(uint8(0), "user", "s3cr3t", "github.com", "o/r.git", "access_token", "t0ken", "ref=main")
	f.Add(uint8(1), "git", "pw/with@odd", "h:22", "r", "Private_Token", "abc&def", "dir=x")
	f.Add(uint8(3), "x", "passw0rd", "host", "@scope/x", "X-Amz-Signature", "v a l", "")
	f.Fuzz(func(t *testing.T, kind uint8, user, pass, host, path, param, token, extra string) {
		schemes := []string{"git+https", "git+ssh", "https", "github", "tarball+http"}
		scheme := schemes[int(kind)%len(schemes)]
		ui := url.UserPassword(user, pass).String()
		h := url.PathEscape(host)
		p := url.PathEscape(path)
		q := url.QueryEscape(param) + "=" + url.QueryEscape(token)
		var u, skeleton string
		if scheme == "github" {
			u = scheme + ":" + p + "?" + q
			skeleton = scheme + ":" + p + "?"
		} else {
			u = scheme + "://" + ui + "@" + h + "/" + p + "?" + q
			skeleton = scheme + "://@" + h + "/" + p + "?"
		}
		if extra != "" {
			u += "&" + url.QueryEscape(extra)
			skeleton += url.QueryEscape(extra)
		}
		secretPass := url.PathEscape(pass)
		if s := url.UserPassword(user, pass).String(); strings.Contains(s, ":") {
			_, secretPass, _ = strings.Cut(s, ":")
		}
		secretToken := url.QueryEscape(token)
		for _, out := range []string{RedactURL(u), RedactText("fetching '" + u + "' failed"), RedactText(u + "\n" + u)} {
			if scheme != "github" && leaks(out, secretPass, skeleton+url.User(user).String()+url.QueryEscape(param)) {
				t.Fatalf("password %q survives in %q (from %q)", secretPass, out, u)
			}
			if redactedParam(url.QueryEscape(param)) && leaks(out, secretToken, skeleton+ui+url.QueryEscape(param)) {
				t.Fatalf("token %q survives in %q (from %q)", secretToken, out, u)
			}
			if RedactText(out) != out {
				t.Fatalf("not idempotent: %q → %q", out, RedactText(out))
			}
		}
	})
}

// leaks reports whether secret appears in out, when it is long enough to
// mean something and is not simply part of the rest of the URL.
func leaks(out, secret, rest string) bool {
	if len(secret) < 4 || strings.Contains(rest, secret) || strings.Contains(Redacted+"@:&", secret) {
		return false
	}
	return strings.Contains(out, secret)
}

// FuzzRedactText: redaction of any text never panics, never grows a text
// by more than the masks, and is idempotent.
func FuzzRedactText(f *testing.F) {
	f.Add("error: 'git+https://u:p@h/r?token=x' failed")
	f.Add("?&;=://@")
	f.Fuzz(func(t *testing.T, s string) {
		out := RedactText(s)
		if RedactText(out) != out {
			t.Fatalf("not idempotent: %q → %q → %q", s, out, RedactText(out))
		}
		if len(out) > len(s)+len(Redacted)*(strings.Count(s, "=")+strings.Count(s, "://")) {
			t.Fatalf("grew: %q → %q", s, out)
		}
	})
}
