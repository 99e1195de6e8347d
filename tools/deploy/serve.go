package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/internal/execx"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/serve"
)

// Executor runs nixos-rebuild with argv (argv[0] is the program). It returns
// the last lines of the output, and an error wrapping execx.ErrTimeout when
// the context's deadline killed it.
type Executor func(ctx context.Context, argv []string) (tail string, err error)

// NixosRebuild is the real executor: nixos-rebuild from PATH, no shell, in
// its own process group, killed with the group when ctx ends.
func NixosRebuild(ctx context.Context, argv []string) (string, error) {
	res, err := execx.Run(ctx, execx.Cmd{Path: argv[0], Args: argv[1:], TailLines: 20, TailBytes: 2048})
	return res.Tail, err
}

// ServerConfig configures the listener side of deploys.
type ServerConfig struct {
	Hostname string
	Tier     string
	Role     string
	FlakeURL string
	// Timeout kills a deploy that runs longer (default 600 s).
	Timeout time.Duration
	// Exec runs nixos-rebuild (default NixosRebuild).
	Exec Executor
	// Rebuild runs nixos-rebuild with live output and the rebuild lock
	// (output.go). Default RunNixosRebuild, or Exec when only Exec is set.
	Rebuild RebuildFunc
	// LockFile, if set, is the rebuild lock that outlives the listener
	// (lock.go): deploys are refused while another process holds it.
	LockFile string
	// Publish sends one reply; the subject has been validated.
	Publish func(subject string, data []byte) error
	Metrics *Metrics
	Logger  *slog.Logger
	// RestartAfter, if set, is asked after each deploy, before its final
	// status goes out, whether the listener must restart (a switch that
	// changed its own unit or binary). If so the server takes no further
	// request, and OnRestart is called once the final status is published.
	RestartAfter func(action protocol.Action, status protocol.Status) (bool, string)
	OnRestart    func(reason string)
	// BeforeDeploy, if set, is called before nixos-rebuild starts.
	BeforeDeploy func(action protocol.Action)
	// OnChange, if set, is called when a deploy starts and when it has
	// finished (Running and LastDeploy changed): the fleet registry entry
	// is written again.
	OnChange func()
	// Trusted are the deployer keys whose signed requests are carried out.
	// Empty: unsigned requests are carried out too (older deployers), and
	// signed ones when their signature is valid.
	Trusted protocol.TrustedKeys
	// ReplayWindow is how long request ids are remembered (default 10 min).
	ReplayWindow time.Duration
	Now          func() time.Time
	// MessagePrefix, if set, starts every status message (the demo's
	// simulated listeners use "[simulated] " so nobody mistakes them for
	// real rebuilds).
	MessagePrefix string
	// Confirm, if its Timeout is set, confirms a completed switch or test
	// or rolls it back (confirm.go).
	Confirm Confirm
	// Preview configures the diff action (diff.go).
	Preview Preview
}

// Server is the serve half of the deploy tool: it validates a request,
// takes the host's single deploy slot, runs nixos-rebuild and reports.
type Server struct {
	cfg  ServerConfig
	core *serve.Core
	busy atomic.Bool
	// lock is the rebuild lock (nil without LockFile); held is its hold
	// for the deploy in progress (lock.go).
	lock *RebuildLock
	held *HeldLock
	// redact hides the flake URL's credentials in everything that leaves
	// the host: statuses, output, logs.
	redact *protocol.Redactor
	last   atomic.Pointer[protocol.LastDeploy]
	// running is the deploy in progress (audit.go).
	running atomic.Pointer[Running]
	// offline is a final status sent while NATS was down (confirm.go).
	offline atomic.Pointer[finalStatus]
}

// LastDeploy returns the outcome of the most recent finished deploy, or nil.
func (s *Server) LastDeploy() *protocol.LastDeploy {
	l := s.last.Load()
	if l == nil {
		return nil
	}
	c := *l
	return &c
}

// NewServer checks cfg and returns a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := protocol.ValidateHostname(cfg.Hostname); err != nil {
		return nil, err
	}
	if err := protocol.ValidateTier(cfg.Tier); err != nil {
		return nil, err
	}
	if cfg.Role != "" {
		if err := protocol.ValidateRole(cfg.Role); err != nil {
			return nil, err
		}
	}
	if err := protocol.ValidateFlakeURL(cfg.FlakeURL); err != nil {
		return nil, err
	}
	if cfg.Publish == nil {
		return nil, errors.New("deploy server: no publish function")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 600 * time.Second
	}
	if cfg.Rebuild == nil {
		cfg.Rebuild = RunNixosRebuild
		if cfg.Exec != nil {
			cfg.Rebuild = execOnly(cfg.Exec)
		}
	}
	if cfg.Exec == nil {
		cfg.Exec = NixosRebuild
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	core := serve.New(serve.Config{
		ReplyPrefix: protocol.DeployResponsesPrefix, ReplayWindow: cfg.ReplayWindow, Now: cfg.Now, Logger: cfg.Logger,
	})
	lock, err := openLock(cfg)
	if err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, core: core, lock: lock, redact: protocol.NewRedactor(cfg.FlakeURL)}, nil
}

// Busy reports whether a deploy is running.
func (s *Server) Busy() bool { return s.busy.Load() || s.lockedElsewhere() }

// Handle processes one raw request that came without headers, hence
// unsigned. It returns quickly; the deploy runs in its own goroutine.
func (s *Server) Handle(subject string, data []byte) { s.HandleMsg(subject, nil, data) }

// HandleMsg processes one raw request with its NATS headers, which may
// sign it (protocol.Verify). It returns quickly; the deploy runs in its own
// goroutine. Every request ends in one audit line: here when it is
// refused, in run when it ran.
func (s *Server) HandleMsg(subject string, header nats.Header, data []byte) {
	arrived := time.Now()
	log := s.cfg.Logger.With("subject", subject)
	req, err := protocol.DecodeDeployRequest(data)
	caller, authErr := s.authorize(subject, header, data, req, err == nil)
	// The audit line is written before the answer goes out, so whoever
	// reads the answer can already find it in the log.
	reject := func(code protocol.ErrorCode, msg string) {
		s.count(protocol.StatusRejected, req.Action, code)
		if req.ReplyTo == "" {
			s.audit(subject, caller, req, statusDropped, code, time.Since(arrived), authErr)
			return
		}
		s.audit(subject, caller, req, protocol.StatusRejected, code, time.Since(arrived), authErr)
		s.reply(req, protocol.StatusRejected, code, msg, 0)
	}
	if authErr != nil {
		// Who may ask comes before what was asked: an untrusted sender
		// learns nothing about how its request would have been read.
		log.Warn("refused deploy request: unauthorized", "id", req.ID, "err", authErr)
		reject(protocol.ErrUnauthorized, authErr.Error())
		return
	}
	if err != nil {
		code := protocol.ErrorCodeOf(err)
		if req.ReplyTo == "" {
			log.Warn("dropped deploy request without a valid reply_to", "err", err, "bytes", len(data))
		} else {
			log.Warn("rejected deploy request", "id", req.ID, "error_code", code, "err", err)
		}
		reject(code, err.Error())
		return
	}
	log = log.With("id", req.ID, "action", req.Action, "revision", req.Revision)
	if s.core.Replayed(req.ID) {
		log.Warn("rejected replayed deploy request")
		reject(protocol.ErrInvalidRequest, fmt.Sprintf("request id %s was already seen; a request is carried out once", req.ID))
		return
	}
	flakeRef, err := protocol.FlakeRef(s.cfg.FlakeURL, req.Revision, s.cfg.Hostname)
	if err != nil {
		reject(protocol.ErrInvalidRevision, err.Error())
		return
	}
	if !s.core.Take() {
		log.Info("rejected deploy: the listener is stopping")
		reject(protocol.ErrAlreadyRunning, "the listener on "+s.cfg.Hostname+" is stopping (shutdown or restart onto a new version); try again in a minute")
		return
	}
	if !s.busy.CompareAndSwap(false, true) {
		s.core.Done()
		log.Info("rejected deploy: another deploy is running")
		reject(protocol.ErrAlreadyRunning, "another deploy is running on "+s.cfg.Hostname+"; try again when it has finished")
		return
	}
	if err := s.takeLock(); err != nil {
		s.busy.Store(false)
		s.core.Done()
		log.Warn("rejected deploy: the rebuild lock is taken", "err", err)
		reject(protocol.ErrAlreadyRunning, err.Error())
		return
	}
	s.running.Store(&Running{ID: req.ID, Caller: caller, Subject: subject, Action: req.Action, Revision: req.Revision, Arrived: arrived})
	s.changed()
	if caller != "" {
		log = log.With("caller", caller)
	}
	s.reply(req, protocol.StatusAccepted, protocol.ErrNone, fmt.Sprintf("%s of %s accepted", req.Action, req.Revision), 0)
	go s.run(req, flakeRef, log)
}

func (s *Server) run(req protocol.DeployRequest, flakeRef string, log *slog.Logger) {
	defer s.core.Done()
	cur := s.running.Load() // set by HandleMsg for this deploy
	// The host is free again before its final status goes out, so a
	// deployer that sends the next request as soon as it hears back is not
	// told a deploy is still running.
	release := sync.OnceFunc(func() {
		if s.cfg.Metrics != nil {
			s.cfg.Metrics.InProgress.Set(0)
		}
		s.running.CompareAndSwap(cur, nil)
		s.releaseLock()
		s.busy.Store(false)
	})
	defer release()
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.InProgress.Set(1)
	}
	if req.Action == protocol.ActionDiff {
		s.preview(req, cur, release, log) // diff.go: builds and compares, activates nothing
		return
	}
	if s.cfg.BeforeDeploy != nil {
		s.cfg.BeforeDeploy(req.Action)
	}
	argv := []string{"nixos-rebuild", string(req.Action), "--flake", flakeRef}
	log.Info("deploy started", "flake", s.redact.Text(flakeRef))
	s.reply(req, protocol.StatusStarted, protocol.ErrNone, "running nixos-rebuild "+string(req.Action)+" --flake "+s.redact.Text(flakeRef), 0)

	ctx, cancel := context.WithTimeout(s.core.Context(), s.cfg.Timeout)
	start := time.Now()
	tail, err := s.rebuild(ctx, req, argv, log)
	cancel()
	dur := time.Since(start)

	status, code, msg := protocol.StatusCompleted, protocol.ErrNone, ""
	switch {
	case err == nil:
		msg = fmt.Sprintf("nixos-rebuild %s of %s completed in %.1fs", req.Action, req.Revision, dur.Seconds())
	case errors.Is(err, execx.ErrTimeout):
		status, code = protocol.StatusFailed, protocol.ErrTimeout
		msg = fmt.Sprintf("nixos-rebuild %s exceeded the %s timeout and was killed", req.Action, s.cfg.Timeout)
	case errors.Is(err, execx.ErrCanceled):
		status, code = protocol.StatusFailed, protocol.ErrTimeout
		msg = fmt.Sprintf("the listener on %s was stopped and killed nixos-rebuild %s after its shutdown grace period", s.cfg.Hostname, req.Action)
	default:
		status, code = protocol.StatusFailed, protocol.ErrBuildFailed
		msg = s.redact.Text(fmt.Sprintf("nixos-rebuild %s failed: %v", req.Action, err))
	}
	if status != protocol.StatusCompleted && tail != "" {
		msg += "\n" + tail
	}
	if status == protocol.StatusCompleted {
		status, code, msg = s.confirm(req, msg, log)
	}
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.Duration.WithLabelValues(string(req.Action), strconv.FormatBool(status == protocol.StatusCompleted)).Observe(dur.Seconds())
	}
	s.count(status, req.Action, code)
	log.Info("deploy finished", "status", status, "error_code", code, "duration", dur.Round(time.Millisecond))
	s.last.Store(&protocol.LastDeploy{
		ID:     req.ID,
		Action: req.Action, Revision: req.Revision, Status: status, Error: code,
		FinishedAt: s.cfg.Now().UTC().Format(time.RFC3339), DurationSeconds: dur.Seconds(),
		Caller: callerOf(cur),
	})
	// A listener that replaced itself must take no new deploy between this
	// final status and its exit: decide before the slot is freed.
	restart, why := false, ""
	if s.cfg.RestartAfter != nil {
		if restart, why = s.cfg.RestartAfter(req.Action, status); restart {
			s.core.Close()
		}
	}
	release()
	s.changed()
	s.noteFinal(req, status, code, msg, dur)
	s.auditRun(cur, status, code)
	s.reply(req, status, code, msg, dur)
	if restart && s.cfg.OnRestart != nil {
		s.cfg.OnRestart(why)
	}
}

func (s *Server) count(status protocol.Status, action protocol.Action, code protocol.ErrorCode) {
	if s.cfg.Metrics == nil {
		return
	}
	a := string(action)
	if protocol.ValidateRequestAction(a) != nil {
		a = ""
	}
	s.cfg.Metrics.Deployments.WithLabelValues(string(status), a, string(code)).Inc()
}

func (s *Server) reply(req protocol.DeployRequest, status protocol.Status, code protocol.ErrorCode, msg string, dur time.Duration) {
	s.send(req, s.response(req, status, code, msg, dur))
}

// response is the status to send for req.
func (s *Server) response(req protocol.DeployRequest, status protocol.Status, code protocol.ErrorCode, msg string, dur time.Duration) protocol.DeployResponse {
	resp := protocol.DeployResponse{
		ID: req.ID, Hostname: s.cfg.Hostname, Status: status, Error: code, Message: s.cfg.MessagePrefix + msg,
		Tier: s.cfg.Tier, DurationSeconds: dur.Seconds(),
	}
	if protocol.ValidateRequestAction(string(req.Action)) == nil {
		resp.Action = req.Action
		resp.Revision = req.Revision
	}
	return resp
}

// send publishes resp to req's reply subject.
func (s *Server) send(req protocol.DeployRequest, resp protocol.DeployResponse) {
	status := resp.Status
	if !s.core.ReplyAllowed(req.ReplyTo) {
		return
	}
	data, err := json.Marshal(resp)
	if err != nil {
		s.cfg.Logger.Error("encode deploy response", "err", err)
		return
	}
	// On <reply_to>.<hostname>, the only reply subjects nats-config lets
	// this host publish on: the deployer reads the sender from the subject
	// (protocol.BoundReply).
	if err := s.cfg.Publish(protocol.BoundReply(req.ReplyTo, s.cfg.Hostname), data); err != nil {
		s.cfg.Logger.Error("publish deploy status", "reply_to", req.ReplyTo, "status", status, "err", err)
	}
}

func (s *Server) changed() {
	if s.cfg.OnChange != nil {
		s.cfg.OnChange()
	}
}

// Shutdown stops accepting deploys, waits up to the context's deadline for a
// running deploy to finish, then kills it (it is reported as failed) and
// waits for its final status to be sent.
func (s *Server) Shutdown(ctx context.Context) { s.core.Shutdown(ctx) }
