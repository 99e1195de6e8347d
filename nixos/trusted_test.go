package nixos

import (
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
)

// userKey returns a fresh NKey user public key.
func userKey(t *testing.T) string {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// pairs returns the values that follow each occurrence of flag in args.
func pairs(args []string, flag string) []string {
	var out []string
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			out = append(out, args[i+1])
		}
	}
	return out
}

// trustedDeployers becomes one --trusted-deployer per key, in order, on
// both units; an empty list passes none (unsigned requests stay accepted).
func TestTrustedDeployersReachTheCommandLine(t *testing.T) {
	t.Parallel()
	keys := []string{userKey(t), userKey(t)}
	for _, tt := range []struct {
		service string
		cfg     func(map[string]any) map[string]any
	}{{"listener", listenerCfg}, {"builder", builderCfg}} {
		t.Run(tt.service, func(t *testing.T) {
			t.Parallel()
			u := evalUnit(t, tt.service, tt.cfg(map[string]any{"trustedDeployers": keys}))
			if len(u.FailedAssertions) > 0 {
				t.Fatalf("assertions failed: %q", u.FailedAssertions)
			}
			_, args := splitExecLine(t, u.ExecStart)
			if got := pairs(args, "--trusted-deployer"); !slices.Equal(got, keys) {
				t.Errorf("--trusted-deployer values %q, want %q (argv %q)", got, keys, args)
			}
			_, args = splitExecLine(t, evalUnit(t, tt.service, tt.cfg(nil)).ExecStart)
			if slices.Contains(args, "--trusted-deployer") {
				t.Errorf("no trusted deployers configured, but argv has --trusted-deployer: %q", args)
			}
		})
	}
}

// A seed or anything else that is not a user public key fails an
// assertion that names its position and never quotes it.
func TestTrustedDeployersMustBeUserPublicKeys(t *testing.T) {
	t.Parallel()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	account, _ := nkeys.CreateAccount()
	accountPub, _ := account.PublicKey()
	good := userKey(t)
	for _, service := range []string{"listener", "builder"} {
		for _, bad := range []string{string(seed), accountPub, "", good + "A", strings.ToLower(good)} {
			cfg := map[string]any{"trustedDeployers": []string{good, bad}}
			if service == "listener" {
				cfg = listenerCfg(cfg)
			} else {
				cfg = builderCfg(cfg)
			}
			failed := evalUnit(t, service, cfg).FailedAssertions
			if len(failed) != 1 || !strings.Contains(failed[0], "trustedDeployers must list NKey user public keys") || !strings.Contains(failed[0], "#2") {
				t.Errorf("%s with %.4s…: failed assertions %q, want one naming entry #2", service, bad, failed)
				continue
			}
			if bad != "" && strings.Contains(failed[0], bad[:8]) {
				t.Errorf("%s: the assertion quotes the refused value: %q", service, failed[0])
			}
		}
	}
}
