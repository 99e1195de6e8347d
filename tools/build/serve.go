package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/internal/execx"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/serve"
)

// Defaults of the builder.
const (
	// DefaultHostTimeout is the per-host build timeout (--timeout 1800).
	DefaultHostTimeout = 1800 * time.Second
	// DefaultMaxParallel bounds concurrent nix builds on the builder.
	// Evaluating a real NixOS configuration takes 1-2 GB of memory per
	// `nix build` process, so two at once fit a modest build host while
	// still overlapping one host's evaluation with another's compilation.
	DefaultMaxParallel = 2
)

// Bounds on what a failure carries back: progress messages get the fuller
// tail of Nix's output, the final results a shorter one (a final message
// lists every host and must stay well under NATS's payload limit).
const (
	tailLines        = 15
	tailBytes        = 2048
	resultTailLines  = 5
	resultTailBytes  = 600
	listTimeoutShare = 1 // the host listing gets the same timeout as one host
)

// ServerConfig configures the builder side of builds.
type ServerConfig struct {
	Config *Config
	// Timeout kills one host's nix build that runs longer (default 1800 s).
	// Listing the hosts (nix eval) gets the same bound.
	Timeout time.Duration
	// MaxParallel bounds how many nix builds run at once on this builder,
	// across all repositories (default 2).
	MaxParallel int
	// Nix is the nix program: a path, or a name looked up on PATH (default
	// "nix").
	Nix string
	// Env is nix's environment; nil means the builder's own.
	Env []string
	// Publish sends one reply; the subject has been validated.
	Publish func(subject string, data []byte) error
	Metrics *Metrics
	Logger  *slog.Logger
	// Trusted are the deployer keys whose signed requests are carried out.
	// Empty: unsigned requests are carried out too (older clients), and
	// signed ones when their signature is valid.
	Trusted protocol.TrustedKeys
	// ReplayWindow is how long request ids are remembered (default 10 min).
	ReplayWindow time.Duration
	Now          func() time.Time
}

// Server is the serve half of the build tool: it validates a request, takes
// the repository's build slot, lists the repository's hosts with nix eval,
// builds them with bounded parallelism and reports each step.
//
// One build per repository runs at a time: a second request for a
// repository that is building is rejected with already_running rather than
// queued, so a requester never waits on work it cannot see, and a burst of
// pushes cannot pile up hours of builds. Different repositories build
// concurrently, sharing the MaxParallel nix slots.
type Server struct {
	cfg   ServerConfig
	core  *serve.Core
	slots chan struct{}
	// mu guards building, the repositories with a running build.
	mu       sync.Mutex
	building map[string]bool
}

// NewServer checks cfg and returns a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Config == nil || len(cfg.Config.Repos) == 0 {
		return nil, errors.New("build server: no repositories configured")
	}
	if cfg.Publish == nil {
		return nil, errors.New("build server: no publish function")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultHostTimeout
	}
	if cfg.MaxParallel <= 0 {
		cfg.MaxParallel = DefaultMaxParallel
	}
	if cfg.Nix == "" {
		cfg.Nix = "nix"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Server{
		cfg: cfg,
		core: serve.New(serve.Config{
			ReplyPrefix: protocol.BuildResponsesPrefix, ReplayWindow: cfg.ReplayWindow, Now: cfg.Now, Logger: cfg.Logger,
		}),
		slots:    make(chan struct{}, cfg.MaxParallel),
		building: map[string]bool{},
	}, nil
}

// Busy reports whether any build is running.
func (s *Server) Busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.building) > 0
}

// Handle processes one raw request that arrived on subject without
// headers, hence unsigned. It returns quickly; the build runs in its own
// goroutine.
func (s *Server) Handle(subject string, data []byte) { s.HandleMsg(subject, nil, data) }

// HandleMsg processes one raw request that arrived on subject with its
// NATS headers, which may sign it (protocol.Verify). It returns quickly;
// the build runs in its own goroutine. Every request ends in one audit
// line: here when it is refused, in run when it ran.
func (s *Server) HandleMsg(subject string, header nats.Header, data []byte) {
	arrived := time.Now()
	log := s.cfg.Logger.With("subject", subject)
	req, err := protocol.DecodeBuildRequest(data)
	caller, authErr := s.authorize(subject, header, data, req, err == nil)
	revision := req.Branch // the branch built, once it is known
	audit := func(status protocol.Status, code protocol.ErrorCode) {
		s.audit(subject, caller, req.ID, revision, status, code, time.Since(arrived), authErr)
	}
	reject := func(code protocol.ErrorCode, msg string) {
		if req.ReplyTo == "" {
			audit(statusDropped, code)
			return
		}
		// The audit line is written before the answer goes out, so
		// whoever reads the answer can already find it in the log.
		audit(protocol.StatusRejected, code)
		s.reject(req, code, msg)
	}
	if authErr != nil {
		// Who may ask comes before what was asked: an untrusted sender
		// learns nothing about how its request would have been read.
		log.Warn("refused build request: unauthorized", "id", req.ID, "err", authErr)
		reject(protocol.ErrUnauthorized, authErr.Error())
		return
	}
	if err != nil {
		if req.ReplyTo == "" {
			log.Warn("dropped build request without a valid reply_to", "err", err, "bytes", len(data))
		} else {
			log.Warn("rejected build request", "id", req.ID, "error_code", protocol.ErrorCodeOf(err), "err", err)
		}
		reject(protocol.ErrorCodeOf(err), err.Error())
		return
	}
	log = log.With("id", req.ID, "repo", req.Repo, "target", req.Target)
	// The server's permissions are per subject, so the body must not name
	// another repository or host than the subject it was allowed onto.
	if want := protocol.BuildSubject(req.Repo, req.Target); subject != want {
		log.Warn("rejected build request whose body does not match its subject")
		reject(protocol.ErrInvalidRequest, fmt.Sprintf("a request for repo %s, target %s must be sent on %s, not %s", req.Repo, req.Target, want, subject))
		return
	}
	if s.core.Replayed(req.ID) {
		log.Warn("rejected replayed build request")
		reject(protocol.ErrInvalidRequest, fmt.Sprintf("request id %s was already seen; a request is carried out once", req.ID))
		return
	}
	repo, ok := s.cfg.Config.Repos[req.Repo]
	if !ok {
		log.Warn("rejected build of an unknown repo")
		reject(protocol.ErrUnknownRepo, fmt.Sprintf("unknown repo %q; this builder builds: %s", req.Repo, strings.Join(s.cfg.Config.Names(), ", ")))
		return
	}
	branch := req.Branch
	if branch == "" {
		branch = repo.DefaultBranch
	}
	revision = branch
	if !s.core.Take() {
		reject(protocol.ErrAlreadyRunning, "the builder is shutting down; try again when it is back")
		return
	}
	if !s.claim(req.Repo) {
		s.core.Done()
		log.Info("rejected build: the repo is already building")
		reject(protocol.ErrAlreadyRunning, fmt.Sprintf("repo %s is already building; try again when that build has finished", req.Repo))
		return
	}
	if caller != "" {
		log = log.With("caller", caller)
	}
	go s.run(req, repo, branch, log.With("branch", branch), audit)
}

// claim takes repo's build slot, unless it is building.
func (s *Server) claim(repo string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.building[repo] {
		return false
	}
	s.building[repo] = true
	return true
}

// hostOutcome is one finished host.
type hostOutcome struct {
	protocol.BuildHostResult
	tail string
}

func (s *Server) run(req protocol.BuildRequest, repo Repo, branch string, log *slog.Logger, audit func(protocol.Status, protocol.ErrorCode)) {
	defer s.core.Done()
	// The repo is free again before its final status goes out, so a client
	// that starts the next build as soon as it hears back is not told the
	// repo is still building.
	release := sync.OnceFunc(func() {
		s.mu.Lock()
		delete(s.building, req.Repo)
		s.mu.Unlock()
	})
	defer release()
	finalReply := func(resp protocol.BuildResponse) {
		release()
		audit(resp.Status, resp.ErrorCode)
		s.reply(req.ReplyTo, resp)
	}
	start := s.cfg.Now()
	base := protocol.BuildResponse{ID: req.ID, Repo: repo.Name, Branch: branch}

	log.Info("listing hosts")
	hosts, tail, err := s.listHosts(repo, branch)
	if err != nil {
		log.Warn("listing hosts failed", "err", err)
		resp := base
		resp.Status = protocol.StatusFailed
		resp.ErrorCode = protocol.ErrBuildFailed
		resp.Message = fmt.Sprintf("could not list the hosts of %s at %s: %v", repo.Name, branch, err)
		resp.Error = tail
		resp.TotalDurationSeconds = s.cfg.Now().Sub(start).Seconds()
		s.cfg.Metrics.build(repo.Name, false, s.cfg.Now())
		finalReply(resp)
		return
	}
	if req.Target != protocol.BuildTargetAll {
		if !contains(hosts, req.Target) {
			log.Warn("rejected build of an unknown host")
			resp := base
			resp.Status = protocol.StatusRejected
			resp.ErrorCode = protocol.ErrUnknownHost
			resp.Message = fmt.Sprintf("host %q is not in nixosConfigurations of %s at %s; known hosts: %s", req.Target, repo.Name, branch, strings.Join(hosts, ", "))
			finalReply(resp)
			return
		}
		hosts = []string{req.Target}
	}
	total := len(hosts)
	started := base
	started.Status = protocol.StatusStarted
	started.HostsTotal = total
	started.Message = fmt.Sprintf("building %d host(s) of %s at %s, at most %d at a time", total, repo.Name, branch, s.cfg.MaxParallel)
	log.Info("build started", "hosts", total)
	s.reply(req.ReplyTo, started)

	var (
		mu       sync.Mutex
		outcomes []hostOutcome
		wg       sync.WaitGroup
	)
	finished := func(o hostOutcome) {
		mu.Lock()
		defer mu.Unlock()
		outcomes = append(outcomes, o)
		s.cfg.Metrics.host(repo.Name, o.Host, o.Success, time.Duration(o.DurationSeconds*float64(time.Second)))
		ok := o.Success
		p := base
		p.Status = protocol.StatusProgress
		p.Host = o.Host
		p.HostSuccess = &ok
		p.HostsCompleted = len(outcomes)
		p.HostsTotal = total
		p.Duration = o.DurationSeconds
		p.OutPath = o.OutPath
		p.ErrorCode = o.ErrorCode
		p.Error = o.tail
		if ok {
			p.Message = fmt.Sprintf("%s built in %.1fs", o.Host, o.DurationSeconds)
		} else {
			p.Message = fmt.Sprintf("%s failed after %.1fs: %s", o.Host, o.DurationSeconds, ErrorLine(o.tail))
		}
		log.Info("host finished", "host", o.Host, "success", ok, "duration", time.Duration(o.DurationSeconds*float64(time.Second)).Round(time.Millisecond))
		s.reply(req.ReplyTo, p)
	}
	for _, h := range hosts {
		select {
		case s.slots <- struct{}{}:
		case <-s.core.Context().Done():
			finished(hostOutcome{
				BuildHostResult: protocol.BuildHostResult{Host: h, ErrorCode: protocol.ErrTimeout, Error: "not built: the builder shut down"},
				tail:            "not built: the builder shut down",
			})
			continue
		}
		wg.Add(1)
		go func(host string) {
			defer wg.Done()
			defer func() { <-s.slots }()
			line, closeOutput := s.hostOutput(req, repo, base, host, log)
			o := s.buildHost(repo, branch, host, line)
			closeOutput() // the last lines go out before the host's progress
			finished(o)
		}(h)
	}
	wg.Wait()

	final := base
	final.Results = make([]protocol.BuildHostResult, 0, len(outcomes))
	var bad []string
	for _, o := range outcomes {
		r := o.BuildHostResult
		r.Error = clip(r.Error, resultTailLines, resultTailBytes)
		final.Results = append(final.Results, r)
		if r.Success {
			final.Succeeded++
		} else {
			final.Failed++
			what := "build failed"
			if r.ErrorCode == protocol.ErrTimeout {
				what = "timed out"
			}
			bad = append(bad, fmt.Sprintf("%s (%s)", r.Host, what))
		}
	}
	sort.Slice(final.Results, func(i, j int) bool { return final.Results[i].Host < final.Results[j].Host })
	sort.Strings(bad)
	final.TotalDurationSeconds = s.cfg.Now().Sub(start).Seconds()
	if final.Failed == 0 {
		final.Status = protocol.StatusCompleted
		final.Message = fmt.Sprintf("built %d/%d hosts successfully", final.Succeeded, total)
	} else {
		final.Status = protocol.StatusFailed
		final.ErrorCode = protocol.ErrBuildFailed
		final.Message = fmt.Sprintf("built %d/%d hosts; failed: %s", final.Succeeded, total, strings.Join(bad, ", "))
	}
	s.cfg.Metrics.build(repo.Name, final.Failed == 0, s.cfg.Now())
	log.Info("build finished", "status", final.Status, "succeeded", final.Succeeded, "failed", final.Failed)
	finalReply(final)
}

// listHosts runs nix eval for the names of the repository's
// nixosConfigurations at branch. --refresh makes Nix look at the branch's
// current tip instead of a cached one.
func (s *Server) listHosts(repo Repo, branch string) ([]string, string, error) {
	ref, err := protocol.FlakeRef(repo.URL, branch, "nixosConfigurations")
	if err != nil {
		return nil, "", err
	}
	ctx, cancel := context.WithTimeout(s.core.Context(), s.cfg.Timeout*listTimeoutShare)
	defer cancel()
	res, err := execx.Run(ctx, execx.Cmd{
		Path: s.cfg.Nix, Args: []string{"eval", "--json", "--refresh", ref, "--apply", "builtins.attrNames"},
		Env: s.cfg.Env, TailLines: tailLines, TailBytes: tailBytes, KeepStdout: true,
	})
	res.Tail = protocol.NewRedactor(repo.URL).Text(res.Tail)
	if err != nil {
		if errors.Is(err, execx.ErrTimeout) {
			return nil, res.Tail, fmt.Errorf("nix eval exceeded the %s timeout and was killed", s.cfg.Timeout)
		}
		return nil, res.Tail, fmt.Errorf("nix eval: %v", protocol.NewRedactor(repo.URL).Text(err.Error()))
	}
	var names []string
	if err := json.Unmarshal(res.Stdout, &names); err != nil {
		return nil, res.Tail, fmt.Errorf("nix eval printed no list of names: %v", err)
	}
	hosts := names[:0]
	for _, n := range names {
		// A name that is not a subject token could not be asked for by
		// name, and is never put into an attribute path unchecked.
		if protocol.ValidateToken("host", n) != nil {
			s.cfg.Logger.Warn("skipping a nixosConfigurations entry whose name is not a subject token", "repo", repo.Name, "name", n)
			continue
		}
		hosts = append(hosts, n)
	}
	if len(hosts) == 0 {
		return nil, res.Tail, errors.New("the flake has no nixosConfigurations")
	}
	sort.Strings(hosts)
	return hosts, "", nil
}

// buildHost runs nix build for one host in its own process group, killed
// with it at the per-host timeout or at shutdown.
func (s *Server) buildHost(repo Repo, branch, host string, line func(string)) hostOutcome {
	out := hostOutcome{BuildHostResult: protocol.BuildHostResult{Host: host}}
	ref, err := protocol.FlakeRef(repo.URL, branch, "nixosConfigurations."+host+".config.system.build.toplevel")
	if err != nil {
		out.ErrorCode, out.Error, out.tail = protocol.ErrBuildFailed, err.Error(), err.Error()
		return out
	}
	ctx, cancel := context.WithTimeout(s.core.Context(), s.cfg.Timeout)
	defer cancel()
	start := time.Now()
	res, err := execx.Run(ctx, execx.Cmd{
		Path: s.cfg.Nix, Args: []string{"build", "--no-link", "--json", ref},
		Env: s.cfg.Env, TailLines: tailLines, TailBytes: tailBytes, KeepStdout: true, OnLine: line,
	})
	out.DurationSeconds = time.Since(start).Seconds()
	res.Tail = protocol.NewRedactor(repo.URL).Text(res.Tail)
	switch {
	case err == nil:
		out.Success = true
		out.OutPath = outPath(res.Stdout)
		return out
	case errors.Is(err, execx.ErrTimeout):
		out.ErrorCode = protocol.ErrTimeout
		out.tail = fmt.Sprintf("nix build exceeded the %s per-host timeout and was killed", s.cfg.Timeout)
	case errors.Is(err, execx.ErrCanceled):
		out.ErrorCode = protocol.ErrTimeout
		out.tail = "the builder shut down and killed this build"
	default:
		out.ErrorCode = protocol.ErrBuildFailed
		// Nix's own error is the message; fall back to ours without one.
		out.tail = protocol.NewRedactor(repo.URL).Text(fmt.Sprintf("nix build failed: %v", err))
		if res.Tail != "" {
			out.tail = res.Tail
		}
		out.Error = out.tail
		return out
	}
	if res.Tail != "" {
		out.tail = res.Tail + "\n" + out.tail
	}
	out.Error = out.tail
	return out
}

// outPath picks the system's store path out of `nix build --json`.
func outPath(stdout []byte) string {
	var built []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if json.Unmarshal(stdout, &built) != nil || len(built) == 0 {
		return ""
	}
	return built[0].Outputs["out"]
}

func (s *Server) reject(req protocol.BuildRequest, code protocol.ErrorCode, msg string) {
	s.reply(req.ReplyTo, protocol.BuildResponse{
		ID: req.ID, Status: protocol.StatusRejected, Repo: validOr(req.Repo, protocol.ValidateRepo),
		Branch: validOr(req.Branch, protocol.ValidateRevision), ErrorCode: code, Message: msg,
	})
}

func validOr(s string, check func(string) error) string {
	if check(s) != nil {
		return ""
	}
	return s
}

func (s *Server) reply(replyTo string, resp protocol.BuildResponse) {
	if !s.core.ReplyAllowed(replyTo) {
		return
	}
	data, err := json.Marshal(resp)
	if err != nil {
		s.cfg.Logger.Error("encode build response", "err", err)
		return
	}
	// On <reply_to>.builder, the only reply subjects nats-config lets the
	// builder publish on: the client knows the builder sent it
	// (protocol.BoundReply).
	if err := s.cfg.Publish(protocol.BoundReply(replyTo, protocol.BuilderToken), data); err != nil {
		s.cfg.Logger.Error("publish build status", "reply_to", replyTo, "status", resp.Status, "err", err)
	}
}

// Shutdown stops accepting builds, waits up to the context's deadline for
// running builds to finish, then kills them (their hosts are reported as
// failed) and waits for their final statuses to be sent.
func (s *Server) Shutdown(ctx context.Context) { s.core.Shutdown(ctx) }

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// ErrorLine picks the most telling line of a failed build's output: the
// last line our own code added (timeouts, shutdown) when it is ours, else
// the builder's last log line as Nix quotes it ("> ..."), else Nix's last
// "error:" line, else the last line.
func ErrorLine(tail string) string {
	lines := strings.Split(strings.TrimRight(tail, "\n"), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	if strings.HasPrefix(last, "nix build ") || strings.HasPrefix(last, "the builder ") || strings.HasPrefix(last, "not built") {
		return last
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); strings.HasPrefix(l, "> ") {
			return strings.TrimSpace(l[2:])
		}
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); strings.HasPrefix(l, "error:") {
			return l
		}
	}
	return last
}

// clip keeps the last n lines of s, at most max bytes.
func clip(s string, n, max int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := strings.Join(lines, "\n")
	if len(out) > max {
		out = "…" + out[len(out)-max:]
	}
	return out
}
