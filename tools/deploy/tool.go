// Package deploy is the deploy tool module: the `deploy` and `deploy_admin`
// tools (request half: publish, collect, report progress) and the listener's
// serve half (validate, lock, run nixos-rebuild, report).
package deploy

import (
	"context"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
)

// DefaultBranch is the revision deployed when none is given.
const DefaultBranch = "master"

// Input is the `deploy` tool's input: a test-tier target and what to do.
type Input struct {
	Hostname string `json:"hostname,omitempty" jsonschema:"deploy to this one host (one subject token: letters, digits, '-', '_')"`
	All      bool   `json:"all,omitempty" jsonschema:"deploy to every host of the tier"`
	Role     string `json:"role,omitempty" jsonschema:"deploy to every host with this role in the tier"`
	Branch   string `json:"branch,omitempty" jsonschema:"git branch, tag or 40-hex commit of the flake to deploy (default master)"`
	Action   string `json:"action,omitempty" jsonschema:"nixos-rebuild action (default switch)"`
}

// AdminInput is the `deploy_admin` tool's input: Input plus a tier.
type AdminInput struct {
	Tier     string `json:"tier" jsonschema:"tier to deploy to"`
	Hostname string `json:"hostname,omitempty" jsonschema:"deploy to this one host (one subject token: letters, digits, '-', '_')"`
	All      bool   `json:"all,omitempty" jsonschema:"deploy to every host of the tier"`
	Role     string `json:"role,omitempty" jsonschema:"deploy to every host with this role in the tier"`
	Branch   string `json:"branch,omitempty" jsonschema:"git branch, tag or 40-hex commit of the flake to deploy (default master)"`
	Action   string `json:"action,omitempty" jsonschema:"nixos-rebuild action (default switch)"`
}

// TargetSubject turns a tier and exactly one of hostname, all or role into a
// deploy subject, validating every part.
func TargetSubject(tier, hostname string, all bool, role string) (string, error) {
	if err := protocol.ValidateTier(tier); err != nil {
		return "", tools.Invalid("%v", err)
	}
	n := 0
	if hostname != "" {
		n++
	}
	if all {
		n++
	}
	if role != "" {
		n++
	}
	if n != 1 {
		return "", tools.Invalid("give exactly one target: hostname, all or role")
	}
	switch {
	case hostname != "":
		if err := protocol.ValidateHostname(hostname); err != nil {
			return "", tools.Invalid("%v", err)
		}
		return protocol.DeploySubject(tier, hostname), nil
	case role != "":
		if err := protocol.ValidateRole(role); err != nil {
			return "", tools.Invalid("%v", err)
		}
		return protocol.DeployRoleSubject(tier, role), nil
	}
	return protocol.DeployAllSubject(tier), nil
}

// RequestFor validates the common fields and builds a Request.
func RequestFor(tier, hostname string, all bool, role, branch, action string) (Request, error) {
	subject, err := TargetSubject(tier, hostname, all, role)
	if err != nil {
		return Request{}, err
	}
	if branch == "" {
		branch = DefaultBranch
	}
	if action == "" {
		action = string(protocol.ActionSwitch)
	}
	if err := protocol.ValidateRevision(branch); err != nil {
		return Request{}, tools.Invalid("branch: %v", err)
	}
	if err := protocol.ValidateAction(action); err != nil {
		return Request{}, tools.Invalid("%v", err)
	}
	return Request{Subject: subject, Action: protocol.Action(action), Revision: branch}, nil
}

func actionEnum() []any {
	var out []any
	for _, a := range protocol.Actions() {
		out = append(out, string(a))
	}
	return out
}

func tierEnum() []any {
	var out []any
	for _, t := range protocol.Tiers {
		out = append(out, t)
	}
	return out
}

func fixInput(in, _ *jsonschema.Schema) {
	in.Properties["action"].Enum = actionEnum()
	in.Properties["action"].Default = []byte(`"switch"`)
	in.Properties["branch"].Default = []byte(`"master"`)
	in.Properties["branch"].MaxLength = jsonschema.Ptr(protocol.MaxRevisionLen)
	in.Properties["branch"].Pattern = `^[A-Za-z0-9][A-Za-z0-9._/-]*$`
	for _, k := range []string{"hostname", "role"} {
		in.Properties[k].Pattern = `^[A-Za-z0-9_-]+$`
		in.Properties[k].MaxLength = jsonschema.Ptr(protocol.MaxTokenLen)
	}
	if t, ok := in.Properties["tier"]; ok {
		t.Enum = tierEnum()
	}
}

// Tools returns the `deploy` and `deploy_admin` tools.
func Tools() []tools.Tool {
	deploy := tools.Define(tools.Tool{
		Name:  "deploy",
		Title: "Deploy NixOS configuration to test-tier hosts",
		Description: "Runs nixos-rebuild on hosts of the TEST tier only, from the fleet's git flake at the given branch. " +
			"Target exactly one of: hostname (one host), all (every test host) or role (test hosts with that role); " +
			"use list_hosts first to see the targets. It cannot reach prod hosts, whatever the input. " +
			"Returns each host's final status (completed, failed, rejected) with its message. " +
			"A deploy usually takes one to ten minutes and can take up to 15 minutes; progress is reported per host status.",
		Annotations: tools.Annotations{ReadOnly: false, Destructive: true, Idempotent: false, OpenWorld: true},
	}, fixInput, func(ctx context.Context, deps tools.Deps, in Input, progress tools.Progress) (Result, error) {
		req, err := RequestFor("test", in.Hostname, in.All, in.Role, in.Branch, in.Action)
		if err != nil {
			return Result{}, err
		}
		return Send(ctx, deps.Conn, req, deps, progress)
	})
	admin := tools.Define(tools.Tool{
		Name:  "deploy_admin",
		Title: "Deploy NixOS configuration to any tier (admin)",
		Description: "Runs nixos-rebuild on hosts of the given tier (test or prod) with the admin credential. " +
			"Target exactly one of: hostname, all or role; use list_hosts first. Deploying to prod changes production machines: " +
			"prefer dry-activate or test first, and confirm with the user before a prod switch. " +
			"Returns each host's final status with its message. A deploy usually takes one to ten minutes and can take up to 15 minutes.",
		Annotations: tools.Annotations{ReadOnly: false, Destructive: true, Idempotent: false, OpenWorld: true},
		Gate:        tools.GateAdmin,
	}, fixInput, func(ctx context.Context, deps tools.Deps, in AdminInput, progress tools.Progress) (Result, error) {
		req, err := RequestFor(in.Tier, in.Hostname, in.All, in.Role, in.Branch, in.Action)
		if err != nil {
			return Result{}, err
		}
		return Send(ctx, deps.AdminConn, req, deps, progress)
	})
	return []tools.Tool{deploy, admin}
}
