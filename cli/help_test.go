package cli

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestHelpGolden keeps every command's --help in testdata/help. A change to
// a flag or its text fails here until the snapshot is regenerated with
// UPDATE_GOLDEN=1 go test ./cli -run TestHelpGolden, so help changes are
// always reviewed.
func TestHelpGolden(t *testing.T) {
	t.Parallel()
	names := []string{""}
	for _, c := range New(Env{}).Command.Subcommands {
		names = append(names, c.Name)
	}
	for _, name := range names {
		env, stdout, _ := testEnv(nil)
		args := []string{"--help"}
		file := "homelab-deploy.txt"
		if name != "" {
			args = []string{name, "--help"}
			file = name + ".txt"
		}
		if code := Run(context.Background(), args, env); code != 0 {
			t.Fatalf("%v: exit %d", args, code)
		}
		path := filepath.Join("testdata", "help", file)
		if os.Getenv("UPDATE_GOLDEN") != "" {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, stdout.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: %v (run with UPDATE_GOLDEN=1 to create it)", path, err)
		}
		if string(want) != stdout.String() {
			t.Errorf("help of %q changed; if intended, run UPDATE_GOLDEN=1 go test ./cli -run TestHelpGolden\n--- want\n%s\n--- got\n%s", name, want, stdout)
		}
	}
}
