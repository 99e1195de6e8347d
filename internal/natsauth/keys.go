package natsauth

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nkeys"
)

// KeyPair is a freshly generated NKey user.
type KeyPair struct {
	Public string // starts with U
	Seed   []byte // starts with SU; never log it
}

// NewUserKey generates an NKey user key pair.
func NewUserKey() (KeyPair, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate NKey user: %w", err)
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate NKey user: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate NKey user: %w", err)
	}
	return KeyPair{Public: pub, Seed: append([]byte(nil), seed...)}, nil
}

// ErrExists is returned by WriteSeedFile when the file exists and force is
// not set.
var ErrExists = errors.New("file exists")

// WriteSeedFile writes seed (plus a newline) to path with mode 0600. Without
// force it refuses to replace an existing file (O_EXCL, so not even a
// concurrent writer is overwritten). With force an existing file is replaced
// and its mode reset to 0600.
func WriteSeedFile(path string, seed []byte, force bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s: %w; refusing to overwrite a key (pass --force to replace it)", path, ErrExists)
	}
	if err != nil {
		return err
	}
	// O_CREATE's mode is filtered by the umask and ignored for an existing
	// file; set it explicitly.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(append(append([]byte(nil), seed...), '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ValidatePublicUserKey checks that s is an NKey user public key.
func ValidatePublicUserKey(s string) error {
	if !nkeys.IsValidPublicUserKey(s) {
		shown := s
		if len(shown) > 12 {
			shown = shown[:12] + "…"
		}
		if strings.HasPrefix(s, "SU") {
			return errors.New("this is a seed (starts with SU), not a public key: never put a seed in the server config; use the public key `homelab-deploy keygen` printed (starts with U)")
		}
		return fmt.Errorf("%q is not an NKey user public key (56 characters starting with U)", shown)
	}
	return nil
}

// ReadPublicKeyFile reads a .pub file holding one user public key.
func ReadPublicKeyFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	pub := strings.TrimSpace(string(b))
	if err := ValidatePublicUserKey(pub); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return pub, nil
}

// PublicFromSeedFile derives the public key from a user seed file.
func PublicFromSeedFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	kp, err := nkeys.FromSeed(bytes.TrimSpace(b))
	if err != nil {
		return "", fmt.Errorf("%s does not hold an NKey seed: %w", path, err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil {
		return "", err
	}
	if err := ValidatePublicUserKey(pub); err != nil {
		return "", fmt.Errorf("%s: the seed is not a user seed (it must start with SU)", path)
	}
	return pub, nil
}

// Key file names inside a keys directory.
func SeedPath(dir, name string) string   { return filepath.Join(dir, name+".nkey") }
func PublicPath(dir, name string) string { return filepath.Join(dir, name+".pub") }

// GenerateKeyFiles creates <dir>/<name>.nkey (0600) and <dir>/<name>.pub and
// returns the public key. It never overwrites a seed.
func GenerateKeyFiles(dir, name string) (string, error) {
	kp, err := NewUserKey()
	if err != nil {
		return "", err
	}
	if err := WriteSeedFile(SeedPath(dir, name), kp.Seed, false); err != nil {
		return "", err
	}
	if err := os.WriteFile(PublicPath(dir, name), []byte(kp.Public+"\n"), 0o644); err != nil {
		return "", err
	}
	return kp.Public, nil
}

// ResolveKeys finds each credential's public key and returns the NATS users.
// In order: the key given inline in the fleet file; <dir>/<name>.pub; the
// public half of <dir>/<name>.nkey; or, with generate, a new key pair
// written into dir (seed 0600 and .pub). generated names the credentials
// whose keys were created. One public key may serve only one credential.
func ResolveKeys(creds []Credential, dir string, generate bool) (users []User, generated []string, err error) {
	owner := map[string]string{}
	for _, c := range creds {
		pub, gen, err := resolveKey(c, dir, generate)
		if err != nil {
			return nil, generated, err
		}
		if gen {
			generated = append(generated, c.Name)
		}
		if other, dup := owner[pub]; dup {
			return nil, generated, fmt.Errorf("%s and %s have the same public key %s: every credential needs its own key pair (make one with `homelab-deploy keygen`)", other, c.Name, pub)
		}
		owner[pub] = c.Name
		users = append(users, User{Comment: c.Comment, Nkey: pub, Permissions: c.Permissions})
	}
	return users, generated, nil
}

func resolveKey(c Credential, dir string, generate bool) (pub string, generated bool, err error) {
	if c.Nkey != "" {
		return c.Nkey, false, nil
	}
	if dir == "" {
		return "", false, fmt.Errorf("no public key for %s: add `nkey: U...` for it in the fleet file, or pass --keys-dir DIR (with %s.pub in it, or --generate-keys)", c.Name, c.Name)
	}
	pub, err = ReadPublicKeyFile(PublicPath(dir, c.Name))
	if err == nil {
		return pub, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}
	pub, err = PublicFromSeedFile(SeedPath(dir, c.Name))
	if err == nil {
		return pub, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}
	if !generate {
		return "", false, fmt.Errorf("no public key for %s: neither %s nor %s exists; create it with `homelab-deploy keygen --out %s > %s`, put `nkey: U...` in the fleet file, or pass --generate-keys",
			c.Name, PublicPath(dir, c.Name), SeedPath(dir, c.Name), SeedPath(dir, c.Name), PublicPath(dir, c.Name))
	}
	pub, err = GenerateKeyFiles(dir, c.Name)
	if err != nil {
		return "", false, fmt.Errorf("generate a key pair for %s: %w", c.Name, err)
	}
	return pub, true, nil
}
