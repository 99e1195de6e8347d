// Package bench holds homelab-deploy's benchmarks. Every figure is measured
// against a physical baseline in the same run (raw nats.go scatter-gather
// and request-reply, raw nix build, a bare nats.go process), because the
// machines they run on are shared and noisy: a ratio survives that, an
// absolute time does not.
//
// Run them with scripts/bench, which also prints the table that
// docs/BENCHMARKS.md records, or directly:
//
//	go test -bench . -run '^$' -benchtime 15x ./bench/
//
// Nothing here is an ordinary test: `go test ./...` only compiles this
// package. The benchmarks that need outside programs (nats-server, nix,
// sshd) skip with a message when they are missing.
package bench
