package cli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/homelab-deploy/homelab-deploy/cli"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
)

// invoke runs the CLI with args and returns exit code, stdout and stderr.
func invoke(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	// Logs arrive from NATS callback goroutines while the command prints.
	var out, errb testenv.Buffer
	code := cli.Run(context.Background(), args, cli.Env{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb, Version: "test"})
	return code, out.String(), errb.String()
}

func seedPublic(t *testing.T, seed []byte) string {
	t.Helper()
	kp, err := nkeys.FromSeed(bytes.TrimSpace(seed))
	if err != nil {
		t.Fatalf("nkeys cannot parse the seed: %v", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	if !nkeys.IsValidPublicUserKey(pub) {
		t.Fatalf("the seed is not a user seed (public key %s)", pub)
	}
	return pub
}

func TestKeygenWritesPrivateSeedAndPrintsItsPublicKey(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "listener.nkey")
	code, out, errOut := invoke(t, "", "keygen", "--out", path)
	if code != 0 {
		t.Fatalf("keygen exit %d, stderr %s", code, errOut)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("seed file mode %04o, want 0600", fi.Mode().Perm())
	}
	seed, _ := os.ReadFile(path)
	if !bytes.HasPrefix(seed, []byte("SU")) {
		t.Errorf("seed file does not start with SU")
	}
	if got, want := strings.TrimSpace(out), seedPublic(t, seed); got != want {
		t.Errorf("printed public key %q, the seed's is %q", got, want)
	}
	if strings.Contains(out+errOut, strings.TrimSpace(string(seed))) {
		t.Errorf("keygen printed the seed")
	}

	// A second keygen to the same file refuses and leaves it alone.
	code, out, errOut = invoke(t, "", "keygen", "--out", path)
	if code == 0 || out != "" || !strings.Contains(errOut, "--force") {
		t.Errorf("overwrite without --force: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, seed) {
		t.Errorf("the seed file changed without --force")
	}

	// --force replaces it with a new pair.
	code, out, _ = invoke(t, "", "keygen", "--out", path, "--force")
	newSeed, _ := os.ReadFile(path)
	if code != 0 || bytes.Equal(newSeed, seed) || strings.TrimSpace(out) != seedPublic(t, newSeed) {
		t.Errorf("--force: exit %d, seed replaced %v, printed key matches %v", code, !bytes.Equal(newSeed, seed), strings.TrimSpace(out) == seedPublic(t, newSeed))
	}
}

func TestKeygenUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no out", []string{"keygen"}, 2, "--out is required"},
		{"argument", []string{"keygen", "x"}, 2, "no arguments"},
		{"missing dir", []string{"keygen", "--out", "/nonexistent-dir/x.nkey"}, 1, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, errOut := invoke(t, "", tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d stderr %q, want exit %d and %q", code, errOut, tt.code, tt.want)
			}
		})
	}
}

func TestKeygenToStdout(t *testing.T) {
	t.Parallel()
	code, out, errOut := invoke(t, "", "keygen", "--out", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if got := seedPublic(t, []byte(out)); got != strings.TrimSpace(errOut) {
		t.Errorf("--out -: public key on stderr %q, the seed's is %q", errOut, got)
	}
}
