package deploy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/homelab-deploy/homelab-deploy/internal/execx"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// Confirmation after an activation. A switch that breaks the network, sshd
// or NATS leaves a host nobody can reach; the listener sits on that host, so
// it decides there, whether or not anybody can still talk to it: within
// Confirm.Timeout its NATS connection must be up and every health check must
// exit 0, or the previous configuration is activated again.

// DefaultConfirmTimeout is the listener's --confirm-timeout default.
const DefaultConfirmTimeout = 120 * time.Second

// DefaultHealthCheckTimeout bounds one run of a health check that sets no
// timeout= of its own.
const DefaultHealthCheckTimeout = 30 * time.Second

// DefaultSwitchToConfiguration activates the system profile's current
// generation: after a failed `test`, that is the configuration the host
// booted into or was last switched to.
const DefaultSwitchToConfiguration = "/nix/var/nix/profiles/system/bin/switch-to-configuration"

// Bounds of a health check as written on the command line.
const (
	MaxHealthCheckLen  = 1024
	MaxHealthCheckArgs = 64
	MaxHealthChecks    = 16
)

// Confirm configures the confirmation of a switch or test.
type Confirm struct {
	// Timeout is the whole confirmation window; 0 disables confirmation.
	Timeout time.Duration
	// Checks run in order, each under its own timeout, until all pass.
	Checks []HealthCheck
	// Connected reports whether the listener's NATS connection is up. Nil
	// means the deploy server has no connection to wait for.
	Connected func() bool
	// SwitchToConfiguration is run with "test" to undo a failed `test`
	// (default DefaultSwitchToConfiguration).
	SwitchToConfiguration string
	// Retry is the pause before a failed check is tried again, and between
	// looks at the connection (default 1 s).
	Retry time.Duration
}

// HealthCheck is one --health-check: a program and its arguments, run
// without a shell, killed with its process group after Timeout.
type HealthCheck struct {
	Argv    []string
	Timeout time.Duration
}

// String is the check as a user would write it.
func (h HealthCheck) String() string {
	parts := make([]string, len(h.Argv))
	for i, a := range h.Argv {
		if a == "" || strings.ContainsAny(a, " \t'\"") {
			if strings.Contains(a, "'") {
				a = `"` + a + `"`
			} else {
				a = "'" + a + "'"
			}
		}
		parts[i] = a
	}
	return strings.Join(parts, " ")
}

// ParseHealthCheck parses one --health-check value:
//
//	[timeout=DURATION] PROGRAM [ARG...]
//
// Words are separated by spaces or tabs; a word may be quoted with '…' or
// "…" (no escapes inside, and the quote characters themselves cannot be
// nested). Nothing else is special: there is no shell, no variable and no
// glob. PROGRAM is an absolute path or a name looked up on the listener's
// PATH, made of letters, digits and ._+-/ only; arguments are printable
// text. The default timeout is 30 s.
func ParseHealthCheck(s string) (HealthCheck, error) {
	if len(s) > MaxHealthCheckLen {
		return HealthCheck{}, fmt.Errorf("health check is %d bytes long; keep it under %d (put a longer one in a script)", len(s), MaxHealthCheckLen)
	}
	if !utf8.ValidString(s) {
		return HealthCheck{}, errors.New("health check is not valid UTF-8")
	}
	for _, r := range s {
		if r != ' ' && r != '\t' && !unicode.IsPrint(r) {
			return HealthCheck{}, fmt.Errorf("health check %q holds a control or invisible character (%U); write it on one line of printable text", s, r)
		}
	}
	words, err := splitWords(s)
	if err != nil {
		return HealthCheck{}, fmt.Errorf("health check %q: %w", s, err)
	}
	h := HealthCheck{Timeout: DefaultHealthCheckTimeout}
	if len(words) > 0 && strings.HasPrefix(words[0], "timeout=") {
		d, err := time.ParseDuration(strings.TrimPrefix(words[0], "timeout="))
		if err != nil || d <= 0 || d > time.Hour {
			return HealthCheck{}, fmt.Errorf("health check %q: %s is not a timeout; write e.g. timeout=10s (at most 1h)", s, words[0])
		}
		h.Timeout = d
		words = words[1:]
	}
	if len(words) == 0 {
		return HealthCheck{}, fmt.Errorf("health check %q names no program; write e.g. \"systemctl is-active sshd.service\"", s)
	}
	if len(words) > MaxHealthCheckArgs {
		return HealthCheck{}, fmt.Errorf("health check %q has %d words; at most %d", s, len(words), MaxHealthCheckArgs)
	}
	if err := validateProgram(words[0]); err != nil {
		return HealthCheck{}, fmt.Errorf("health check %q: %w", s, err)
	}
	h.Argv = words
	return h, nil
}

func validateProgram(p string) error {
	if strings.HasPrefix(p, "-") {
		return fmt.Errorf("program %q starts with '-'", p)
	}
	for _, r := range p {
		if !(r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._+-/", r))) {
			return fmt.Errorf("program %q may hold only letters, digits and ._+-/ (give an absolute path or a name on PATH)", p)
		}
	}
	if strings.Contains(p, "/") && !strings.HasPrefix(p, "/") {
		return fmt.Errorf("program %q is a relative path; give an absolute path or a bare name on PATH", p)
	}
	return nil
}

// splitWords splits on spaces and tabs, honouring '…' and "…".
func splitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote; close it", quote)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// ParseHealthChecks parses every --health-check value.
func ParseHealthChecks(specs []string) ([]HealthCheck, error) {
	if len(specs) > MaxHealthChecks {
		return nil, fmt.Errorf("%d health checks given; at most %d (combine them in a script)", len(specs), MaxHealthChecks)
	}
	out := make([]HealthCheck, 0, len(specs))
	for _, s := range specs {
		h, err := ParseHealthCheck(s)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

// confirms reports whether action is confirmed after it completed: switch
// and test change the running system; boot and dry-activate do not, and are
// never rolled back.
func (c Confirm) confirms(action protocol.Action) bool {
	return c.Timeout > 0 && (action == protocol.ActionSwitch || action == protocol.ActionTest)
}

// confirm runs after a completed switch or test. It returns the final
// status, code and message: unchanged when the activation is confirmed (or
// confirmation is off for this action), failed/rolled_back otherwise.
func (s *Server) confirm(req protocol.DeployRequest, msg string, log *slog.Logger) (protocol.Status, protocol.ErrorCode, string) {
	c := s.cfg.Confirm
	if !c.confirms(req.Action) {
		return protocol.StatusCompleted, protocol.ErrNone, msg
	}
	log.Info("confirming activation", "window", c.Timeout, "health_checks", len(c.Checks))
	ctx, cancel := context.WithTimeout(s.core.Context(), c.Timeout)
	why := c.wait(ctx, log)
	stopped := s.core.Context().Err() != nil
	cancel()
	if why == "" {
		log.Info("activation confirmed")
		if len(c.Checks) > 0 {
			msg += fmt.Sprintf("; %d health check(s) passed", len(c.Checks))
		}
		return protocol.StatusCompleted, protocol.ErrNone, msg
	}
	if stopped {
		// The listener is being stopped (shutdown, reboot): there is no
		// time left for a rollback, and a stop is no verdict on the switch.
		log.Warn("activation not confirmed: the listener is stopping", "why", why)
		return protocol.StatusCompleted, protocol.ErrNone, msg + "; not confirmed: the listener was stopped during the confirmation window"
	}
	log.Warn("activation not confirmed, rolling back", "why", why)
	argv := c.rollbackArgv(req.Action)
	rctx, rcancel := context.WithTimeout(s.core.Context(), s.cfg.Timeout)
	tail, err := s.cfg.Exec(rctx, argv)
	rcancel()
	out := fmt.Sprintf("%s of %s rolled back: %s; ran %s", req.Action, req.Revision, why, strings.Join(argv, " "))
	if err != nil {
		log.Error("rollback failed", "argv", argv, "err", err)
		out += fmt.Sprintf(", which FAILED (%v): the host may still run the new configuration; log in on the console and run it by hand", err)
		if tail != "" {
			out += "\n" + tail
		}
	} else {
		log.Info("rolled back", "argv", argv)
		out += ", which restored the previous configuration"
	}
	return protocol.StatusFailed, protocol.ErrRolledBack, out
}

func (c Confirm) rollbackArgv(action protocol.Action) []string {
	if action == protocol.ActionSwitch {
		return []string{"nixos-rebuild", "switch", "--rollback"}
	}
	p := c.SwitchToConfiguration
	if p == "" {
		p = DefaultSwitchToConfiguration
	}
	return []string{p, "test"}
}

// wait returns "" once NATS is up and every check passed, or why not when
// ctx ended first.
func (c Confirm) wait(ctx context.Context, log *slog.Logger) string {
	retry := c.Retry
	if retry <= 0 {
		retry = time.Second
	}
	pause := func() bool {
		t := time.NewTimer(retry)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	if c.Connected != nil {
		for !c.Connected() {
			if !pause() {
				return fmt.Sprintf("the NATS connection was not back within the %s confirmation window", c.Timeout)
			}
		}
	}
	last := ""
	for i := 0; i < len(c.Checks); {
		h := c.Checks[i]
		why := h.run(ctx)
		if why == "" {
			i, last = i+1, ""
			continue
		}
		if ctx.Err() == nil || last == "" {
			// A run cut short by the end of the window says less than
			// the failure before it.
			last = why
		}
		log.Info("health check not passing yet", "check", h.String(), "why", why)
		if ctx.Err() != nil || !pause() {
			return fmt.Sprintf("health check `%s` did not pass within the %s confirmation window: %s", h, c.Timeout, last)
		}
	}
	return ""
}

// run runs the check once; "" means it exited 0.
func (h HealthCheck) run(parent context.Context) string {
	ctx, cancel := context.WithTimeout(parent, h.Timeout)
	defer cancel()
	res, err := execx.Run(ctx, execx.Cmd{Path: h.Argv[0], Args: h.Argv[1:], TailLines: 3, TailBytes: 512, KillGrace: time.Second})
	if err == nil {
		return ""
	}
	why := err.Error()
	switch {
	case errors.Is(err, execx.ErrTimeout) && parent.Err() != nil:
		why = "still running when the window closed (killed)"
	case errors.Is(err, execx.ErrTimeout):
		why = fmt.Sprintf("no exit within %s (killed)", h.Timeout)
	}
	if res.Tail != "" {
		why += ": " + res.Tail
	}
	return why
}

// finalStatus is a final status that went out while NATS was down.
type finalStatus struct {
	req    protocol.DeployRequest
	status protocol.Status
	code   protocol.ErrorCode
	msg    string
	dur    time.Duration
	until  time.Time
	mu     sync.Mutex // one redelivery at a time
}

// redeliverFor is how long a final status published while disconnected is
// kept for Redeliver.
const redeliverFor = 10 * time.Minute

// noteFinal remembers a final status published while the connection was
// down. nats.go buffers it and sends it on reconnection, but the deployer
// may reconnect later than this listener, and NATS core keeps nothing for a
// subscriber that is not there yet.
func (s *Server) noteFinal(req protocol.DeployRequest, status protocol.Status, code protocol.ErrorCode, msg string, dur time.Duration) {
	c := s.cfg.Confirm.Connected
	if c == nil || c() {
		return
	}
	s.offline.Store(&finalStatus{req: req, status: status, code: code, msg: msg, dur: dur, until: s.cfg.Now().Add(redeliverFor)})
}

// Redeliver sends again a final status that went out while NATS was down.
// The listener calls it when a discovery request arrives: a deployer that
// lost its connection asks, after reconnecting, whether the hosts it waits
// for are still busy, and its question proves it is subscribed again.
// Requesters ignore a host's statuses after its first final one.
func (s *Server) Redeliver() {
	f := s.offline.Load()
	if f == nil {
		return
	}
	if s.cfg.Now().After(f.until) {
		s.offline.CompareAndSwap(f, nil)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s.reply(f.req, f.status, f.code, f.msg, f.dur)
}
