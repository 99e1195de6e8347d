package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv/buildtest"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// previewHost is a deploy server whose statuses are decoded as a deployer
// decodes them, and whose nixos-rebuild fails the test if it ever runs.
type previewHost struct {
	srv   *Server
	mu    sync.Mutex
	got   []protocol.DeployResponse
	final chan protocol.DeployResponse
	argv  [][]string
}

func newPreviewHost(t *testing.T, flakeURL string, p Preview) *previewHost {
	t.Helper()
	h := &previewHost{final: make(chan protocol.DeployResponse, 4)}
	inner := p.nix()
	p.Nix = func(ctx context.Context, argv []string, line func(string)) ([]byte, string, error) {
		h.mu.Lock()
		h.argv = append(h.argv, slices.Clone(argv))
		h.mu.Unlock()
		return inner(ctx, argv, line)
	}
	activate := func(argv []string) {
		t.Errorf("a preview ran %q", argv)
	}
	srv, err := NewServer(ServerConfig{
		Hostname: "web1", Tier: "test", FlakeURL: flakeURL, Timeout: 2 * time.Minute, Preview: p,
		Exec:    func(_ context.Context, argv []string) (string, error) { activate(argv); return "", nil },
		Rebuild: func(_ context.Context, r Rebuild) (string, error) { activate(r.Argv); return "", nil },
		BeforeDeploy: func(a protocol.Action) {
			t.Errorf("BeforeDeploy(%s) called for a preview", a)
		},
		Publish: func(subject string, data []byte) error {
			r, err := protocol.DecodeDeployStatus(data)
			if err != nil {
				t.Errorf("status on %s does not decode: %v\n%s", subject, err, data)
				return nil
			}
			h.mu.Lock()
			h.got = append(h.got, r)
			h.mu.Unlock()
			if r.Status.Terminal() {
				h.final <- r
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	return h
}

func (h *previewHost) ask(t *testing.T, id string) {
	t.Helper()
	b, _ := json.Marshal(protocol.DeployRequest{ID: id, Action: protocol.ActionDiff, Revision: "main", ReplyTo: "deploy.responses." + id})
	h.srv.Handle("deploy.test.web1", b)
}

func (h *previewHost) wait(t *testing.T) protocol.DeployResponse {
	t.Helper()
	select {
	case r := <-h.final:
		return r
	case <-time.After(2 * time.Minute):
		t.Fatal("no final status")
	}
	return protocol.DeployResponse{}
}

// With real Nix: the host builds the flake's new system, and its final
// status names the changed package (and the kernel when it changed), says
// whether a reboot is required, and the running system is untouched.
func TestPreviewWithRealNix(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		newKernel bool
	}{{"same kernel", false}, {"new kernel", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sys := buildtest.NewSystems(t, "web1", tc.newKernel)
			h := newPreviewHost(t, sys.URL, Preview{SystemRoot: sys.Root, Env: sys.Env})
			h.ask(t, "p1")
			r := h.wait(t)
			if r.Status != protocol.StatusCompleted || r.Error != protocol.ErrNone {
				t.Fatalf("final status %s/%s: %s", r.Status, r.Error, r.Message)
			}
			hello := "hello: " + buildtest.HelloOld + " → " + buildtest.HelloNew
			kernel := "linux: " + buildtest.KernelOld + " → " + buildtest.KernelNew
			if !strings.Contains(string(r.Diff), hello) || !strings.Contains(r.Message, hello) {
				t.Errorf("diff %q, message %q: want %q in both", r.Diff, r.Message, hello)
			}
			if strings.Contains(string(r.Diff), "linux") != tc.newKernel {
				t.Errorf("diff %q: kernel line %q present = %v, want %v", r.Diff, kernel, !tc.newKernel, tc.newKernel)
			}
			if r.RebootRequired == nil || *r.RebootRequired != tc.newKernel {
				t.Errorf("reboot_required %v, want %v", r.RebootRequired, tc.newKernel)
			}
			want := "reboot required: no"
			if tc.newKernel {
				want = "reboot required: yes (kernel, initrd differ from the booted system)"
			}
			if !strings.Contains(r.Message, want) || !strings.Contains(r.Message, "nothing was activated") {
				t.Errorf("message %q: want %q and that nothing was activated", r.Message, want)
			}
			if got := sys.RunningSystem(t); got != sys.Current {
				t.Errorf("run/current-system now points to %s, was %s", got, sys.Current)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.argv) != 2 || !slices.Equal(h.argv[0][:5], []string{"nix", "build", "--no-link", "--json", "--refresh"}) ||
				h.argv[0][5] != sys.URL+"?ref=main#nixosConfigurations.web1.config.system.build.toplevel" ||
				!slices.Equal(h.argv[1][:4], []string{"nix", "store", "diff-closures", sys.Current}) {
				t.Errorf("nix ran %q", h.argv)
			}
		})
	}
}

// fakeSystem makes a directory shaped like a system whose kernel link
// points to the file kernel in the same parent directory.
func fakeSystem(t *testing.T, dir, kernel string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	k := filepath.Join(filepath.Dir(dir), strings.TrimPrefix(kernel, "/"))
	if err := os.WriteFile(k, []byte(kernel), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(k, filepath.Join(dir, "kernel")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// fakeNix answers nix build with next and nix store diff-closures with
// diff; block, if set, holds nix build until it is closed.
func fakeNix(next, diff string, block chan struct{}) NixFunc {
	return func(ctx context.Context, argv []string, line func(string)) ([]byte, string, error) {
		if argv[1] == "build" {
			line("building '/nix/store/x-nixos-system-web1.drv'...")
			if block != nil {
				select {
				case <-block:
				case <-ctx.Done():
					return nil, "", ctx.Err()
				}
			}
			return []byte(`[{"drvPath":"/nix/store/x.drv","outputs":{"out":"` + next + `"}}]`), "", nil
		}
		return []byte(diff), "", nil
	}
}

// Nothing but nix build and nix store diff-closures runs for a preview:
// no nixos-rebuild (of any action), no switch-to-configuration, no
// profile; the host's slot is taken while it runs (a deploy arriving
// meanwhile is refused), and the output of nix build reaches the deployer.
func TestPreviewActivatesNothing(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	cur := fakeSystem(t, filepath.Join(root, "store/cur"), "/k1")
	next := fakeSystem(t, filepath.Join(root, "store/next"), "/k1")
	if err := os.MkdirAll(filepath.Join(root, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(cur, filepath.Join(root, "run/current-system")); err != nil {
		t.Fatal(err)
	}
	block := make(chan struct{})
	h := newPreviewHost(t, "git+file:///srv/cfg", Preview{SystemRoot: root, Nix: fakeNix(next, "\x1b[1mhello\x1b[0m: 1 → 2\n", block)})
	h.ask(t, "p1")
	// While nix build runs, a deploy is refused.
	b, _ := json.Marshal(protocol.DeployRequest{ID: "d1", Action: protocol.ActionSwitch, Revision: "main", ReplyTo: "deploy.responses.d1"})
	h.srv.Handle("deploy.test.web1", b)
	if r := h.wait(t); r.ID != "d1" || r.Status != protocol.StatusRejected || r.Error != protocol.ErrAlreadyRunning {
		t.Fatalf("a deploy during a preview got %s/%s (%s), want rejected/already_running", r.Status, r.Error, r.ID)
	}
	close(block)
	r := h.wait(t)
	if r.ID != "p1" || r.Status != protocol.StatusCompleted || r.Diff != "hello: 1 → 2" || r.RebootRequired == nil || *r.RebootRequired {
		t.Fatalf("final %+v, want completed with the diff cleaned of escapes and no reboot", r)
	}
	if r.Action != protocol.ActionDiff || r.Revision != "main" {
		t.Errorf("final status echoes action %q revision %q", r.Action, r.Revision)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, argv := range h.argv {
		joined := strings.Join(argv, " ")
		if argv[0] != "nix" || !(argv[1] == "build" || argv[1] == "store" && argv[2] == "diff-closures") ||
			strings.Contains(joined, "switch-to-configuration") || strings.Contains(joined, "/nix/var/nix/profiles") || strings.Contains(joined, "--profile") {
			t.Errorf("a preview ran %q", argv)
		}
	}
	var sawOutput bool
	for _, s := range h.got {
		sawOutput = sawOutput || s.ID == "p1" && s.Status == protocol.StatusOutput && slices.Contains(s.Lines, "building '/nix/store/x-nixos-system-web1.drv'...")
	}
	if !sawOutput {
		t.Errorf("nix build's output never reached the deployer: %+v", h.got)
	}
	if h.srv.LastDeploy() != nil {
		t.Errorf("a preview was recorded as the host's last deploy: %+v", h.srv.LastDeploy())
	}
}

// A reboot is required when the kernel differs from the booted system's,
// even when the running system already has the new kernel (switched to,
// not rebooted into).
func TestPreviewRebootComparesWithTheBootedSystem(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	booted := fakeSystem(t, filepath.Join(root, "store/booted"), "/k1")
	cur := fakeSystem(t, filepath.Join(root, "store/cur"), "/k2")
	next := fakeSystem(t, filepath.Join(root, "store/next"), "/k2")
	if err := os.MkdirAll(filepath.Join(root, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"run/current-system": cur, "run/booted-system": booted} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	h := newPreviewHost(t, "git+file:///srv/cfg", Preview{SystemRoot: root, Nix: fakeNix(next, "", nil)})
	h.ask(t, "p1")
	r := h.wait(t)
	if r.Status != protocol.StatusCompleted || r.RebootRequired == nil || !*r.RebootRequired || !strings.Contains(r.Message, "no package changed; reboot required: yes (kernel differ") {
		t.Fatalf("final %s %v %q, want completed, reboot required for the kernel, no package changed", r.Status, r.RebootRequired, r.Message)
	}
}

// A host without a running system (not NixOS) fails the preview and says
// why; a failing nix build fails it with Nix's output.
func TestPreviewFailures(t *testing.T) {
	t.Parallel()
	next := fakeSystem(t, filepath.Join(t.TempDir(), "next"), "/k1")
	h := newPreviewHost(t, "git+file:///srv/cfg", Preview{SystemRoot: t.TempDir(), Nix: fakeNix(next, "", nil)})
	h.ask(t, "p1")
	if r := h.wait(t); r.Status != protocol.StatusFailed || r.Error != protocol.ErrBuildFailed || !strings.Contains(r.Message, "no running system to compare it with") {
		t.Errorf("without a running system: %s/%s %q", r.Status, r.Error, r.Message)
	}
	broken := func(context.Context, []string, func(string)) ([]byte, string, error) {
		return nil, "error: attribute 'web1' missing", errors.New("exit status 1")
	}
	h = newPreviewHost(t, "git+file:///srv/cfg", Preview{SystemRoot: t.TempDir(), Nix: broken})
	h.ask(t, "p2")
	if r := h.wait(t); r.Status != protocol.StatusFailed || r.Error != protocol.ErrBuildFailed || !strings.Contains(r.Message, "attribute 'web1' missing") || r.RebootRequired != nil {
		t.Errorf("failed build: %s/%s %q reboot %v", r.Status, r.Error, r.Message, r.RebootRequired)
	}
}

func TestPreviewInput(t *testing.T) {
	t.Parallel()
	c, err := Input{Hostname: "web1", Diff: true}.Check()
	if err != nil || c.Request.Action != protocol.ActionDiff || c.Request.Revision != DefaultBranch {
		t.Fatalf("diff: %+v, %v", c.Request, err)
	}
	for _, in := range []Input{
		{Hostname: "web1", Diff: true, Action: "boot"},
		{All: true, Diff: true, Batch: "1"},
	} {
		if _, err := in.Check(); err == nil || !strings.Contains(err.Error(), "diff") {
			t.Errorf("%+v: err %v, want a refusal that names diff", in, err)
		}
	}
}

// A listener that predates previews decodes requests with ValidateAction,
// which refuses "diff" (invalid_action), so nothing runs there; the
// deployer says why.
func TestOlderListenersRefusePreviews(t *testing.T) {
	t.Parallel()
	if protocol.ValidateAction(string(protocol.ActionDiff)) == nil || slices.Contains(protocol.Actions(), protocol.ActionDiff) {
		t.Fatal("diff must stay out of the nixos-rebuild actions that older listeners accept")
	}
	res := Result{Action: protocol.ActionDiff, Hosts: []HostResult{
		{Hostname: "old", Status: protocol.StatusRejected, Error: protocol.ErrInvalidAction, Message: `action "diff" is not one of switch, boot, test, dry-activate`},
		{Hostname: "new", Status: protocol.StatusCompleted, Message: "preview"},
	}}
	for i := range res.Hosts {
		explainOldListener(res.Action, &res.Hosts[i])
	}
	if !strings.HasSuffix(res.Hosts[0].Message, oldListenerNote) || res.Hosts[1].Message != "preview" {
		t.Errorf("messages %q", []string{res.Hosts[0].Message, res.Hosts[1].Message})
	}
}
