// Package e2e holds end-to-end tests of the built homelab-deploy binary
// against Debian's nats-server (and real Nix where builds are involved).
// The tests live in _test.go files; this file only names the package.
package e2e
