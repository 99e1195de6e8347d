package deploy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// DefaultLockFile is where the NixOS module keeps the listener's rebuild
// lock: /run is emptied at boot, and so is any stale lock.
const DefaultLockFile = "/run/homelab-deploy/listener.lock"

// RebuildLock is a lock that a running nixos-rebuild holds for as long as it,
// or anything it started, lives, even when the listener that started it
// was killed: an flock(2) on a file that the listener opens for each
// deploy and hands to nixos-rebuild as an inherited descriptor. The lock
// belongs to the open file, which the child shares, so it is released only
// when the last descriptor closes. A listener restarted while a rebuild of
// its previous life still runs finds the lock taken and refuses deploys
// (already_running) until it is free again.
//
// The file also records the rebuild's pid, request id and start time, for
// the message that says who holds it.
type RebuildLock struct {
	path string
	// mu keeps this process's own probes (discovery's busy flag) and
	// acquisitions from mistaking each other for a foreign holder.
	mu sync.Mutex
}

// ErrLockHeld is returned (as *LockHeldError) when another process holds
// the rebuild lock.
var ErrLockHeld = errors.New("rebuild lock held")

// LockHeldError says who holds the rebuild lock, as far as the file tells.
type LockHeldError struct {
	Path string
	// Holder is what the file records (zero when it records nothing
	// readable).
	Holder LockHolder
}

// LockHolder is the record a rebuild leaves in the lock file.
type LockHolder struct {
	PID     int
	ID      string
	Started time.Time
}

func (e *LockHeldError) Error() string {
	who := "a nixos-rebuild started by an earlier listener process"
	var details []string
	if e.Holder.PID > 0 {
		p := "pid " + strconv.Itoa(e.Holder.PID)
		if !processAlive(e.Holder.PID) {
			// nixos-rebuild itself is gone; something it started holds on.
			who = "a process left behind by a nixos-rebuild of an earlier listener process"
			p += ", no longer running"
		}
		details = append(details, p)
	}
	if e.Holder.ID != "" {
		details = append(details, "request "+e.Holder.ID)
	}
	if !e.Holder.Started.IsZero() {
		details = append(details, "since "+e.Holder.Started.UTC().Format(time.RFC3339))
	}
	if len(details) > 0 {
		who += " (" + strings.Join(details, ", ") + ")"
	}
	return who + " still holds the rebuild lock " + e.Path + "; its outcome is in the host's journal, not reported here; try again when it has finished (`fuser -v " + e.Path + "` shows the holder)"
}

func (e *LockHeldError) Unwrap() error { return ErrLockHeld }

// OpenRebuildLock checks that the lock file at path can be created (its
// directory is made, mode 0755, when missing) and returns the lock.
func OpenRebuildLock(path string) (*RebuildLock, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("lock file %q: give an absolute path, e.g. %s", path, DefaultLockFile)
	}
	l := &RebuildLock{path: filepath.Clean(path)}
	f, err := l.open()
	if err != nil {
		return nil, err
	}
	f.Close()
	return l, nil
}

// Path returns the lock file's path.
func (l *RebuildLock) Path() string { return l.path }

func (l *RebuildLock) open() (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(l.path), 0o755); err != nil {
		return nil, fmt.Errorf("lock file %s: %w; create the directory or choose another path with --lock-file", l.path, err)
	}
	// O_CLOEXEC (Go's default): only the nixos-rebuild it is handed to
	// inherits it, never another child of the listener.
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock file %s: %w; check its permissions or choose another path with --lock-file", l.path, err)
	}
	return f, nil
}

// Acquire takes the lock for one rebuild, or returns a *LockHeldError when
// another process holds it.
func (l *RebuildLock) Acquire() (*HeldLock, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acquire()
}

func (l *RebuildLock) acquire() (*HeldLock, error) {
	f, err := l.open()
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := readHolder(f)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &LockHeldError{Path: l.path, Holder: holder}
		}
		return nil, fmt.Errorf("lock file %s: flock: %w", l.path, err)
	}
	return &HeldLock{f: f}, nil
}

// Held reports whether another process holds the lock, and what it
// recorded; it takes the lock for an instant when it is free.
func (l *RebuildLock) Held() (*LockHeldError, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, err := l.acquire()
	if err != nil {
		var held *LockHeldError
		if errors.As(err, &held) {
			return held, true
		}
		return nil, false
	}
	h.f.Close()
	return nil, false
}

// HeldLock is the lock taken for one rebuild.
type HeldLock struct {
	f    *os.File
	once sync.Once
}

// File is the descriptor to hand to nixos-rebuild (exec.Cmd.ExtraFiles).
func (h *HeldLock) File() *os.File { return h.f }

// Record writes who holds the lock into the file.
func (h *HeldLock) Record(pid int, id string, started time.Time) {
	rec := fmt.Sprintf("%d %s %s\n", pid, orDash(id), started.UTC().Format(time.RFC3339))
	if err := h.f.Truncate(0); err == nil {
		_, _ = h.f.WriteAt([]byte(rec), 0)
	}
}

// Release gives up this process's hold. The lock is free once every
// process that inherited the descriptor has closed it too (execx kills
// the rebuild's process group first). The record stays: should something
// the rebuild left behind still hold the lock, it says whose it was.
func (h *HeldLock) Release() {
	h.once.Do(func() { _ = h.f.Close() })
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// readHolder reads the record in the lock file. The file is local and
// root's, but what it says ends up in a status: each field must pass its
// validator or is left out.
func readHolder(f *os.File) LockHolder {
	buf := make([]byte, 256)
	n, _ := f.ReadAt(buf, 0)
	return ParseLockRecord(string(buf[:n]))
}

// ParseLockRecord parses "<pid> <request id or -> <RFC 3339 time>"; fields
// that do not validate are left zero.
func ParseLockRecord(s string) LockHolder {
	var h LockHolder
	line, _, _ := strings.Cut(s, "\n")
	f := strings.Fields(line)
	if len(f) > 0 && len(f[0]) <= 10 && strings.Trim(f[0], "0123456789") == "" {
		if pid, err := strconv.Atoi(f[0]); err == nil && pid > 0 {
			h.PID = pid
		}
	}
	if len(f) > 1 && f[1] != "-" && protocol.ValidateRequestID(f[1]) == nil {
		h.ID = f[1]
	}
	if len(f) > 2 {
		if t, err := time.Parse(time.RFC3339, f[2]); err == nil {
			h.Started = t
		}
	}
	return h
}

// processAlive reports whether pid exists (signal 0 reaches it).
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
