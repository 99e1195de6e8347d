// Package nixos holds the NixOS modules of homelab-deploy (listener.nix,
// builder.nix, module.nix) and, as Go tests, their verification on a machine
// without nixpkgs: every .nix file of the repository parses, the module files
// evaluate against a stand-in lib (testdata/stub.nix) to the options, units,
// assertions and command lines SPEC.md asks for, the flake's outputs evaluate
// against a stand-in nixpkgs, and flake.nix's vendorHash matches go.mod.
//
// The tests need Debian's Nix (nix-bin: nix-instantiate, nix) and Go. They
// skip when those are missing, except with CI=true, where they fail.
package nixos
