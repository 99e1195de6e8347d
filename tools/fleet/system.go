package fleet

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// System is what the registry reports about a host's NixOS system.
type System struct {
	// Current and Booted are the store paths of the running and the
	// booted system ("" when the link is missing: not NixOS).
	Current, Booted string
	// RebootRequired: the kernel, initrd or kernel modules of the two
	// differ, so only a reboot activates what was switched to.
	RebootRequired bool
	// Generation is the system profile's generation; 0 when unknown.
	Generation int
	// UptimeSeconds is the host's uptime; 0 when unknown.
	UptimeSeconds float64
}

// SystemPaths are where a host's state is read; Root is prefixed to each
// (tests use a fake system in a temporary directory).
type SystemPaths struct {
	Root string
}

// The paths, relative to the root.
const (
	currentSystemPath = "run/current-system"
	bootedSystemPath  = "run/booted-system"
	systemProfilePath = "nix/var/nix/profiles/system"
	uptimePath        = "proc/uptime"
)

// bootFiles are the links inside a system whose change needs a reboot.
var bootFiles = []string{"kernel", "initrd", "kernel-modules"}

var generationLink = regexp.MustCompile(`^system-([0-9]{1,9})-link$`)

func (p SystemPaths) path(rel string) string {
	root := p.Root
	if root == "" {
		root = "/"
	}
	return filepath.Join(root, rel)
}

// Read reads the host's system state. Anything missing is left zero: a
// listener on a host that is not NixOS (a test, the demo) still registers.
func (p SystemPaths) Read() System {
	var s System
	cur, curErr := filepath.EvalSymlinks(p.path(currentSystemPath))
	boot, bootErr := filepath.EvalSymlinks(p.path(bootedSystemPath))
	if curErr == nil {
		s.Current = cur
	}
	if bootErr == nil {
		s.Booted = boot
	}
	if curErr == nil && bootErr == nil && cur != boot {
		s.RebootRequired = len(BootChanges(boot, cur)) > 0
	}
	if link, err := os.Readlink(p.path(systemProfilePath)); err == nil {
		if m := generationLink.FindStringSubmatch(filepath.Base(link)); m != nil {
			s.Generation, _ = strconv.Atoi(m[1])
		}
	}
	if b, err := readSmall(p.path(uptimePath)); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if v, err := strconv.ParseFloat(f[0], 64); err == nil && v >= 0 {
				s.UptimeSeconds = v
			}
		}
	}
	return s
}

// BootChanges lists the links of system next (kernel, initrd,
// kernel-modules) whose targets differ from those of system booted: what
// only a reboot would activate. A link missing from both is no change.
// The fleet entry's reboot_required and a deploy preview both use it.
func BootChanges(booted, next string) []string {
	var changed []string
	for _, f := range bootFiles {
		if resolve(filepath.Join(booted, f)) != resolve(filepath.Join(next, f)) {
			changed = append(changed, f)
		}
	}
	return changed
}

// resolve follows a link to its target; a missing link resolves to "".
func resolve(path string) string {
	t, err := filepath.EvalSymlinks(path)
	if err != nil {
		return ""
	}
	return t
}

// readSmall reads at most 4 KiB of a file.
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 4096)
	n, err := f.Read(buf)
	if n > 0 {
		return buf[:n], nil
	}
	return nil, err
}
