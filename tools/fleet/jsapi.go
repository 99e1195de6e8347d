package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// The JetStream API is JSON request/reply on $JS.API.… subjects. The
// registry speaks it directly instead of through nats.go's jetstream
// package, because that package takes its replies on _INBOX.…, which no
// credential of SPEC's permission table may subscribe to, and which would
// not keep one tier's reads apart from another's. The registry's replies
// arrive on fleet.replies.… subjects bound to a host or a tier instead.

// Why the registry cannot be used. Each is quick to detect, so a caller
// falls back to discovery at once.
var (
	// ErrNoJetStream: the NATS server has JetStream switched off (nobody
	// answers on $JS.API.…).
	ErrNoJetStream = errors.New("the NATS server has no JetStream (enable it with `jetstream { store_dir: ... }` in nats-server.conf, or services.nats.jetstream = true on NixOS)")
	// ErrNoBucket: JetStream is on, but no listener has created the bucket
	// yet.
	ErrNoBucket = errors.New("the fleet registry bucket " + protocol.FleetBucket + " does not exist yet (listeners create it when they start on a server with JetStream)")
	// ErrNotPermitted: the server refused this credential the request.
	ErrNotPermitted = errors.New("this credential may not use the fleet registry here (regenerate the server's authorization block with `homelab-deploy nats-config`)")
	// ErrNoAnswer: JetStream did not answer in time (a cluster without a
	// leader, an overloaded server).
	ErrNoAnswer = errors.New("the fleet registry did not answer in time")
)

// APIError is an error answer of the JetStream API.
type APIError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("JetStream: %s (error %d)", protocol.CleanField(e.Description), e.ErrCode)
}

// JetStream error codes the registry tells apart.
const (
	jsErrStreamNotFound      = 10059
	jsErrStreamNameInUse     = 10058
	jsErrReplicasUnsupported = 10074
	jsErrInsufficient        = 10023
	jsErrNotEnabled          = 10076
	jsErrNotEnabledAccount   = 10039
)

// apiResponse is the part of every JetStream API answer the registry
// reads first.
type apiResponse struct {
	Error *APIError `json:"error,omitempty"`
}

// apiErr classifies an error answer.
func apiErr(e *APIError) error {
	switch e.ErrCode {
	case jsErrStreamNotFound:
		return fmt.Errorf("%w: %v", ErrNoBucket, e)
	case jsErrNotEnabled, jsErrNotEnabledAccount:
		return fmt.Errorf("%w: %v", ErrNoJetStream, e)
	}
	return e
}

// maxAPIResponse bounds one JetStream API answer (a stream info is a few
// KiB).
const maxAPIResponse = 256 << 10

// replies is one subscription on which JetStream answers: the API's
// answers (whose subject is the subscription's own) and, for a reader, the
// entries a consumer delivers (whose subject is the entry's key).
type replies struct {
	conn    *protocol.Conn
	subject string
	// base, when set, makes each request's reply subject its own
	// (base.<n>): an answer that comes after its request gave up is then
	// never taken for the next request's.
	base string
	n    int
	sub  *nats.Subscription
	msgs chan *nats.Msg
	stop chan struct{}
}

// listenEach subscribes to base.* and gives each request the reply
// subject base.<n>: for a long-lived writer.
func listenEach(conn *protocol.Conn, base string, buffer int) (*replies, error) {
	r, err := listen(conn, base+".*", buffer)
	if r != nil {
		r.base = base
	}
	return r, err
}

// listen subscribes to subject and confirms the subscription with the
// server.
func listen(conn *protocol.Conn, subject string, buffer int) (*replies, error) {
	r := &replies{conn: conn, subject: subject, msgs: make(chan *nats.Msg, buffer), stop: make(chan struct{})}
	sub, err := conn.Subscribe(subject, func(m *nats.Msg) {
		select {
		case r.msgs <- m:
		case <-r.stop:
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to %s: %w", subject, err)
	}
	_ = sub.SetPendingLimits(-1, 64<<20)
	r.sub = sub
	if err := conn.ConfirmSubscription(subject); err != nil {
		r.close()
		return nil, fmt.Errorf("%w: subscribing to %s was refused (%v)", ErrNotPermitted, subject, err)
	}
	return r, nil
}

func (r *replies) close() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	_ = r.sub.Unsubscribe()
}

// request publishes body on subject with the NATS reply subject set to
// the subscription's subject and returns the API's answer. Entries that
// arrive meanwhile (a consumer delivering before its creation is
// confirmed) go to onOther. It fails fast: "no responders" is
// errNoResponders (nothing in the server handles subject: no JetStream
// for an API subject, no bucket for a key), a permission refusal
// ErrNotPermitted.
func (r *replies) request(ctx context.Context, subject string, header nats.Header, body []byte, timeout time.Duration, onOther func(*nats.Msg)) ([]byte, error) {
	refused, unwatch := r.conn.WatchPermission(subject)
	defer unwatch()
	reply := r.subject
	if r.base != "" {
		r.n++
		reply = fmt.Sprintf("%s.%d", r.base, r.n)
	}
	if err := r.conn.PublishMsg(&nats.Msg{Subject: subject, Reply: reply, Header: header, Data: body}); err != nil {
		return nil, fmt.Errorf("publish to %s: %w", subject, err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-refused:
			return nil, fmt.Errorf("%w: %v", ErrNotPermitted, err)
		case <-t.C:
			return nil, fmt.Errorf("%w: nothing on %s within %s", ErrNoAnswer, subject, timeout)
		case m := <-r.msgs:
			if r.base != "" && m.Subject != reply && strings.HasPrefix(m.Subject, r.base+".") {
				continue // the late answer of an earlier request
			}
			if m.Subject != reply {
				if onOther != nil {
					onOther(m)
				}
				continue
			}
			if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
				return nil, errNoResponders
			}
			if len(m.Data) > maxAPIResponse {
				return nil, fmt.Errorf("JetStream answer of %d bytes on %s is too large", len(m.Data), subject)
			}
			var resp apiResponse
			if err := json.Unmarshal(m.Data, &resp); err != nil {
				return nil, fmt.Errorf("JetStream answer on %s is not JSON: %v", subject, err)
			}
			if resp.Error != nil {
				return nil, apiErr(resp.Error)
			}
			return m.Data, nil
		}
	}
}

// errNoResponders is the server's "no responders" to a request.
var errNoResponders = errors.New("no responders")

// apiCall is request for a $JS.API subject: "no responders" there means
// JetStream is off.
func (r *replies) apiCall(ctx context.Context, subject string, body []byte, timeout time.Duration, onOther func(*nats.Msg)) ([]byte, error) {
	data, err := r.request(ctx, subject, nil, body, timeout, onOther)
	if errors.Is(err, errNoResponders) {
		return nil, ErrNoJetStream
	}
	return data, err
}
