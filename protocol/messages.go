package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
)

// MaxMessageSize bounds every request we accept from the network. Requests are
// a few hundred bytes; anything larger is hostile or broken.
const MaxMessageSize = 4096

// Action is a nixos-rebuild action.
type Action string

// The four nixos-rebuild actions a deploy may ask for.
const (
	ActionSwitch      Action = "switch"
	ActionBoot        Action = "boot"
	ActionTest        Action = "test"
	ActionDryActivate Action = "dry-activate"
)

// Actions lists the valid actions in the order they are documented.
func Actions() []Action {
	return []Action{ActionSwitch, ActionBoot, ActionTest, ActionDryActivate}
}

// Status is the state a listener or builder reports for a request.
type Status string

// Deploy and build statuses.
const (
	StatusAccepted  Status = "accepted"
	StatusRejected  Status = "rejected"
	StatusStarted   Status = "started"
	StatusCompleted Status = "completed"
	StatusFailed    Status = "failed"
	// StatusProgress is sent by the builder after each host.
	StatusProgress Status = "progress"
)

// Terminal reports whether no further status follows this one.
func (s Status) Terminal() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusRejected
}

// ErrorCode says why a request was rejected or failed. The zero value means
// no error and is encoded as JSON null.
type ErrorCode string

// Error codes.
const (
	ErrNone            ErrorCode = ""
	ErrInvalidRevision ErrorCode = "invalid_revision"
	ErrInvalidAction   ErrorCode = "invalid_action"
	ErrAlreadyRunning  ErrorCode = "already_running"
	ErrBuildFailed     ErrorCode = "build_failed"
	ErrTimeout         ErrorCode = "timeout"
	// ErrInvalidRequest covers malformed, oversized or otherwise unusable
	// requests (bad JSON, a bad reply subject, an unknown field).
	ErrInvalidRequest ErrorCode = "invalid_request"
	// ErrUnknownRepo and ErrUnknownHost are builder rejections.
	ErrUnknownRepo ErrorCode = "unknown_repo"
	ErrUnknownHost ErrorCode = "unknown_host"
	// ErrUnauthorized refuses a request whose signature is missing (where
	// trusted deployers are configured), invalid, expired, or by a key
	// that is not trusted (see Verify).
	ErrUnauthorized ErrorCode = "unauthorized"
)

// MarshalJSON encodes the empty code as null, as the protocol requires.
func (c ErrorCode) MarshalJSON() ([]byte, error) {
	if c == ErrNone {
		return []byte("null"), nil
	}
	return json.Marshal(string(c))
}

// UnmarshalJSON accepts null or a string.
func (c *ErrorCode) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*c = ErrNone
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*c = ErrorCode(s)
	return nil
}

// DeployRequest asks listeners to run nixos-rebuild.
type DeployRequest struct {
	// ID is unique per request and echoed in every response.
	ID       string `json:"id,omitempty"`
	Action   Action `json:"action"`
	Revision string `json:"revision"`
	ReplyTo  string `json:"reply_to"`
}

// DeployResponse is one status update from one listener.
type DeployResponse struct {
	ID       string    `json:"id,omitempty"`
	Hostname string    `json:"hostname"`
	Status   Status    `json:"status"`
	Error    ErrorCode `json:"error"`
	Message  string    `json:"message"`
	// Optional extensions.
	Tier            string  `json:"tier,omitempty"`
	Action          Action  `json:"action,omitempty"`
	Revision        string  `json:"revision,omitempty"`
	DurationSeconds float64 `json:"duration_seconds,omitempty"`
	// Output carries the lines of an output status (output.go).
	Output
	// Preview carries the diff of a preview's final status (diff.go).
	Preview
}

// DiscoverRequest asks every listener on the discovery subject to describe
// itself. Answers go to ReplyTo, a subject under deploy.responses.
type DiscoverRequest struct {
	ID      string `json:"id,omitempty"`
	ReplyTo string `json:"reply_to"`
	// Tier, when set, asks only listeners of that tier to answer.
	Tier string `json:"tier,omitempty"`
}

// DiscoverResponse describes one listener.
type DiscoverResponse struct {
	ID       string   `json:"id,omitempty"`
	Hostname string   `json:"hostname"`
	Tier     string   `json:"tier"`
	Role     string   `json:"role,omitempty"`
	Subjects []string `json:"subjects"`
	Version  string   `json:"version"`
	// Busy is true while the listener runs a deploy.
	Busy bool `json:"busy"`
	// LastDeploy is the outcome of the listener's most recent deploy since
	// it started, if any.
	LastDeploy *LastDeploy `json:"last_deploy,omitempty"`
}

// LastDeploy summarises a listener's most recent finished deploy.
type LastDeploy struct {
	// ID is the request's id (extension), when it had one: a deployer
	// that lost track of a deploy finds its outcome by it.
	ID              string    `json:"id,omitempty" jsonschema:"the request id of the deploy, when it had one"`
	Action          Action    `json:"action" jsonschema:"the nixos-rebuild action"`
	Revision        string    `json:"revision" jsonschema:"the branch, tag or commit deployed"`
	Status          Status    `json:"status" jsonschema:"completed or failed"`
	Error           ErrorCode `json:"error" jsonschema:"error code when it failed, null when it completed"`
	FinishedAt      string    `json:"finished_at" jsonschema:"when it finished, RFC 3339 UTC"`
	DurationSeconds float64   `json:"duration_seconds" jsonschema:"how long nixos-rebuild ran"`
	// Caller is the verified key of the deployer that asked for it; empty
	// (left out) when the request was unsigned.
	Caller string `json:"caller,omitempty" jsonschema:"NKey public key of the deployer that asked for it; absent when the request was unsigned"`
}

// DecodeError is returned by the decoders; Code says which error code the
// rejection carries.
type DecodeError struct {
	Code ErrorCode
	Msg  string
}

func (e *DecodeError) Error() string { return e.Msg }

// decodeStrict decodes one request of shape sh exactly (see exactDecode):
// at most MaxMessageSize bytes, exact and unique field names, no unknown
// field, no trailing data, a value of the right type in every field.
func decodeStrict(data []byte, sh *shape, v any) error {
	if err := exactDecode(data, MaxMessageSize, sh, true, v); err != nil {
		return &DecodeError{ErrInvalidRequest, "malformed request: " + err.Error()}
	}
	return nil
}

// DecodeDeployRequest parses and validates a deploy request from the network.
// On error the request's ReplyTo (and ID) are still returned when they can
// be read (see salvageReply), so the caller can tell the sender why it was
// rejected.
func DecodeDeployRequest(data []byte) (DeployRequest, error) {
	var req DeployRequest
	if err := decodeStrict(data, deployRequestShape, &req); err != nil {
		id, replyTo := salvageReply(data, DeployResponsesPrefix)
		return DeployRequest{ID: id, ReplyTo: replyTo}, err
	}
	if err := ValidateReplySubject(req.ReplyTo, DeployResponsesPrefix); err != nil {
		return DeployRequest{}, &DecodeError{ErrInvalidRequest, err.Error()}
	}
	if req.ID != "" {
		if err := ValidateRequestID(req.ID); err != nil {
			req.ID = ""
			return req, &DecodeError{ErrInvalidRequest, err.Error()}
		}
	}
	if err := ValidateRequestAction(string(req.Action)); err != nil {
		return req, &DecodeError{ErrInvalidAction, err.Error()}
	}
	if err := ValidateRevision(req.Revision); err != nil {
		return req, &DecodeError{ErrInvalidRevision, err.Error()}
	}
	return req, nil
}

// DecodeDiscoverRequest parses and validates a discovery request.
func DecodeDiscoverRequest(data []byte) (DiscoverRequest, error) {
	var req DiscoverRequest
	if err := decodeStrict(data, discoverRequestShape, &req); err != nil {
		return DiscoverRequest{}, err
	}
	if err := ValidateReplySubject(req.ReplyTo, DeployResponsesPrefix); err != nil {
		return DiscoverRequest{}, &DecodeError{ErrInvalidRequest, err.Error()}
	}
	if req.ID != "" {
		if err := ValidateRequestID(req.ID); err != nil {
			return DiscoverRequest{}, &DecodeError{ErrInvalidRequest, err.Error()}
		}
	}
	if req.Tier != "" {
		if err := ValidateTier(req.Tier); err != nil {
			return DiscoverRequest{}, &DecodeError{ErrInvalidRequest, err.Error()}
		}
	}
	return req, nil
}

// decodeAnswer decodes one answer of shape sh exactly (see exactDecode):
// at most MaxResponseSize bytes, exact and unique field names, a value of
// the right type in every field, no trailing data. Unknown fields are
// ignored, so that a listener or builder of a later version can add
// extensions; a name that differs from a known one only in case is not
// unknown, it is refused.
func decodeAnswer(data []byte, sh *shape, v any) error {
	if err := exactDecode(data, MaxResponseSize, sh, false, v); err != nil {
		return fmt.Errorf("malformed answer: %w", err)
	}
	return nil
}

// DecodeDeployResponse decodes a deploy status from the network exactly,
// then checks and cleans it (DeployResponse.Clean). It is a
// gather.Decoder.
func DecodeDeployResponse(data []byte) (DeployResponse, error) {
	var r DeployResponse
	if err := decodeAnswer(data, deployResponseShape, &r); err != nil {
		return DeployResponse{}, err
	}
	if err := r.check(); err != nil {
		return DeployResponse{}, err
	}
	r.clean()
	return r, nil
}

// DecodeDiscoverResponse decodes a discovery answer from the network
// exactly, then checks and cleans it (DiscoverResponse.Clean). It is a
// gather.Decoder.
func DecodeDiscoverResponse(data []byte) (DiscoverResponse, error) {
	var r DiscoverResponse
	if err := decodeAnswer(data, discoverResponseShape, &r); err != nil {
		return DiscoverResponse{}, err
	}
	if err := r.check(); err != nil {
		return DiscoverResponse{}, err
	}
	r.clean()
	return r, nil
}

// DecodeBuildResponse decodes a build response from the network exactly,
// then checks and cleans it (BuildResponse.Clean). It is a
// gather.Decoder.
func DecodeBuildResponse(data []byte) (BuildResponse, error) {
	var r BuildResponse
	if err := decodeAnswer(data, buildResponseShape, &r); err != nil {
		return BuildResponse{}, err
	}
	if err := r.check(); err != nil {
		return BuildResponse{}, err
	}
	r.clean()
	return r, nil
}

// ErrorCodeOf returns the error code carried by err, or ErrInvalidRequest.
func ErrorCodeOf(err error) ErrorCode {
	var de *DecodeError
	if errors.As(err, &de) {
		return de.Code
	}
	return ErrInvalidRequest
}
