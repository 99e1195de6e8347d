package deploy

import (
	"context"
	"errors"
	"log/slog"
	"os"

	"github.com/homelab-deploy/homelab-deploy/internal/execx"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// Rebuild is one run of nixos-rebuild as the server asks for it.
type Rebuild struct {
	// Argv is the command line; Argv[0] is the program.
	Argv []string
	// Line receives every line of output (stdout and stderr merged) as it
	// is written.
	Line func(line string)
	// Inherit are files the command must hold for as long as it, or
	// anything it forks, lives (the rebuild lock), as descriptors 3, 4, …
	Inherit []*os.File
	// Started is called with the command's pid once it runs.
	Started func(pid int)
}

// RebuildFunc runs a Rebuild. It returns the last lines of the output, and
// an error wrapping execx.ErrTimeout when the context's deadline killed it
// (execx.ErrCanceled when the listener stopped).
type RebuildFunc func(ctx context.Context, r Rebuild) (tail string, err error)

// RunNixosRebuild is the real RebuildFunc: nixos-rebuild from PATH, no
// shell, in its own process group, killed with the group when ctx ends.
func RunNixosRebuild(ctx context.Context, r Rebuild) (string, error) {
	res, err := execx.Run(ctx, execx.Cmd{
		Path: r.Argv[0], Args: r.Argv[1:], TailLines: 20, TailBytes: 2048,
		OnLine: r.Line, ExtraFiles: r.Inherit, OnStart: r.Started,
	})
	return res.Tail, err
}

// execOnly runs an Executor as a RebuildFunc: no output lines, nothing
// inherited (tests and embedders that set only Exec).
func execOnly(exec Executor) RebuildFunc {
	return func(ctx context.Context, r Rebuild) (string, error) { return exec(ctx, r.Argv) }
}

// rebuild runs nixos-rebuild for req: every output line goes to the log,
// one record per line, and in batches to the requester as output statuses
// (with a heartbeat while it is silent); the last batch is sent before
// rebuild returns, so before the final status. Lines, the tail and the
// log are redacted (protocol.Redactor): credentials in the flake URL never
// leave the host.
func (s *Server) rebuild(ctx context.Context, req protocol.DeployRequest, argv []string, log *slog.Logger) (string, error) {
	stream := execx.StartStream(execx.StreamOptions{
		Interval: protocol.OutputInterval, Heartbeat: protocol.OutputHeartbeat,
		BatchLines: protocol.MaxOutputBatchLines, BatchBytes: protocol.MaxOutputBatchBytes,
		LineBytes: protocol.MaxOutputLineBytes, TotalLines: protocol.MaxOutputLines, TotalBytes: protocol.MaxOutputBytes,
		Clean: protocol.CleanOutputLine,
		Send:  func(b execx.Batch) { s.sendOutput(req, b) },
	})
	rb := Rebuild{Argv: argv, Line: func(line string) {
		line = s.redact.Text(line)
		log.Info("nixos-rebuild output", "line", line)
		stream.Line(line)
	}}
	if h := s.held; h != nil {
		rb.Inherit = []*os.File{h.File()}
		rb.Started = func(pid int) { h.Record(pid, req.ID, s.cfg.Now()) }
	}
	tail, err := s.cfg.Rebuild(ctx, rb)
	stream.Close()
	return s.redact.Text(tail), err
}

// sendOutput publishes one batch of output as an output status. Its
// message is the latest line, so that a deployer that does not know the
// status still shows something useful.
func (s *Server) sendOutput(req protocol.DeployRequest, b execx.Batch) {
	msg := b.Last
	if msg == "" {
		msg = "nixos-rebuild " + string(req.Action) + " is running"
	}
	resp := s.response(req, protocol.StatusOutput, protocol.ErrNone, msg, 0)
	resp.Output = protocol.Output{Lines: b.Lines, DroppedLines: b.Dropped, ElapsedSeconds: protocol.Seconds(b.Elapsed)}
	s.send(req, resp)
}

// openLock opens cfg.LockFile, if set, and says so in the log when a
// rebuild of an earlier listener process still holds it.
func openLock(cfg ServerConfig) (*RebuildLock, error) {
	if cfg.LockFile == "" {
		return nil, nil
	}
	lock, err := OpenRebuildLock(cfg.LockFile)
	if err != nil {
		return nil, err
	}
	if held, ok := lock.Held(); ok {
		cfg.Logger.Warn("deploys are refused with already_running until the rebuild lock is free", "lock", lock.Path(), "holder", held.Error())
	}
	return lock, nil
}

// takeLock takes the rebuild lock for the deploy about to start (nothing
// to take without LockFile).
func (s *Server) takeLock() error {
	s.held = nil
	if s.lock == nil {
		return nil
	}
	h, err := s.lock.Acquire()
	if err != nil {
		var held *LockHeldError
		if !errors.As(err, &held) {
			// Without the lock the listener cannot tell whether a rebuild
			// of its previous life runs: refuse rather than risk two.
			return errors.New("the listener on this host cannot check its rebuild lock (" + err.Error() + "); nothing was run")
		}
		return err
	}
	s.held = h
	return nil
}

// releaseLock gives up the deploy's hold on the rebuild lock.
func (s *Server) releaseLock() {
	if s.held != nil {
		s.held.Release()
	}
}

// lockedElsewhere reports whether another process (a rebuild of an
// earlier listener) holds the rebuild lock.
func (s *Server) lockedElsewhere() bool {
	if s.lock == nil {
		return false
	}
	_, held := s.lock.Held()
	return held
}
