package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// TestFaultTablesNameExistingTests: every test that docs/RELIABILITY.md
// and docs/SECURITY.md cite as proof (`pkg/TestName`) exists in that
// package, so a renamed or deleted test cannot leave a row unproven.
func TestFaultTablesNameExistingTests(t *testing.T) {
	t.Parallel()
	ref := regexp.MustCompile("`([a-z0-9/]+)/(Test[A-Za-z0-9_]+)`")
	for _, doc := range []string{"RELIABILITY.md", "SECURITY.md"} {
		b, err := os.ReadFile(filepath.Join("..", "docs", doc))
		if err != nil {
			t.Fatal(err)
		}
		refs := ref.FindAllStringSubmatch(string(b), -1)
		if len(refs) < 10 {
			t.Fatalf("%s cites only %d tests", doc, len(refs))
		}
		for _, m := range refs {
			pkg, name := m[1], m[2]
			files, _ := filepath.Glob(filepath.Join("..", pkg, "*_test.go"))
			found := false
			for _, f := range files {
				src, _ := os.ReadFile(f)
				if strings.Contains(string(src), "func "+name+"(t *testing.T)") {
					found = true
					break
				}
			}
			if !found {
				t.Errorf("%s cites %s/%s, which does not exist", doc, pkg, name)
			}
		}
	}
}

// TestDocLinksResolve: every relative link in README.md and docs/*.md names a
// file of the repository, every #anchor a heading of its target, and every
// repository path quoted in code (`tools/deploy/request.go`) exists. No doc
// cites a file that is not in the repository.
func TestDocLinksResolve(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	docs := userDocs(t)
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	quoted := regexp.MustCompile("`([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.<>*-]*)+)`")
	outside := regexp.MustCompile(`\b(SPEC|DESIGN)\.md\b|\bDESIGN §|\bSPEC's\b`)
	var problems []string
	for _, doc := range sortedKeys(docs) {
		text := docs[doc]
		dir := filepath.Dir(filepath.Join(root, doc))
		for i, line := range strings.Split(text, "\n") {
			at := fmt.Sprintf("%s:%d", doc, i+1)
			if m := outside.FindString(line); m != "" {
				problems = append(problems, fmt.Sprintf("  %s: cites %q, which is not part of the repository", at, m))
			}
			for _, m := range link.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				path, anchor, _ := strings.Cut(target, "#")
				file := filepath.Join(root, doc)
				if path != "" {
					file = filepath.Join(dir, filepath.FromSlash(path))
				}
				if rel, err := filepath.Rel(root, file); err != nil || strings.HasPrefix(rel, "..") {
					problems = append(problems, fmt.Sprintf("  %s: link %s leaves the repository", at, target))
					continue
				}
				if _, err := os.Stat(file); err != nil {
					problems = append(problems, fmt.Sprintf("  %s: link %s: no such file", at, target))
					continue
				}
				if anchor == "" {
					continue
				}
				if !strings.HasSuffix(file, ".md") {
					problems = append(problems, fmt.Sprintf("  %s: link %s: an anchor into a file that is not markdown", at, target))
					continue
				}
				b, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				if !headingAnchors(string(b))[anchor] {
					problems = append(problems, fmt.Sprintf("  %s: link %s: %s has no heading with anchor #%s", at, target, filepath.Base(file), anchor))
				}
			}
			for _, m := range quoted.FindAllStringSubmatch(line, -1) {
				p := m[1]
				first, _, _ := strings.Cut(p, "/")
				if first == "." || first == ".." || mcpMethods[p] {
					continue // ./listener.nkey in a Nix example; tools/list
				}
				if _, err := os.Stat(filepath.Join(root, first)); err != nil {
					continue // not a repository path (refs/heads/, /run/…)
				}
				// pkg/TestName cites a test (checked by
				// TestFaultTablesNameExistingTests); a <placeholder> or
				// wildcard stands for a family of files under its directory.
				segs := strings.Split(strings.TrimSuffix(p, "/"), "/")
				keep := segs[:0]
				for _, s := range segs {
					if strings.HasPrefix(s, "Test") || strings.ContainsAny(s, "<>*") {
						break
					}
					keep = append(keep, s)
				}
				if _, err := os.Stat(filepath.Join(root, filepath.Join(keep...))); err != nil {
					problems = append(problems, fmt.Sprintf("  %s: `%s`: no such file or directory in the repository", at, p))
				}
			}
		}
	}
	if len(problems) > 0 {
		t.Errorf("README.md and docs/*.md point at things that do not exist:\n%s", strings.Join(problems, "\n"))
	}
}

// mcpMethods are MCP method names that look like repository paths.
var mcpMethods = map[string]bool{"tools/list": true, "tools/call": true}

// headingAnchors returns the anchors GitHub gives the headings of a markdown
// document: lower case, punctuation other than '-' and '_' dropped, spaces
// turned into '-', with -1, -2, … for repeats.
func headingAnchors(text string) map[string]bool {
	anchors := map[string]bool{}
	count := map[string]int{}
	inFence := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
			continue
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(title) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		a := b.String()
		if n := count[a]; n > 0 {
			anchors[fmt.Sprintf("%s-%d", a, n)] = true
		} else {
			anchors[a] = true
		}
		count[a]++
	}
	return anchors
}
