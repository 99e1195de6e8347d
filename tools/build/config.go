package build

import (
	"bytes"
	"fmt"
	"os"
	"sort"

	"gopkg.in/yaml.v3"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// Repo is one repository the builder may build.
type Repo struct {
	Name          string
	URL           string
	DefaultBranch string
}

// Config is the builder's configuration file:
//
//	repos:
//	  nixos-servers:
//	    url: "git+https://git.example.com/org/nixos-servers.git"
//	    default_branch: "master"
type Config struct {
	Repos map[string]Repo
}

// Names returns the configured repository names, sorted.
func (c *Config) Names() []string {
	names := make([]string, 0, len(c.Repos))
	for n := range c.Repos {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// maxConfigSize bounds the configuration file; a real one is a few hundred
// bytes per repository.
const maxConfigSize = 1 << 20

// LoadConfig reads and checks the configuration file at path.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("builder config: %w (give the file with --config)", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig checks a configuration. name is used in error messages, which
// have the form "<name>:<line>: <what is wrong>; <how to fix it>".
func ParseConfig(name string, data []byte) (*Config, error) {
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("%s: the file is %d bytes; a builder config is a short YAML file (at most %d bytes)", name, len(data), maxConfigSize)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%s: the file is empty; it needs a repos: mapping, e.g.\n%s", name, exampleConfig)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%s: not valid YAML: %v", name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("%s:%d: a second YAML document; the builder config is one document (remove the '---' and what follows)", name, extra.Line)
	}
	e := func(n *yaml.Node, format string, args ...any) error {
		return fmt.Errorf("%s:%d: %s", name, n.Line, fmt.Sprintf(format, args...))
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, fmt.Errorf("%s: expected one YAML document holding a repos: mapping", name)
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, e(root, "the top level must be a mapping with a repos: key, e.g.\n%s", exampleConfig)
	}
	var repos *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch k.Value {
		case "repos":
			if repos != nil {
				return nil, e(k, "repos: is given twice; merge the two mappings into one")
			}
			repos = v
		default:
			return nil, e(k, "unknown key %q; the only top-level key is repos:", k.Value)
		}
	}
	if repos == nil {
		return nil, e(root, "no repos: key; list the repositories to build under repos:, e.g.\n%s", exampleConfig)
	}
	if repos.Kind != yaml.MappingNode || len(repos.Content) == 0 {
		return nil, e(repos, "repos: must be a mapping from repository name to {url, default_branch}, with at least one entry")
	}
	cfg := &Config{Repos: map[string]Repo{}}
	for i := 0; i+1 < len(repos.Content); i += 2 {
		k, v := repos.Content[i], repos.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, e(k, "a repository name must be a plain string")
		}
		repoName := k.Value
		if err := protocol.ValidateRepo(repoName); err != nil {
			return nil, e(k, "%v; a repository name is one NATS subject token (build.<repo>.<host>): rename it, e.g. %q", err, suggestToken(repoName))
		}
		if _, dup := cfg.Repos[repoName]; dup {
			return nil, e(k, "repository %q is defined twice; keep one entry", repoName)
		}
		repo, err := parseRepo(v, repoName, e)
		if err != nil {
			return nil, err
		}
		cfg.Repos[repoName] = repo
	}
	return cfg, nil
}

func parseRepo(v *yaml.Node, name string, e func(*yaml.Node, string, ...any) error) (Repo, error) {
	if v.Kind != yaml.MappingNode {
		return Repo{}, e(v, "repository %q must be a mapping with url: and default_branch:", name)
	}
	repo := Repo{Name: name}
	var haveURL, haveBranch bool
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		if val.Kind != yaml.ScalarNode && (k.Value == "url" || k.Value == "default_branch") {
			return Repo{}, e(val, "repository %q: %s must be a string", name, k.Value)
		}
		switch k.Value {
		case "url":
			if haveURL {
				return Repo{}, e(k, "repository %q: url is given twice; keep one", name)
			}
			haveURL = true
			if err := protocol.ValidateFlakeURL(val.Value); err != nil {
				return Repo{}, e(val, "repository %q: %v; use a flake URL such as git+https://git.example.com/org/repo.git", name, err)
			}
			repo.URL = val.Value
		case "default_branch":
			if haveBranch {
				return Repo{}, e(k, "repository %q: default_branch is given twice; keep one", name)
			}
			haveBranch = true
			if err := protocol.ValidateRevision(val.Value); err != nil {
				return Repo{}, e(val, "repository %q: default_branch: %v", name, err)
			}
			repo.DefaultBranch = val.Value
		default:
			return Repo{}, e(k, "repository %q: unknown key %q; a repository has only url: and default_branch:", name, k.Value)
		}
	}
	if !haveURL {
		return Repo{}, e(v, "repository %q has no url:; add e.g. url: \"git+https://git.example.com/org/%s.git\"", name, name)
	}
	if !haveBranch {
		return Repo{}, e(v, "repository %q has no default_branch:; add e.g. default_branch: \"main\"", name)
	}
	return repo, nil
}

// suggestToken turns a rejected name into one that passes ValidateRepo.
func suggestToken(s string) string {
	out := make([]rune, 0, len(s))
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			out = append(out, r)
		default:
			out = append(out, '-')
		}
	}
	if len(out) > protocol.MaxTokenLen {
		out = out[:protocol.MaxTokenLen]
	}
	if len(out) == 0 || string(out) == "responses" {
		return "my-repo"
	}
	return string(out)
}

const exampleConfig = `  repos:
    nixos-servers:
      url: "git+https://git.example.com/org/nixos-servers.git"
      default_branch: "master"`
