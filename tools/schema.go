package tools

import (
	"github.com/google/jsonschema-go/jsonschema"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// Schema helpers shared by the tool modules: enums derived from protocol's
// constants, so that a new status or error code reaches every output
// schema from one list.

// Statuses lists every status a listener or builder reports.
func Statuses() []protocol.Status {
	return []protocol.Status{
		protocol.StatusAccepted, protocol.StatusStarted, protocol.StatusOutput, protocol.StatusProgress,
		protocol.StatusCompleted, protocol.StatusFailed, protocol.StatusRejected,
	}
}

// ErrorCodes lists every error code a listener, builder or requester
// reports.
func ErrorCodes() []protocol.ErrorCode {
	return []protocol.ErrorCode{
		protocol.ErrInvalidAction, protocol.ErrInvalidRevision, protocol.ErrInvalidRequest,
		protocol.ErrAlreadyRunning, protocol.ErrBuildFailed, protocol.ErrTimeout,
		protocol.ErrUnknownRepo, protocol.ErrUnknownHost, protocol.ErrUnauthorized, protocol.ErrRolledBack,
	}
}

// StatusEnum sets s (a status property) to the enum of every status.
func StatusEnum(s *jsonschema.Schema) {
	s.Enum = nil
	for _, st := range Statuses() {
		s.Enum = append(s.Enum, string(st))
	}
}

// ErrorCodeEnum sets s (an error code property) to the enum of every error
// code, plus null when the property is nullable (a deploy status's error).
func ErrorCodeEnum(s *jsonschema.Schema) {
	s.Enum = nil
	for _, t := range s.Types {
		if t == "null" {
			s.Enum = append(s.Enum, nil)
		}
	}
	for _, c := range ErrorCodes() {
		s.Enum = append(s.Enum, string(c))
	}
}

// NonNullArray makes an array property that reflection inferred as
// ["null","array"] an array: results always carry one, empty when there
// is nothing in it.
func NonNullArray(s *jsonschema.Schema) {
	s.Types = nil
	s.Type = "array"
}

// Bool makes a *bool property a plain boolean with a default.
func Bool(s *jsonschema.Schema, def bool) {
	s.Types = nil
	s.Type = "boolean"
	s.Default = Marshal(def)
}

// ExactlyOne adds to an object schema the rule that exactly one of the
// string properties strs and the boolean properties bools (true) is given,
// as a root "not" of the cases that break it. Clients that pass input
// schemas to a model (Claude's API among them) refuse oneOf, anyOf and
// allOf at the root, so the rule is written with "not", which they take.
// description names the rule in validation errors (see mcp's validate).
func ExactlyOne(in *jsonschema.Schema, description string, strs, bools []string) {
	type given = func() *jsonschema.Schema
	var present []given
	none := &jsonschema.Schema{Properties: map[string]*jsonschema.Schema{}}
	var anyStr []*jsonschema.Schema
	for _, s := range strs {
		present = append(present, func() *jsonschema.Schema { return &jsonschema.Schema{Required: []string{s}} })
		anyStr = append(anyStr, &jsonschema.Schema{Required: []string{s}})
	}
	for _, b := range bools {
		present = append(present, func() *jsonschema.Schema {
			return &jsonschema.Schema{Required: []string{b}, Properties: map[string]*jsonschema.Schema{b: {Const: jsonschema.Ptr[any](true)}}}
		})
		none.Properties[b] = &jsonschema.Schema{Const: jsonschema.Ptr[any](false)}
	}
	if len(anyStr) > 0 {
		none.Not = &jsonschema.Schema{AnyOf: anyStr}
	}
	broken := []*jsonschema.Schema{none}
	for i := range present {
		for j := i + 1; j < len(present); j++ {
			a, b := present[i](), present[j]()
			a.Required = append(a.Required, b.Required...)
			for k, v := range b.Properties {
				if a.Properties == nil {
					a.Properties = map[string]*jsonschema.Schema{}
				}
				a.Properties[k] = v
			}
			broken = append(broken, a)
		}
	}
	in.Not = &jsonschema.Schema{Description: description, AnyOf: broken}
}
