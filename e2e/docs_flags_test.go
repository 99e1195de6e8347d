package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/peterbourgon/ff/v4"

	"github.com/homelab-deploy/homelab-deploy/cli"
)

// foreignFlags are long flags of other programs that the documentation
// shows (in commands of nix, nixos-rebuild, claude, …, or as hostile input
// examples). They are exempt from "this flag must exist in homelab-deploy",
// but never when a doc writes them after a homelab-deploy command.
var foreignFlags = map[string]string{
	"flake":     "nixos-rebuild --flake",
	"rollback":  "nixos-rebuild switch --rollback",
	"no-link":   "nix build --no-link",
	"refresh":   "nix eval --refresh",
	"apply":     "nix eval --apply",
	"to":        "nix copy --to",
	"option":    "a hostile revision in docs/SECURITY.md (`--option x y`)",
	"transport": "claude mcp add --transport",
	"header":    "claude mcp add --header",
}

// commandTree is every command of the CLI with the long flags it accepts
// (its parents' included), taken from the ff command tree itself.
type commandTree struct {
	// flags maps a command path ("homelab-deploy deploy") to its flags.
	flags map[string]map[string]ff.Flag
	// byName maps a subcommand's name (and "homelab-deploy" for the root)
	// to its path, for attributing `homelab-deploy <name> --flag` in docs.
	byName map[string]string
}

func loadCommandTree(t *testing.T) commandTree {
	t.Helper()
	tree := commandTree{flags: map[string]map[string]ff.Flag{}, byName: map[string]string{}}
	var visit func(c *ff.Command, path string)
	visit = func(c *ff.Command, path string) {
		fs := map[string]ff.Flag{}
		if c.Flags != nil {
			_ = c.Flags.WalkFlags(func(f ff.Flag) error {
				if l, ok := f.GetLongName(); ok {
					fs[l] = f
				}
				return nil
			})
		}
		tree.flags[path] = fs
		if _, dup := tree.byName[c.Name]; !dup {
			tree.byName[c.Name] = path
		}
		for _, sub := range c.Subcommands {
			visit(sub, path+" "+sub.Name)
		}
	}
	root := cli.New(cli.Env{}).Command
	visit(root, root.Name)
	if len(tree.flags) < 5 {
		t.Fatalf("the command tree has only %d commands", len(tree.flags))
	}
	return tree
}

// exists reports whether some command accepts --name.
func (tr commandTree) exists(name string) bool {
	if name == "help" { // ff answers -h and --help on every command
		return true
	}
	for _, fs := range tr.flags {
		if _, ok := fs[name]; ok {
			return true
		}
	}
	return false
}

// userDocs returns README.md and docs/*.md, relative to the repository root,
// with their contents.
func userDocs(t *testing.T) map[string]string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("..", "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	paths = append(paths, filepath.Join("..", "README.md"))
	docs := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel("..", p)
		docs[filepath.ToSlash(rel)] = string(b)
	}
	return docs
}

// longFlagRe finds --name: not preceded by '-' or a word character (so
// anchors such as #why---max-parallel-2 and table rules do not count).
var longFlagRe = regexp.MustCompile(`(?:^|[^-\w])--([a-z0-9][a-z0-9]*(?:-[a-z0-9]+)*)`)

func longFlags(s string) []string {
	var out []string
	for _, m := range longFlagRe.FindAllStringSubmatchIndex(s, -1) {
		// --enable-<gate> is a pattern for a family of flags, not a flag.
		if rest := s[m[3]:]; strings.HasPrefix(rest, "-<") || strings.HasPrefix(rest, "<") {
			continue
		}
		out = append(out, s[m[2]:m[3]])
	}
	return out
}

// TestEveryFlagIsDocumented: each long flag that some command's --help shows
// is mentioned as --name somewhere in README.md or docs/*.md.
func TestEveryFlagIsDocumented(t *testing.T) {
	t.Parallel()
	tree := loadCommandTree(t)
	mentioned := map[string]bool{}
	for _, text := range userDocs(t) {
		for _, f := range longFlags(text) {
			mentioned[f] = true
		}
	}
	var missing []string
	for _, path := range sortedKeys(tree.flags) {
		for _, name := range sortedKeys(tree.flags[path]) {
			if mentioned[name] || name == "help" {
				continue
			}
			// A flag inherited from the root is reported once, on the root.
			if parentHas(tree, path, name) {
				continue
			}
			usage := tree.flags[path][name].GetUsage()
			missing = append(missing, fmt.Sprintf("  %s --%s\t%s", path, name, usage))
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d flag(s) that --help shows are mentioned nowhere in README.md or docs/*.md; "+
			"document each one (in the command's flag table, or where the feature is explained):\n%s",
			len(missing), strings.Join(missing, "\n"))
	}
}

func parentHas(tree commandTree, path, name string) bool {
	i := strings.LastIndexByte(path, ' ')
	if i < 0 {
		return false
	}
	_, ok := tree.flags[path[:i]][name]
	return ok
}

// commandRe finds a homelab-deploy invocation inside code: the binary's name
// (or `go run .`) followed by a subcommand's name.
var commandRe = regexp.MustCompile(`(?:^|[\s(=])(?:homelab-deploy|go run \.)\s+([a-z][a-z-]*)\b`)

// shellBreakRe ends the part of a code line that belongs to one command.
var shellBreakRe = regexp.MustCompile("\\||&&|;|\\s#|`")

// codeFragments returns the code of a markdown document: each line of a
// fenced block (lines continued with a trailing backslash joined), and each
// inline code span outside blocks, with the line number it starts on.
func codeFragments(text string) []struct {
	line int
	code string
} {
	var out []struct {
		line int
		code string
	}
	add := func(line int, code string) {
		out = append(out, struct {
			line int
			code string
		}{line, code})
	}
	inline := regexp.MustCompile("`([^`]+)`")
	lines := strings.Split(text, "\n")
	inFence := false
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			inFence = !inFence
			continue
		}
		if !inFence {
			for _, m := range inline.FindAllStringSubmatch(l, -1) {
				add(i+1, m[1])
			}
			continue
		}
		start := i + 1
		joined := l
		for strings.HasSuffix(strings.TrimRight(joined, " "), "\\") && i+1 < len(lines) {
			joined = strings.TrimSuffix(strings.TrimRight(joined, " "), "\\") + " " + lines[i+1]
			i++
		}
		add(start, joined)
	}
	return out
}

// TestDocumentedFlagsExist: every --flag in README.md and docs/*.md is a flag
// of some homelab-deploy command or a listed flag of another program, and a
// --flag written after `homelab-deploy <command>` in code is a flag of that
// command.
func TestDocumentedFlagsExist(t *testing.T) {
	t.Parallel()
	tree := loadCommandTree(t)
	docs := userDocs(t)
	var problems []string
	for _, doc := range sortedKeys(docs) {
		text := docs[doc]
		for i, line := range strings.Split(text, "\n") {
			for _, f := range longFlags(line) {
				if tree.exists(f) {
					continue
				}
				if _, ok := foreignFlags[f]; ok {
					continue
				}
				problems = append(problems, fmt.Sprintf("  %s:%d: --%s is not a flag of any homelab-deploy command", doc, i+1, f))
			}
		}
		for _, frag := range codeFragments(text) {
			for _, cmd := range commandInvocations(frag.code) {
				path, ok := tree.byName[cmd.name]
				if !ok || path == "homelab-deploy" {
					continue // `homelab-deploy --help`, `go build -o homelab-deploy .`
				}
				for _, f := range longFlags(cmd.args) {
					if _, ok := tree.flags[path][f]; ok || f == "help" {
						continue
					}
					problems = append(problems, fmt.Sprintf("  %s:%d: `%s` has no flag --%s", doc, frag.line, path, f))
				}
			}
		}
	}
	if len(problems) > 0 {
		t.Errorf("README.md and docs/*.md show flags homelab-deploy does not have (fix the doc, or, for another "+
			"program's flag, add it to foreignFlags in e2e/docs_flags_test.go):\n%s", strings.Join(problems, "\n"))
	}
}

type invocation struct{ name, args string }

// commandInvocations splits one line of code into the homelab-deploy
// commands it runs and the text that belongs to each (up to the next
// command, pipe, `&&`, `;` or comment).
func commandInvocations(code string) []invocation {
	var out []invocation
	ms := commandRe.FindAllStringSubmatchIndex(code, -1)
	for k, m := range ms {
		end := len(code)
		if k+1 < len(ms) {
			end = ms[k+1][0]
		}
		args := code[m[1]:end]
		if b := shellBreakRe.FindStringIndex(args); b != nil {
			args = args[:b[0]]
		}
		out = append(out, invocation{name: code[m[2]:m[3]], args: args})
	}
	return out
}

// TestCommandInvocationsParse pins the doc parser on the shapes the docs use.
func TestCommandInvocationsParse(t *testing.T) {
	t.Parallel()
	cases := map[string][]invocation{
		"homelab-deploy deploy deploy.test.all --action test":                  {{"deploy", " deploy.test.all --action test"}},
		"claude mcp add homelab-deploy -- homelab-deploy mcp --nats-url x":     {{"mcp", " --nats-url x"}},
		"nix run github:homelab-deploy/homelab-deploy -- --help":               nil,
		"homelab-deploy keygen --out f   # prints the public key":              {{"keygen", " --out f  "}},
		"HOMELAB_DEPLOY_NKEY_FILE=k homelab-deploy build demo --all | tee log": {{"build", " demo --all "}},
		"go run . demo --serve":  {{"demo", " --serve"}},
		"homelab-deploy-builder": nil,
		"nixos-rebuild switch --flake git+https://git.example.com/x.git#host1":        nil,
		"homelab-deploy nats-config --fleet f --json > a.json && nix build --no-link": {{"nats-config", " --fleet f --json > a.json "}},
	}
	for code, want := range cases {
		got := commandInvocations(code)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("commandInvocations(%q) = %q, want %q", code, got, want)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
