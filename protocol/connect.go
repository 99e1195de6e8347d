package protocol

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// ConnectOptions is our NATS connection policy's input.
type ConnectOptions struct {
	// URLs is one NATS URL or several, comma-separated (a cluster).
	URLs string
	// NKeyFile is the path of an NKey user seed file (starts with SU).
	NKeyFile string
	// CAFile optionally names a PEM file of CAs for tls:// servers.
	CAFile string
	// Name identifies the connection in the server's monitoring.
	Name string
	// Wait makes Connect return at once even when no server is reachable yet
	// and keep trying in the background (daemons). Without it Connect fails
	// when the first attempt fails (CLI, MCP).
	Wait bool
	// Logger receives disconnects, reconnects and asynchronous errors.
	Logger *slog.Logger
}

// Conn is a NATS connection with our error handling attached.
type Conn struct {
	*nats.Conn
	logger *slog.Logger

	mu         sync.Mutex
	watchers   map[*permWatch]struct{}
	reconnects map[chan struct{}]struct{}
	// reported is the permission error ConfirmSubscription already logged,
	// so the asynchronous handler does not log it twice.
	reported atomic.Value
	// confirmed holds reply-subject prefixes whose subscription the server
	// accepted on this connection.
	confirmed sync.Map
}

type permWatch struct {
	subject string
	ch      chan error
}

// ParseURLs validates a comma-separated list of NATS URLs.
func ParseURLs(s string) ([]string, error) {
	var out []string
	for _, raw := range strings.Split(s, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("NATS URL %q does not parse: %w", raw, err)
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return nil, fmt.Errorf("NATS URL %q must start with nats://, tls://, ws:// or wss://", raw)
		}
		if u.Host == "" {
			return nil, fmt.Errorf("NATS URL %q has no host", raw)
		}
		out = append(out, raw)
	}
	if len(out) == 0 {
		return nil, errors.New("no NATS URL given: set --nats-url or HOMELAB_DEPLOY_NATS_URL (e.g. nats://nats.example.com:4222)")
	}
	return out, nil
}

// CheckSeedFile refuses seed files that are missing, not regular files, or
// readable by group or others. It never reads the seed into a log.
func CheckSeedFile(path string) error {
	if path == "" {
		return errors.New("no NKey seed file given: set --nkey-file (create one with `homelab-deploy keygen --out FILE`)")
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("NKey seed file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("NKey seed file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("NKey seed file %s has mode %04o and can be read by other users: run `chmod 600 %s`", path, perm, path)
	}
	return nil
}

// Connect applies the connection policy: NKey authentication from a seed file
// that only its owner can read, reconnect forever with jitter, several URLs,
// TLS with an optional CA file, and handlers that log connection events and
// asynchronous errors (permission violations arrive that way).
func Connect(ctx context.Context, o ConnectOptions) (*Conn, error) {
	urls, err := ParseURLs(o.URLs)
	if err != nil {
		return nil, err
	}
	if err := CheckSeedFile(o.NKeyFile); err != nil {
		return nil, err
	}
	nkeyOpt, err := nats.NkeyOptionFromSeed(o.NKeyFile)
	if err != nil {
		return nil, fmt.Errorf("NKey seed file %s: %w (it must hold a user seed starting with SU)", o.NKeyFile, errors.Unwrap(err))
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Conn{logger: logger, watchers: map[*permWatch]struct{}{}, reconnects: map[chan struct{}]struct{}{}}
	opts := []nats.Option{
		nkeyOpt,
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(500*time.Millisecond, 2*time.Second),
		nats.RetryOnFailedConnect(o.Wait),
		nats.Timeout(5 * time.Second),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil {
				logger.Warn("NATS disconnected", "err", err)
			} else if !nc.IsClosed() {
				logger.Warn("NATS disconnected")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("NATS reconnected", "server", nc.ConnectedUrlRedacted())
			c.notifyReconnect()
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			// Daemons say when they got through; one-shot commands stay quiet.
			level := slog.LevelDebug
			if o.Wait {
				level = slog.LevelInfo
			}
			logger.Log(context.Background(), level, "NATS connected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{"err", err}
			if sub != nil {
				attrs = append(attrs, "subject", sub.Subject)
			}
			if errors.Is(err, nats.ErrPermissionViolation) {
				if r, _ := c.reported.Load().(string); r != err.Error() {
					logger.Error(permissionDenied, attrs...)
				}
				c.notifyPermission(err)
				return
			}
			logger.Error("NATS asynchronous error", attrs...)
		}),
	}
	if o.CAFile != "" {
		opts = append(opts, nats.RootCAs(o.CAFile))
	}
	nc, err := nats.Connect(strings.Join(urls, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", strings.Join(urls, ","), err)
	}
	c.Conn = nc
	return c, nil
}

// WatchPermission returns a channel that receives the server's permission
// error for subject, should one arrive, and a function to stop watching.
func (c *Conn) WatchPermission(subject string) (<-chan error, func()) {
	w := &permWatch{subject: subject, ch: make(chan error, 1)}
	c.mu.Lock()
	c.watchers[w] = struct{}{}
	c.mu.Unlock()
	return w.ch, func() {
		c.mu.Lock()
		delete(c.watchers, w)
		c.mu.Unlock()
	}
}

// WatchReconnect returns a channel that receives a value after each
// reconnection (messages published to this connection's subscriptions
// while it was disconnected are lost: NATS core does not store them), and
// a function to stop watching.
func (c *Conn) WatchReconnect() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	c.reconnects[ch] = struct{}{}
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.reconnects, ch)
		c.mu.Unlock()
	}
}

func (c *Conn) notifyReconnect() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch := range c.reconnects {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (c *Conn) notifyPermission(err error) {
	msg := err.Error()
	c.mu.Lock()
	defer c.mu.Unlock()
	for w := range c.watchers {
		if strings.Contains(msg, `"`+w.subject+`"`) {
			select {
			case w.ch <- err:
			default:
			}
		}
	}
}

// Logger returns the connection's logger.
func (c *Conn) Logger() *slog.Logger { return c.logger }

// NewID returns a random request id usable as a subject token.
func NewID() string { return nats.NewInbox()[len(nats.InboxPrefix):] }

// ConfirmSubscription makes sure the server accepted the subscription to
// subject before the caller publishes a request whose answers arrive there:
// it waits for a round trip, then reports the server's permission refusal,
// if there was one. A request is then never sent by a credential that could
// not hear its result. When the round trip fails (the connection is down),
// it returns nil and the caller goes on as before.
//
// Once a subscription under the same prefix (the subject less its last
// token, e.g. deploy.responses.) was confirmed on this connection, later ones
// are not checked again: permissions do not change with the last token, and
// a long-lived connection (the MCP server) then pays the round trip once.
// Should the server's permissions change later, the asynchronous refusal
// still ends the request (WatchPermission).
func (c *Conn) ConfirmSubscription(subject string) error {
	prefix := subject
	if i := strings.LastIndexByte(subject, '.'); i >= 0 {
		prefix = subject[:i+1]
	}
	if _, ok := c.confirmed.Load(prefix); ok {
		return nil
	}
	if err := c.FlushTimeout(5 * time.Second); err != nil {
		return nil
	}
	err := c.LastError()
	if err != nil && errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `Subscription to "`+subject+`"`) {
		c.reported.Store(err.Error())
		c.logger.Error(permissionDenied, "err", err, "subject", subject)
		return err
	}
	c.confirmed.Store(prefix, true)
	return nil
}

// permissionDenied is how every refusal by the server is logged.
const permissionDenied = "NATS server denied an operation: this credential lacks the permission (check the server's authorization block)"
