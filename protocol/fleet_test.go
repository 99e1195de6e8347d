package protocol

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
)

const goodEntry = `{"hostname":"web1","tier":"test","role":"web","subjects":["deploy.test.web1","deploy.test.all"],"version":"v1",
"public_key":"UDDSQBCUGVGPUAJYTS4455TDMHXCSPGPTYOF4ASOCYAYXU5MMIDQVJMA","current_system":"/nix/store/aaa-nixos-system-web1",
"booted_system":"/nix/store/aaa-nixos-system-web1","reboot_required":false,"generation":42,"uptime_seconds":12.5,
"started_at":"2026-11-26T18:00:00Z","heartbeat_at":"2026-11-26T18:00:30.5Z","heartbeat_seconds":30,"stopped":false,
"running_deploy":{"id":"abc","action":"switch","revision":"main","started_at":"2026-11-26T18:00:10Z"},
"last_deploy":{"id":"xyz","action":"boot","revision":"main","status":"completed","error":null,"finished_at":"2026-11-26T17:00:00Z","duration_seconds":41.2}}`

func TestDecodeFleetEntry(t *testing.T) {
	t.Parallel()
	e, err := DecodeFleetEntry("$KV.homelab_deploy_fleet.test.web1", []byte(goodEntry))
	if err != nil {
		t.Fatal(err)
	}
	if e.Generation != 42 || e.RunningDeploy == nil || e.RunningDeploy.ID != "abc" || e.LastDeploy == nil || e.LastDeploy.Revision != "main" ||
		e.LastDeploy.Status != StatusCompleted || e.PublicKey == "" || e.CurrentSystem != "/nix/store/aaa-nixos-system-web1" {
		t.Errorf("decoded %+v", e)
	}
	// The entry round-trips: what a listener writes is what a reader reads.
	out, _ := json.Marshal(e)
	e2, err := DecodeFleetEntry("$KV.homelab_deploy_fleet.test.web1", out)
	if err != nil || e2.Hostname != "web1" || e2.LastDeploy.DurationSeconds != 41.2 {
		t.Errorf("round trip: %+v, %v", e2, err)
	}
}

func TestDecodeFleetEntryRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, subject, data, want string
	}{
		{"another host's key", "$KV.homelab_deploy_fleet.test.web2", goodEntry, "must describe the host of its key"},
		{"another tier's key", "$KV.homelab_deploy_fleet.prod.web1", goodEntry, "must describe the host of its key"},
		{"not a key", "deploy.test.web1", goodEntry, "not a key"},
		{"wildcard key", "$KV.homelab_deploy_fleet.test.*", goodEntry, "key"},
		{"deep key", "$KV.homelab_deploy_fleet.test.web1.x", goodEntry, "key"},
		{"unknown tier", "$KV.homelab_deploy_fleet.dev.web1", goodEntry, "tier"},
		{"duplicate key", "$KV.homelab_deploy_fleet.test.web1", `{"hostname":"web1","hostname":"web2","tier":"test"}`, "twice"},
		{"case-folded name", "$KV.homelab_deploy_fleet.test.web1", `{"Hostname":"web1","tier":"test"}`, "malformed"},
		{"bad role", "$KV.homelab_deploy_fleet.test.web1", `{"hostname":"web1","tier":"test","role":"a.b"}`, "role"},
		{"not an object", "$KV.homelab_deploy_fleet.test.web1", `[1]`, "malformed"},
		{"too large", "$KV.homelab_deploy_fleet.test.web1", `{"hostname":"web1","tier":"test","version":"` + strings.Repeat("x", MaxFleetEntrySize) + `"}`, "bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := DecodeFleetEntry(tt.subject, []byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestDecodeFleetEntryCleans(t *testing.T) {
	t.Parallel()
	data := `{"hostname":"web1","tier":"test","subjects":["deploy.test.web1","deploy.responses.x","a.*"],"version":"v1\u001b[31m",
"public_key":"SUAAA","current_system":"relative/path","booted_system":"/nix/store/a\nb","generation":-3,"uptime_seconds":-1,
"started_at":"yesterday","heartbeat_at":"2026-11-26T18:00:30Z","heartbeat_seconds":30,
"running_deploy":{"action":"rm -rf","revision":"main","started_at":"x"},
"last_deploy":{"id":"a b","caller":"nobody","action":"switch","revision":"main","status":"started","error":null,"finished_at":"x","duration_seconds":1},
"future_field":{"x":1}}`
	e, err := DecodeFleetEntry("$KV.homelab_deploy_fleet.test.web1", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Subjects) != 1 || e.Version != "v1[31m" || e.PublicKey != "" || e.CurrentSystem != "" || e.BootedSystem != "" ||
		e.Generation != 0 || e.UptimeSeconds != 0 || e.StartedAt != "" || e.RunningDeploy != nil || e.LastDeploy != nil {
		t.Errorf("cleaned entry %+v", e)
	}
}

func TestDeliveredByJetStream(t *testing.T) {
	t.Parallel()
	if !DeliveredByJetStream("$JS.ACK.KV_x.c.1.1.1.1.0", nil) {
		t.Error("a consumer delivery was not recognised")
	}
	if !DeliveredByJetStream("", nats.Header{"Nats-Stream": {"KV_x"}}) {
		t.Error("a direct get or republished message was not recognised")
	}
	if DeliveredByJetStream("deploy.responses.abc", nats.Header{"Homelab-Deploy-Key": {"U"}}) {
		t.Error("a client's request was taken for a JetStream delivery")
	}
}

func TestFleetSubjects(t *testing.T) {
	t.Parallel()
	if got := FleetConsumerCreateSubject("c1", "test"); got != "$JS.API.CONSUMER.CREATE.KV_homelab_deploy_fleet.c1.$KV.homelab_deploy_fleet.test.>" {
		t.Errorf("consumer create subject %s", got)
	}
	tier, host, err := ParseFleetKeySubject(FleetKeySubject("prod", "db1"))
	if err != nil || tier != "prod" || host != "db1" {
		t.Errorf("ParseFleetKeySubject: %s %s %v", tier, host, err)
	}
}

// FuzzParseFleetKeySubject: a key subject parses only into a valid tier
// and hostname that build the same subject again.
func FuzzParseFleetKeySubject(f *testing.F) {
	for _, s := range []string{"$KV.homelab_deploy_fleet.test.web1", "$KV.homelab_deploy_fleet.prod.a.b", "$KV.homelab_deploy_fleet.test.*",
		"$KV.homelab_deploy_fleet.test.", "$KV.other.test.web1", "$KV.homelab_deploy_fleet.test.all", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tier, host, err := ParseFleetKeySubject(s)
		if err != nil {
			return
		}
		if ValidateTier(tier) != nil || ValidateHostname(host) != nil || FleetKeySubject(tier, host) != s {
			t.Fatalf("%q parsed into %q %q", s, tier, host)
		}
	})
}

// FuzzDecodeFleetEntry: whatever a listener stored, a reader never
// panics, and what it accepts describes the host of its key, with clean
// text and bounded values.
func FuzzDecodeFleetEntry(f *testing.F) {
	f.Add("$KV.homelab_deploy_fleet.test.web1", goodEntry)
	f.Add("$KV.homelab_deploy_fleet.test.web1", `{"hostname":"web1","tier":"test","subjects":null}`)
	f.Add("$KV.homelab_deploy_fleet.prod.db1", `{"hostname":"db1","tier":"prod","last_deploy":{"action":"switch","revision":"main","status":"failed","error":"x\u202e"}}`)
	f.Add("$KV.homelab_deploy_fleet.test.web1", `{"hostname":"web1","tier":"test","generation":1e300}`)
	f.Add("$KV.homelab_deploy_fleet.test.web1", `{"hostname":"web1","tier":"test"} {}`)
	f.Fuzz(func(t *testing.T, subject, data string) {
		e, err := DecodeFleetEntry(subject, []byte(data))
		if err != nil {
			return
		}
		tier, host, err := ParseFleetKeySubject(subject)
		if err != nil || e.Hostname != host || e.Tier != tier {
			t.Fatalf("entry %+v accepted under %q", e, subject)
		}
		for _, s := range []string{e.Version, e.CurrentSystem, e.BootedSystem, e.StartedAt, e.HeartbeatAt} {
			if !utf8.ValidString(s) || CleanText(s) != s {
				t.Fatalf("unclean text %q", s)
			}
		}
		if e.Generation < 0 || e.Generation > MaxFleetGeneration || e.UptimeSeconds < 0 || e.HeartbeatSeconds < 0 {
			t.Fatalf("unbounded numbers in %+v", e)
		}
		if l := e.LastDeploy; l != nil && (!l.Status.Terminal() || ValidateRevision(l.Revision) != nil) {
			t.Fatalf("last deploy %+v kept", l)
		}
		for _, s := range e.Subjects {
			if ValidateLiteralSubject(s) != nil {
				t.Fatalf("subject %q kept", s)
			}
		}
	})
}
