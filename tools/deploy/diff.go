package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/execx"
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/fleet"
)

// Preview before activation: the serve half of the "diff" action. The
// listener builds its new system with `nix build` (no link, so no GC root
// and no profile) and compares it with the running system through
// `nix store diff-closures`. Nothing here runs nixos-rebuild,
// switch-to-configuration or anything that writes a profile: the only
// programs run are `nix build` and `nix store diff-closures`.

// Preview configures the listener's side of a preview.
type Preview struct {
	// SystemRoot is the directory in which run/current-system and
	// run/booted-system are read ("" is /; tests use a fake system).
	SystemRoot string
	// Env is the environment nix runs with (nil: the listener's own).
	Env []string
	// Nix runs nix (default RunNix with Env).
	Nix NixFunc
}

// NixFunc runs argv (argv[0] is the program) without a shell, in its own
// process group, killed with it when ctx ends. line receives every line of
// stderr as it is written (may be nil). It returns stdout, the last lines
// of the output, and an error wrapping execx.ErrTimeout or
// execx.ErrCanceled when ctx ended first.
type NixFunc func(ctx context.Context, argv []string, line func(string)) (stdout []byte, tail string, err error)

// RunNix returns the real NixFunc, running with env (nil: the listener's).
func RunNix(env []string) NixFunc {
	return func(ctx context.Context, argv []string, line func(string)) ([]byte, string, error) {
		res, err := execx.Run(ctx, execx.Cmd{
			Path: argv[0], Args: argv[1:], Env: env, TailLines: 20, TailBytes: 2048, KeepStdout: true, OnLine: line,
		})
		return res.Stdout, res.Tail, err
	}
}

const (
	currentSystemLink = "run/current-system"
	bootedSystemLink  = "run/booted-system"
)

func (p Preview) path(rel string) string {
	root := p.SystemRoot
	if root == "" {
		root = "/"
	}
	return filepath.Join(root, rel)
}

func (p Preview) nix() NixFunc {
	if p.Nix != nil {
		return p.Nix
	}
	return RunNix(p.Env)
}

// previewArgv are the two commands of a preview: the build of the host's
// toplevel from the flake at the request's revision, and the diff of the
// running system against it. --refresh: a branch is fetched again, so the
// preview shows what the branch holds now, not what was cached an hour ago.
func previewBuildArgv(ref string) []string {
	return []string{"nix", "build", "--no-link", "--json", "--refresh", ref}
}

func previewDiffArgv(current, next string) []string {
	return []string{"nix", "store", "diff-closures", current, next}
}

// previewOutcome is the final status of a preview.
type previewOutcome struct {
	status  protocol.Status
	code    protocol.ErrorCode
	msg     string
	preview protocol.Preview
}

// preview carries out a request with ActionDiff, in run's place: it holds
// the host's deploy slot like any deploy, streams nix build's output, and
// ends with one final status that carries the diff. It never records a
// last deploy: nothing was deployed.
func (s *Server) preview(req protocol.DeployRequest, cur *Running, release func(), log *slog.Logger) {
	// Credentials in the flake URL never leave the host.
	red := protocol.NewRedactor(s.cfg.FlakeURL)
	ref, err := protocol.FlakeRef(s.cfg.FlakeURL, req.Revision, "nixosConfigurations."+s.cfg.Hostname+".config.system.build.toplevel")
	start := time.Now()
	var out previewOutcome
	if err != nil {
		out = previewOutcome{status: protocol.StatusFailed, code: protocol.ErrBuildFailed, msg: red.Text(err.Error())}
	} else {
		log.Info("preview started", "flake", red.Text(ref))
		s.reply(req, protocol.StatusStarted, protocol.ErrNone, "building "+red.Text(ref)+" without activating it, to compare with the running system", 0)
		ctx, cancel := context.WithTimeout(s.core.Context(), s.cfg.Timeout)
		out = s.runPreview(ctx, req, ref, red, log)
		cancel()
	}
	dur := time.Since(start)
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.Duration.WithLabelValues(string(req.Action), strconv.FormatBool(out.status == protocol.StatusCompleted)).Observe(dur.Seconds())
	}
	s.count(out.status, req.Action, out.code)
	log.Info("preview finished", "status", out.status, "error_code", out.code, "duration", dur.Round(time.Millisecond))
	release()
	s.changed()
	s.noteFinal(req, out.status, out.code, out.msg, dur)
	s.auditRun(cur, out.status, out.code)
	resp := s.response(req, out.status, out.code, out.msg, dur)
	resp.Preview = out.preview
	s.send(req, resp)
}

// runPreview builds, diffs and compares; the outcome is the final status.
func (s *Server) runPreview(ctx context.Context, req protocol.DeployRequest, ref string, red *protocol.Redactor, log *slog.Logger) previewOutcome {
	nix := s.cfg.Preview.nix()
	failed := func(code protocol.ErrorCode, msg string) previewOutcome {
		return previewOutcome{status: protocol.StatusFailed, code: code, msg: red.Text(msg)}
	}
	stdout, tail, err := s.streamNix(ctx, req, nix, previewBuildArgv(ref), red, log)
	if err != nil {
		return s.previewFailure(err, "nix build", tail, red)
	}
	next, err := builtPath(stdout)
	if err != nil {
		return failed(protocol.ErrBuildFailed, "nix build: "+err.Error()+"; nothing was activated")
	}
	curLink := s.cfg.Preview.path(currentSystemLink)
	current, err := filepath.EvalSymlinks(curLink)
	if err != nil {
		return failed(protocol.ErrBuildFailed, fmt.Sprintf("built %s, but there is no running system to compare it with (%v); nothing was activated", next, err))
	}
	// The booted system is what a reboot would replace; without one (not
	// NixOS, or a container) the running system stands in for it.
	booted, err := filepath.EvalSymlinks(s.cfg.Preview.path(bootedSystemLink))
	if err != nil {
		booted = current
	}
	changed := fleet.BootChanges(booted, next)
	reboot := len(changed) > 0
	var lines []string
	if current != next {
		dout, dtail, err := nix(ctx, previewDiffArgv(current, next), func(line string) { log.Info("nix store diff-closures output", "line", red.Text(line)) })
		if err != nil {
			return s.previewFailure(err, "nix store diff-closures", dtail, red)
		}
		lines = protocol.ParseClosureDiff(string(dout))
	}
	text, omitted := protocol.BoundDiff(lines)
	var b strings.Builder
	fmt.Fprintf(&b, "preview of %s (nothing was activated): ", req.Revision)
	if current == next {
		b.WriteString("the new system is the running system")
	} else {
		b.WriteString(protocol.DiffSummary(len(lines)-omitted, omitted))
	}
	if reboot {
		fmt.Fprintf(&b, "; reboot required: yes (%s differ from the booted system)", strings.Join(changed, ", "))
	} else {
		b.WriteString("; reboot required: no")
	}
	if text != "" {
		b.WriteString("\n" + text)
	}
	if omitted > 0 {
		fmt.Fprintf(&b, "\n… %d more line(s); the whole diff: nix store diff-closures %s %s", omitted, current, next)
	}
	return previewOutcome{
		status: protocol.StatusCompleted, msg: red.Text(b.String()),
		preview: protocol.Preview{Diff: protocol.DiffText(red.Text(text)), DiffOmittedLines: omitted, RebootRequired: &reboot},
	}
}

// previewFailure turns an error of step into the final status.
func (s *Server) previewFailure(err error, step, tail string, red *protocol.Redactor) previewOutcome {
	out := previewOutcome{status: protocol.StatusFailed, code: protocol.ErrBuildFailed}
	switch {
	case errors.Is(err, execx.ErrTimeout):
		out.code = protocol.ErrTimeout
		out.msg = fmt.Sprintf("%s of the preview exceeded the %s timeout and was killed; nothing was activated", step, s.cfg.Timeout)
	case errors.Is(err, execx.ErrCanceled):
		out.code = protocol.ErrTimeout
		out.msg = fmt.Sprintf("the listener on %s was stopped and killed %s of the preview; nothing was activated", s.cfg.Hostname, step)
	default:
		out.msg = fmt.Sprintf("%s of the preview failed: %v; nothing was activated", step, err)
	}
	if tail != "" {
		out.msg += "\n" + tail
	}
	out.msg = red.Text(out.msg)
	return out
}

// streamNix runs argv with its stderr lines in the log and, in batches, to
// the requester as output statuses with a heartbeat, as a rebuild's are.
func (s *Server) streamNix(ctx context.Context, req protocol.DeployRequest, nix NixFunc, argv []string, red *protocol.Redactor, log *slog.Logger) ([]byte, string, error) {
	stream := execx.StartStream(execx.StreamOptions{
		Interval: protocol.OutputInterval, Heartbeat: protocol.OutputHeartbeat,
		BatchLines: protocol.MaxOutputBatchLines, BatchBytes: protocol.MaxOutputBatchBytes,
		LineBytes: protocol.MaxOutputLineBytes, TotalLines: protocol.MaxOutputLines, TotalBytes: protocol.MaxOutputBytes,
		Clean: protocol.CleanOutputLine,
		Send: func(b execx.Batch) {
			msg := b.Last
			if msg == "" {
				msg = "nix build of the preview is running"
			}
			resp := s.response(req, protocol.StatusOutput, protocol.ErrNone, msg, 0)
			resp.Output = protocol.Output{Lines: b.Lines, DroppedLines: b.Dropped, ElapsedSeconds: protocol.Seconds(b.Elapsed)}
			s.send(req, resp)
		},
	})
	stdout, tail, err := nix(ctx, argv, func(line string) {
		line = red.Text(line)
		log.Info("nix build output", "line", line)
		stream.Line(line)
	})
	stream.Close()
	return stdout, red.Text(tail), err
}

// builtPath reads the system's store path from `nix build --json`.
func builtPath(stdout []byte) (string, error) {
	var built []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal(stdout, &built); err != nil || len(built) != 1 {
		return "", fmt.Errorf("unexpected output %q (want one build result)", protocol.CleanField(string(stdout)))
	}
	p := built[0].Outputs["out"]
	if !filepath.IsAbs(p) || filepath.Clean(p) != p || strings.ContainsAny(p, "\n\x00") {
		return "", fmt.Errorf("unexpected store path %q", protocol.CleanField(p))
	}
	return p, nil
}
