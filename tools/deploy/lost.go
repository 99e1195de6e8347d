package deploy

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/listhosts"
)

// lostCheckEvery is how often, after a reconnection, the deployer asks the
// hosts it is waiting for whether they are still deploying.
const lostCheckEvery = time.Second

// lostCheck finds hosts whose final status the deployer missed. NATS core
// does not keep messages for a client that is disconnected, so a status a
// listener published while the deployer was away (a server restart, a
// cluster node lost) is gone. After a reconnection the deployer therefore
// asks the hosts it still waits for, through discovery, whether they are
// busy. A host that answers "not busy" on two checks in a row without its
// final status having arrived has finished a deploy whose outcome this
// deployer will never learn: it is reported by name at once instead of
// after the whole timeout.
type lostCheck struct {
	conn   *protocol.Conn
	opts   listhosts.Options
	tier   string
	ticker *time.Ticker
	out    chan map[string]bool
	asking bool
	off    bool
	idle   map[string]int
}

func newLostCheck(conn *protocol.Conn, target protocol.Target, opts Options) *lostCheck {
	return &lostCheck{conn: conn, opts: opts.Discover, tier: target.Tier, out: make(chan map[string]bool, 1), idle: map[string]int{}}
}

// start begins the checks (after a reconnection).
func (l *lostCheck) start() {
	if l.ticker == nil && !l.off {
		l.ticker = time.NewTicker(lostCheckEvery)
	}
}

func (l *lostCheck) stop() {
	if l.ticker != nil {
		l.ticker.Stop()
	}
}

// tick fires when the next check is due; nil before start.
func (l *lostCheck) tick() <-chan time.Time {
	if l.ticker == nil {
		return nil
	}
	return l.ticker.C
}

// answers delivers, per check, which hosts answered and whether each is busy.
func (l *lostCheck) answers() <-chan map[string]bool { return l.out }

// ask runs one discovery in the background unless one is running.
func (l *lostCheck) ask(ctx context.Context, pending []string) {
	if l.asking || l.off || len(pending) == 0 {
		return
	}
	l.asking = true
	go func() {
		res, err := listhosts.Discover(ctx, l.conn, l.tier, protocol.DefaultDiscoverSubject, l.opts)
		var busy map[string]bool
		if err == nil {
			busy = make(map[string]bool, len(res.Hosts))
			for _, h := range res.Hosts {
				busy[h.Hostname] = h.Busy
			}
		}
		select {
		case l.out <- busy:
		case <-ctx.Done():
		}
	}()
}

// lost takes one check's answers (nil: discovery failed) and returns the
// pending hosts now considered lost.
func (l *lostCheck) lost(busy map[string]bool, pending []string) []string {
	l.asking = false
	if busy == nil {
		// Discovery is refused or broken: fall back to the timeout.
		l.opts.Logger.Warn("cannot ask the hosts whether they are still deploying; waiting for the timeout")
		l.off = true
		l.stop()
		l.ticker = nil
		return nil
	}
	var out []string
	for _, name := range pending {
		if b, ok := busy[name]; ok && !b {
			l.idle[name]++
		} else {
			l.idle[name] = 0
		}
		if l.idle[name] >= 2 {
			out = append(out, name)
		}
	}
	return out
}

// lostMessage explains a lost host to the user.
func lostMessage(host string, last protocol.Status) string {
	seen := "no status at all"
	if last != "" {
		seen = "last status seen: " + string(last)
	}
	return fmt.Sprintf("lost track of %s: this deployer's connection to NATS dropped during the deploy and the final status never arrived (%s); %s is no longer deploying, so the deploy has ended with an outcome unknown here: check `journalctl -u homelab-deploy-listener` on %s, or deploy again", host, seen, host, host)
}

// pendingHosts are the hosts the deployer still waits for: those that
// answered and are not finished, or the one addressed host when nothing
// at all came back.
func pendingHosts(hosts map[string]*hostState, target protocol.Target) []string {
	var out []string
	for name, h := range hosts {
		if !h.terminal {
			out = append(out, name)
		}
	}
	if len(hosts) == 0 && target.Kind == protocol.TargetHost {
		out = append(out, target.Name)
	}
	sort.Strings(out)
	return out
}
