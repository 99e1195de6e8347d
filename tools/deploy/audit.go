package deploy

import (
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// statusDropped is the audit outcome of a request that got no answer: it
// named no reply subject the listener may publish to.
const statusDropped protocol.Status = "dropped"

// Running is the deploy in progress on the host.
type Running struct {
	ID string
	// Caller is the verified key of the deployer that asked for it; ""
	// when the request was unsigned.
	Caller   string
	Subject  string
	Action   protocol.Action
	Revision string
	// Arrived is when the request arrived.
	Arrived time.Time
}

// Running returns the deploy in progress, or nil.
func (s *Server) Running() *Running {
	r := s.running.Load()
	if r == nil {
		return nil
	}
	c := *r
	return &c
}

// authorize verifies a request's signature against the server's trusted
// deployers (protocol.Verify) and returns the verified caller key, "" for
// an accepted unsigned request. A signed request must carry an id: within
// the signature's lifetime only the replay window stops a repeat, and it
// needs the id. decoded says whether the body decoded, so that the
// missing id is not blamed on a body that has other faults.
func (s *Server) authorize(subject string, header nats.Header, data []byte, req protocol.DeployRequest, decoded bool) (string, error) {
	if len(data) > protocol.MaxMessageSize {
		// Dropped unparsed by the decoder in any case; hashing up to a
		// megabyte for a signature first would only cost time.
		return "", nil
	}
	caller, err := protocol.Verify(header, subject, data, s.cfg.Now(), s.cfg.Trusted)
	if err == nil && caller != "" && decoded && req.ID == "" {
		return "", &protocol.AuthError{Key: caller, Reason: "a signed request must carry an id, so that a copy of it is refused; send it with homelab-deploy, which sets one"}
	}
	return caller, err
}

// audit writes the one audit line of a handled request: who asked for
// what, on which subject, and how it ended.
func (s *Server) audit(subject, caller string, req protocol.DeployRequest, status protocol.Status, code protocol.ErrorCode, d time.Duration, authErr error) {
	attrs := []any{
		"id", req.ID, "caller", protocol.AuditCaller(caller), "subject", subject,
		"action", string(req.Action), "revision", req.Revision,
		"status", string(status), "error_code", string(code), "duration", d.Round(time.Millisecond),
	}
	var ae *protocol.AuthError
	if errors.As(authErr, &ae) && ae.Key != "" {
		attrs = append(attrs, "claimed_key", ae.Key)
	}
	s.cfg.Logger.Info("audit", attrs...)
}

// auditRun writes the audit line of a deploy that ran.
func (s *Server) auditRun(r *Running, status protocol.Status, code protocol.ErrorCode) {
	if r == nil {
		return
	}
	req := protocol.DeployRequest{ID: r.ID, Action: r.Action, Revision: r.Revision}
	s.audit(r.Subject, r.Caller, req, status, code, time.Since(r.Arrived), nil)
}

// callerOf is the caller of r, "" when r is nil or was unsigned.
func callerOf(r *Running) string {
	if r == nil {
		return ""
	}
	return r.Caller
}
