package build

import (
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// statusDropped is the audit outcome of a request that got no answer: it
// named no reply subject the builder may publish to.
const statusDropped protocol.Status = "dropped"

// auditAction is the action an audit line names for a build.
const auditAction = "build"

// authorize verifies a request's signature against the server's trusted
// deployers (protocol.Verify) and returns the verified caller key, "" for
// an accepted unsigned request. A signed request must carry an id: within
// the signature's lifetime only the replay window stops a repeat, and it
// needs the id. decoded says whether the body decoded, so that the
// missing id is not blamed on a body that has other faults.
func (s *Server) authorize(subject string, header nats.Header, data []byte, req protocol.BuildRequest, decoded bool) (string, error) {
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
// what, on which subject, and how it ended. The revision is the branch
// built, or the one asked for when the request was refused before the
// repository's default branch was looked up.
func (s *Server) audit(subject, caller, id, revision string, status protocol.Status, code protocol.ErrorCode, d time.Duration, authErr error) {
	attrs := []any{
		"id", id, "caller", protocol.AuditCaller(caller), "subject", subject,
		"action", auditAction, "revision", revision,
		"status", string(status), "error_code", string(code), "duration", d.Round(time.Millisecond),
	}
	var ae *protocol.AuthError
	if errors.As(authErr, &ae) && ae.Key != "" {
		attrs = append(attrs, "claimed_key", ae.Key)
	}
	s.cfg.Logger.Info("audit", attrs...)
}
