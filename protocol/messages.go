package protocol

import (
	"bytes"
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
	Action          Action    `json:"action" jsonschema:"the nixos-rebuild action"`
	Revision        string    `json:"revision" jsonschema:"the branch, tag or commit deployed"`
	Status          Status    `json:"status" jsonschema:"completed or failed"`
	Error           ErrorCode `json:"error" jsonschema:"error code when it failed, null when it completed"`
	FinishedAt      string    `json:"finished_at" jsonschema:"when it finished, RFC 3339 UTC"`
	DurationSeconds float64   `json:"duration_seconds" jsonschema:"how long nixos-rebuild ran"`
}

// DecodeError is returned by the decoders; Code says which error code the
// rejection carries.
type DecodeError struct {
	Code ErrorCode
	Msg  string
}

func (e *DecodeError) Error() string { return e.Msg }

// decodeStrict decodes one JSON object, refusing oversized payloads, unknown
// fields and trailing data.
func decodeStrict(data []byte, v any) error {
	if len(data) > MaxMessageSize {
		return &DecodeError{ErrInvalidRequest, fmt.Sprintf("request is %d bytes, more than the %d allowed", len(data), MaxMessageSize)}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &DecodeError{ErrInvalidRequest, "malformed request: " + err.Error()}
	}
	if dec.More() {
		return &DecodeError{ErrInvalidRequest, "malformed request: trailing data after the JSON object"}
	}
	return nil
}

// DecodeDeployRequest parses and validates a deploy request from the network.
// On error the request's ReplyTo is still returned when it was valid, so the
// caller can tell the sender why it was rejected.
func DecodeDeployRequest(data []byte) (DeployRequest, error) {
	var req DeployRequest
	if err := decodeStrict(data, &req); err != nil {
		// Try to salvage a reply subject so the sender learns why.
		var loose struct {
			ID      string `json:"id"`
			ReplyTo string `json:"reply_to"`
		}
		if len(data) <= MaxMessageSize && json.Unmarshal(data, &loose) == nil {
			if ValidateReplySubject(loose.ReplyTo, DeployResponsesPrefix) == nil {
				req = DeployRequest{ReplyTo: loose.ReplyTo}
				if ValidateRequestID(loose.ID) == nil {
					req.ID = loose.ID
				}
				return req, err
			}
		}
		return DeployRequest{}, err
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
	if err := ValidateAction(string(req.Action)); err != nil {
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
	if err := decodeStrict(data, &req); err != nil {
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

// ErrorCodeOf returns the error code carried by err, or ErrInvalidRequest.
func ErrorCodeOf(err error) ErrorCode {
	var de *DecodeError
	if errors.As(err, &de) {
		return de.Code
	}
	return ErrInvalidRequest
}
