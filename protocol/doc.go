// Package protocol is the wire between deployers, listeners and builders:
// message types with their exact JSON names, status and error codes, subject
// builders and parsers, the allowlist validators every network or user input
// passes through, flake reference building, and the NATS connection policy.
//
// It knows nothing of MCP, flags or processes.
package protocol
