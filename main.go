// Command homelab-deploy deploys NixOS configurations across a fleet over
// NATS. See README.md.
package main

import (
	"os"
	"runtime/debug"

	"github.com/homelab-deploy/homelab-deploy/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	info, _ := debug.ReadBuildInfo()
	os.Exit(cli.Main(os.Args[1:], cli.OSEnv(resolveVersion(version, info))))
}

// resolveVersion prefers the version stamped with -ldflags; without one it
// uses what the Go toolchain recorded, so a plain `go build` or `go install`
// still says which code it is: the module version (go install ...@v1.2.3,
// or the pseudo-version Go 1.24+ derives from git), else the commit
// (devel+abc1234, -dirty with uncommitted changes), else "dev".
func resolveVersion(stamped string, info *debug.BuildInfo) string {
	if stamped != "dev" && stamped != "" {
		return stamped
	}
	if info == nil {
		return "dev"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	v := "devel+" + rev[:min(len(rev), 7)]
	if dirty {
		v += "-dirty"
	}
	return v
}
