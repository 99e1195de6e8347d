// Package selfupdate tells a listener when a deployment it just ran replaced
// the listener itself, so it can exit and let systemd start the new version.
//
// The NixOS module sets restartIfChanged = false on the listener unit, so
// `nixos-rebuild switch` never kills the process that is running the switch.
// The price is that a switch which changes the listener's unit or binary
// leaves the old listener running. This package closes that gap:
//
//	paths := selfupdate.WatchPaths(watchUnitFile, os.Args[0])
//	before := selfupdate.Take(paths, nil)   // just before nixos-rebuild
//	... run the deployment, publish the final status ...
//	after := selfupdate.Take(paths, nil)    // after it finished
//	if restart, why := selfupdate.Decide(action, before, after); restart {
//		logger.Info("own unit or binary changed, exiting for a restart", "reason", why)
//		// drain NATS and exit 0; Restart=always brings up the new version.
//	}
//
// A Snapshot records, for every watched path, where its symlinks lead and a
// SHA-256 of the content. On NixOS /etc/systemd/system/<unit>.service is a
// symlink chain into the Nix store, so a new unit means a new target, and the
// content hash catches files replaced in place. Missing files are recorded as
// missing rather than treated as errors.
//
// Take the "before" snapshot right before running nixos-rebuild (not at
// startup): a change made by someone else between startup and the deployment
// is then still caught, and nothing is compared against a stale state.
package selfupdate

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// FileSystem is what Take needs from the file system. OSFileSystem is the real
// one; tests pass a fake.
type FileSystem interface {
	// EvalSymlinks returns the path with every symlink resolved, like
	// filepath.EvalSymlinks. A missing file gives an error matching
	// fs.ErrNotExist.
	EvalSymlinks(path string) (string, error)
	// Open opens the file for reading.
	Open(path string) (io.ReadCloser, error)
}

// OSFileSystem reads the real file system.
type OSFileSystem struct{}

// EvalSymlinks implements FileSystem.
func (OSFileSystem) EvalSymlinks(path string) (string, error) { return filepath.EvalSymlinks(path) }

// Open implements FileSystem.
func (OSFileSystem) Open(path string) (io.ReadCloser, error) { return os.Open(path) }

// FileState is what a Snapshot knows about one watched path.
type FileState struct {
	// Path is the watched path as given to Take.
	Path string
	// Missing is true when the path (or a symlink on the way) does not exist.
	Missing bool
	// Target is the path with every symlink resolved.
	Target string
	// SHA256 is the hex SHA-256 of the content.
	SHA256 string
	// Err is set when the path exists but could not be resolved or read
	// (permissions, I/O). Such a state compares equal only to the same error.
	Err string
}

// Snapshot is the state of a set of watched paths at one moment.
type Snapshot struct {
	Files []FileState
}

// Take records the state of every path. A nil fsys means OSFileSystem. Empty
// paths are ignored and duplicates are recorded once, so callers can pass
// optional paths without filtering them.
func Take(paths []string, fsys FileSystem) Snapshot {
	if fsys == nil {
		fsys = OSFileSystem{}
	}
	var s Snapshot
	seen := make(map[string]bool, len(paths))
	for _, p := range paths {
		if p == "" || seen[p] {
			continue
		}
		seen[p] = true
		s.Files = append(s.Files, stateOf(fsys, p))
	}
	return s
}

func stateOf(fsys FileSystem, path string) FileState {
	st := FileState{Path: path}
	target, err := fsys.EvalSymlinks(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			st.Missing = true
		} else {
			st.Err = fmt.Sprintf("resolve: %v", err)
		}
		return st
	}
	st.Target = target
	f, err := fsys.Open(target)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// Removed between the two calls: report what a later look sees.
			st.Missing, st.Target = true, ""
		} else {
			st.Err = fmt.Sprintf("open: %v", err)
		}
		return st
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		st.Err = fmt.Sprintf("read: %v", err)
		return st
	}
	st.SHA256 = hex.EncodeToString(h.Sum(nil))
	return st
}

// Errors returns the paths that could not be read, for logging. A snapshot
// with errors is still usable: an unreadable file compares equal to itself.
func (s Snapshot) Errors() error {
	var errs []error
	for _, f := range s.Files {
		if f.Err != "" {
			errs = append(errs, fmt.Errorf("%s: %s", f.Path, f.Err))
		}
	}
	return errors.Join(errs...)
}

func (s Snapshot) lookup(path string) (FileState, bool) {
	i := slices.IndexFunc(s.Files, func(f FileState) bool { return f.Path == path })
	if i < 0 {
		return FileState{}, false
	}
	return s.Files[i], true
}

// Changed reports whether any path watched in before looks different in
// after, and a reason naming the first such path and what changed. A path
// missing in both is unchanged; missing in one of them is a change. A path
// that after does not record at all counts as changed, since nothing proves
// it is the same.
func (before Snapshot) Changed(after Snapshot) (bool, string) {
	for _, b := range before.Files {
		a, ok := after.lookup(b.Path)
		if !ok {
			return true, fmt.Sprintf("%s: not recorded after the deployment", b.Path)
		}
		if why := diff(b, a); why != "" {
			return true, fmt.Sprintf("%s: %s", b.Path, why)
		}
	}
	for _, a := range after.Files {
		if _, ok := before.lookup(a.Path); !ok {
			return true, fmt.Sprintf("%s: not recorded before the deployment", a.Path)
		}
	}
	return false, ""
}

func diff(b, a FileState) string {
	switch {
	case b.Missing && a.Missing:
		return ""
	case b.Missing:
		return "created"
	case a.Missing:
		return "removed"
	case b.Err != "" || a.Err != "":
		if b.Err == a.Err {
			return ""
		}
		return fmt.Sprintf("readability changed (before: %q, after: %q)", orOK(b.Err), orOK(a.Err))
	case b.Target != a.Target:
		return fmt.Sprintf("now resolves to %s (was %s)", a.Target, b.Target)
	case b.SHA256 != a.SHA256:
		return "content changed"
	}
	return ""
}

func orOK(s string) string {
	if s == "" {
		return "ok"
	}
	return s
}

// Decide says whether the listener should exit after a deployment with the
// given nixos-rebuild action. Only `switch` and `test` activate the new
// configuration (and with it a new unit and binary) right away; `boot` and
// `dry-activate` change nothing that is running, so they never restart.
// Callers invoke it only after a deployment that completed.
func Decide(action string, before, after Snapshot) (restart bool, reason string) {
	switch action {
	case "switch", "test":
	default:
		return false, fmt.Sprintf("action %q does not activate a new configuration", action)
	}
	changed, why := before.Changed(after)
	if !changed {
		return false, "own unit and binary unchanged"
	}
	return true, why
}

// WatchPaths returns the paths a listener should watch: the unit file given by
// --watch-unit-file (may be empty), the path it was started as (argv0, when
// absolute) and the running executable.
//
// The running executable (os.Executable, which on Linux is the fully
// resolved /proc/self/exe) lives in the Nix store and never changes in place;
// a new version arrives through a new unit file that names a new store path,
// which the unit-file watch catches. argv0 matters when the listener is
// started through a mutable symlink (a profile's bin/), which a switch
// retargets.
func WatchPaths(unitFile, argv0 string) []string {
	paths := []string{unitFile}
	if filepath.IsAbs(argv0) {
		paths = append(paths, argv0)
	}
	if exe, err := os.Executable(); err == nil {
		paths = append(paths, exe)
	}
	return paths
}
