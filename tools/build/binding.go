package build

import (
	"fmt"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/protocol/gather"
)

// admit decides whether a decoded build status can belong to this build
// and returns why not, or "" when it is counted: it must carry this
// request's id (or none: an older builder); on a sender's own subject,
// that sender must be the builder (<reply_to>.builder, which nats-config
// lets only the builder's credential publish on); and once a status came
// there, one on the bare reply subject is someone else's.
func admit(m gather.Msg[protocol.BuildResponse], id string, bound bool) string {
	r := m.Value
	switch {
	case r.ID != "" && r.ID != id:
		return fmt.Sprintf("it answers request %s, not %s", r.ID, id)
	case m.Bound() && m.Sender != protocol.BuilderToken:
		return fmt.Sprintf("it came on the reply subject of %s, and only the builder's (%s) carries build statuses", m.Sender, protocol.BuilderToken)
	case !m.Bound() && bound:
		return "it came on the bare reply subject, and the builder's statuses come on its own"
	}
	return ""
}

// unverifiedNote is what the summary adds when the final status came on
// the bare reply subject: the subject then proves nothing about who sent it.
const unverifiedNote = "; not verified (the status came on the bare reply subject: an older builder, or a NATS server that still lets the builder publish on build.responses.>; update the builder, and regenerate the server's authorization with homelab-deploy nats-config)"
