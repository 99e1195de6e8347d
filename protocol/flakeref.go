package protocol

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ValidateFlakeURL checks a flake URL from local configuration: it must parse,
// have a scheme, and carry no fragment (the attribute is always ours).
// Errors quote the URL with its credentials redacted (RedactURL).
func ValidateFlakeURL(s string) error {
	if s == "" {
		return fmt.Errorf("flake URL is empty")
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return fmt.Errorf("flake URL %q contains whitespace", RedactURL(s))
	}
	u, err := url.Parse(s)
	if err != nil {
		// url.Error quotes the whole URL; keep only what went wrong.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("flake URL %q does not parse: %s", RedactURL(s), RedactText(err.Error()))
	}
	if u.Scheme == "" {
		return fmt.Errorf("flake URL %q has no scheme: use e.g. git+https://, git+ssh://, git+file:// or path:", RedactURL(s))
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return fmt.Errorf("flake URL %q must not contain '#': the attribute is chosen by the tool", RedactURL(s))
	}
	return nil
}

// FlakeRef builds "<url>?ref=<revision>#<attr>" (or rev= for a 40-hex
// commit), keeping any query parameters the URL already has (such as dir=)
// and replacing an existing ref or rev. revision must have passed
// ValidateRevision; attr comes from local configuration.
func FlakeRef(flakeURL, revision, attr string) (string, error) {
	if err := ValidateFlakeURL(flakeURL); err != nil {
		return "", err
	}
	if err := ValidateRevision(revision); err != nil {
		return "", err
	}
	u, err := url.Parse(flakeURL)
	if err != nil {
		return "", err
	}
	var params []string
	if u.RawQuery != "" {
		for _, p := range strings.Split(u.RawQuery, "&") {
			key, _, _ := strings.Cut(p, "=")
			if k, err := url.QueryUnescape(key); err == nil && (k == "ref" || k == "rev") {
				continue
			}
			if p != "" {
				params = append(params, p)
			}
		}
	}
	key := "ref"
	if IsCommit(revision) {
		key = "rev"
	}
	// The revision allowlist holds no character that needs escaping.
	params = append(params, key+"="+revision)
	u.RawQuery = strings.Join(params, "&")
	u.ForceQuery = false
	u.Fragment = ""
	u.RawFragment = ""
	return u.String() + "#" + attr, nil
}

// FlakeRefForDisplay is FlakeRef with the URL's credentials redacted
// (RedactURL): what statuses, logs and errors may show.
func FlakeRefForDisplay(flakeURL, revision, attr string) (string, error) {
	ref, err := FlakeRef(flakeURL, revision, attr)
	return RedactURL(ref), err
}
