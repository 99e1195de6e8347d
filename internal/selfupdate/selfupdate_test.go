package selfupdate

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeFS is a file system of regular files and symlinks held in maps.
type fakeFS struct {
	files    map[string]string // path -> content
	links    map[string]string // path -> target (absolute)
	denied   map[string]bool   // path -> open fails with a permission error
	brokenIO map[string]bool   // path -> reading fails midway
}

func (f fakeFS) EvalSymlinks(path string) (string, error) {
	for range 40 {
		if t, ok := f.links[path]; ok {
			path = t
			continue
		}
		if _, ok := f.files[path]; ok {
			return path, nil
		}
		return "", &fs.PathError{Op: "lstat", Path: path, Err: fs.ErrNotExist}
	}
	return "", &fs.PathError{Op: "lstat", Path: path, Err: errors.New("too many links")}
}

func (f fakeFS) Open(path string) (io.ReadCloser, error) {
	if f.denied[path] {
		return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrPermission}
	}
	c, ok := f.files[path]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	}
	if f.brokenIO[path] {
		return io.NopCloser(io.MultiReader(strings.NewReader(c), errReader{})), nil
	}
	return io.NopCloser(strings.NewReader(c)), nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("input/output error") }

const (
	unit = "/etc/systemd/system/homelab-deploy-listener.service"
	exe  = "/nix/store/aaa-homelab-deploy/bin/homelab-deploy"
)

func nixosLike(unitTarget, unitContent string) fakeFS {
	return fakeFS{
		files: map[string]string{
			unitTarget: unitContent,
			exe:        "ELF v1",
		},
		links: map[string]string{unit: unitTarget},
	}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	paths := []string{unit, exe}
	oldUnit := "/nix/store/111-unit-homelab-deploy-listener.service/homelab-deploy-listener.service"
	newUnit := "/nix/store/222-unit-homelab-deploy-listener.service/homelab-deploy-listener.service"

	tests := []struct {
		name        string
		action      string
		before      fakeFS
		after       fakeFS
		wantRestart bool
		wantReason  string // substring
	}{
		{
			name:       "switch, nothing changed",
			action:     "switch",
			before:     nixosLike(oldUnit, "ExecStart=old"),
			after:      nixosLike(oldUnit, "ExecStart=old"),
			wantReason: "unchanged",
		},
		{
			name:        "switch, unit points to a new store path",
			action:      "switch",
			before:      nixosLike(oldUnit, "ExecStart=old"),
			after:       nixosLike(newUnit, "ExecStart=new"),
			wantRestart: true,
			wantReason:  unit + ": now resolves to " + newUnit,
		},
		{
			name:        "test also activates",
			action:      "test",
			before:      nixosLike(oldUnit, "ExecStart=old"),
			after:       nixosLike(newUnit, "ExecStart=new"),
			wantRestart: true,
			wantReason:  "now resolves to",
		},
		{
			name:        "same target, content rewritten in place",
			action:      "switch",
			before:      nixosLike(oldUnit, "ExecStart=old"),
			after:       nixosLike(oldUnit, "ExecStart=new"),
			wantRestart: true,
			wantReason:  unit + ": content changed",
		},
		{
			name:       "boot never restarts",
			action:     "boot",
			before:     nixosLike(oldUnit, "ExecStart=old"),
			after:      nixosLike(newUnit, "ExecStart=new"),
			wantReason: `action "boot"`,
		},
		{
			name:       "dry-activate never restarts",
			action:     "dry-activate",
			before:     nixosLike(oldUnit, "ExecStart=old"),
			after:      nixosLike(newUnit, "ExecStart=new"),
			wantReason: `action "dry-activate"`,
		},
		{
			name:       "unknown action never restarts",
			action:     "rm -rf",
			before:     nixosLike(oldUnit, "ExecStart=old"),
			after:      nixosLike(newUnit, "ExecStart=new"),
			wantReason: "does not activate",
		},
		{
			name:       "unit missing before and after",
			action:     "switch",
			before:     fakeFS{files: map[string]string{exe: "ELF v1"}},
			after:      fakeFS{files: map[string]string{exe: "ELF v1"}},
			wantReason: "unchanged",
		},
		{
			name:        "unit appears",
			action:      "switch",
			before:      fakeFS{files: map[string]string{exe: "ELF v1"}},
			after:       nixosLike(newUnit, "ExecStart=new"),
			wantRestart: true,
			wantReason:  unit + ": created",
		},
		{
			name:        "unit removed",
			action:      "switch",
			before:      nixosLike(oldUnit, "ExecStart=old"),
			after:       fakeFS{files: map[string]string{exe: "ELF v1"}},
			wantRestart: true,
			wantReason:  unit + ": removed",
		},
		{
			name:   "dangling symlink both times counts as missing",
			action: "switch",
			before: fakeFS{
				files: map[string]string{exe: "ELF v1"},
				links: map[string]string{unit: "/nix/store/gone"},
			},
			after: fakeFS{
				files: map[string]string{exe: "ELF v1"},
				links: map[string]string{unit: "/nix/store/gone-too"},
			},
			wantReason: "unchanged",
		},
		{
			name:   "binary replaced in place",
			action: "switch",
			before: nixosLike(oldUnit, "ExecStart=old"),
			after: fakeFS{
				files: map[string]string{oldUnit: "ExecStart=old", exe: "ELF v2"},
				links: map[string]string{unit: oldUnit},
			},
			wantRestart: true,
			wantReason:  exe + ": content changed",
		},
		{
			name:   "same permission error both times is not a change",
			action: "switch",
			before: fakeFS{
				files:  map[string]string{oldUnit: "x", exe: "ELF v1"},
				links:  map[string]string{unit: oldUnit},
				denied: map[string]bool{oldUnit: true},
			},
			after: fakeFS{
				files:  map[string]string{oldUnit: "x", exe: "ELF v1"},
				links:  map[string]string{unit: oldUnit},
				denied: map[string]bool{oldUnit: true},
			},
			wantReason: "unchanged",
		},
		{
			name:   "becoming readable is a change",
			action: "switch",
			before: fakeFS{
				files:  map[string]string{oldUnit: "x", exe: "ELF v1"},
				links:  map[string]string{unit: oldUnit},
				denied: map[string]bool{oldUnit: true},
			},
			after:       nixosLike(oldUnit, "x"),
			wantRestart: true,
			wantReason:  "readability changed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			before := Take(paths, tt.before)
			after := Take(paths, tt.after)
			restart, reason := Decide(tt.action, before, after)
			if restart != tt.wantRestart {
				t.Errorf("Decide(%q) restart = %v, want %v (reason %q)", tt.action, restart, tt.wantRestart, reason)
			}
			if !strings.Contains(reason, tt.wantReason) {
				t.Errorf("Decide(%q) reason = %q, want it to contain %q", tt.action, reason, tt.wantReason)
			}
		})
	}
}

func TestTake(t *testing.T) {
	t.Parallel()
	fsys := fakeFS{
		files:    map[string]string{"/a": "hello", "/io": "data"},
		links:    map[string]string{"/link": "/a"},
		denied:   map[string]bool{},
		brokenIO: map[string]bool{"/io": true},
	}
	s := Take([]string{"", "/link", "/missing", "/link", "/io"}, fsys)
	if len(s.Files) != 3 {
		t.Fatalf("Take recorded %d files, want 3 (empty and duplicate paths skipped): %+v", len(s.Files), s.Files)
	}
	link := s.Files[0]
	// sha256("hello")
	const helloSum = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
	if link.Path != "/link" || link.Target != "/a" || link.SHA256 != helloSum || link.Missing || link.Err != "" {
		t.Errorf("symlink state = %+v, want target /a and the hash of %q", link, "hello")
	}
	if m := s.Files[1]; !m.Missing || m.Target != "" || m.SHA256 != "" || m.Err != "" {
		t.Errorf("missing file state = %+v, want Missing only", m)
	}
	if e := s.Files[2]; e.Err == "" || !strings.Contains(e.Err, "input/output error") {
		t.Errorf("unreadable file state = %+v, want a read error", e)
	}
	if err := s.Errors(); err == nil || !strings.Contains(err.Error(), "/io: read:") {
		t.Errorf("Errors() = %v, want the read error of /io", err)
	}
}

func TestChangedPathSets(t *testing.T) {
	t.Parallel()
	fsys := fakeFS{files: map[string]string{"/a": "1", "/b": "2"}}
	a := Take([]string{"/a"}, fsys)
	ab := Take([]string{"/a", "/b"}, fsys)
	if changed, why := a.Changed(ab); !changed || !strings.Contains(why, "/b: not recorded before") {
		t.Errorf("Changed with an extra path after = %v %q, want a change naming /b", changed, why)
	}
	if changed, why := ab.Changed(a); !changed || !strings.Contains(why, "/b: not recorded after") {
		t.Errorf("Changed with a path dropped after = %v %q, want a change naming /b", changed, why)
	}
	if changed, why := (Snapshot{}).Changed(Snapshot{}); changed {
		t.Errorf("empty snapshots changed: %q", why)
	}
}

// TestRealFiles runs the OS file system through the NixOS layout in small:
// a unit symlink into a "store" directory, retargeted by a switch.
func TestRealFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	store1 := filepath.Join(dir, "store", "111-unit")
	store2 := filepath.Join(dir, "store", "222-unit")
	store3 := filepath.Join(dir, "store", "333-unit")
	for _, d := range []string{store1, store2, store3} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path, content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(store1, "l.service"), "ExecStart=/nix/store/111/bin/homelab-deploy")
	write(filepath.Join(store2, "l.service"), "ExecStart=/nix/store/222/bin/homelab-deploy")
	write(filepath.Join(store3, "l.service"), "ExecStart=/nix/store/111/bin/homelab-deploy") // same content as 1

	// etc/system -> units1 (a directory symlink, like /etc/systemd/system ->
	// /etc/static/...), and units1/l.service -> store1.
	units1 := filepath.Join(dir, "units1")
	units2 := filepath.Join(dir, "units2")
	units3 := filepath.Join(dir, "units3")
	for u, s := range map[string]string{units1: store1, units2: store2, units3: store3} {
		if err := os.MkdirAll(u, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(s, "l.service"), filepath.Join(u, "l.service")); err != nil {
			t.Fatal(err)
		}
	}
	etc := filepath.Join(dir, "etc-system")
	if err := os.Symlink(units1, etc); err != nil {
		t.Fatal(err)
	}
	unitPath := filepath.Join(etc, "l.service")
	missing := filepath.Join(dir, "not-there")
	paths := []string{unitPath, missing}

	retarget := func(to string) {
		t.Helper()
		tmp := etc + ".new"
		if err := os.Symlink(to, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, etc); err != nil { // atomic, like switch-to-configuration
			t.Fatal(err)
		}
	}

	before := Take(paths, nil)
	if err := before.Errors(); err != nil {
		t.Fatalf("before: %v", err)
	}
	if got := before.Files[0].Target; got != filepath.Join(store1, "l.service") {
		t.Fatalf("before target = %s, want the store file", got)
	}
	if !before.Files[1].Missing {
		t.Fatalf("missing path not recorded as missing: %+v", before.Files[1])
	}

	if restart, why := Decide("switch", before, Take(paths, nil)); restart {
		t.Errorf("unchanged tree: restart with reason %q", why)
	}

	retarget(units2)
	after := Take(paths, nil)
	restart, why := Decide("switch", before, after)
	if !restart || !strings.Contains(why, "now resolves to "+filepath.Join(store2, "l.service")) {
		t.Errorf("retargeted to new content: restart=%v reason=%q", restart, why)
	}
	if restart, _ := Decide("boot", before, after); restart {
		t.Error("boot restarted")
	}

	// A new target with identical content is still a new unit file as far as
	// systemd is concerned; restarting is cheap and safe.
	retarget(units3)
	if restart, why := Decide("test", before, Take(paths, nil)); !restart || !strings.Contains(why, "now resolves to") {
		t.Errorf("retargeted to same content: restart=%v reason=%q", restart, why)
	}

	// The missing path appearing is a change too.
	retarget(units1)
	write(missing, "new")
	if restart, why := Decide("switch", before, Take(paths, nil)); !restart || !strings.Contains(why, missing+": created") {
		t.Errorf("created file: restart=%v reason=%q", restart, why)
	}
}

func TestWatchPaths(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Skipf("os.Executable: %v", err)
	}
	got := WatchPaths("/etc/systemd/system/x.service", "relative/argv0")
	want := []string{"/etc/systemd/system/x.service", exe}
	if !slices.Equal(got, want) {
		t.Errorf("WatchPaths with relative argv0 = %q, want %q", got, want)
	}
	got = WatchPaths("", "/run/current-system/sw/bin/homelab-deploy")
	want = []string{"", "/run/current-system/sw/bin/homelab-deploy", exe}
	if !slices.Equal(got, want) {
		t.Errorf("WatchPaths with absolute argv0 = %q, want %q", got, want)
	}
	// Take ignores the empty unit path.
	if s := Take(got, nil); len(s.Files) != 2 {
		t.Errorf("Take kept %d paths, want 2", len(s.Files))
	}
}
