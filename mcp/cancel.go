package mcpserver

import (
	"bytes"
	"encoding/json"
	"io"
	"strconv"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Cancellation on stdio. MCP says that after notifications/cancelled the
// server should send no response for the cancelled request. The go-sdk
// cancels the handler's context, but its JSON-RPC layer answers every call
// whatever the handler returns (internal/jsonrpc2 processResult writes a
// response for every call, here {"code":0,"message":"context canceled"}).
// StdioTransport therefore watches the bytes between the client and the
// SDK: it reads each newline-delimited message the client sends (the
// stdio transport's framing) before the SDK does, notes the calls in
// flight and the ones the client cancelled, and drops the response to a
// cancelled call when the SDK writes it (the SDK writes one message per
// Write). A cancellation that arrives after the response was written
// changes nothing, and an id is forgotten once answered, so a client that
// reuses ids loses nothing.
//
// The HTTP transports are left as the SDK makes them: there the SDK owns
// the connection objects, and on streamable HTTP the response is what ends
// the call's POST stream (see docs/mcp.md).

// StdioTransport is the MCP stdio transport over r and w that sends no
// response to a call the client cancelled.
func StdioTransport(r io.Reader, w io.Writer) mcp.Transport {
	c := newCancels()
	return &stdioTransport{IOTransport: &mcp.IOTransport{Reader: io.NopCloser(&cancelReader{r: r, c: c}), Writer: cancelWriter{w: w, c: c}}, c: c}
}

type stdioTransport struct {
	*mcp.IOTransport
	c *cancels
}

// dropped counts the responses dropped so far (tests).
func (t *stdioTransport) dropped() int {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	return t.c.n
}

// maxTrackedLine bounds the bytes kept of one incoming line; a longer line
// passes through untracked (it cannot be a cancellation).
const maxTrackedLine = 1 << 20

// cancels holds the ids of the calls in flight and of those cancelled.
type cancels struct {
	mu        sync.Mutex
	inFlight  map[string]bool
	cancelled map[string]bool
	n         int // responses dropped
}

func newCancels() *cancels {
	return &cancels{inFlight: map[string]bool{}, cancelled: map[string]bool{}}
}

// message is what cancels reads of a JSON-RPC message.
type message struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params struct {
		RequestID json.RawMessage `json:"requestId"`
	} `json:"params"`
	Result json.RawMessage `json:"result"`
	Error  json.RawMessage `json:"error"`
}

// idKey normalises a JSON-RPC id: the SDK answers 7 to 7.0 and "7" to
// "7", so numbers are compared as numbers and strings as strings.
func idKey(raw json.RawMessage) string {
	var v any
	if len(raw) == 0 || json.Unmarshal(raw, &v) != nil {
		return ""
	}
	switch v := v.(type) {
	case string:
		return "s" + v
	case float64:
		return "n" + strconv.FormatFloat(v, 'g', -1, 64)
	}
	return ""
}

// incoming notes one message from the client.
func (c *cancels) incoming(line []byte) {
	var m message
	if json.Unmarshal(line, &m) != nil {
		return // a batch or garbage: the SDK answers it as it does
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case m.Method == "notifications/cancelled" && len(m.ID) == 0:
		if id := idKey(m.Params.RequestID); c.inFlight[id] {
			c.cancelled[id] = true
		}
	case m.Method != "" && len(m.ID) > 0:
		if id := idKey(m.ID); id != "" {
			c.inFlight[id] = true
		}
	}
}

// drop reports whether an outgoing message is the response to a cancelled
// call, and forgets the call once it is answered.
func (c *cancels) drop(data []byte) bool {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return false
	}
	var m message
	if json.Unmarshal(data, &m) != nil || m.Method != "" || (m.Result == nil && m.Error == nil) {
		return false
	}
	id := idKey(m.ID)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.inFlight, id)
	if c.cancelled[id] {
		delete(c.cancelled, id)
		c.n++
		return true
	}
	return false
}

// cancelReader passes the client's bytes through, noting each complete
// line before the SDK can act on it.
type cancelReader struct {
	r    io.Reader
	c    *cancels
	line []byte
	skip bool // the current line is too long to track
}

func (cr *cancelReader) Read(p []byte) (int, error) {
	n, err := cr.r.Read(p)
	rest := p[:n]
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			cr.keep(rest)
			break
		}
		cr.keep(rest[:i])
		if !cr.skip {
			cr.c.incoming(cr.line)
		}
		cr.line, cr.skip = cr.line[:0], false
		rest = rest[i+1:]
	}
	return n, err
}

func (cr *cancelReader) keep(b []byte) {
	if cr.skip {
		return
	}
	if len(cr.line)+len(b) > maxTrackedLine {
		cr.line, cr.skip = cr.line[:0], true
		return
	}
	cr.line = append(cr.line, b...)
}

// cancelWriter writes the SDK's messages, except responses to cancelled
// calls.
type cancelWriter struct {
	w io.Writer
	c *cancels
}

func (cw cancelWriter) Write(p []byte) (int, error) {
	if cw.c.drop(p) {
		return len(p), nil
	}
	return cw.w.Write(p)
}

func (cancelWriter) Close() error { return nil }
