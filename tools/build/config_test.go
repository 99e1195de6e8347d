package build_test

import (
	"strings"
	"testing"

	"github.com/homelab-deploy/homelab-deploy/tools/build"
)

func TestParseConfigAcceptsSpecExample(t *testing.T) {
	t.Parallel()
	cfg, err := build.ParseConfig("builder.yaml", []byte(`repos:
  nixos-servers:
    url: "git+https://git.example.com/org/nixos-servers.git"
    default_branch: "master"
  homelab:
    url: "git+ssh://git@github.com/user/homelab.git"
    default_branch: "main"
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Names(), ","); got != "homelab,nixos-servers" {
		t.Fatalf("names %s", got)
	}
	if r := cfg.Repos["homelab"]; r.URL != "git+ssh://git@github.com/user/homelab.git" || r.DefaultBranch != "main" || r.Name != "homelab" {
		t.Fatalf("homelab: %+v", r)
	}
}

func TestParseConfigErrorsNameFileLineAndFix(t *testing.T) {
	t.Parallel()
	const ok = "    url: \"git+file:///srv/a\"\n    default_branch: main\n"
	cases := []struct{ name, yaml, want string }{
		{"empty", "", "builder.yaml: the file is empty"},
		{"not yaml", "repos: [\n", "builder.yaml: not valid YAML"},
		{"top level list", "- a\n", "builder.yaml:1: the top level must be a mapping"},
		{"unknown top key", "repos:\n  a:\n" + ok + "reops: {}\n", `builder.yaml:5: unknown key "reops"`},
		{"no repos key", "other: 1\n", `builder.yaml:1: unknown key "other"`},
		{"repos empty", "repos: {}\n", "builder.yaml:1: repos: must be a mapping"},
		{"repos a list", "repos:\n  - a\n", "builder.yaml:2: repos: must be a mapping"},
		{"repo with dot", "repos:\n  my.repo:\n" + ok, `builder.yaml:2: repo "my.repo" may only hold letters, digits, '-' and '_'; a repository name is one NATS subject token (build.<repo>.<host>): rename it, e.g. "my-repo"`},
		{"repo wildcard", "repos:\n  \"*\":\n" + ok, "builder.yaml:2: repo \"*\""},
		{"repo reserved", "repos:\n  responses:\n" + ok, `builder.yaml:2: repo "responses" is reserved`},
		{"duplicate repo", "repos:\n  a:\n" + ok + "  a:\n" + ok, `builder.yaml:5: repository "a" is defined twice`},
		{"missing url", "repos:\n  a:\n    default_branch: main\n", `builder.yaml:3: repository "a" has no url:; add e.g. url:`},
		{"missing branch", "repos:\n  a:\n    url: git+file:///srv/a\n", `builder.yaml:3: repository "a" has no default_branch:; add e.g. default_branch: "main"`},
		{"unknown repo key", "repos:\n  a:\n" + ok + "    ref: main\n", `builder.yaml:5: repository "a": unknown key "ref"; a repository has only url: and default_branch:`},
		{"url without scheme", "repos:\n  a:\n    url: /srv/a\n    default_branch: main\n", `builder.yaml:3: repository "a": flake URL "/srv/a" has no scheme`},
		{"url with fragment", "repos:\n  a:\n    url: \"git+file:///srv/a#host\"\n    default_branch: main\n", `builder.yaml:3: repository "a": flake URL "git+file:///srv/a#host" must not contain '#'`},
		{"url does not parse", "repos:\n  a:\n    url: \"git+https://[::1\"\n    default_branch: main\n", `builder.yaml:3: repository "a": flake URL "git+https://[::1" does not parse`},
		{"url a list", "repos:\n  a:\n    url: [x]\n    default_branch: main\n", `builder.yaml:3: repository "a": url must be a string`},
		{"bad branch", "repos:\n  a:\n    url: git+file:///srv/a\n    default_branch: \"-x\"\n", `builder.yaml:4: repository "a": default_branch: revision "-x" must start with a letter or digit`},
		{"branch with dots", "repos:\n  a:\n    url: git+file:///srv/a\n    default_branch: a..b\n", `builder.yaml:4: repository "a": default_branch: revision "a..b" may not contain '..'`},
		{"second document", "repos:\n  a:\n" + ok + "---\nrepos: {}\n", "builder.yaml:5: a second YAML document"},
		{"repo a scalar", "repos:\n  a: git+file:///srv/a\n", `builder.yaml:2: repository "a" must be a mapping with url: and default_branch:`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := build.ParseConfig("builder.yaml", []byte(c.yaml))
			if err == nil {
				t.Fatalf("accepted:\n%s", c.yaml)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q\nwant it to contain %q", err, c.want)
			}
		})
	}
}

func TestLoadConfigMissingFileSaysWhichFlag(t *testing.T) {
	t.Parallel()
	_, err := build.LoadConfig("/nonexistent/builder.yaml")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/builder.yaml") || !strings.Contains(err.Error(), "--config") {
		t.Fatalf("error %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("repos:\n  a:\n    url: git+file:///srv/a\n    default_branch: main\n"))
	f.Add([]byte("repos:\n  a: &x {url: \"git+https://h/r\", default_branch: m}\n  b: *x\n"))
	f.Add([]byte("repos: {\"a.b\": {url: x}}"))
	f.Add([]byte("---\n---\n"))
	f.Add([]byte("repos:\n  a:\n    url: [1, {2: 3}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := build.ParseConfig("fuzz.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if len(cfg.Repos) == 0 {
			t.Fatal("accepted a config without repos")
		}
		for name, r := range cfg.Repos {
			if name != r.Name || r.URL == "" || r.DefaultBranch == "" || strings.ContainsAny(name, ".*> ") {
				t.Fatalf("accepted a bad repo %q: %+v", name, r)
			}
		}
	})
}
