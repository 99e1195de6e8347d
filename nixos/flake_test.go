package nixos

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
)

type vmNode struct {
	Etc      map[string]struct{ Mode, User *string } `json:"etc"`
	Listener map[string]any                          `json:"listener"`
	Builder  map[string]any                          `json:"builder"`
	NatsUser []struct {
		Nkey        string `json:"nkey"`
		Permissions struct {
			Publish   []string `json:"publish"`
			Subscribe []string `json:"subscribe"`
		} `json:"permissions"`
	} `json:"natsUsers"`
	NatsHost *string `json:"natsHost"`
}

type flakeEval struct {
	Description string            `json:"description"`
	Inputs      map[string]string `json:"inputs"`
	Outputs     []string          `json:"outputs"`
	Systems     map[string][]string
	Package     struct {
		Pname       string   `json:"pname"`
		Version     string   `json:"version"`
		VendorHash  *string  `json:"vendorHash"`
		Ldflags     []string `json:"ldflags"`
		SubPackages []string `json:"subPackages"`
		DoCheck     bool     `json:"doCheck"`
		GoVersion   string   `json:"goVersion"`
		MainProgram string   `json:"mainProgram"`
		SameAsNamed bool     `json:"sameAsNamed"`
	} `json:"package"`
	App struct {
		Type    string `json:"type"`
		Program string `json:"program"`
	} `json:"app"`
	OverlayPname     string   `json:"overlayPname"`
	NixosModules     []string `json:"nixosModules"`
	DevShellPackages []string `json:"devShellPackages"`
	Checks           []string `json:"checks"`
	DarwinChecks     []string `json:"darwinChecks"`
	Platforms        []string `json:"platforms"`
	DarwinPackage    string   `json:"darwinPackage"`
	VMTest           struct {
		Name               string            `json:"name"`
		Nodes              []string          `json:"nodes"`
		TestScriptIsString bool              `json:"testScriptIsString"`
		NodeConfigs        map[string]vmNode `json:"nodeConfigs"`
	} `json:"vmTest"`
}

func evalFlake(t *testing.T, goVersion, go126 string) (flakeEval, error) {
	t.Helper()
	var f flakeEval
	err := tryNixEvalJSON(t, &f, "testdata/eval-flake.nix", "--argstr", "goVersion", goVersion, "--argstr", "go126", go126)
	return f, err
}

// TestFlakeOutputs evaluates flake.nix's outputs function against a
// stand-in nixpkgs whose buildGoModule returns its arguments.
func TestFlakeOutputs(t *testing.T) {
	t.Parallel()
	f, err := evalFlake(t, "1.26.8", "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"apps", "checks", "devShells", "formatter", "nixosModules", "overlays", "packages"}; !slices.Equal(f.Outputs, want) {
		t.Errorf("outputs = %v, want %v", f.Outputs, want)
	}
	if !strings.HasPrefix(f.Inputs["nixpkgs"], "github:NixOS/nixpkgs/") {
		t.Errorf("nixpkgs input = %q", f.Inputs["nixpkgs"])
	}
	// The CLI builds for macOS too; the NixOS module and its VM test stay
	// Linux only.
	allSystems := []string{"aarch64-darwin", "aarch64-linux", "x86_64-darwin", "x86_64-linux"}
	for kind, systems := range f.Systems {
		if !slices.Equal(systems, allSystems) {
			t.Errorf("%s systems = %v, want %v", kind, systems, allSystems)
		}
	}
	if f.DarwinPackage != "homelab-deploy" {
		t.Errorf("packages.aarch64-darwin.default = %q, want the homelab-deploy CLI", f.DarwinPackage)
	}
	if !slices.Equal(f.DarwinChecks, []string{"package"}) {
		t.Errorf("darwin checks = %v, want only package (the VM test needs Linux)", f.DarwinChecks)
	}
	for _, sys := range allSystems {
		if !slices.Contains(f.Platforms, sys) {
			t.Errorf("meta.platforms %v lacks %s", f.Platforms, sys)
		}
	}
	p := f.Package
	if p.Pname != "homelab-deploy" || p.MainProgram != "homelab-deploy" || !p.SameAsNamed {
		t.Errorf("package pname=%q mainProgram=%q default==homelab-deploy:%v", p.Pname, p.MainProgram, p.SameAsNamed)
	}
	if p.Version != "0.1.0+abc1234" {
		t.Errorf("version = %q, want 0.1.0+<shortRev>", p.Version)
	}
	if want := []string{"-s", "-w", "-X main.version=" + p.Version}; !slices.Equal(p.Ldflags, want) {
		t.Errorf("ldflags = %q, want %q", p.Ldflags, want)
	}
	if !slices.Equal(p.SubPackages, []string{"."}) || p.DoCheck {
		t.Errorf("subPackages=%q doCheck=%v", p.SubPackages, p.DoCheck)
	}
	if p.VendorHash == nil || !strings.HasPrefix(*p.VendorHash, "sha256-") {
		t.Errorf("vendorHash = %v (TestVendorHash checks its value)", p.VendorHash)
	}
	if f.App.Type != "app" || f.App.Program != stubProgram {
		t.Errorf("apps.default = %+v", f.App)
	}
	if f.OverlayPname != "homelab-deploy" {
		t.Errorf("overlays.default provides %q", f.OverlayPname)
	}
	if want := []string{"builder", "default", "listener"}; !slices.Equal(f.NixosModules, want) {
		t.Errorf("nixosModules = %v, want %v", f.NixosModules, want)
	}
	for _, tool := range []string{"go", "gopls", "nats-server", "natscli"} {
		if !slices.Contains(f.DevShellPackages, tool) {
			t.Errorf("devShells.default lacks %s: %v", tool, f.DevShellPackages)
		}
	}
	if !slices.Contains(f.Checks, "vm-test") {
		t.Errorf("checks = %v, want vm-test", f.Checks)
	}
}

// TestFlakeGoToolchain checks the choice of Go against go.mod's go line.
func TestFlakeGoToolchain(t *testing.T) {
	t.Parallel()
	goMod, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	var required string
	for line := range strings.Lines(string(goMod)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "go "); ok {
			required = v
		}
	}
	if required == "" {
		t.Fatal("go.mod has no go line")
	}

	f, err := evalFlake(t, required, "")
	if err != nil {
		t.Fatalf("default Go %s (= go.mod): %v", required, err)
	}
	if f.Package.GoVersion != required {
		t.Errorf("chose Go %s, want nixpkgs' default %s", f.Package.GoVersion, required)
	}

	f, err = evalFlake(t, "1.1.0", "99.0.0")
	if err != nil {
		t.Fatalf("old default Go with a new go_1_26: %v", err)
	}
	if f.Package.GoVersion != "99.0.0" {
		t.Errorf("default Go too old: chose %s, want go_1_26 (99.0.0)", f.Package.GoVersion)
	}

	_, err = evalFlake(t, "1.1.0", "")
	if err == nil || !strings.Contains(err.Error(), "needs Go >= "+required) {
		t.Errorf("no Go new enough: error %v, want one saying Go >= %s is needed", err, required)
	}
}

// TestVMTestConfig checks what the VM test sets up without running it: the
// nodes pass the module's assertions, seeds are installed 0400 for their
// users, and the NATS permissions let every listener subscribe to its
// subjects.
func TestVMTestConfig(t *testing.T) {
	t.Parallel()
	f, err := evalFlake(t, "1.26.8", "")
	if err != nil {
		t.Fatal(err)
	}
	vm := f.VMTest
	if vm.Name != "homelab-deploy" || !vm.TestScriptIsString {
		t.Errorf("vm test name=%q testScript string=%v", vm.Name, vm.TestScriptIsString)
	}
	if want := []string{"builder", "prodhost", "server", "testhost"}; !slices.Equal(vm.Nodes, want) {
		t.Fatalf("nodes = %v, want %v", vm.Nodes, want)
	}
	server := vm.NodeConfigs["server"]
	if server.NatsHost == nil || *server.NatsHost != "0.0.0.0" {
		t.Errorf("NATS listens on %v, want 0.0.0.0 (other VMs connect)", server.NatsHost)
	}
	pubKeys := map[string]string{} // public key -> key name
	for _, name := range []string{"listener-test", "listener-prod", "builder", "deployer", "build-client"} {
		pubKeys[readKeyPair(t, name)] = name
	}
	permsOf := func(key string) (pub, sub []string) {
		for _, u := range server.NatsUser {
			if pubKeys[u.Nkey] == key {
				return u.Permissions.Publish, u.Permissions.Subscribe
			}
		}
		t.Errorf("no NATS user for key %s", key)
		return nil, nil
	}

	for node, seed := range map[string]string{"testhost": "listener-test", "prodhost": "listener-prod"} {
		c := vm.NodeConfigs[node]
		if c.Listener == nil {
			t.Errorf("%s configures no listener", node)
			continue
		}
		checkSeed(t, node, c, seed, "root")
		cfg := map[string]any{"hostname": node}
		for k, v := range c.Listener {
			cfg[k] = v
		}
		u := evalUnit(t, "listener", cfg)
		if len(u.FailedAssertions) > 0 {
			t.Errorf("%s: module assertions fail: %q", node, u.FailedAssertions)
		}
		_, args := splitExecLine(t, u.ExecStart)
		tier, _ := c.Listener["tier"].(string)
		role, _ := c.Listener["role"].(string)
		pub, sub := permsOf(seed)
		for i, a := range args {
			if a != "--deploy-subject" {
				continue
			}
			s := strings.NewReplacer("<tier>", tier, "<hostname>", node, "<role>", role).Replace(args[i+1])
			if strings.Contains(args[i+1], "<role>") && role == "" {
				continue // skipped by the listener
			}
			if !subjectAllowed(sub, s) {
				t.Errorf("%s subscribes to %s, which its NATS user may not (subscribe %q)", node, s, sub)
			}
		}
		for _, s := range []string{"deploy.discover", "deploy.responses.x." + node} {
			if !subjectAllowed(pub, s) {
				t.Errorf("%s may not publish to %s (publish %q)", node, s, pub)
			}
		}
	}

	b := vm.NodeConfigs["builder"]
	if b.Builder == nil {
		t.Fatal("builder node configures no builder")
	}
	checkSeed(t, "builder", b, "builder", "homelab-deploy-builder")
	if u := evalUnit(t, "builder", b.Builder); len(u.FailedAssertions) > 0 {
		t.Errorf("builder: module assertions fail: %q", u.FailedAssertions)
	}
	_, sub := permsOf("builder")
	if !subjectAllowed(sub, "build.configs.all") || !subjectAllowed(sub, "build.configs.web1") {
		t.Errorf("builder may not subscribe to build.configs.* (subscribe %q)", sub)
	}
	pub, _ := permsOf("build-client")
	if !subjectAllowed(pub, "build.configs.all") {
		t.Errorf("build client may not publish build.configs.all (publish %q)", pub)
	}
	checkSeed(t, "server", server, "deployer", "root")
	checkSeed(t, "server", server, "build-client", "root")
}

func checkSeed(t *testing.T, node string, c vmNode, seed, owner string) {
	t.Helper()
	e, ok := c.Etc["homelab-deploy/"+seed+".seed"]
	if !ok {
		t.Errorf("%s does not install the %s seed", node, seed)
		return
	}
	if e.Mode == nil || *e.Mode != "0400" || e.User == nil || *e.User != owner {
		t.Errorf("%s: %s seed mode=%v user=%v, want 0400 owned by %s (the binary refuses group/other-readable seeds)",
			node, seed, deref(e.Mode), deref(e.User), owner)
	}
}

func deref(s *string) string {
	if s == nil {
		return "<unset>"
	}
	return *s
}

// readKeyPair checks that tests/keys/<name>.seed is a user seed whose public
// key is tests/keys/<name>.pub, and returns the public key.
func readKeyPair(t *testing.T, name string) string {
	t.Helper()
	seed, err := os.ReadFile(filepath.Join("tests", "keys", name+".seed"))
	if err != nil {
		t.Fatal(err)
	}
	pubFile, err := os.ReadFile(filepath.Join("tests", "keys", name+".pub"))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		t.Fatalf("%s.seed: %v", name, err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	if !nkeys.IsValidPublicUserKey(pub) {
		t.Errorf("%s is not a user key: %s", name, pub)
	}
	if got := strings.TrimSpace(string(pubFile)); got != pub {
		t.Errorf("%s.pub = %s, but the seed's public key is %s", name, got, pub)
	}
	return pub
}

// subjectAllowed reports whether subject matches one of the NATS permission
// patterns ('*' one token, '>' the rest).
func subjectAllowed(patterns []string, subject string) bool {
	for _, p := range patterns {
		if subjectMatch(p, subject) {
			return true
		}
	}
	return false
}

func subjectMatch(pattern, subject string) bool {
	pt, st := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, p := range pt {
		if p == ">" {
			return len(st) > i
		}
		if i >= len(st) || (p != "*" && p != st[i]) {
			return false
		}
	}
	return len(pt) == len(st)
}

func TestSubjectMatch(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"deploy.test.all", "deploy.test.all", true},
		{"deploy.test.role.>", "deploy.test.role.dns", true},
		{"deploy.test.role.>", "deploy.test.role", false},
		{"build.configs.*", "build.configs.web1", true},
		{"build.configs.*", "build.configs.a.b", false},
		{"deploy.>", "deploy.prod.x", true},
		{"deploy.test.x", "deploy.test.y", false},
	} {
		if got := subjectMatch(c.p, c.s); got != c.want {
			t.Errorf("subjectMatch(%q, %q) = %v", c.p, c.s, got)
		}
	}
}

// TestFlakeLock: the nixpkgs the flake builds with is pinned: flake.lock
// locks it to a commit and its narHash, made for the input flake.nix names,
// and real Nix agrees that the lock needs no update (offline: an input
// whose lock entry is missing or stale would have to be fetched, and fails).
func TestFlakeLock(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	f, err := evalFlake(t, "1.26.8", "")
	if err != nil {
		t.Fatal(err)
	}
	input := f.Inputs["nixpkgs"]
	data, err := os.ReadFile(filepath.Join(root, "flake.lock"))
	if err != nil {
		t.Fatal(err)
	}
	var lock struct {
		Version int `json:"version"`
		Nodes   map[string]struct {
			Locked struct {
				Type    string `json:"type"`
				Owner   string `json:"owner"`
				Repo    string `json:"repo"`
				Rev     string `json:"rev"`
				NarHash string `json:"narHash"`
			} `json:"locked"`
			Original map[string]any `json:"original"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal(data, &lock); err != nil {
		t.Fatalf("flake.lock: %v", err)
	}
	n, ok := lock.Nodes["nixpkgs"]
	if !ok {
		t.Fatal("flake.lock has no nixpkgs node: run nix flake lock")
	}
	if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(n.Locked.Rev) || !strings.HasPrefix(n.Locked.NarHash, "sha256-") {
		t.Errorf("flake.lock nixpkgs rev=%q narHash=%q, want a commit and its sha256 narHash", n.Locked.Rev, n.Locked.NarHash)
	}
	if ref, _ := n.Original["ref"].(string); input != "github:NixOS/nixpkgs/"+ref {
		t.Errorf("flake.lock was made for nixpkgs %v, but flake.nix asks for %q: run nix flake lock", n.Original, input)
	}

	// Nix itself, on a copy of the two files in a git repository of their
	// own (a flake in git sees tracked files only).
	nix := needTool(t, "nix")
	git := needTool(t, "git")
	dir := t.TempDir()
	for _, name := range []string{"flake.nix", "flake.lock"} {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := nixEnv(t)
	for _, args := range [][]string{{"init", "-q"}, {"add", "flake.nix", "flake.lock"}} {
		if _, err := run(t, dir, env, git, args...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := run(t, dir, env, nix, "--extra-experimental-features", "nix-command flakes",
		"flake", "lock", "--no-update-lock-file", "--offline"); err != nil {
		t.Errorf("flake.lock does not match flake.nix (run nix flake lock): %v", err)
	}
}
