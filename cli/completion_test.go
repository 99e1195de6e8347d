package cli

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func completionScript(t *testing.T, shell string) string {
	t.Helper()
	env, stdout, stderr := testEnv(nil)
	if code := Run(context.Background(), []string{"completion", shell}, env); code != ExitOK {
		t.Fatalf("completion %s: exit %d, stderr %q", shell, code, stderr)
	}
	return stdout.String()
}

// The scripts name every subcommand of the tree (so a new command is
// completed without touching completion.go) and are valid shell.
func TestCompletionScripts(t *testing.T) {
	t.Parallel()
	names := []string{}
	for _, c := range New(Env{}).Command.Subcommands {
		names = append(names, c.Name)
	}
	for _, shell := range completionShells {
		script := completionScript(t, shell)
		for _, n := range names {
			if !strings.Contains(script, n) {
				t.Errorf("%s script does not mention %s", shell, n)
			}
		}
		for _, f := range []string{"nats-url", "nkey-file", "shutdown-grace", "log-level"} {
			f = "--" + f
			if shell == "fish" {
				f = "-l " + f[2:]
			}
			if !strings.Contains(script, f) {
				t.Errorf("%s script does not mention %s", shell, f)
			}
		}
		bin, err := exec.LookPath(shell)
		if err != nil {
			if shell == "bash" {
				t.Fatal("bash is not installed")
			}
			t.Logf("%s is not installed; its script is not syntax-checked", shell)
			continue
		}
		path := filepath.Join(t.TempDir(), "completion."+shell)
		if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bin, "-n", path).CombinedOutput(); err != nil {
			t.Errorf("%s -n rejects the script: %v\n%s", shell, err, out)
		}
	}
	env, _, stderr := testEnv(nil)
	if code := Run(context.Background(), []string{"completion", "tcsh"}, env); code != ExitUsage || !strings.Contains(stderr.String(), "bash, zsh, fish") {
		t.Errorf("completion tcsh: exit %d, stderr %q", code, stderr)
	}
}

// Sourced into bash, the script completes what a user would type.
func TestBashCompletionCompletes(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "completion.bash")
	if err := os.WriteFile(path, []byte(completionScript(t, "bash")), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		line string // words typed; the last is completed
		want []string
		not  []string
	}{
		{"homelab-deploy dep", []string{"deploy"}, nil},
		{"homelab-deploy listener --time", []string{"--timeout"}, nil},
		{"homelab-deploy --log-level debug deploy --nk", []string{"--nkey-file"}, nil},
		{"homelab-deploy build --", []string{"--all", "--json"}, []string{"--hostname", "--version"}},
		{"homelab-deploy completion ", []string{"bash", "zsh", "fish"}, nil},
	} {
		words := strings.Fields(c.line)
		if strings.HasSuffix(c.line, " ") {
			words = append(words, "")
		}
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = compQuote(w)
		}
		prog := "source " + compQuote(path) + "\nCOMP_WORDS=(" + strings.Join(quoted, " ") + ")\nCOMP_CWORD=" +
			strconv.Itoa(len(words)-1) + "\n_homelab_deploy\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
		out, err := exec.Command("bash", "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", c.line, err, out)
		}
		got := strings.Fields(string(out))
		for _, w := range c.want {
			if !contains(got, w) {
				t.Errorf("%q completes to %q, want %s among them", c.line, got, w)
			}
		}
		for _, w := range c.not {
			if contains(got, w) {
				t.Errorf("%q completes to %q, which should not include %s", c.line, got, w)
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
