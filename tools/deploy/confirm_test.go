package deploy

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// confirmRig is a deploy server without NATS: the executor records every
// argv, Publish records every status, final delivers the terminal one.
type confirmRig struct {
	srv   *Server
	mu    sync.Mutex
	argvs [][]string
	sent  []protocol.DeployResponse
	final chan protocol.DeployResponse
}

func newConfirmRig(t *testing.T, c Confirm) *confirmRig {
	t.Helper()
	r := &confirmRig{final: make(chan protocol.DeployResponse, 4)}
	if c.Retry == 0 {
		c.Retry = 5 * time.Millisecond
	}
	srv, err := NewServer(ServerConfig{
		Hostname: "h1", Tier: "test", FlakeURL: "git+file:///srv/cfg", Confirm: c,
		Exec: func(_ context.Context, argv []string) (string, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.argvs = append(r.argvs, argv)
			return "", nil
		},
		Publish: func(_ string, data []byte) error {
			var resp protocol.DeployResponse
			if err := json.Unmarshal(data, &resp); err != nil {
				t.Error(err)
			}
			r.mu.Lock()
			r.sent = append(r.sent, resp)
			r.mu.Unlock()
			if resp.Status.Terminal() {
				r.final <- resp
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.srv = srv
	return r
}

func (r *confirmRig) deploy(t *testing.T, action protocol.Action) protocol.DeployResponse {
	t.Helper()
	b, _ := json.Marshal(protocol.DeployRequest{ID: "r1", Action: action, Revision: "main", ReplyTo: "deploy.responses.r1"})
	r.srv.Handle("deploy.test.h1", b)
	return <-r.final
}

func (r *confirmRig) commands() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, a := range r.argvs {
		out = append(out, strings.Join(a, " "))
	}
	return out
}

func mustChecks(t *testing.T, specs ...string) []HealthCheck {
	t.Helper()
	c, err := ParseHealthChecks(specs)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const rebuildSwitch = "nixos-rebuild switch --flake git+file:///srv/cfg?ref=main#h1"

func TestConfirmAfterActivation(t *testing.T) {
	t.Parallel()
	profile := filepath.Join(t.TempDir(), "system")
	tests := []struct {
		name      string
		action    protocol.Action
		checks    []string
		connected bool
		wantCmds  []string
		wantCode  protocol.ErrorCode
		wantInMsg []string
	}{
		{
			name: "failing check after switch rolls back", action: protocol.ActionSwitch,
			checks: []string{"true", "timeout=5s sh -c 'echo sshd is down; exit 3'"}, connected: true,
			wantCmds:  []string{rebuildSwitch, "nixos-rebuild switch --rollback"},
			wantCode:  protocol.ErrRolledBack,
			wantInMsg: []string{"switch of main rolled back", "health check `sh -c 'echo sshd is down; exit 3'`", "exit status 3", "sshd is down", "restored the previous configuration"},
		},
		{
			name: "passing checks keep the switch", action: protocol.ActionSwitch,
			checks: []string{"true", "sh -c 'exit 0'"}, connected: true,
			wantCmds:  []string{rebuildSwitch},
			wantInMsg: []string{"completed", "2 health check(s) passed"},
		},
		{
			name: "failing check after test re-activates the profile", action: protocol.ActionTest,
			checks: []string{"false"}, connected: true,
			wantCmds:  []string{"nixos-rebuild test --flake git+file:///srv/cfg?ref=main#h1", profile + "/bin/switch-to-configuration test"},
			wantCode:  protocol.ErrRolledBack,
			wantInMsg: []string{"test of main rolled back", "health check `false`"},
		},
		{
			name: "NATS not back rolls back", action: protocol.ActionSwitch,
			connected: false,
			wantCmds:  []string{rebuildSwitch, "nixos-rebuild switch --rollback"},
			wantCode:  protocol.ErrRolledBack,
			wantInMsg: []string{"the NATS connection was not back within the"},
		},
		{
			name: "boot is never rolled back", action: protocol.ActionBoot,
			checks: []string{"false"}, connected: false,
			wantCmds: []string{"nixos-rebuild boot --flake git+file:///srv/cfg?ref=main#h1"},
		},
		{
			name: "dry-activate is never rolled back", action: protocol.ActionDryActivate,
			checks: []string{"false"}, connected: false,
			wantCmds: []string{"nixos-rebuild dry-activate --flake git+file:///srv/cfg?ref=main#h1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			connected := tt.connected
			r := newConfirmRig(t, Confirm{
				Timeout: 300 * time.Millisecond, Checks: mustChecks(t, tt.checks...),
				Connected:             func() bool { return connected },
				SwitchToConfiguration: profile + "/bin/switch-to-configuration",
			})
			got := r.deploy(t, tt.action)
			if cmds := r.commands(); !slices.Equal(cmds, tt.wantCmds) {
				t.Errorf("commands run\n got %q\nwant %q", cmds, tt.wantCmds)
			}
			wantStatus := protocol.StatusCompleted
			if tt.wantCode != protocol.ErrNone {
				wantStatus = protocol.StatusFailed
			}
			if got.Status != wantStatus || got.Error != tt.wantCode {
				t.Errorf("final status %s/%s, want %s/%s (message %q)", got.Status, got.Error, wantStatus, tt.wantCode, got.Message)
			}
			for _, w := range tt.wantInMsg {
				if !strings.Contains(got.Message, w) {
					t.Errorf("message %q does not contain %q", got.Message, w)
				}
			}
			if l := r.srv.LastDeploy(); l == nil || l.Status != wantStatus || l.Error != tt.wantCode {
				t.Errorf("last deploy %+v, want %s/%s", l, wantStatus, tt.wantCode)
			}
		})
	}
}

// A check that fails at first and passes once the service is up (here: a
// file appears on the third try) is retried within the window; the switch
// stays.
func TestHealthCheckRetriedWithinWindow(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := `n=$(cat "$1" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$1"; [ $n -ge 3 ]`
	r := newConfirmRig(t, Confirm{
		Timeout: time.Hour, Checks: []HealthCheck{{Argv: []string{"sh", "-c", script, "sh", filepath.Join(dir, "tries")}, Timeout: time.Minute}},
		Connected: func() bool { return true },
	})
	got := r.deploy(t, protocol.ActionSwitch)
	if got.Status != protocol.StatusCompleted {
		t.Fatalf("final %s/%s: %s", got.Status, got.Error, got.Message)
	}
	if cmds := r.commands(); !slices.Equal(cmds, []string{rebuildSwitch}) {
		t.Errorf("commands %q, want the switch only", cmds)
	}
}

// A health check that hangs is killed at its own timeout and counts as a
// failure naming the timeout.
func TestHealthCheckTimeout(t *testing.T) {
	t.Parallel()
	r := newConfirmRig(t, Confirm{
		Timeout: 400 * time.Millisecond, Checks: mustChecks(t, "timeout=50ms sleep 60"),
		Connected: func() bool { return true },
	})
	got := r.deploy(t, protocol.ActionSwitch)
	if got.Error != protocol.ErrRolledBack || !strings.Contains(got.Message, "no exit within 50ms (killed)") {
		t.Fatalf("final %s/%s: %q", got.Status, got.Error, got.Message)
	}
}

// A final status decided while NATS was down is sent again when a
// discovery request proves a deployer is back; one sent while connected is
// not.
func TestRedeliverOfflineFinalStatus(t *testing.T) {
	t.Parallel()
	var up atomic.Bool
	r := newConfirmRig(t, Confirm{Timeout: 50 * time.Millisecond, Connected: up.Load})
	first := r.deploy(t, protocol.ActionSwitch)
	if first.Error != protocol.ErrRolledBack {
		t.Fatalf("final %s/%s: %s", first.Status, first.Error, first.Message)
	}
	up.Store(true)
	r.srv.Redeliver()
	again := <-r.final
	if again.ID != "r1" || again.Error != protocol.ErrRolledBack || again.Message != first.Message {
		t.Fatalf("redelivered %+v, want the same final status as %+v", again, first)
	}

	r2 := newConfirmRig(t, Confirm{Timeout: time.Minute, Connected: func() bool { return true }})
	r2.deploy(t, protocol.ActionSwitch)
	r2.srv.Redeliver()
	r2.mu.Lock()
	n := len(r2.sent)
	r2.mu.Unlock()
	if n != 3 {
		t.Fatalf("%d statuses after Redeliver with nothing pending, want 3 (accepted, started, completed)", n)
	}
}

func TestParseHealthCheck(t *testing.T) {
	t.Parallel()
	good := []struct {
		in      string
		argv    []string
		timeout time.Duration
	}{
		{"systemctl is-active sshd.service", []string{"systemctl", "is-active", "sshd.service"}, DefaultHealthCheckTimeout},
		{"timeout=5s /run/current-system/sw/bin/curl -fsS http://localhost:8080/health", []string{"/run/current-system/sw/bin/curl", "-fsS", "http://localhost:8080/health"}, 5 * time.Second},
		{`  sh  -c 'test -e /run/nginx.pid'  `, []string{"sh", "-c", "test -e /run/nginx.pid"}, DefaultHealthCheckTimeout},
		{`ping -c1 "" 'a"b' "it's"`, []string{"ping", "-c1", "", `a"b`, "it's"}, DefaultHealthCheckTimeout},
		{"echo $HOME ; rm -rf / `x`", []string{"echo", "$HOME", ";", "rm", "-rf", "/", "`x`"}, DefaultHealthCheckTimeout},
	}
	for _, g := range good {
		h, err := ParseHealthCheck(g.in)
		if err != nil {
			t.Errorf("ParseHealthCheck(%q): %v", g.in, err)
			continue
		}
		if !slices.Equal(h.Argv, g.argv) || h.Timeout != g.timeout {
			t.Errorf("ParseHealthCheck(%q) = %q %s, want %q %s", g.in, h.Argv, h.Timeout, g.argv, g.timeout)
		}
		if back, err := ParseHealthCheck(h.String()); err != nil || !slices.Equal(back.Argv, h.Argv) {
			t.Errorf("String() %q does not parse back to %q: %v", h.String(), h.Argv, err)
		}
	}
	bad := map[string]string{
		"":                                "names no program",
		"   ":                             "names no program",
		"timeout=5s":                      "names no program",
		"timeout=soon true":               "not a timeout",
		"timeout=-1s true":                "not a timeout",
		"timeout=2h true":                 "at most 1h",
		"-rf /":                           "starts with '-'",
		"./check.sh":                      "relative path",
		"bin/check":                       "relative path",
		"$(reboot)":                       "only letters, digits",
		"sh -c 'unterminated":             "unterminated ' quote",
		"true\nreboot":                    "control or invisible",
		"true \x1b[31m":                   "control or invisible",
		"true \u202e":                     "control or invisible",
		strings.Repeat("a", 2000):         "keep it under",
		"true" + strings.Repeat(" a", 70): "at most 64",
	}
	for in, want := range bad {
		if _, err := ParseHealthCheck(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseHealthCheck(%q) = %v, want an error containing %q", in, err, want)
		}
	}
	if _, err := ParseHealthChecks(slices.Repeat([]string{"true"}, MaxHealthChecks+1)); err == nil {
		t.Error("too many health checks accepted")
	}
}

func FuzzParseHealthCheck(f *testing.F) {
	for _, s := range []string{"systemctl is-active sshd", "timeout=5s curl -fsS http://x/", `sh -c 'a b' "c"`, "-x", "'", "timeout=", "a\x00b", "/bin/true"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseHealthCheck(s)
		if err != nil {
			return
		}
		if len(h.Argv) == 0 || h.Timeout <= 0 || h.Timeout > time.Hour {
			t.Fatalf("accepted %q as %+v", s, h)
		}
		if validateProgram(h.Argv[0]) != nil || strings.HasPrefix(h.Argv[0], "-") {
			t.Fatalf("accepted program %q", h.Argv[0])
		}
		for _, a := range h.Argv {
			if strings.ContainsAny(a, "\x00\n\r") {
				t.Fatalf("argument %q holds a control character", a)
			}
		}
		back, err := ParseHealthCheck(h.String())
		if err != nil || !slices.Equal(back.Argv, h.Argv) {
			t.Fatalf("%q → %q does not round-trip: %v", s, h.String(), err)
		}
	})
}
