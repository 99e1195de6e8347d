// Package build is the build tool module: the `build` tool (request half:
// publish a build request, collect the builder's statuses, report progress
// per host) and the builder's serve half (validate, list the repository's
// hosts with nix eval, nix build each with bounded parallelism, report).
package build

import (
	"context"
	"fmt"
	"time"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools"
)

// Input is the `build` tool's input.
type Input struct {
	Repo           string `json:"repo" jsonschema:"repository to build, as named in the builder's configuration"`
	Target         string `json:"target,omitempty" jsonschema:"build only this host (a nixosConfigurations name); give either target or all"`
	All            bool   `json:"all,omitempty" jsonschema:"build every host of the repository; give either target or all"`
	Branch         string `json:"branch,omitempty" jsonschema:"git branch, tag or 40-hex commit to build (default: the repository's default_branch)"`
	TimeoutSeconds int    `json:"timeout_seconds,omitempty" jsonschema:"how long to wait for the builder's final status, in seconds (default 3600)"`
	Wait           *bool  `json:"wait,omitempty" jsonschema:"true (default): return when the build has finished. false: return at once, after the builder answered, with the request id and done false; then call status with that id until done is true. Use false for builds of more than one host"`
}

// MaxTimeoutSeconds bounds timeout_seconds.
const MaxTimeoutSeconds = 86400

// Call is a checked build: what to send and how long to wait.
type Call struct {
	Request Request
	Options Options
	// Wait is false when the caller reads the result later (status).
	Wait bool
}

// Check validates the input. Building every host must be asked for
// explicitly: an empty target (an unset variable in a script, a field the
// assistant left out) never widens a build to the whole repository.
func (in Input) Check() (Call, error) {
	if err := protocol.ValidateRepo(in.Repo); err != nil {
		return Call{}, &tools.InputError{Err: err}
	}
	switch {
	case in.All && in.Target != "":
		return Call{}, tools.Invalid("give either a target host or all, not both")
	case !in.All && in.Target == "":
		return Call{}, tools.Invalid("name a target host to build, or ask for every host of %s with all (on the command line: --all)", in.Repo)
	case in.Target == protocol.BuildTargetAll:
		return Call{}, tools.Invalid("to build every host, ask for all (on the command line: --all) rather than a target named %q", protocol.BuildTargetAll)
	}
	if in.TimeoutSeconds < 0 || in.TimeoutSeconds > MaxTimeoutSeconds {
		return Call{}, tools.Invalid("timeout_seconds must be between 1 and %d", MaxTimeoutSeconds)
	}
	req := Request{Repo: in.Repo, Target: in.Target, Branch: in.Branch}
	if err := req.Check(); err != nil {
		return Call{}, err
	}
	return Call{Request: req, Wait: in.Wait == nil || *in.Wait, Options: Options{Timeout: time.Duration(in.TimeoutSeconds) * time.Second}}, nil
}

// Gate switches the build tool on (--enable-builds).
var Gate = &tools.Gate{Name: "builds", Help: "offer the build tool, which asks the builder to pre-build configurations"}

// Credential is the identity builds are requested with (--build-nkey-file);
// without it the adapter's default credential is used.
var Credential = &tools.Credential{Name: "build", Holder: "a build client", Help: "NKey seed file of a build client for the build tool; default: the --nkey-file credential"}

// Tool returns the `build` tool. It exists only with --enable-builds.
func Tool() tools.Tool {
	return tools.Define(tools.Tool{
		Name:  "build",
		Title: "Pre-build NixOS configurations on the build server",
		Description: "Asks the build server to run nix build for the NixOS configurations of a repository " +
			"(one host with target, or every host with all: true) at a branch, so that a later deploy finds them already built. " +
			"It changes no running machine; it fills the builder's Nix store. " +
			"Returns each host's success, duration and, on failure, the last lines of Nix's error. " +
			"Builds can take many minutes (up to an hour for a whole repository). Pass \"wait\": false to get the request id at once, " +
			"then call status with {\"id\": \"<id>\"} every 30 seconds or so until done is true; with wait true (the default) " +
			"progress notifications come at least every 5 seconds (host, running time, latest output line) and after each host. " +
			"A repository that is already building rejects a second build until the first has finished.",
		Annotations: tools.Annotations{ReadOnly: false, Destructive: false, Idempotent: true, OpenWorld: true},
		Gate:        Gate,
		Credential:  Credential,
	}, func(in, out *jsonschema.Schema) {
		tools.Bool(in.Properties["wait"], true)
		tools.StatusEnum(out.Properties["status"])
		tools.ErrorCodeEnum(out.Properties["error_code"])
		tools.NonNullArray(out.Properties["results"])
		tools.ErrorCodeEnum(out.Properties["results"].Items.Properties["error_code"])
		for _, k := range []string{"repo", "target"} {
			in.Properties[k].Pattern = protocol.TokenPattern
			in.Properties[k].MaxLength = jsonschema.Ptr(protocol.MaxTokenLen)
		}
		in.Properties["branch"].Pattern = protocol.RevisionPattern
		in.Properties["branch"].MaxLength = jsonschema.Ptr(protocol.MaxRevisionLen)
		in.Properties["timeout_seconds"].Minimum = jsonschema.Ptr(1.0)
		in.Properties["timeout_seconds"].Maximum = jsonschema.Ptr(float64(MaxTimeoutSeconds))
		in.Properties["timeout_seconds"].Default = []byte(fmt.Sprint(int(DefaultTimeout / time.Second)))
	}, Input.Check, run)
}

// run carries a checked build out through tools.Track, which keeps it for
// the status tool and returns early when the caller does not wait.
func run(ctx context.Context, env tools.Env, c Call, progress tools.Progress) (Result, error) {
	c.Options.Logger = env.Logger
	c.Options.ID = protocol.NewID()
	return tools.Track(ctx, env, c.Options.ID, c.Wait, newTracker(c.Options.ID, c.Request), progress, func(ctx context.Context, progress tools.Progress) (Result, error) {
		res, err := Send(ctx, env.Conn, c.Request, c.Options, progress)
		res.Done = true
		if res.Results == nil {
			res.Results = []protocol.BuildHostResult{}
		}
		return res, err
	})
}
