// Command homelab-deploy deploys NixOS configurations across a fleet over
// NATS. See README.md.
package main

import (
	"os"

	"github.com/homelab-deploy/homelab-deploy/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(cli.Main(os.Args[1:], cli.OSEnv(version)))
}
