// Package build is the build tool module: the `build` tool (request half:
// publish a build request, collect the builder's statuses, report progress
// per host) and the builder's serve half (validate, list the repository's
// hosts with nix eval, nix build each with bounded parallelism, report).
package build

import (
	"context"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
)

// Input is the `build` tool's input.
type Input struct {
	Repo   string `json:"repo" jsonschema:"repository to build, as named in the builder's configuration"`
	Target string `json:"target,omitempty" jsonschema:"build only this host (a nixosConfigurations name); leave empty to build every host"`
	All    bool   `json:"all,omitempty" jsonschema:"build every host of the repository (the default when no target is given)"`
	Branch string `json:"branch,omitempty" jsonschema:"git branch, tag or 40-hex commit to build (default: the repository's default_branch)"`
}

// RequestFor turns the tool's input into a checked Request.
func RequestFor(in Input) (Request, error) {
	if in.All && in.Target != "" {
		return Request{}, tools.Invalid("give either target or all, not both")
	}
	req := Request{Repo: in.Repo, Target: in.Target, Branch: in.Branch}
	if err := req.Check(); err != nil {
		return Request{}, err
	}
	return req, nil
}

// Tool returns the `build` tool. It exists only with --enable-builds.
func Tool() tools.Tool {
	return tools.Define(tools.Tool{
		Name:  "build",
		Title: "Pre-build NixOS configurations on the build server",
		Description: "Asks the build server to run nix build for the NixOS configurations of a repository " +
			"(one host with target, or every host) at a branch, so that a later deploy finds them already built. " +
			"It changes no running machine; it fills the builder's Nix store. " +
			"Returns each host's success, duration and, on failure, the last lines of Nix's error. " +
			"Builds can take many minutes (up to an hour for a whole repository); progress is reported after each host. " +
			"A repository that is already building rejects a second build until the first has finished.",
		Annotations: tools.Annotations{ReadOnly: false, Destructive: false, Idempotent: true, OpenWorld: true},
		Gate:        tools.GateBuilds,
	}, func(in, _ *jsonschema.Schema) {
		in.Properties["repo"].Pattern = `^[A-Za-z0-9_-]+$`
		in.Properties["repo"].MaxLength = jsonschema.Ptr(protocol.MaxTokenLen)
		in.Properties["target"].Pattern = `^[A-Za-z0-9_-]+$`
		in.Properties["target"].MaxLength = jsonschema.Ptr(protocol.MaxTokenLen)
		in.Properties["branch"].Pattern = `^[A-Za-z0-9][A-Za-z0-9._/-]*$`
		in.Properties["branch"].MaxLength = jsonschema.Ptr(protocol.MaxRevisionLen)
	}, func(ctx context.Context, deps tools.Deps, in Input, progress tools.Progress) (Result, error) {
		req, err := RequestFor(in)
		if err != nil {
			return Result{}, err
		}
		conn := deps.BuildConn
		if conn == nil {
			conn = deps.Conn
		}
		return Send(ctx, conn, req, deps, progress)
	})
}
