package bench

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/natsauth"
	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
)

// settleIdle is how long a daemon runs idle before its RSS is read.
const settleIdle = 3 * time.Second

// BenchmarkFootprint measures a real `homelab-deploy listener` process
// connected to Debian's nats-server: its idle resident memory (VmRSS from
// /proc) and its binary size, each against bench/rawlistener, a bare
// nats.go program doing the same subscriptions, built the same way.
func BenchmarkFootprint(b *testing.B) {
	natsBin := testenv.RequireBinary(b, "nats-server")
	dir := b.TempDir()
	bins := map[string]string{}
	for _, t := range []struct{ name, pkg, ldflags string }{
		{"ours", "..", ""},
		{"ours-stripped", "..", "-s -w"},
		{"raw", "./rawlistener", ""},
		{"raw-stripped", "./rawlistener", "-s -w"},
	} {
		out := filepath.Join(dir, t.name)
		cmd := exec.Command("go", "build", "-ldflags", t.ldflags, "-o", out, t.pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			b.Fatalf("go build %s: %v", t.pkg, err)
		}
		bins[t.name] = out
	}

	cred := testenv.NewCred(b, dir, "listener", *testenv.ListenerPerms("test", "h0000", ""))
	port := testenv.FreePort(b)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listen: 127.0.0.1:%d\n\n%s", port, natsauth.Render(testenv.AuthUsers(cred)))), 0o600); err != nil {
		b.Fatal(err)
	}
	srv := exec.Command(natsBin, "-c", conf)
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	waitPort(b, port)

	var oursKiB, rawKiB []int
	for b.Loop() {
		oursKiB = append(oursKiB, idleRSS(b, bins["ours"], "level=INFO msg=\"listener ready\"",
			"listener", "--hostname", "h0000", "--tier", "test", "--nats-url", url, "--nkey-file", cred.SeedFile,
			"--flake-url", "git+https://git.example.com/homelab/nixos-configs.git", "--log-format", "text"))
		rawKiB = append(rawKiB, idleRSS(b, bins["raw"], "ready", "-nats-url", url, "-nkey-file", cred.SeedFile, "-hostname", "h0000"))
	}
	ours, raw := medianInt(oursKiB), medianInt(rawKiB)
	record(b, row{Bench: "footprint", Measure: "idle listener RSS", Ours: float64(ours) / 1024, Baseline: float64(raw) / 1024, Unit: "MiB", Limit: 20,
		Note: "VmRSS of `homelab-deploy listener` connected and subscribed, after " + settleIdle.String() + " idle; baseline bench/rawlistener"})
	for _, v := range []struct{ ours, raw, what string }{
		{"ours", "raw", "binary size"},
		{"ours-stripped", "raw-stripped", "binary size, -ldflags \"-s -w\""},
	} {
		record(b, row{Bench: "footprint", Measure: v.what, Ours: fileMiB(b, bins[v.ours]), Baseline: fileMiB(b, bins[v.raw]), Unit: "MiB"})
	}
}

// idleRSS starts bin with args, waits for ready in its output, lets it sit
// idle, reads its VmRSS in KiB and stops it.
func idleRSS(b *testing.B, bin, ready string, args ...string) int {
	b.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir()}
	var out testenv.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(out.String(), ready) {
		if time.Now().After(deadline) {
			b.Fatalf("%s did not print %q; output:\n%s", filepath.Base(bin), ready, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(settleIdle)
	return vmRSS(b, cmd.Process.Pid)
}

// vmRSS reads a process's resident set size in KiB from /proc.
func vmRSS(b *testing.B, pid int) int {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kib, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				b.Fatal(err)
			}
			return kib
		}
	}
	b.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

func fileMiB(b *testing.B, path string) float64 {
	b.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	return float64(fi.Size()) / (1 << 20)
}

func medianInt(v []int) int {
	c := slices.Clone(v)
	slices.Sort(c)
	return c[len(c)/2]
}

func waitPort(b *testing.B, port int) {
	b.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Fatalf("port %d did not open", port)
}
