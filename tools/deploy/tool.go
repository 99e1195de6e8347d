// Package deploy is the deploy tool module: the `deploy` and `deploy_admin`
// tools (request half: publish, collect, report progress) and the listener's
// serve half (validate, lock, run nixos-rebuild, report).
package deploy

import (
	"context"
	"fmt"
	"time"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
)

// DefaultBranch is the revision deployed when none is given.
const DefaultBranch = "master"

// Input is the `deploy` tool's input: a test-tier target and what to do.
type Input struct {
	Hostname            string  `json:"hostname,omitempty" jsonschema:"deploy to this one host (one subject token: letters, digits, '-', '_')"`
	All                 bool    `json:"all,omitempty" jsonschema:"deploy to every host of the tier"`
	Role                string  `json:"role,omitempty" jsonschema:"deploy to every host with this role in the tier"`
	Branch              string  `json:"branch,omitempty" jsonschema:"git branch, tag or 40-hex commit of the flake to deploy (default master)"`
	Action              string  `json:"action,omitempty" jsonschema:"nixos-rebuild action (default switch)"`
	TimeoutSeconds      int     `json:"timeout_seconds,omitempty" jsonschema:"how long to wait for every host's final status, in seconds (default 900)"`
	AcceptWindowSeconds float64 `json:"accept_window_seconds,omitempty" jsonschema:"for a group: with the fleet registry, how long a member has to answer before it counts as no_answer; without it, how long to wait for further hosts after the last status; in seconds (default 2)"`
	Batch               string  `json:"batch,omitempty" jsonschema:"roll a group (all or role) out in batches of this many hosts (2) or this share of the group (25%); each batch starts when every host of the previous one completed"`
	Canary              string  `json:"canary,omitempty" jsonschema:"with a group: deploy this member alone first, and go on only if it completed"`
	MaxFailures         int     `json:"max_failures,omitempty" jsonschema:"in a staged rollout, how many failed hosts to tolerate before halting (default 0); hosts not yet started are reported skipped"`
	Diff                bool    `json:"diff,omitempty" jsonschema:"preview instead of deploying: each host builds the new system without activating it and reports the closure diff against its running system (changed packages and versions) and whether a reboot would be needed (reboot_required). Nothing is activated; give no action, batch or canary"`
	SkipOffline         bool    `json:"skip_offline,omitempty" jsonschema:"for a group (all or role): leave out the members the fleet registry has offline instead of counting them as failed; they are listed in skipped"`
	Wait                *bool   `json:"wait,omitempty" jsonschema:"true (default): return when every host has finished. false: return at once, after the first host answered, with the request id and done false; then call status with that id until done is true. Use false for real deploys: a rebuild takes minutes"`
}

// AdminInput is the `deploy_admin` tool's input: Input plus a tier.
type AdminInput struct {
	Tier string `json:"tier" jsonschema:"tier to deploy to"`
	Input
	// Subject is a literal deploy subject of a custom shape (a listener's
	// --deploy-subject), instead of tier and target; adapters only.
	Subject string `json:"subject,omitempty" jsonschema:"a literal deploy subject instead of tier and target"`
}

// Check validates the input of the `deploy` tool: its tier is always test.
func (in Input) Check() (Call, error) {
	return AdminInput{Tier: "test", Input: in}.Check()
}

// Check validates the input of the `deploy_admin` tool.
func (in AdminInput) Check() (Call, error) {
	var req Request
	var err error
	if in.Subject != "" {
		req, err = customRequest(in)
	} else {
		req, err = RequestFor(in.Tier, in.Hostname, in.All, in.Role, in.Branch, in.Action)
	}
	if err != nil {
		return Call{}, err
	}
	if in.TimeoutSeconds < 0 || in.TimeoutSeconds > MaxTimeoutSeconds {
		return Call{}, tools.Invalid("timeout_seconds must be between 1 and %d", MaxTimeoutSeconds)
	}
	if in.AcceptWindowSeconds < 0 || in.AcceptWindowSeconds > MaxAcceptWindowSeconds {
		return Call{}, tools.Invalid("accept_window_seconds must be between 0 and %d", MaxAcceptWindowSeconds)
	}
	staging := Staging{Batch: in.Batch, Canary: in.Canary, MaxFailures: in.MaxFailures}
	if err := staging.check(req.Subject); err != nil {
		return Call{}, err
	}
	if in.Diff {
		if req, err = previewOf(in.Input, req, staging); err != nil {
			return Call{}, err
		}
	}
	return Call{Request: req, Staging: staging, Wait: in.Wait == nil || *in.Wait, Options: Options{
		Timeout:      time.Duration(in.TimeoutSeconds) * time.Second,
		AcceptWindow: time.Duration(in.AcceptWindowSeconds * float64(time.Second)),
		SkipOffline:  in.SkipOffline,
	}}, nil
}

// customRequest checks a deploy to a literal subject of a custom shape.
func customRequest(in AdminInput) (Request, error) {
	if in.Tier != "" || in.Hostname != "" || in.All || in.Role != "" {
		return Request{}, tools.Invalid("give either a subject or a tier and target, not both")
	}
	if _, err := protocol.ParseDeploySubject(in.Subject); err != nil {
		return Request{}, tools.Invalid("%v", err)
	}
	return change(in.Subject, in.Branch, in.Action)
}

// Bounds of the tunable inputs.
const (
	MaxTimeoutSeconds      = 86400
	MaxAcceptWindowSeconds = 600
)

// Call is a checked deploy: what to send and how long to wait.
type Call struct {
	Request Request
	Staging Staging
	Options Options
	// Wait is false when the caller reads the result later (status).
	Wait bool
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
	return change(subject, branch, action)
}

// change checks what is to be deployed to subject, filling the defaults.
func change(subject, branch, action string) (Request, error) {
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

func fixInput(in, out *jsonschema.Schema) {
	fixOutput(out)
	tools.Bool(in.Properties["wait"], true)
	tools.ExactlyOne(in, "give exactly one target: hostname, all (true) or role", []string{"hostname", "role"}, []string{"all"})
	in.Properties["action"].Enum = actionEnum()
	in.Properties["action"].Default = []byte(`"switch"`)
	in.Properties["branch"].Default = []byte(`"` + DefaultBranch + `"`)
	in.Properties["branch"].MaxLength = jsonschema.Ptr(protocol.MaxRevisionLen)
	in.Properties["branch"].Pattern = protocol.RevisionPattern
	for _, k := range []string{"hostname", "role"} {
		in.Properties[k].Pattern = protocol.TokenPattern
		in.Properties[k].MaxLength = jsonschema.Ptr(protocol.MaxTokenLen)
	}
	if t, ok := in.Properties["tier"]; ok {
		t.Enum = tierEnum()
	}
	in.Properties["timeout_seconds"].Minimum = jsonschema.Ptr(1.0)
	in.Properties["timeout_seconds"].Maximum = jsonschema.Ptr(float64(MaxTimeoutSeconds))
	in.Properties["timeout_seconds"].Default = []byte(fmt.Sprint(int(DefaultTimeout / time.Second)))
	in.Properties["batch"].Pattern = `^[1-9][0-9]{0,4}%?$`
	in.Properties["canary"].Pattern = protocol.TokenPattern
	in.Properties["canary"].MaxLength = jsonschema.Ptr(protocol.MaxTokenLen)
	in.Properties["max_failures"].Minimum = jsonschema.Ptr(0.0)
	in.Properties["max_failures"].Maximum = jsonschema.Ptr(float64(maxBatchHosts))
}

// fixOutput puts the enums of statuses and error codes on the result
// schema, and makes hosts an array (empty when nobody answered).
func fixOutput(out *jsonschema.Schema) {
	tools.NonNullArray(out.Properties["hosts"])
	host := out.Properties["hosts"].Items
	tools.StatusEnum(host.Properties["status"])
	tools.ErrorCodeEnum(host.Properties["error"])
}

// AdminGate switches deploy_admin on (--enable-admin).
var AdminGate = &tools.Gate{Name: "admin", Help: "offer the deploy_admin tool, which deploys to any tier with the admin credential"}

// AdminCredential is the identity deploy_admin acts with (--admin-nkey-file).
var AdminCredential = &tools.Credential{Name: "admin", Holder: "the admin deployer", Help: "NKey seed file of the admin deployer, required by --enable-admin", Own: true}

// waitAdvice ends the deploy tools' descriptions: how to wait for minutes
// of work without a client timeout.
const waitAdvice = "A deploy usually takes one to ten minutes and can take up to 15. For a real deploy pass \"wait\": false: " +
	"the call returns within seconds with the request id and done false, and the deploy goes on; then call status with {\"id\": \"<id>\"} " +
	"every 15 to 30 seconds until done is true, and report each host's outcome. With wait true (the default) the call returns when every host " +
	"has finished and sends a progress notification at least every 5 seconds meanwhile (host, running time, latest output line)."

// Tools returns the `deploy` and `deploy_admin` tools.
func Tools() []tools.Tool {
	deploy := tools.Define(tools.Tool{
		Name:  "deploy",
		Title: "Deploy NixOS configuration to test-tier hosts",
		Description: "Runs nixos-rebuild on hosts of the TEST tier only, from the fleet's git flake at the given branch. " +
			"Target exactly one of: hostname (one host), all (every test host) or role (test hosts with that role); " +
			"use list_hosts first to see the targets. It cannot reach prod hosts, whatever the input. " +
			"Pass diff: true first to preview a change: each host builds the new system without activating it and returns the closure diff and reboot_required; show it to the user before deploying. " +
			"Returns each host's final status (completed, failed, rejected) with its message and, on failure, the last lines of nixos-rebuild's output. " +
			waitAdvice,
		Annotations: tools.Annotations{ReadOnly: false, Destructive: true, Idempotent: false, OpenWorld: true},
		Hidden:      []string{"accept_window_seconds"},
	}, fixInput, Input.Check, run)
	admin := tools.Define(tools.Tool{
		Name:  "deploy_admin",
		Title: "Deploy NixOS configuration to any tier (admin)",
		Description: "Runs nixos-rebuild on hosts of the given tier (test or prod) with the admin credential. " +
			"Target exactly one of: hostname, all or role; use list_hosts first. Deploying to prod changes production machines: " +
			"Before a prod switch, preview it with diff: true (each host builds the new system without activating it and returns the closure diff and reboot_required), " +
			"show the diff to the user and confirm with them before deploying; prefer test before switch. " +
			"Returns each host's final status with its message and, on failure, the last lines of nixos-rebuild's output. " +
			waitAdvice,
		Annotations: tools.Annotations{ReadOnly: false, Destructive: true, Idempotent: false, OpenWorld: true},
		Gate:        AdminGate,
		Credential:  AdminCredential,
		Hidden:      []string{"accept_window_seconds", "subject"},
	}, fixInput, AdminInput.Check, run)
	return []tools.Tool{deploy, admin}
}

// run carries a checked deploy out through tools.Track, which keeps it
// for the status tool and returns early when the caller does not wait.
func run(ctx context.Context, env tools.Env, c Call, progress tools.Progress) (Result, error) {
	c.Options.Logger = env.Logger
	id := protocol.NewID()
	if !c.Staging.Staged() {
		// One request on the wire: the call is kept under its id, which
		// is also what the hosts report as their last deploy.
		c.Options.ID = id
	}
	return tools.Track(ctx, env, id, c.Wait, newTracker(id, c.Request), progress, func(ctx context.Context, progress tools.Progress) (Result, error) {
		var res Result
		var err error
		if c.Staging.Staged() {
			res, err = Rollout(ctx, env.Conn, c.Request, c.Staging, c.Options, progress)
		} else {
			res, err = Send(ctx, env.Conn, c.Request, c.Options, progress)
		}
		res.Done = true
		if res.Hosts == nil {
			res.Hosts = []HostResult{}
		}
		if err == nil && len(res.Hosts) == 0 && res.Subject != "" {
			res.Message += elsewhere(ctx, env, res.Subject)
		}
		return res, err
	})
}

// elsewhere looks up, after nobody answered a deploy to one host, whether
// the host exists in another tier, and says which tool reaches it.
func elsewhere(ctx context.Context, env tools.Env, subject string) string {
	target, err := protocol.ParseDeploySubject(subject)
	if err != nil || target.Group() || target.Tier != "test" || env.Tool != "deploy" {
		return ""
	}
	found, err := listhosts.Discover(ctx, env.Conn, "", protocol.DefaultDiscoverSubject, listhosts.Options{Logger: env.Logger})
	if err != nil {
		return ""
	}
	var tiers []string
	for _, h := range found.Hosts {
		if h.Hostname == target.Name && h.Tier != target.Tier {
			tiers = append(tiers, h.Tier)
		}
	}
	return prodHint(target.Name, tiers)
}
