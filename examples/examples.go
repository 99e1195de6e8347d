// Package examples carries the example files that the binary itself needs:
// the demo's flake, which `homelab-deploy demo` copies into a temporary git
// repository for its builder, so the demo works from an installed binary too.
package examples

import "embed"

// DemoFlake holds demo-flake/flake.nix: three hosts whose "system" is a
// derivation built by /bin/sh, so real Nix builds it offline in a moment.
//
//go:embed demo-flake
var DemoFlake embed.FS

// DemoFlakeDir is DemoFlake's top directory.
const DemoFlakeDir = "demo-flake"
