package fleet

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// The permissions nats-config generates, proved against Debian's
// nats-server 2.9.10: a listener writes its own key and nothing else, a
// deployer reads the tiers it may deploy to and nothing else.
func TestPermissionsOnDebianServer(t *testing.T) {
	t.Parallel()
	d := startDebianNATS(t, true, fleetUsers()...)
	web1 := writerOn(t, d.Connect(t, "listener-web1"), "web1", "test", "web")
	writeOnce(t, web1)
	writeOnce(t, writerOn(t, d.Connect(t, "listener-web2"), "web2", "test", ""))
	writeOnce(t, writerOn(t, d.Connect(t, "listener-db1"), "db1", "prod", "db"))

	t.Run("a listener writes only its own key", func(t *testing.T) {
		data := []byte(`{"hostname":"web2","tier":"test","subjects":[],"version":"forged","started_at":"","heartbeat_at":"","heartbeat_seconds":30,"stopped":true,"reboot_required":false}`)
		_, err := web1.r.request(t.Context(), protocol.FleetKeySubject("test", "web2"), nil, data, DefaultTimeout, nil)
		if !errors.Is(err, ErrNotPermitted) {
			t.Errorf("web1 writing web2's key: %v, want ErrNotPermitted", err)
		}
		hosts := mustRead(t, d.Connect(t, "test-deployer"), "test")
		if len(hosts) != 2 || hosts[1].Hostname != "web2" || hosts[1].Version == "forged" || hosts[1].Stopped {
			t.Errorf("web2's entry after web1's attempt: %+v", hosts)
		}
	})
	t.Run("a listener reads no entry and cannot change the bucket", func(t *testing.T) {
		if _, err := ReadTier(t.Context(), d.Connect(t, "listener-web1"), "test", ReadOptions{}); !errors.Is(err, ErrNotPermitted) {
			t.Errorf("web1 reading the test tier: %v, want ErrNotPermitted", err)
		}
		for _, api := range []string{"$JS.API.STREAM.DELETE." + protocol.FleetStream, "$JS.API.STREAM.UPDATE." + protocol.FleetStream,
			"$JS.API.STREAM.PURGE." + protocol.FleetStream, "$JS.API.STREAM.MSG.GET." + protocol.FleetStream,
			"$JS.API.DIRECT.GET." + protocol.FleetStream + "." + protocol.FleetKeySubject("test", "web2")} {
			if _, err := web1.r.request(t.Context(), api, nil, []byte(`{}`), DefaultTimeout, nil); !errors.Is(err, ErrNotPermitted) {
				t.Errorf("web1 on %s: %v, want ErrNotPermitted", api, err)
			}
		}
	})
	t.Run("the test deployer reads the test tier only", func(t *testing.T) {
		conn := d.Connect(t, "test-deployer")
		hosts := mustRead(t, conn, "test")
		if len(hosts) != 2 || hosts[0].Hostname != "web1" || hosts[1].Hostname != "web2" {
			t.Errorf("test tier: %+v", hosts)
		}
		if _, err := ReadTier(t.Context(), conn, "prod", ReadOptions{}); !errors.Is(err, ErrNotPermitted) {
			t.Errorf("test deployer reading prod: %v, want ErrNotPermitted", err)
		}
		r, err := listen(conn, protocol.FleetReadReplyPrefix("test")+protocol.NewID(), 16)
		if err != nil {
			t.Fatal(err)
		}
		defer r.close()
		// Every other way to a prod entry: a consumer without the filter in
		// its subject, a wider filter, a wildcard tier, direct and stream
		// gets, and the key's own subject.
		for _, api := range []string{
			"$JS.API.CONSUMER.CREATE." + protocol.FleetStream,
			"$JS.API.CONSUMER.CREATE." + protocol.FleetStream + ".c.$KV." + protocol.FleetBucket + ".>",
			"$JS.API.CONSUMER.CREATE." + protocol.FleetStream + ".c.$KV." + protocol.FleetBucket + ".*.db1",
			"$JS.API.CONSUMER.DURABLE.CREATE." + protocol.FleetStream + ".c",
			"$JS.API.DIRECT.GET." + protocol.FleetStream + "." + protocol.FleetKeySubject("prod", "db1"),
			"$JS.API.STREAM.MSG.GET." + protocol.FleetStream,
			protocol.FleetKeySubject("test", "web1"),
		} {
			if _, err := r.request(t.Context(), api, nil, []byte(`{}`), DefaultTimeout, nil); !errors.Is(err, ErrNotPermitted) {
				t.Errorf("test deployer on %s: %v, want ErrNotPermitted", api, err)
			}
		}
	})
	t.Run("the admin reads every tier", func(t *testing.T) {
		hosts, errs := Read(t.Context(), d.Connect(t, "admin-deployer"), protocol.Tiers, ReadOptions{})
		if len(errs) != 0 || len(hosts) != 3 {
			t.Errorf("admin: %+v, %v", hosts, errs)
		}
	})
}

// Each of the registry's permissions is needed: without any one of them,
// Debian's nats-server refuses the listener or the reader.
func TestEachPermissionIsNeeded(t *testing.T) {
	t.Parallel()
	full := *testenv.ListenerPerms("test", "web1", "web")
	fl := protocol.FleetListenerPermissions("test", "web1")
	reader := protocol.TestDeployerPermissions()
	fr := protocol.FleetReaderPermissions("test")
	users := []testenv.User{
		{Name: "no-create", Permissions: without(full, fl.Publish[2])},
		{Name: "full", Permissions: &full},
		{Name: "no-key", Permissions: without(full, fl.Publish[0])},
		{Name: "no-info", Permissions: without(full, fl.Publish[1])},
		{Name: "no-replies", Permissions: without(full, fl.Subscribe[0])},
		{Name: "reader", Permissions: &reader},
		{Name: "reader-no-create", Permissions: without(reader, fr.Publish[0])},
		{Name: "reader-no-replies", Permissions: without(reader, fr.Subscribe[0])},
	}
	d := startDebianNATS(t, true, users...)
	// Before the bucket exists, a listener without the create permission
	// cannot make it; the full set can.
	if err := writerOn(t, d.Connect(t, "no-create"), "web1", "test", "web").write(t.Context(), false); !errors.Is(err, ErrNotPermitted) {
		t.Errorf("without %s: %v, want ErrNotPermitted", fl.Publish[2], err)
	}
	writeOnce(t, writerOn(t, d.Connect(t, "full"), "web1", "test", "web"))
	for _, name := range []string{"no-key", "no-info", "no-replies"} {
		if err := writerOn(t, d.Connect(t, name), "web1", "test", "web").write(t.Context(), false); !errors.Is(err, ErrNotPermitted) {
			t.Errorf("listener %s: %v, want ErrNotPermitted", name, err)
		}
	}
	if hosts := mustRead(t, d.Connect(t, "reader"), "test"); len(hosts) != 1 {
		t.Errorf("reader: %+v", hosts)
	}
	for _, name := range []string{"reader-no-create", "reader-no-replies"} {
		if _, err := ReadTier(t.Context(), d.Connect(t, name), "test", ReadOptions{}); !errors.Is(err, ErrNotPermitted) {
			t.Errorf("%s: %v, want ErrNotPermitted", name, err)
		}
	}
}

// The registry on Debian's nats-server without JetStream: every use says
// so at once.
func TestNoJetStreamOnDebianServer(t *testing.T) {
	t.Parallel()
	d := startDebianNATS(t, false, fleetUsers()...)
	if err := writerOn(t, d.Connect(t, "listener-web1"), "web1", "test", "web").write(t.Context(), false); !errors.Is(err, ErrNoJetStream) {
		t.Errorf("write: %v, want ErrNoJetStream", err)
	}
	if _, err := ReadTier(t.Context(), d.Connect(t, "test-deployer"), "test", ReadOptions{Timeout: time.Hour}); !errors.Is(err, ErrNoJetStream) {
		t.Errorf("read: %v, want ErrNoJetStream", err)
	}
}

func without(p protocol.Permissions, subject string) *protocol.Permissions {
	return &protocol.Permissions{
		Publish:   slices.DeleteFunc(slices.Clone(p.Publish), func(s string) bool { return s == subject }),
		Subscribe: slices.DeleteFunc(slices.Clone(p.Subscribe), func(s string) bool { return s == subject }),
	}
}

func writerOn(t testing.TB, conn *protocol.Conn, host, tier, role string) *Writer {
	t.Helper()
	w, err := NewWriter(WriterConfig{Conn: conn, Hostname: host, Tier: tier, Role: role, Version: "test", Interval: time.Hour, System: SystemPaths{Root: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func mustRead(t testing.TB, conn *protocol.Conn, tier string) []Host {
	t.Helper()
	hosts, err := ReadTier(t.Context(), conn, tier, ReadOptions{})
	if err != nil {
		t.Fatalf("read %s: %v", tier, err)
	}
	return hosts
}
