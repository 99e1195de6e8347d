package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/agents/builder"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv/buildtest"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/build"
)

// The build benchmark's fleet: buildHosts hosts whose system derivations
// each sleep buildSleep.
const (
	buildHosts = 8
	buildSleep = 2 * time.Second
)

// BenchmarkBuild builds 8 hosts with real Nix through the build request
// half and an in-process builder daemon, at --max-parallel 1 and at the
// default, against the ideal ceil(8/p) × 2 s and against raw `nix build`
// processes run p at a time on the same flake (no homelab-deploy, no host
// listing). Every round commits a new nonce, so nothing is cached.
func BenchmarkBuild(b *testing.B) {
	for _, p := range []int{1, build.DefaultMaxParallel} {
		b.Run(fmt.Sprintf("max-parallel=%d", p), func(b *testing.B) { benchBuild(b, p) })
	}
}

func benchBuild(b *testing.B, p int) {
	nix := buildtest.RequireNix(b)
	env := append(os.Environ(), "NIX_CONFIG="+buildtest.NixConfig)
	repo := newBuildRepo(b)

	n := testenv.StartNATS(b, testenv.User{Name: "all"})
	conf := filepath.Join(b.TempDir(), "builder.yaml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "repos:\n  bench:\n    url: %q\n    default_branch: main\n", repo.url), 0o600); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, errc := make(chan struct{}), make(chan error, 1)
	go func() {
		errc <- builder.Run(ctx, builder.Config{
			ConfigFile: conf, Timeout: 5 * time.Minute, MaxParallel: p, Nix: nix, NixEnv: env, Version: "bench",
			Conn: n.Connect(b, "all"), Ready: func(*builder.Builder) { close(ready) },
		})
	}()
	b.Cleanup(func() { cancel(); <-errc })
	select {
	case <-ready:
	case err := <-errc:
		b.Fatalf("builder stopped: %v", err)
	}
	client := n.Connect(b, "all")

	var ours, listing, raw samples
	for b.Loop() {
		repo.commitNonce(b)
		start := time.Now()
		var started time.Duration
		res, err := build.Send(context.Background(), client, build.Request{Repo: "bench", Target: protocol.BuildTargetAll}, build.Options{Timeout: 10 * time.Minute},
			func(e tools.Event) {
				if e.Status == protocol.StatusStarted {
					started = time.Since(start)
				}
			})
		total := time.Since(start)
		if err != nil || !res.Success || res.Succeeded != buildHosts {
			b.Fatalf("build: %v %s", err, res.Summary())
		}
		ours, listing = append(ours, total), append(listing, started)

		repo.commitNonce(b)
		raw = append(raw, repo.rawBuild(b, nix, env, p))
	}
	ideal := time.Duration((buildHosts+p-1)/p) * buildSleep
	name := fmt.Sprintf("build 8 hosts, max-parallel %d", p)
	target := 1.25
	record(b, row{Bench: name, Measure: "request to final status vs ideal", Ours: ours.median() / 1000, Baseline: ms(ideal) / 1000, Unit: "s", Target: target,
		Note: fmt.Sprintf("ideal ceil(8/%d) x 2 s; includes listing the hosts with nix eval (%.2f s)", p, listing.median()/1000)})
	record(b, row{Bench: name, Measure: "raw nix build vs ideal", Ours: raw.median() / 1000, Baseline: ms(ideal) / 1000, Unit: "s",
		Note: fmt.Sprintf("%d `nix build` processes, %d at a time, no homelab-deploy", buildHosts, p)})
	record(b, row{Bench: name, Measure: "request to final status vs raw nix build", Ours: ours.median() / 1000, Baseline: raw.median() / 1000, Unit: "s"})
}

// buildRepo is a git repository holding a flake of buildHosts hosts.
type buildRepo struct {
	dir, url string
	rounds   int
}

func newBuildRepo(b *testing.B) *buildRepo {
	b.Helper()
	dir := b.TempDir()
	r := &buildRepo{dir: dir, url: "git+file://" + dir}
	r.git(b, "init", "-q", "-b", "main")
	r.writeFlake(b)
	r.git(b, "add", "flake.nix")
	r.git(b, "commit", "-q", "-m", "hosts")
	return r
}

// writeFlake writes a flake whose hosts' toplevel derivations sleep and
// carry a fresh nonce. The system is spelled out (flakes evaluate purely,
// without builtins.currentSystem) and so is /bin/sleep: a builder's PATH is
// unset, and a bare `sleep` fails without failing the build.
func (r *buildRepo) writeFlake(b *testing.B) {
	b.Helper()
	r.rounds++
	nonce := protocol.NewID() + strconv.Itoa(r.rounds)
	var s strings.Builder
	s.WriteString("{\n  outputs = { self }: let\n")
	fmt.Fprintf(&s, "    host = name: { config.system.build.toplevel = derivation {\n      name = \"bench-${name}\"; system = %q; builder = \"/bin/sh\";\n", buildtest.System())
	fmt.Fprintf(&s, "      args = [ \"-c\" \"/bin/sleep %d; echo > $out\" ]; nonce = %q;\n    }; };\n", int(buildSleep.Seconds()), nonce)
	s.WriteString("  in {\n    nixosConfigurations = {\n")
	for i := 1; i <= buildHosts; i++ {
		fmt.Fprintf(&s, "      h%d = host \"h%d\";\n", i, i)
	}
	s.WriteString("    };\n  };\n}\n")
	if err := os.WriteFile(filepath.Join(r.dir, "flake.nix"), []byte(s.String()), 0o644); err != nil {
		b.Fatal(err)
	}
}

func (r *buildRepo) commitNonce(b *testing.B) {
	b.Helper()
	r.writeFlake(b)
	r.git(b, "commit", "-q", "-am", "nonce")
}

// rawBuild runs `nix build` for every host, p at a time, as a shell loop
// or xargs -P would, and returns the wall time.
func (r *buildRepo) rawBuild(b *testing.B, nix string, env []string, p int) time.Duration {
	b.Helper()
	hosts := make(chan int, buildHosts)
	for i := 1; i <= buildHosts; i++ {
		hosts <- i
	}
	close(hosts)
	var wg sync.WaitGroup
	errs := make(chan error, buildHosts)
	start := time.Now()
	for range p {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for h := range hosts {
				ref := fmt.Sprintf("%s?ref=main#nixosConfigurations.h%d.config.system.build.toplevel", r.url, h)
				cmd := exec.Command(nix, "build", "--no-link", "--json", ref)
				cmd.Env = env
				if out, err := cmd.CombinedOutput(); err != nil {
					errs <- fmt.Errorf("nix build h%d: %v\n%s", h, err, out)
				}
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return d
}

func (r *buildRepo) git(b *testing.B, args ...string) {
	b.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=bench", "GIT_AUTHOR_EMAIL=bench@example.com",
		"GIT_COMMITTER_NAME=bench", "GIT_COMMITTER_EMAIL=bench@example.com", "GIT_CONFIG_GLOBAL=/dev/null")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
