package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
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
