package deploy

import (
	"fmt"
	"sort"
	"strings"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/protocol/gather"
)

// admit decides whether a decoded status can belong to this deploy and
// returns why not, or "" when it is counted. A status counts only when:
//   - it carries this request's id (or none: a base listener);
//   - on a host's own subject (<reply_to>.<hostname>, which nats-config
//     lets only that host's credential publish on), it names that host
//     and its tier;
//   - its host can be in the target: the target host itself for a
//     single-host deploy, a host of the target's tier for a group (custom
//     group subjects are subscribed to by name, so their hosts' tier is
//     not checked);
//   - it does not arrive on the bare reply subject for a host whose
//     statuses came on its own subject (someone else writing in its name
//     through a server that still grants the broad permission).
//
// A discovery answer never gets here: protocol.DecodeDeployStatus refuses
// an answer without a status.
func admit(m gather.Msg[protocol.DeployResponse], id string, target protocol.Target, hosts map[string]*hostState) string {
	r := m.Value
	switch {
	case r.ID != "" && r.ID != id:
		return fmt.Sprintf("it answers request %s, not %s", r.ID, id)
	case m.Bound() && r.Hostname != m.Sender:
		return fmt.Sprintf("it names host %s but came on the reply subject of %s, which only %s's credential may publish on", r.Hostname, m.Sender, m.Sender)
	case m.Bound() && r.Tier == "":
		return "it names no tier, which every listener that sends on its own subject does"
	case target.Kind == protocol.TargetHost && r.Hostname != target.Name:
		return fmt.Sprintf("host %s is not the target %s", r.Hostname, target.Name)
	case target.Tier != "" && r.Tier != "" && r.Tier != target.Tier:
		return fmt.Sprintf("host %s is in tier %s, and the deploy targets tier %s", r.Hostname, r.Tier, target.Tier)
	}
	if h := hosts[r.Hostname]; h != nil && h.verified && !m.Bound() {
		return fmt.Sprintf("it came on the bare reply subject, and %s's statuses come on its own", r.Hostname)
	}
	return ""
}

// unverifiedNote is what the summary adds when some host's status came on
// the bare reply subject: the subject then proves nothing about who sent it.
func unverifiedNote(hosts map[string]*hostState) string {
	var names []string
	for name, h := range hosts {
		if h.heard && !h.verified {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return ""
	}
	sort.Strings(names)
	return fmt.Sprintf("; not verified: %s (the status came on the bare reply subject: an older listener, or a NATS server that still lets every listener publish on deploy.responses.>; update the listener, and regenerate the server's authorization with homelab-deploy nats-config)", strings.Join(names, ", "))
}
