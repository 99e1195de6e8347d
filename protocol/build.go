package protocol

import "fmt"

// BuildTargetAll is the target that asks for every host of a repository.
const BuildTargetAll = "all"

// BuildRequest asks a builder to build one host or every host of a
// repository. It travels on build.<repo>.<target>.
type BuildRequest struct {
	// ID is unique per request and echoed in every response.
	ID     string `json:"id,omitempty"`
	Repo   string `json:"repo"`
	Target string `json:"target"`
	// Branch is a git branch, tag or commit; empty means the repo's
	// default_branch from the builder's configuration.
	Branch  string `json:"branch,omitempty"`
	ReplyTo string `json:"reply_to"`
}

// BuildHostResult is one host's outcome in a final build response.
type BuildHostResult struct {
	Host            string  `json:"host" jsonschema:"the host (a nixosConfigurations attribute) that was built"`
	Success         bool    `json:"success" jsonschema:"true when nix build succeeded"`
	DurationSeconds float64 `json:"duration_seconds" jsonschema:"seconds the host's nix build ran"`
	// Error holds the last lines of Nix's output when the build failed.
	Error string `json:"error,omitempty" jsonschema:"last lines of Nix's error output when the build failed"`
	// ErrorCode is build_failed or timeout when Success is false.
	ErrorCode ErrorCode `json:"error_code,omitempty" jsonschema:"build_failed or timeout when the build did not succeed"`
	// OutPath is the store path of the built system (an extension).
	OutPath string `json:"out_path,omitempty" jsonschema:"store path of the built system closure on the builder"`
}

// BuildResponse is one status update from a builder: started (with
// hosts_total), progress (one per finished host), then completed, failed or
// rejected. Fields that do not apply to a status are left out.
type BuildResponse struct {
	ID      string `json:"id,omitempty"`
	Status  Status `json:"status"`
	Repo    string `json:"repo,omitempty"`
	Branch  string `json:"branch,omitempty"`
	Message string `json:"message,omitempty"`
	// ErrorCode says why a build was rejected or a host failed (an
	// extension: unknown_repo, unknown_host, invalid_revision,
	// invalid_request, already_running, build_failed, timeout).
	ErrorCode ErrorCode `json:"error_code,omitempty"`

	// Progress fields.
	Host           string  `json:"host,omitempty"`
	HostSuccess    *bool   `json:"host_success,omitempty"`
	HostsCompleted int     `json:"hosts_completed,omitempty"`
	HostsTotal     int     `json:"hosts_total,omitempty"`
	Duration       float64 `json:"duration_seconds,omitempty"`
	// Error holds the last lines of Nix's output when a host failed (or
	// when listing the hosts failed).
	Error   string `json:"error,omitempty"`
	OutPath string `json:"out_path,omitempty"`

	// Final fields (completed, failed).
	Results              []BuildHostResult `json:"results,omitempty"`
	Succeeded            int               `json:"succeeded"`
	Failed               int               `json:"failed"`
	TotalDurationSeconds float64           `json:"total_duration_seconds,omitempty"`

	// Output carries the lines of an output status for Host (output.go).
	Output
}

// DecodeBuildRequest parses and validates a build request from the network:
// strict JSON, reply_to under build.responses., a repo token, a target that
// is "all" or one hostname token, and a branch from the revision allowlist
// (or empty). On error the request's ReplyTo (and ID) are still returned
// when they were valid, so the caller can tell the sender why.
func DecodeBuildRequest(data []byte) (BuildRequest, error) {
	var req BuildRequest
	if err := decodeStrict(data, buildRequestShape, &req); err != nil {
		id, replyTo := salvageReply(data, BuildResponsesPrefix)
		return BuildRequest{ID: id, ReplyTo: replyTo}, err
	}
	if err := ValidateReplySubject(req.ReplyTo, BuildResponsesPrefix); err != nil {
		return BuildRequest{}, &DecodeError{ErrInvalidRequest, err.Error()}
	}
	if req.ID != "" {
		if err := ValidateRequestID(req.ID); err != nil {
			req.ID = ""
			return req, &DecodeError{ErrInvalidRequest, err.Error()}
		}
	}
	if err := ValidateRepo(req.Repo); err != nil {
		return req, &DecodeError{ErrInvalidRequest, err.Error()}
	}
	if err := ValidateBuildTarget(req.Target); err != nil {
		return req, &DecodeError{ErrInvalidRequest, err.Error()}
	}
	if req.Branch != "" {
		if err := ValidateRevision(req.Branch); err != nil {
			return req, &DecodeError{ErrInvalidRevision, "branch: " + err.Error()}
		}
	}
	return req, nil
}

// ValidateBuildTarget checks a build target: "all" or one hostname token.
func ValidateBuildTarget(s string) error {
	if s == BuildTargetAll {
		return nil
	}
	if err := ValidateHostname(s); err != nil {
		return fmt.Errorf("target must be %q or one host: %w", BuildTargetAll, err)
	}
	return nil
}
