package natsauth

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

const fullFleet = `hosts:
  testhost1: {tier: test}
  dns1: {tier: prod, role: dns}
builder: {repos: [nixos-servers, homelab]}
deployers: {test: true, admin: true, build_client: true, mcp: true}
`

func parse(t *testing.T, src string) *Fleet {
	t.Helper()
	f, err := ParseFleet(strings.NewReader(src), "fleet.yaml")
	if err != nil {
		t.Fatalf("ParseFleet: %v", err)
	}
	return f
}

func TestParseFleetErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		src  string
		want []string // substrings of the error
	}{
		{"empty", "", []string{"fleet.yaml", "empty"}},
		{"unknown host field", "hosts:\n  a: {tier: test}\n  b:\n    tire: prod\n", []string{"line 4", `unknown field "tire"`, "tier, role"}},
		{"unknown top field", "hosts: {a: {tier: test}}\nbuilders: {repos: [x]}\n", []string{"line 2", `"builders"`, "hosts, builder, deployers"}},
		{"missing tier", "hosts:\n  a: {role: dns}\n", []string{"line 2", "host a has no tier", "tier: test"}},
		{"bad tier", "hosts:\n  a:\n    tier: staging\n", []string{"line 3", `tier "staging"`}},
		{"bad hostname", "hosts:\n  web.1: {tier: prod}\n", []string{"line 2", "hostname"}},
		{"reserved hostname", "hosts:\n  all: {tier: prod}\n", []string{"line 2", "reserved"}},
		{"bad role", "hosts:\n  a: {tier: prod, role: 'd n s'}\n", []string{"line 2", "role"}},
		{"seed instead of key", "hosts:\n  a: {tier: prod, nkey: SUAAAA}\n", []string{"line 2", "seed", "public key"}},
		{"bad key", "hosts:\n  a: {tier: prod, nkey: UABC}\n", []string{"line 2", "not an NKey user public key"}},
		{"builder without repos", "hosts: {a: {tier: test}}\nbuilder: {}\n", []string{"line 2", "no repos"}},
		{"bad repo", "builder: {repos: [responses]}\n", []string{"line 1", "reserved"}},
		{"duplicate repo", "builder:\n  repos: [a, a]\n", []string{"line 2", "twice"}},
		{"build client without builder", "hosts: {a: {tier: test}}\ndeployers:\n  build_client: true\n", []string{"line 3", "needs a builder"}},
		{"deployer not bool", "hosts: {a: {tier: test}}\ndeployers:\n  test: maybe\n", []string{"line 3", "true"}},
		{"deployer unknown key", "hosts: {a: {tier: test}}\ndeployers:\n  admin: {nkye: U}\n", []string{"line 3", `unknown field "nkye"`}},
		{"builds on non-mcp", "hosts: {a: {tier: test}}\ndeployers:\n  test: {builds: false}\n", []string{"line 3", "only applies to mcp"}},
		{"bad subject template", "hosts:\n  a: {tier: test, deploy_subjects: ['deploy.<tier>.*']}\n", []string{"line 2", "deploy_subjects"}},
		{"no hosts", "deployers: {test: true}\n", []string{"no hosts"}},
		{"two documents", "hosts: {a: {tier: test}}\n---\nhosts: {}\n", []string{"second YAML document"}},
		{"syntax", "hosts: [\n", []string{"fleet.yaml"}},
		{"wrong type", "hosts: [a, b]\n", []string{"line 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseFleet(strings.NewReader(tt.src), "fleet.yaml")
			if err == nil {
				t.Fatalf("ParseFleet accepted %q", tt.src)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// The fleet registry's subjects, written out: what nats-config prints.
const (
	fleetInfo   = "$JS.API.STREAM.INFO.KV_homelab_deploy_fleet"
	fleetCreate = "$JS.API.STREAM.CREATE.KV_homelab_deploy_fleet"
	readTest    = "$JS.API.CONSUMER.CREATE.KV_homelab_deploy_fleet.*.$KV.homelab_deploy_fleet.test.>"
	readProd    = "$JS.API.CONSUMER.CREATE.KV_homelab_deploy_fleet.*.$KV.homelab_deploy_fleet.prod.>"
)

func TestCredentialsFollowSpecTable(t *testing.T) {
	t.Parallel()
	creds := parse(t, fullFleet).Credentials()
	got := map[string]protocol.Permissions{}
	var names []string
	for _, c := range creds {
		got[c.Name] = c.Permissions
		names = append(names, c.Name)
	}
	wantNames := []string{"listener-dns1", "listener-testhost1", "builder", "test-deployer", "admin-deployer", "build-client", "mcp"}
	if !reflect.DeepEqual(names, wantNames) {
		t.Fatalf("credentials %v, want %v", names, wantNames)
	}
	want := map[string]protocol.Permissions{
		"listener-dns1": {
			Publish:   []string{"deploy.responses.*.dns1", "deploy.discover", "$KV.homelab_deploy_fleet.prod.dns1", fleetInfo, fleetCreate},
			Subscribe: []string{"deploy.prod.dns1", "deploy.prod.all", "deploy.prod.role.dns", "deploy.discover", "fleet.replies.host.dns1.>"},
		},
		"listener-testhost1": {
			Publish:   []string{"deploy.responses.*.testhost1", "deploy.discover", "$KV.homelab_deploy_fleet.test.testhost1", fleetInfo, fleetCreate},
			Subscribe: []string{"deploy.test.testhost1", "deploy.test.all", "deploy.discover", "fleet.replies.host.testhost1.>"},
		},
		"builder":        {Publish: []string{"build.responses.*.builder"}, Subscribe: []string{"build.nixos-servers.*", "build.homelab.*"}},
		"test-deployer":  {Publish: []string{"deploy.test.>", "deploy.discover", readTest}, Subscribe: []string{"deploy.responses.>", "deploy.discover", "fleet.replies.read.test.>"}},
		"admin-deployer": {Publish: []string{"deploy.>", readTest, readProd}, Subscribe: []string{"deploy.>", "fleet.replies.read.test.>", "fleet.replies.read.prod.>"}},
		"build-client":   {Publish: []string{"build.nixos-servers.*", "build.homelab.*"}, Subscribe: []string{"build.responses.>"}},
		"mcp": {
			Publish:   []string{"deploy.test.>", "deploy.discover", readTest, "build.nixos-servers.*", "build.homelab.*"},
			Subscribe: []string{"deploy.responses.>", "deploy.discover", "fleet.replies.read.test.>", "build.responses.>"},
		},
	}
	for name, w := range want {
		if !reflect.DeepEqual(got[name], w) {
			t.Errorf("%s: permissions %+v, want %+v", name, got[name], w)
		}
	}
}

func TestMCPWithoutBuilds(t *testing.T) {
	t.Parallel()
	for _, src := range []string{
		"hosts: {a: {tier: test}}\nbuilder: {repos: [r]}\ndeployers: {mcp: {builds: false}}\n",
		"hosts: {a: {tier: test}}\ndeployers: {mcp: true}\n",
	} {
		creds := parse(t, src).Credentials()
		last := creds[len(creds)-1]
		if last.Name != CredMCP || !reflect.DeepEqual(last.Permissions, protocol.TestDeployerPermissions()) {
			t.Errorf("%q: mcp credential %+v, want only the test deployer's permissions", src, last)
		}
	}
}

func TestCustomSubjectsAndDisabledDeployers(t *testing.T) {
	t.Parallel()
	f := parse(t, "hosts:\n  lab1: {tier: test, deploy_subjects: ['deploy.<tier>.<hostname>', 'deploy.lab.all'], discover_subject: deploy.lab-discover}\ndeployers: {test: false, admin: {enabled: false}}\n")
	creds := f.Credentials()
	if len(creds) != 1 {
		t.Fatalf("credentials %+v, want only the listener", creds)
	}
	want := protocol.Permissions{
		Publish:   []string{"deploy.responses.*.lab1", "deploy.lab-discover", "$KV.homelab_deploy_fleet.test.lab1", fleetInfo, fleetCreate},
		Subscribe: []string{"deploy.test.lab1", "deploy.lab.all", "deploy.lab-discover", "fleet.replies.host.lab1.>"},
	}
	if !reflect.DeepEqual(creds[0].Permissions, want) {
		t.Errorf("permissions %+v, want %+v", creds[0].Permissions, want)
	}
}

func TestResolveKeys(t *testing.T) {
	t.Parallel()
	inline, _ := NewUserKey()
	src := "hosts:\n  a: {tier: test, nkey: " + inline.Public + "}\n  b: {tier: prod}\n  c: {tier: prod}\ndeployers: {test: true}\n"
	creds := parse(t, src).Credentials()
	dir := t.TempDir()

	// Nothing for b yet.
	if _, _, err := ResolveKeys(creds, dir, false); err == nil || !strings.Contains(err.Error(), "listener-b") || !strings.Contains(err.Error(), "--generate-keys") {
		t.Fatalf("missing key: err %v, want one naming listener-b and the fix", err)
	}
	if _, _, err := ResolveKeys(creds, "", false); err == nil || !strings.Contains(err.Error(), "--keys-dir") {
		t.Fatalf("no keys dir: err %v", err)
	}
	// b from a .pub file, c from a seed file, test-deployer generated.
	pb, _ := NewUserKey()
	os.WriteFile(PublicPath(dir, "listener-b"), []byte(pb.Public+"\n"), 0o644)
	pc, _ := NewUserKey()
	if err := WriteSeedFile(SeedPath(dir, "listener-c"), pc.Seed, false); err != nil {
		t.Fatal(err)
	}
	users, generated, err := ResolveKeys(creds, dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(generated, []string{"test-deployer"}) {
		t.Errorf("generated %v, want [test-deployer]", generated)
	}
	genPub, err := PublicFromSeedFile(SeedPath(dir, "test-deployer"))
	if err != nil {
		t.Fatal(err)
	}
	wantKeys := []string{inline.Public, pb.Public, pc.Public, genPub}
	for i, u := range users {
		if u.Nkey != wantKeys[i] {
			t.Errorf("user %d (%s): key %s, want %s", i, u.Comment, u.Nkey, wantKeys[i])
		}
	}
	fi, _ := os.Stat(SeedPath(dir, "test-deployer"))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("generated seed mode %04o, want 0600", fi.Mode().Perm())
	}
	// A second run reuses the keys and generates nothing.
	again, generated, err := ResolveKeys(creds, dir, true)
	if err != nil || len(generated) != 0 || !reflect.DeepEqual(again, users) {
		t.Errorf("second run: generated %v, err %v; keys changed: %v", generated, err, !reflect.DeepEqual(again, users))
	}
	// The same key for two credentials is refused.
	os.WriteFile(PublicPath(dir, "listener-b"), []byte(inline.Public+"\n"), 0o644)
	if _, _, err := ResolveKeys(creds, dir, false); err == nil || !strings.Contains(err.Error(), "same public key") {
		t.Errorf("duplicate key: err %v", err)
	}
	// A broken .pub file is reported, not skipped.
	os.WriteFile(PublicPath(dir, "listener-b"), []byte("garbage\n"), 0o644)
	if _, _, err := ResolveKeys(creds, dir, true); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "listener-b.pub")) {
		t.Errorf("broken pub file: err %v", err)
	}
}

func TestWriteSeedFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "k.nkey")
	if err := WriteSeedFile(path, []byte("SUFIRST"), false); err != nil {
		t.Fatal(err)
	}
	if err := WriteSeedFile(path, []byte("SUSECOND"), false); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("overwrite without force: err %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "SUFIRST\n" {
		t.Fatalf("seed changed to %q without force", b)
	}
	os.Chmod(path, 0o644)
	if err := WriteSeedFile(path, []byte("SUSECOND"), true); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	fi, _ := os.Stat(path)
	if string(b) != "SUSECOND\n" || fi.Mode().Perm() != 0o600 {
		t.Errorf("after force: %q mode %04o", b, fi.Mode().Perm())
	}
}

func TestRenderQuotesForNATSConfig(t *testing.T) {
	t.Parallel()
	out := Render([]User{{Comment: "x\ny", Nkey: "UKEY", Permissions: protocol.Permissions{Publish: []string{"a.>"}, Subscribe: []string{`we"ird\`}}}})
	for _, want := range []string{`publish: ["a.>"]`, `subscribe: ["we\"ird\\"]`, "# x y\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("Render output lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, `\u`) {
		t.Errorf("Render wrote a \\u escape, which nats-server rejects:\n%s", out)
	}
}

// FuzzParseFleet: the parser never panics, and whatever it accepts yields
// credentials whose subjects are valid and whose names are unique.
func FuzzParseFleet(f *testing.F) {
	f.Add(fullFleet)
	f.Add("hosts: {a: {tier: test, deploy_subjects: ['deploy.<tier>.<role>']}}\n")
	f.Add("deployers: {mcp: {builds: true, nkey: x}}\nbuilder: {repos: [a]}\n")
	f.Add("hosts:\n  a:\n    tier: prod\n    role: r\n---\n")
	f.Add("hosts: {a: &x {tier: test}, b: *x}\n")
	f.Fuzz(func(t *testing.T, src string) {
		fl, err := ParseFleet(strings.NewReader(src), "fuzz.yaml")
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, c := range fl.Credentials() {
			if seen[c.Name] {
				t.Fatalf("credential %s twice", c.Name)
			}
			seen[c.Name] = true
			for _, s := range append(append([]string{}, c.Permissions.Publish...), c.Permissions.Subscribe...) {
				lit := strings.NewReplacer(".>", ".x", ".*", ".x", "$", "").Replace(s)
				if err := protocol.ValidateLiteralSubject(lit); err != nil {
					t.Fatalf("credential %s has subject %q: %v", c.Name, s, err)
				}
			}
		}
	})
}
