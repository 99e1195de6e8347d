// Package gather is the request core shared by every request half (deploy,
// build, discovery): subscribe to the reply subject and to one token below
// it, watch for the server's permission refusals on the request subject and
// the reply subjects, confirm the reply subscriptions, publish with the NATS
// reply subject equal to reply_to, and hand over each answer decoded and
// classified (an answer, the server's "no responders", oversized,
// malformed) with its sender: the token after reply_to, which the NATS
// server vouches for where nats-config bound each listener and the builder
// to its own token (protocol.ReplySender). The callers keep only their
// completion rules and the results they build.
package gather

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// Kind classifies one message on the reply subject.
type Kind int

// The kinds of message.
const (
	// Answer is a decoded answer (Msg.Value).
	Answer Kind = iota
	// NoResponders is the server's status that nobody is subscribed to the
	// request subject: an empty body with header Status 503.
	NoResponders
	// Oversized is a message larger than protocol.MaxResponseSize (the
	// builder's largest final response fits with room to spare); it is
	// not decoded.
	Oversized
	// Malformed is a message the decoder refused (Msg.Err says why).
	Malformed
)

func (k Kind) String() string {
	switch k {
	case Answer:
		return "answer"
	case NoResponders:
		return "no responders"
	case Oversized:
		return "oversized"
	case Malformed:
		return "malformed"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Msg is one message on the reply subject.
type Msg[T any] struct {
	Kind    Kind
	Subject string
	// Size is the length of the message body in bytes.
	Size int
	// Value is the decoded answer when Kind is Answer.
	Value T
	// Err is the decoder's error when Kind is Malformed.
	Err error
	// Sender is the token after reply_to when the message arrived on
	// <reply_to>.<token> (a hostname, or protocol.BuilderToken), and ""
	// when it arrived on the bare reply_to (an older listener or builder,
	// or an older server configuration: the sender is not vouched for).
	Sender string
}

// Bound reports whether the message arrived on a sender's own subject.
func (m Msg[T]) Bound() bool { return m.Sender != "" }

// Decoder turns a message body into an answer, or refuses it:
// protocol.DecodeDeployResponse, DecodeBuildResponse, DecodeDiscoverResponse.
type Decoder[T any] func(data []byte) (T, error)

// errFakeNoResponders refuses a "no responders" status on a sender's
// subject: the server sends it on the bare reply subject only, so there it
// is a sender trying to end the request.
var errFakeNoResponders = errors.New("a no-responders status on a sender's subject: only the NATS server sends one, on the bare reply subject")

// classify decides what one message on replyTo, or one token below it, is.
func classify[T any](replyTo, subject string, header nats.Header, data []byte, decode Decoder[T]) Msg[T] {
	m := Msg[T]{Subject: subject, Size: len(data)}
	sender, err := protocol.ReplySender(replyTo, subject)
	m.Sender = sender
	switch {
	case err != nil:
		m.Kind, m.Err = Malformed, err
	case len(data) == 0 && header.Get("Status") == "503" && sender != "":
		m.Kind, m.Err = Malformed, errFakeNoResponders
	case len(data) == 0 && header.Get("Status") == "503":
		m.Kind = NoResponders
	case len(data) > protocol.MaxResponseSize:
		m.Kind = Oversized
	default:
		m.Value, m.Err = decode(data)
		if m.Err != nil {
			m.Kind = Malformed
		}
	}
	return m
}

// SubscribeRefusedError says the server refused the reply subscription
// before anything was published: the credential could never hear the
// answers, so the request was not sent.
type SubscribeRefusedError struct {
	Subject string
	Err     error
}

func (e *SubscribeRefusedError) Error() string {
	return fmt.Sprintf("nothing was sent: the NATS server refused to let this credential subscribe to %s (%v)", e.Subject, e.Err)
}

func (e *SubscribeRefusedError) Unwrap() error { return e.Err }

// Call is one request in flight. Read Msgs until the caller's completion
// rules are met, watch PublishRefused and ReplyRefused, then Close.
type Call[T any] struct {
	// Sent is when the request was published.
	Sent time.Time

	msgs      chan Msg[T]
	stop      chan struct{}
	subs      []*nats.Subscription
	pubErr    <-chan error
	replyErr  chan error
	unwatch   []func()
	closeOnce sync.Once
}

// Msgs delivers the messages on the reply subject, in arrival order.
func (c *Call[T]) Msgs() <-chan Msg[T] { return c.msgs }

// PublishRefused receives the server's refusal to let this credential
// publish to the request subject, should one come: the request did not go out.
func (c *Call[T]) PublishRefused() <-chan error { return c.pubErr }

// ReplyRefused receives the server's refusal of the reply subscription
// that arrives after the request was sent (the confirmation passed, or
// could not be made): answers may be on their way but cannot arrive.
func (c *Call[T]) ReplyRefused() <-chan error { return c.replyErr }

// Close stops the watches and the subscription; messages not yet read are
// dropped. It may be called more than once.
func (c *Call[T]) Close() {
	c.closeOnce.Do(func() {
		for _, f := range c.unwatch {
			f()
		}
		close(c.stop)
		for _, sub := range c.subs {
			_ = sub.Unsubscribe()
		}
	})
}

// Start subscribes to replyTo and to replyTo.* (the senders' own
// subjects), watches for permission refusals on subject and both reply
// subjects, confirms the subscriptions (a *SubscribeRefusedError when the
// server refused one: nothing was published), then publishes payload to
// subject with the NATS reply subject set to replyTo and flushes. A
// request to a subject nobody listens on then comes back at once as a
// NoResponders message. The caller must Close the call.
func Start[T any](conn *protocol.Conn, subject, replyTo string, payload []byte, decode Decoder[T]) (*Call[T], error) {
	c := &Call[T]{msgs: make(chan Msg[T], 64), stop: make(chan struct{}), replyErr: make(chan error, 1)}
	bound := protocol.BoundReply(replyTo, "*")
	// Asynchronous subscriptions whose callbacks decode each answer while
	// the caller handles the previous one. SubscribeSync would allocate a
	// 64K-slot (512 KiB) channel for every request, which cost more than a
	// whole single-host deploy (see docs/BENCHMARKS.md). The senders'
	// subject comes first: when the server refuses both, the refusal of the
	// bare one is the connection's last error, which ConfirmSubscription
	// reads.
	for _, s := range []string{bound, replyTo} {
		sub, err := conn.Subscribe(s, func(m *nats.Msg) {
			select {
			case c.msgs <- classify(replyTo, m.Subject, m.Header, m.Data, decode):
			case <-c.stop:
			}
		})
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("subscribe to %s: %w", s, err)
		}
		c.subs = append(c.subs, sub)
		// The backlog is bounded by bytes only (64 MiB), not by message
		// count: a large fleet's many small answers may arrive faster than
		// they are read.
		_ = sub.SetPendingLimits(-1, 64<<20)
	}
	pubErr, stopPub := conn.WatchPermission(subject)
	bareErr, stopBare := conn.WatchPermission(replyTo)
	boundErr, stopBound := conn.WatchPermission(bound)
	c.pubErr = pubErr
	c.unwatch = []func(){stopPub, stopBare, stopBound}
	go func() {
		var err error
		select {
		case err = <-bareErr:
		case err = <-boundErr:
		case <-c.stop:
			return
		}
		c.replyErr <- err
	}()

	if err := conn.ConfirmSubscription(replyTo); err != nil {
		c.Close()
		return nil, &SubscribeRefusedError{Subject: replyTo, Err: err}
	}
	// The first confirmation on a connection waits for the server's answer
	// to both subscriptions, so a refusal of the senders' subject alone is
	// then the last error; later, permissions being per prefix, the
	// asynchronous refusal (ReplyRefused) is enough.
	if err := conn.LastError(); err != nil && errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+bound+`"`) {
		c.Close()
		return nil, &SubscribeRefusedError{Subject: bound, Err: err}
	}
	// The request is signed with the connection's own key, in headers
	// (protocol.Sign): listeners and builders verify it, and an older one
	// ignores headers it does not know.
	header, err := conn.SignRequest(subject, payload)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("nothing was sent to %s: %w", subject, err)
	}
	c.Sent = time.Now()
	if err := conn.PublishMsg(&nats.Msg{Subject: subject, Reply: replyTo, Header: header, Data: payload}); err != nil {
		c.Close()
		return nil, fmt.Errorf("publish to %s: %w", subject, err)
	}
	_ = conn.Flush()
	return c, nil
}
