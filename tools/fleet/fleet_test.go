package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

func TestWriteThenRead(t *testing.T) {
	t.Parallel()
	n := jsServer(t, true)
	sys := newFakeSystem(t)
	a := sys.system(t, "aaa-nixos-system-web1", "linux-6.1", "initrd-1", "modules-6.1")
	b := sys.system(t, "bbb-nixos-system-web1", "linux-6.6", "initrd-1", "modules-6.6")
	sys.point(t, "current-system", b)
	sys.point(t, "booted-system", a)
	sys.generation(t, "42")
	w := startWriter(t, n, "web1", "test", "web", SystemPaths{Root: sys.Root}, time.Hour)
	w.cfg.Last = func() *protocol.LastDeploy {
		return &protocol.LastDeploy{Action: protocol.ActionSwitch, Revision: "main", Status: protocol.StatusCompleted, FinishedAt: "2026-11-26T18:00:00Z", DurationSeconds: 3}
	}
	writeOnce(t, w)
	writeOnce(t, startWriter(t, n, "db1", "prod", "db", SystemPaths{Root: t.TempDir()}, time.Hour))

	hosts, err := ReadTier(t.Context(), n.Connect(t, "test-deployer"), "test", ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 1 {
		t.Fatalf("hosts %+v, want web1 alone", hosts)
	}
	h := hosts[0]
	if h.Hostname != "web1" || h.Role != "web" || !h.Online || h.Stopped || h.Generation != 42 || h.CurrentSystem != b || h.BootedSystem != a ||
		!h.RebootRequired || h.UptimeSeconds != 1234.56 || h.HeartbeatSeconds != 3600 {
		t.Errorf("host %+v", h)
	}
	if h.LastDeploy == nil || h.LastDeploy.Action != protocol.ActionSwitch || h.LastDeploy.Status != protocol.StatusCompleted || h.LastDeploy.DurationSeconds != 3 {
		t.Errorf("last deploy %+v", h.LastDeploy)
	}
	if d := time.Since(h.LastSeen); d < 0 || d > time.Minute {
		t.Errorf("last seen %s, %s ago", h.LastSeen, d)
	}

	// The admin reads both tiers; the test deployer is refused prod.
	all, errs := Read(t.Context(), n.Connect(t, "admin-deployer"), protocol.Tiers, ReadOptions{})
	if len(errs) != 0 || len(all) != 2 || all[0].Hostname != "db1" || all[1].Hostname != "web1" {
		t.Errorf("admin read %+v, %v", all, errs)
	}
	_, err = ReadTier(t.Context(), n.Connect(t, "test-deployer"), "prod", ReadOptions{})
	if !errors.Is(err, ErrNotPermitted) {
		t.Errorf("test deployer reading prod: %v, want ErrNotPermitted", err)
	}
}

func TestRunningDeployAndStop(t *testing.T) {
	t.Parallel()
	n := jsServer(t, true)
	w := startWriter(t, n, "web2", "test", "", SystemPaths{Root: t.TempDir()}, time.Hour)
	var running atomic.Pointer[protocol.RunningDeploy]
	w.cfg.Running = running.Load
	reader := n.Connect(t, "test-deployer")
	read := func() Host {
		t.Helper()
		hosts, err := ReadTier(t.Context(), reader, "test", ReadOptions{})
		if err != nil || len(hosts) != 1 {
			t.Fatalf("read: %+v, %v", hosts, err)
		}
		return hosts[0]
	}
	w.Start(t.Context())
	testenv.Eventually(t, 10*time.Second, func() bool {
		hosts, err := ReadTier(t.Context(), reader, "test", ReadOptions{})
		return err == nil && len(hosts) == 1
	}, "the started writer never registered web2")

	// A change is written without waiting for the (hour-long) heartbeat.
	running.Store(&protocol.RunningDeploy{ID: "r1", Action: protocol.ActionTest, Revision: "main", StartedAt: "2026-11-26T18:00:00Z"})
	w.Changed()
	testenv.Eventually(t, 10*time.Second, func() bool { return read().RunningDeploy != nil }, "the running deploy was never written")
	if r := read().RunningDeploy; r.ID != "r1" || r.Action != protocol.ActionTest {
		t.Errorf("running deploy %+v", r)
	}

	// A clean stop is offline at once.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := w.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if h := read(); h.Online || !h.Stopped {
		t.Errorf("after a clean stop: online %v, stopped %v", h.Online, h.Stopped)
	}
}

// A listener that crashed leaves its entry as it was: it turns offline
// once it is older than three heartbeats, on the reader's clock.
func TestCrashedListenerGoesOffline(t *testing.T) {
	t.Parallel()
	n := jsServer(t, true)
	w := startWriter(t, n, "web1", "test", "web", SystemPaths{Root: t.TempDir()}, 30*time.Second)
	writeOnce(t, w)
	reader := n.Connect(t, "test-deployer")
	for _, tt := range []struct {
		after  time.Duration
		online bool
	}{{0, true}, {89 * time.Second, true}, {91 * time.Second, false}, {time.Hour, false}} {
		hosts, err := ReadTier(t.Context(), reader, "test", ReadOptions{Now: func() time.Time { return time.Now().Add(tt.after) }})
		if err != nil || len(hosts) != 1 {
			t.Fatalf("read: %+v, %v", hosts, err)
		}
		if hosts[0].Online != tt.online {
			t.Errorf("%s after the last heartbeat (every 30s): online %v, want %v", tt.after, hosts[0].Online, tt.online)
		}
	}
}

func TestWithoutRegistry(t *testing.T) {
	t.Parallel()
	t.Run("no JetStream", func(t *testing.T) {
		t.Parallel()
		n := jsServer(t, false)
		start := time.Now()
		_, err := ReadTier(t.Context(), n.Connect(t, "test-deployer"), "test", ReadOptions{Timeout: time.Hour})
		if !errors.Is(err, ErrNoJetStream) || !Unusable(err) {
			t.Errorf("read: %v, want ErrNoJetStream", err)
		}
		w := startWriter(t, n, "web1", "test", "web", SystemPaths{Root: t.TempDir()}, time.Hour)
		if err := w.write(t.Context(), false); !errors.Is(err, ErrNoJetStream) {
			t.Errorf("write: %v, want ErrNoJetStream", err)
		}
		// Both came back on "no responders", not on the hour-long timeout.
		if time.Since(start) > 30*time.Minute {
			t.Errorf("took %s", time.Since(start))
		}
	})
	t.Run("no bucket", func(t *testing.T) {
		t.Parallel()
		n := jsServer(t, true)
		_, err := ReadTier(t.Context(), n.Connect(t, "test-deployer"), "test", ReadOptions{Timeout: time.Hour})
		if !errors.Is(err, ErrNoBucket) || !Unusable(err) {
			t.Errorf("read: %v, want ErrNoBucket", err)
		}
	})
	t.Run("not permitted", func(t *testing.T) {
		t.Parallel()
		none := protocol.Permissions{Publish: []string{"deploy.test.>"}, Subscribe: []string{"deploy.responses.>"}}
		n := testenv.StartNATSWith(t, testenv.JetStream(t), testenv.User{Name: "old", Permissions: &none})
		_, err := ReadTier(t.Context(), n.Connect(t, "old"), "test", ReadOptions{Timeout: time.Hour})
		if !errors.Is(err, ErrNotPermitted) || !Unusable(err) {
			t.Errorf("read: %v, want ErrNotPermitted", err)
		}
	})
}

// jsRequest sends one JetStream API request as the all-powerful user and
// returns the answer, failing the test on an error answer.
func jsRequest(t *testing.T, conn *protocol.Conn, subject string, body []byte) []byte {
	t.Helper()
	msg, err := conn.Request(subject, body, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	var resp apiResponse
	if err := json.Unmarshal(msg.Data, &resp); err != nil || resp.Error != nil {
		t.Fatalf("%s: %s", subject, msg.Data)
	}
	return msg.Data
}

// The bucket is a key-value bucket as nats.go and natscli read one: a
// stream KV_<bucket> on $KV.<bucket>.>, keeping at least one message per
// key, with direct gets of a key's last value.
func TestBucketIsKeyValue(t *testing.T) {
	t.Parallel()
	n := jsServer(t, true)
	w := startWriter(t, n, "web1", "test", "web", SystemPaths{Root: t.TempDir()}, time.Hour)
	writeOnce(t, w)
	all := n.Connect(t, "all")
	var info streamInfo
	if err := json.Unmarshal(jsRequest(t, all, protocol.FleetStreamInfoSubject, nil), &info); err != nil {
		t.Fatal(err)
	}
	if c := info.Config; c.Name != "KV_"+protocol.FleetBucket || c.Replicas != 1 || c.MaxMsgsPerSubject < 1 || !c.AllowDirect || c.AllowRollup ||
		len(c.Subjects) != 1 || c.Subjects[0] != "$KV."+protocol.FleetBucket+".>" || c.MaxMsgSize != protocol.MaxFleetEntrySize {
		t.Errorf("stream config %+v", c)
	}
	msg, err := all.Request("$JS.API.DIRECT.GET."+protocol.FleetStream+"."+protocol.FleetKeySubject("test", "web1"), nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var entry protocol.FleetEntry
	if err := json.Unmarshal(msg.Data, &entry); err != nil || entry.Hostname != "web1" || entry.HeartbeatSeconds != 3600 {
		t.Errorf("entry %s: %v", msg.Data, err)
	}

	// Deleted, the bucket is created again by the next write.
	jsRequest(t, all, "$JS.API.STREAM.DELETE."+protocol.FleetStream, nil)
	writeOnce(t, w)
	hosts, err := ReadTier(t.Context(), n.Connect(t, "test-deployer"), "test", ReadOptions{})
	if err != nil || len(hosts) != 1 {
		t.Errorf("after the bucket was deleted and written again: %+v, %v", hosts, err)
	}
}

// A stream of the bucket's name that would send entries elsewhere (here a
// republish) is not written to.
func TestForeignBucketRefused(t *testing.T) {
	t.Parallel()
	n := jsServer(t, true)
	all := n.Connect(t, "all")
	jsRequest(t, all, protocol.FleetStreamCreateSubject, []byte(`{"name":"`+protocol.FleetStream+`","subjects":["`+protocol.FleetKeyPrefix+`>"],
		"max_msgs_per_subject":1,"storage":"memory","num_replicas":1,"republish":{"src":"`+protocol.FleetKeyPrefix+`>","dest":"republished.>"}}`))
	w := startWriter(t, n, "web1", "test", "web", SystemPaths{Root: t.TempDir()}, time.Hour)
	err := w.write(t.Context(), false)
	if !errors.Is(err, ErrBadBucket) || !strings.Contains(err.Error(), "republishes") {
		t.Fatalf("write to a republishing bucket: %v, want ErrBadBucket", err)
	}
	var info struct {
		State struct {
			Messages int `json:"messages"`
		} `json:"state"`
	}
	if err := json.Unmarshal(jsRequest(t, all, protocol.FleetStreamInfoSubject, nil), &info); err != nil {
		t.Fatal(err)
	}
	if info.State.Messages != 0 {
		t.Errorf("%d entries written to the foreign bucket", info.State.Messages)
	}
}

// A listener may not use rollup headers to erase other hosts' entries.
func TestRollupRefused(t *testing.T) {
	t.Parallel()
	n := jsServer(t, true)
	writeOnce(t, startWriter(t, n, "web2", "test", "", SystemPaths{Root: t.TempDir()}, time.Hour))
	w := startWriter(t, n, "web1", "test", "web", SystemPaths{Root: t.TempDir()}, time.Hour)
	writeOnce(t, w)
	data, _ := json.Marshal(w.Entry(System{}, false))
	_, err := w.r.request(t.Context(), protocol.FleetKeySubject("test", "web1"), nats.Header{"Nats-Rollup": {"all"}}, data, DefaultTimeout, nil)
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Errorf("a rollup of the whole bucket: %v, want a JetStream error", err)
	}
	hosts, err := ReadTier(t.Context(), n.Connect(t, "test-deployer"), "test", ReadOptions{})
	if err != nil || len(hosts) != 2 {
		t.Errorf("after the rollup attempt: %+v, %v; want both entries", hosts, err)
	}
}

func TestSystemRead(t *testing.T) {
	t.Parallel()
	sys := newFakeSystem(t)
	base := sys.system(t, "a-nixos-system", "k1", "i1", "m1")
	sameBoot := sys.system(t, "b-nixos-system", "k1", "i1", "m1")
	newKernel := sys.system(t, "c-nixos-system", "k2", "i1", "m1")
	newInitrd := sys.system(t, "d-nixos-system", "k1", "i2", "m1")
	newModules := sys.system(t, "e-nixos-system", "k1", "i1", "m2")
	tests := []struct {
		name     string
		current  string
		reboot   bool
		noBooted bool
	}{
		{"same system", base, false, false},
		{"new system, same boot files", sameBoot, false, false},
		{"new kernel", newKernel, true, false},
		{"new initrd", newInitrd, true, false},
		{"new kernel modules", newModules, true, false},
	}
	sys.point(t, "booted-system", base)
	sys.generation(t, "7")
	for _, tt := range tests {
		sys.point(t, "current-system", tt.current)
		got := SystemPaths{Root: sys.Root}.Read()
		if got.RebootRequired != tt.reboot || got.Current != tt.current || got.Booted != base || got.Generation != 7 || got.UptimeSeconds != 1234.56 {
			t.Errorf("%s: %+v", tt.name, got)
		}
	}
	// Not NixOS: nothing to read, nothing required.
	if got := (SystemPaths{Root: t.TempDir()}).Read(); got != (System{}) {
		t.Errorf("empty root: %+v", got)
	}
}

// Entries rewritten while a read runs are still read: every read of a
// tier whose listeners keep rewriting their entries returns all of them.
func TestReadWhileEntriesChange(t *testing.T) {
	t.Parallel()
	users := []testenv.User{{Name: "all"}}
	n := testenv.StartNATSWith(t, testenv.JetStream(t), users...)
	all := n.Connect(t, "all")
	const hosts = 20
	var writers []*Writer
	for i := 0; i < hosts; i++ {
		w, err := NewWriter(WriterConfig{Conn: all, Hostname: "h" + strconv.Itoa(i), Tier: "test", Version: "v", Interval: time.Hour, System: SystemPaths{Root: t.TempDir()}})
		if err != nil {
			t.Fatal(err)
		}
		writeOnce(t, w)
		writers = append(writers, w)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, w := range writers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					_ = w.write(t.Context(), false)
				}
			}
		})
	}
	reader := n.Connect(t, "all")
	for i := 0; i < 30; i++ {
		got, err := ReadTier(t.Context(), reader, "test", ReadOptions{})
		if err != nil || len(got) != hosts {
			t.Errorf("read %d while entries change: %d hosts, %v", i, len(got), err)
		}
	}
	close(stop)
	wg.Wait()
}

// A write that got no answer in time (here JetStream's API swallows
// requests, as a cluster still electing its leader does) is tried again
// within seconds, not at the next heartbeat an hour later: once JetStream
// is up, the entry appears.
func TestWriteRetriedSoonAfterNoAnswer(t *testing.T) {
	t.Parallel()
	srv := testenv.StartNATSWith(t, nil, testenv.User{Name: "all"})
	conn := srv.Connect(t, "all")
	sconn := srv.Connect(t, "all")
	silent, err := sconn.Subscribe("$JS.API.>", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	// The server knows the subscription before the first write, which
	// would otherwise meet "no responders" (no JetStream).
	if err := sconn.Flush(); err != nil {
		t.Fatal(err)
	}
	var logs testenv.Buffer
	w, err := NewWriter(WriterConfig{Conn: conn, Hostname: "web1", Tier: "test", Version: "test", Interval: time.Hour,
		Timeout: 200 * time.Millisecond, System: SystemPaths{Root: t.TempDir()}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	w.Start(t.Context())
	testenv.Eventually(t, 10*time.Second, func() bool { return strings.Contains(logs.String(), "did not answer in time") },
		"the first write did not fail for want of an answer:\n%s", logs.String())
	// JetStream first, then the silent subscriber goes: there is never a
	// moment with nobody on the API, which would answer "no responders"
	// (no JetStream: retried at the heartbeat only).
	if err := srv.Server.EnableJetStream(&server.JetStreamConfig{StoreDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	_ = silent.Unsubscribe()
	testenv.Eventually(t, 20*time.Second, func() bool {
		hosts, err := ReadTier(t.Context(), srv.Connect(t, "all"), "test", ReadOptions{})
		return err == nil && len(hosts) == 1 && hosts[0].Hostname == "web1"
	}, "the entry was not written after JetStream came up:\n%s", logs.String())
}
