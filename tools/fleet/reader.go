package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// Host is one entry as a reader sees it.
type Host struct {
	protocol.FleetEntry
	// Online is false when the listener stopped, or its entry is older
	// than OfflineAfter heartbeats.
	Online bool
	// LastSeen is when the NATS server stored the entry (one clock for
	// every host, so hosts with a wrong clock are judged fairly).
	LastSeen time.Time
}

// ReadOptions tune a read; zero fields take the defaults.
type ReadOptions struct {
	// Timeout bounds the read of one tier (default DefaultTimeout).
	Timeout time.Duration
	// Now is the reader's clock.
	Now func() time.Time
	// Invalid, if set, is told about each entry that is refused.
	Invalid func(subject string, err error)
}

func (o ReadOptions) withDefaults() ReadOptions {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// consumerConfig is the ephemeral consumer a read creates: the last
// entry of every key of one tier, pushed at once to the reader's reply
// subject, unacknowledged, in memory, removed by the server soon after the
// reader stops listening. Only fields nats-server 2.9 knows.
type consumerConfig struct {
	Name              string `json:"name"`
	DeliverSubject    string `json:"deliver_subject"`
	DeliverPolicy     string `json:"deliver_policy"`
	AckPolicy         string `json:"ack_policy"`
	ReplayPolicy      string `json:"replay_policy"`
	FilterSubject     string `json:"filter_subject"`
	InactiveThreshold int64  `json:"inactive_threshold"`
	MemStorage        bool   `json:"mem_storage"`
	Replicas          int    `json:"num_replicas"`
}

type consumerCreate struct {
	Stream string         `json:"stream_name"`
	Config consumerConfig `json:"config"`
}

type consumerInfo struct {
	NumPending uint64 `json:"num_pending"`
}

// consumerLinger is how long the server keeps a read's consumer after the
// reader stopped listening.
const consumerLinger = 5 * time.Second

// ReadTier reads every entry of tier, sorted by hostname. Its errors wrap
// ErrNoJetStream, ErrNoBucket, ErrNotPermitted or ErrNoAnswer when the
// registry cannot be used, so the caller can fall back to discovery.
func ReadTier(ctx context.Context, conn *protocol.Conn, tier string, opts ReadOptions) ([]Host, error) {
	opts = opts.withDefaults()
	if err := protocol.ValidateTier(tier); err != nil {
		return nil, err
	}
	if conn == nil {
		return nil, errors.New("fleet registry: no NATS connection")
	}
	id := protocol.NewID()
	reply := protocol.FleetReadReplyPrefix(tier) + id
	r, err := listen(conn, reply, 256)
	if err != nil {
		return nil, err
	}
	defer r.close()

	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	c := newCollector(tier, opts)
	defer c.finish()
	body, _ := json.Marshal(consumerCreate{Stream: protocol.FleetStream, Config: consumerConfig{
		Name: id, DeliverSubject: reply, DeliverPolicy: "last_per_subject", AckPolicy: "none",
		ReplayPolicy: "instant", FilterSubject: protocol.FleetTierFilter(tier),
		InactiveThreshold: int64(consumerLinger), MemStorage: true, Replicas: 1,
	}})
	data, err := r.apiCall(ctx, protocol.FleetConsumerCreateSubject(id, tier), body, opts.Timeout, c.add)
	if err != nil {
		return nil, fmt.Errorf("read the %s tier of the fleet registry: %w", tier, err)
	}
	var info consumerInfo
	if err := json.Unmarshal(data, &info); err != nil {
		return nil, fmt.Errorf("read the %s tier of the fleet registry: consumer info: %v", tier, err)
	}
	c.want, c.created = int(min(info.NumPending, 1<<30)), true
	for !c.done() {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read the %s tier of the fleet registry: %w: %d of %d entries within %s", tier, ErrNoAnswer, len(c.keys), c.want, opts.Timeout)
		case m := <-r.msgs:
			c.add(m)
		}
	}
	c.finish()
	return c.sorted(), nil
}

// collector gathers the entries a read's consumer delivers. Deliveries
// are counted in order by the reading goroutine; their decoding (exact
// JSON, validation, cleaning: most of a read's CPU) is spread over a few
// workers, and of two deliveries of one key the later one in the stream
// is kept whichever worker finished first.
type collector struct {
	tier string
	opts ReadOptions
	// keys are the keys delivered; want is how many the consumer had
	// pending when it was created; caughtUp is set by a delivery with
	// nothing pending after it.
	keys     map[string]bool
	want     int
	created  bool
	caughtUp bool

	jobs     chan delivery
	workers  sync.WaitGroup
	finished bool

	mu      sync.Mutex
	hosts   map[string]Host
	seqs    map[string]uint64
	invalid []invalidEntry
}

// delivery is one message of the consumer with its parsed metadata.
type delivery struct {
	m    *nats.Msg
	meta *nats.MsgMetadata
}

type invalidEntry struct {
	subject string
	err     error
}

// decodeWorkers bounds the decoding goroutines of one read.
const decodeWorkers = 4

func newCollector(tier string, opts ReadOptions) *collector {
	c := &collector{tier: tier, opts: opts, keys: map[string]bool{}, hosts: map[string]Host{}, seqs: map[string]uint64{},
		jobs: make(chan delivery, 256)}
	for range min(decodeWorkers, max(1, runtime.GOMAXPROCS(0))) {
		c.workers.Go(func() {
			for d := range c.jobs {
				c.decode(d)
			}
		})
	}
	return c
}

// finish waits for the decoding of every delivery so far and reports the
// invalid entries, in the reading goroutine. It may be called again.
func (c *collector) finish() {
	if c.finished {
		return
	}
	c.finished = true
	close(c.jobs)
	c.workers.Wait()
	if c.opts.Invalid != nil {
		for _, e := range c.invalid {
			c.opts.Invalid(e.subject, e.err)
		}
	}
}

// done reports whether every key has been read. Nothing pending is not
// enough: an entry rewritten while the read runs is not delivered in its
// place among the initial ones but after them, while the last initial one
// already says nothing is pending. A key never disappears from the bucket
// (entries are only ever replaced), so the read waits until it has as
// many keys as were pending at the start.
func (c *collector) done() bool {
	return c.created && len(c.keys) >= c.want && (c.caughtUp || c.want == 0)
}

// add takes one delivery.
func (c *collector) add(m *nats.Msg) {
	meta, err := m.Metadata()
	if err != nil || meta.Stream != protocol.FleetStream {
		return // not a delivery of the consumer
	}
	c.keys[m.Subject] = true
	c.caughtUp = meta.NumPending == 0
	if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return
	}
	c.jobs <- delivery{m, meta}
}

// decode decodes and checks one entry (in a worker).
func (c *collector) decode(d delivery) {
	e, err := protocol.DecodeFleetEntry(d.m.Subject, d.m.Data)
	if err == nil && e.Tier != c.tier {
		err = fmt.Errorf("entry %s is not of tier %s", d.m.Subject, c.tier)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.invalid = append(c.invalid, invalidEntry{d.m.Subject, err})
		return
	}
	if seq, ok := c.seqs[e.Hostname]; ok && seq > d.meta.Sequence.Stream {
		return // a later write of this key was decoded first
	}
	h := Host{FleetEntry: e, LastSeen: d.meta.Timestamp}
	h.Online = IsOnline(e, h.LastSeen, c.opts.Now())
	c.hosts[e.Hostname] = h
	c.seqs[e.Hostname] = d.meta.Sequence.Stream
}

func (c *collector) sorted() []Host {
	out := make([]Host, 0, len(c.hosts))
	for _, h := range c.hosts {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Hostname < out[j].Hostname })
	return out
}

// IsOnline decides whether a host whose entry was last stored at
// lastSeen is online at now: not stopped, and seen within OfflineAfter of
// its own heartbeat intervals.
func IsOnline(e protocol.FleetEntry, lastSeen, now time.Time) bool {
	if e.Stopped {
		return false
	}
	interval := time.Duration(e.HeartbeatSeconds * float64(time.Second))
	if interval <= 0 {
		interval = DefaultInterval
	}
	return now.Sub(lastSeen) <= OfflineAfter*interval
}

// Read reads several tiers at once. It returns the hosts of the tiers it
// could read, sorted by tier then hostname, and the error of each tier it
// could not.
func Read(ctx context.Context, conn *protocol.Conn, tiers []string, opts ReadOptions) ([]Host, map[string]error) {
	type result struct {
		hosts []Host
		err   error
	}
	results := make([]result, len(tiers))
	var wg sync.WaitGroup
	for i, tier := range tiers {
		wg.Go(func() {
			h, err := ReadTier(ctx, conn, tier, opts)
			results[i] = result{h, err}
		})
	}
	wg.Wait()
	var hosts []Host
	errs := map[string]error{}
	for i, r := range results {
		if r.err != nil {
			errs[tiers[i]] = r.err
			continue
		}
		hosts = append(hosts, r.hosts...)
	}
	sort.SliceStable(hosts, func(i, j int) bool {
		if hosts[i].Tier != hosts[j].Tier {
			return hosts[i].Tier < hosts[j].Tier
		}
		return hosts[i].Hostname < hosts[j].Hostname
	})
	return hosts, errs
}

// Unusable reports whether err means the registry cannot be used at all
// (fall back to discovery), as opposed to an entry-level problem.
func Unusable(err error) bool {
	return errors.Is(err, ErrNoJetStream) || errors.Is(err, ErrNoBucket) || errors.Is(err, ErrNotPermitted) || errors.Is(err, ErrNoAnswer)
}

// Stamp renders a time as last_seen is shown: RFC 3339, UTC, to the
// millisecond (a host stopped a moment ago is told from one stopped a
// second ago).
func Stamp(t time.Time) string {
	return t.UTC().Truncate(time.Millisecond).Format("2006-01-02T15:04:05.000Z07:00")
}
