package protocol

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
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

	// up is closed when the connection is established and replaced by an
	// open channel when it drops (under mu); warnWhileDown waits on it.
	up     chan struct{}
	isUp   bool
	closed chan struct{}
	// lastErr is the error of the latest failed connection attempt.
	lastErr atomic.Value
	// signer holds the NKey the connection authenticated with; requests
	// sent through protocol/gather are signed with it (see Sign).
	signer *requestSigner
}

// Warnings while a daemon has no NATS server: the first after
// firstDownWarning, then at doubling intervals up to maxDownWarningInterval,
// so a server that is down for a day fills no disk but is never forgotten.
const (
	firstDownWarning       = time.Second
	maxDownWarningInterval = 5 * time.Minute
)

type permWatch struct {
	subject string
	ch      chan error
}

// URLSchemes are the schemes nats.go can dial; a URL without one is nats://,
// as natscli and nats.go itself read it.
var URLSchemes = []string{"nats", "tls", "ws", "wss"}

// ParseURLs validates a comma-separated list of NATS URLs and returns each
// with its scheme: host:port and a bare host (default port 4222) become
// nats://host:port and nats://host. A cluster may not mix websocket and
// plain URLs (nats.go refuses that, with a less helpful message).
func ParseURLs(s string) ([]string, error) {
	var out []string
	websocket := 0
	for _, raw := range strings.Split(s, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		full := raw
		if !strings.Contains(raw, "://") {
			full = "nats://" + raw
		}
		u, err := url.Parse(full)
		if err != nil {
			return nil, fmt.Errorf("NATS URL %q does not parse (%v): give host:port or %s", raw, errors.Unwrap(err), schemeList("host:port"))
		}
		if !slices.Contains(URLSchemes, u.Scheme) {
			return nil, fmt.Errorf("NATS URL %q has scheme %s://, which NATS does not speak: give host:port or %s", raw, u.Scheme, schemeList("host:port"))
		}
		if u.Host == "" || u.Hostname() == "" {
			return nil, fmt.Errorf("NATS URL %q has no host: give e.g. %s://nats.example.com:4222", raw, u.Scheme)
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return nil, fmt.Errorf("NATS URL %q has port %s: a port is 1 to 65535 (NATS listens on 4222 by default)", raw, p)
			}
		}
		if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("NATS URL %q has a path or query, which NATS does not use: give only %s://host:port", raw, u.Scheme)
		}
		if u.Scheme == "ws" || u.Scheme == "wss" {
			websocket++
		}
		// The scheme as url.Parse lowered it: nats.go compares it exactly.
		_, rest, _ := strings.Cut(full, "://")
		out = append(out, u.Scheme+"://"+rest)
	}
	if len(out) == 0 {
		return nil, errors.New("no NATS URL given: set --nats-url or HOMELAB_DEPLOY_NATS_URL (e.g. nats://nats.example.com:4222)")
	}
	if websocket != 0 && websocket != len(out) {
		return nil, fmt.Errorf("NATS URLs %q mix websocket (ws://, wss://) and plain (nats://, tls://) servers: a client speaks one or the other, so list only one kind", s)
	}
	return out, nil
}

// schemeList renders the accepted schemes for error messages.
func schemeList(suffix string) string {
	parts := make([]string, len(URLSchemes))
	for i, sc := range URLSchemes {
		parts[i] = sc + "://" + suffix
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " or " + parts[len(parts)-1]
}

// maxSeedFileSize bounds what CheckSeedFile reads: a seed file is one line of
// 58 characters (nk and keygen add a newline, a creds file a few hundred
// bytes more).
const maxSeedFileSize = 64 << 10

// CheckSeedFile refuses seed files that are missing, not regular files, not
// an NKey user seed, or readable by group or others. The content is checked
// before the mode: telling someone to chmod a public key file would send
// them off fixing the wrong thing. Error messages never quote the file's
// content, except the start of a public key (which is not secret).
func CheckSeedFile(path string) error {
	if path == "" {
		return errors.New("no NKey seed file given: set --nkey-file (create one with `homelab-deploy keygen --out FILE`)")
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("NKey seed file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("NKey seed file %s is not a regular file: give the seed file (starts with SU) that `homelab-deploy keygen` wrote", path)
	}
	if fi.Size() > maxSeedFileSize {
		return fmt.Errorf("NKey seed file %s is %d bytes, too big for a seed: give the seed file (starts with SU) that `homelab-deploy keygen` wrote", path, fi.Size())
	}
	content, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("NKey seed file: %w (run as the user that owns it)", err)
	}
	defer clear(content)
	if err := checkSeedContent(path, content); err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("NKey seed file %s has mode %04o and can be read by other users: run `chmod 600 %s`", path, perm, path)
	}
	return nil
}

// checkSeedContent says what content is, when it is not a user seed.
func checkSeedContent(path string, content []byte) error {
	const give = "give the seed file (starts with SU) that `homelab-deploy keygen` wrote"
	kp, err := nkeys.ParseDecoratedNKey(content)
	if err == nil {
		defer kp.Wipe()
		pub, err := kp.PublicKey()
		if err != nil || !nkeys.IsValidPublicUserKey(pub) {
			// An operator or account seed (SO…, SA…): a seed, but not one
			// a NATS user authenticates with.
			return fmt.Errorf("NKey seed file %s holds an operator or account seed, not a user seed: %s", path, give)
		}
		return nil
	}
	first := strings.TrimSpace(string(content))
	if i := strings.IndexAny(first, " \t\r\n"); i >= 0 {
		first = first[:i]
	}
	if nkeys.IsValidPublicKey(first) {
		// Public keys are not secret, and their start tells which one it is.
		shown := first[:min(len(first), 8)] + "…"
		if nkeys.IsValidPublicUserKey(first) {
			return fmt.Errorf("%s is a public key (%s), not a seed: %s", path, shown, give)
		}
		return fmt.Errorf("%s is a public key (%s) and not of a user, not a seed: %s", path, shown, give)
	}
	if len(first) == 0 {
		return fmt.Errorf("NKey seed file %s is empty: %s", path, give)
	}
	return fmt.Errorf("NKey seed file %s does not hold an NKey user seed (a line starting with SU): %s", path, give)
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
	// One key pair both authenticates the connection and signs its
	// requests, so a request's signer is the credential that sent it.
	signer, err := loadSigner(o.NKeyFile)
	if err != nil {
		// CheckSeedFile read the same file a moment ago; this is a race
		// with someone rewriting it.
		return nil, fmt.Errorf("NKey seed file %s: %w: give the seed file (starts with SU) that `homelab-deploy keygen` wrote", o.NKeyFile, err)
	}
	pub, err := signer.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("NKey seed file %s: %w", o.NKeyFile, err)
	}
	nkeyOpt := nats.Nkey(pub, signer.Sign)
	reqSigner, err := newRequestSigner(signer)
	if err != nil {
		return nil, fmt.Errorf("NKey seed file %s: %w", o.NKeyFile, err)
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Conn{logger: logger, watchers: map[*permWatch]struct{}{}, reconnects: map[chan struct{}]struct{}{},
		up: make(chan struct{}), closed: make(chan struct{}), signer: reqSigner}
	servers := redactURLs(urls)
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
			if !nc.IsClosed() {
				c.lastErr.Store("")
				down := c.setUp(false)
				if o.Wait {
					go c.warnWhileDown(down, time.Now(), servers)
				}
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("NATS reconnected", "server", nc.ConnectedUrlRedacted())
			c.setUp(true)
			c.notifyReconnect()
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			// Daemons say when they got through. A one-shot command's first
			// connection is logged below, before Connect returns: this
			// handler runs on the client's own goroutine, maybe after the
			// command has already finished.
			if o.Wait {
				logger.Info("NATS connected", "server", nc.ConnectedUrlRedacted())
			}
			c.setUp(true)
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				c.lastErr.Store(err.Error())
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(c.closed) }),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{"err", err}
			if sub != nil {
				attrs = append(attrs, "subject", sub.Subject)
			}
			if errors.Is(err, nats.ErrPermissionViolation) {
				if r, _ := c.reported.Load().(string); r != err.Error() {
					if registryRefusal(err.Error()) {
						logger.Debug(permissionDenied, attrs...)
					} else {
						logger.Error(permissionDenied, attrs...)
					}
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
	if !o.Wait {
		logger.Debug("NATS connected", "server", nc.ConnectedUrlRedacted())
	}
	if o.Wait && !nc.IsConnected() {
		// RetryOnFailedConnect returned without a server. Say so now: the
		// daemon goes on to log that it is ready, which is true only once
		// NATS is reachable.
		logger.Warn("NATS server not reachable yet: starting anyway and retrying in the background (check --nats-url and that nats-server runs)", "servers", servers)
		c.mu.Lock()
		down := c.up
		c.mu.Unlock()
		go c.warnWhileDown(down, time.Now(), servers)
	}
	return c, nil
}

// setUp records whether the connection is established and returns the
// channel that is closed when it next is.
func (c *Conn) setUp(up bool) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case up && !c.isUp:
		close(c.up)
	case !up && c.isUp:
		c.up = make(chan struct{})
	}
	c.isUp = up
	return c.up
}

// warnWhileDown repeats a warning at doubling intervals until up is closed
// (connected) or the connection is closed for good: without it a daemon
// started before its NATS server, or cut off from it, would log nothing
// more while it cannot do its job.
func (c *Conn) warnWhileDown(up <-chan struct{}, since time.Time, servers string) {
	delay := firstDownWarning
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		select {
		case <-up:
			return
		case <-c.closed:
			return
		case <-t.C:
		}
		attrs := []any{"servers", servers, "down_for", time.Since(since).Round(time.Second).String()}
		if e, _ := c.lastErr.Load().(string); e != "" {
			attrs = append(attrs, "err", e)
		}
		attrs = append(attrs, "next_warning_in", min(2*delay, maxDownWarningInterval).String())
		c.logger.Warn("NATS server still not reachable; retrying", attrs...)
		delay = min(2*delay, maxDownWarningInterval)
		t.Reset(delay)
	}
}

// redactURLs joins urls for logs, without any password in them.
func redactURLs(urls []string) string {
	out := make([]string, len(urls))
	for i, raw := range urls {
		out[i] = raw
		if u, err := url.Parse(raw); err == nil {
			out[i] = u.Redacted()
		}
	}
	return strings.Join(out, ",")
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

// loadSigner reads the user seed in path (CheckSeedFile has checked it).
func loadSigner(path string) (nkeys.KeyPair, error) {
	content, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(content)
	return nkeys.ParseDecoratedNKey(content)
}

// SignRequest returns the headers that sign body as a request on subject
// with the connection's own key (Sign), or nil headers when the connection
// has no key (one not made by Connect).
func (c *Conn) SignRequest(subject string, body []byte) (nats.Header, error) {
	if c.signer == nil {
		return nil, nil
	}
	return c.signer.sign(subject, body, time.Now()), nil
}

// PublicKey returns the public key of the connection's credential, or ""
// when it has none.
func (c *Conn) PublicKey() string {
	if c.signer == nil {
		return ""
	}
	return c.signer.pub
}

// NewID returns a request id: 26 characters of base32 (A-Z, 2-7) from
// crypto/rand, 130 bits, one subject token. Nothing in one id tells
// anything about another: a NATS NUID (a fixed per-process prefix and a
// growing sequence) let whoever saw one reply subject predict the next
// and answer there first.
func NewID() string { return rand.Text() }

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
		if registryRefusal(err.Error()) {
			c.logger.Debug(permissionDenied, "err", err, "subject", subject)
		} else {
			c.logger.Error(permissionDenied, "err", err, "subject", subject)
		}
		return err
	}
	c.confirmed.Store(prefix, true)
	return nil
}

// registryRefusal reports whether a permission error is about the fleet
// registry: its reply subjects, the JetStream API or the bucket's keys. The
// registry's code reports those itself, in words that fit (a listener
// warns that its entry is not written, list-hosts leaves out a tier the
// credential may not read, a deployer falls back to discovery), so the
// connection logs them at debug only: a tier that is not the
// credential's, or a server set up before the registry, is not an error.
func registryRefusal(msg string) bool {
	for _, p := range []string{FleetReplyPrefix, "$JS.API.", FleetKeyPrefix} {
		if strings.Contains(msg, `"`+p) {
			return true
		}
	}
	return false
}

// permissionDenied is how every refusal by the server is logged.
const permissionDenied = "NATS server denied an operation: this credential lacks the permission (check the server's authorization block)"
