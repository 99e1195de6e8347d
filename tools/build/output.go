package build

import (
	"log/slog"

	"github.com/homelab-deploy/homelab-deploy/internal/execx"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// hostOutput starts the live output of one host's nix build: every line
// goes to the builder's log, one record per line, and in batches to the
// client as output statuses for the host (with a heartbeat while Nix is
// silent). Lines are redacted first (protocol.Redactor): credentials in
// the repository URL never leave the builder. closeOutput sends the last batch; call it
// before the host's progress status.
func (s *Server) hostOutput(req protocol.BuildRequest, repo Repo, base protocol.BuildResponse, host string, log *slog.Logger) (line func(string), closeOutput func()) {
	redact := protocol.NewRedactor(repo.URL)
	stream := execx.StartStream(execx.StreamOptions{
		Interval: protocol.OutputInterval, Heartbeat: protocol.OutputHeartbeat,
		BatchLines: protocol.MaxOutputBatchLines, BatchBytes: protocol.MaxOutputBatchBytes,
		LineBytes: protocol.MaxOutputLineBytes, TotalLines: protocol.MaxOutputLines, TotalBytes: protocol.MaxOutputBytes,
		Clean: protocol.CleanOutputLine,
		Send: func(b execx.Batch) {
			resp := base
			resp.Status = protocol.StatusOutput
			resp.Host = host
			resp.Message = b.Last
			if resp.Message == "" {
				resp.Message = "nix build of " + host + " is running"
			}
			resp.Output = protocol.Output{Lines: b.Lines, DroppedLines: b.Dropped, ElapsedSeconds: protocol.Seconds(b.Elapsed)}
			s.reply(req.ReplyTo, resp)
		},
	})
	log = log.With("host", host)
	return func(l string) {
		l = redact.Text(l)
		log.Info("nix build output", "line", l)
		stream.Line(l)
	}, stream.Close
}
