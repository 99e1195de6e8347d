package deploy

import (
	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
)

// The request half of a preview (`diff`): the input becomes a request
// with protocol.ActionDiff, and a rejection from a listener that predates
// previews is explained.

// previewOf turns the checked request of an input with diff into a
// preview. A preview activates nothing, so it takes no action, and it
// reaches every target at once: staging is for changes.
func previewOf(in Input, req Request, staging Staging) (Request, error) {
	if in.Action != "" && in.Action != string(protocol.ActionSwitch) {
		return Request{}, tools.Invalid("diff previews the change without activating anything, so it takes no action (got %q): leave action out, then deploy with the action you want", in.Action)
	}
	if staging.Staged() {
		return Request{}, tools.Invalid("diff previews every target at once and activates nothing: leave batch and canary out")
	}
	req.Action = protocol.ActionDiff
	return req, nil
}

// oldListenerNote is added to the message of a host that refused a
// preview as an unknown action.
const oldListenerNote = "; this listener predates previews (diff) and ran nothing: upgrade homelab-deploy on it to preview there"

// explainOldListener adds to the message of a host that refused a
// preview as an unknown action why: its listener is an older version,
// which refuses unknown actions and so ran nothing.
func explainOldListener(action protocol.Action, h *HostResult) {
	if action == protocol.ActionDiff && h.Status == protocol.StatusRejected && h.Error == protocol.ErrInvalidAction {
		h.Message += oldListenerNote
	}
}
