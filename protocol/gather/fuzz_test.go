package gather

import (
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// FuzzClassify feeds arbitrary subjects below the reply subject, bodies
// and status headers through the classification and the response
// decoders: nothing panics, only an empty body with status 503 on the bare
// reply subject is "no responders", a sender is one token read from the
// subject, and a decoded answer has passed its Clean check (a hostname that
// is one token, clean text) and, as a deploy status, has a status.
func FuzzClassify(f *testing.F) {
	seeds := []struct {
		status, suffix string
		data           []byte
	}{
		{"503", "", nil},
		{"503", ".web1", nil},
		{"503", "", []byte(`{}`)},
		{"", "", nil},
		{"", ".web1", []byte(`{"id":"x","hostname":"web1","status":"completed","error":null,"message":"done"}`)},
		{"", ".builder", []byte(`{"hostname":"evil\u001b[2J","status":"completed"}`)},
		{"", ".a.b", []byte(`{"status":"completed","results":[{"host":"a","success":true}],"succeeded":1,"failed":0}`)},
		{"", ".web1", []byte(`{"hostname":"web1","tier":"test","subjects":["deploy.test.web1","deploy.>"],"version":"v1"}`)},
		{"", "x", []byte(`{"hostname":`)},
		{"404", ".*", []byte(`null`)},
	}
	for _, s := range seeds {
		f.Add(s.status, s.suffix, s.data)
	}
	f.Fuzz(func(t *testing.T, status, suffix string, data []byte) {
		h := nats.Header{}
		if status != "" {
			h.Set("Status", status)
		}
		subject := "r" + suffix
		d := classify("r", subject, h, data, protocol.DecodeDeployStatus)
		check(t, d, status, subject, data)
		if d.Kind == Answer && d.Value.Status == "" {
			t.Fatalf("deploy answer without a status: %+v", d.Value)
		}
		if d.Kind == Answer && protocol.ValidateHostname(d.Value.Hostname) != nil {
			t.Fatalf("deploy answer with hostname %q", d.Value.Hostname)
		}
		if d.Kind == Answer && protocol.CleanText(d.Value.Message) != d.Value.Message {
			t.Fatalf("deploy answer with unclean message %q", d.Value.Message)
		}
		b := classify("r", subject, h, data, protocol.DecodeBuildResponse)
		check(t, b, status, subject, data)
		if b.Kind == Answer {
			for _, r := range b.Value.Results {
				if protocol.ValidateToken("host", r.Host) != nil {
					t.Fatalf("build answer with host %q", r.Host)
				}
			}
		}
		l := classify("r", subject, h, data, protocol.DecodeDiscoverResponse)
		check(t, l, status, subject, data)
		if l.Kind == Answer && (protocol.ValidateHostname(l.Value.Hostname) != nil || protocol.ValidateTier(l.Value.Tier) != nil) {
			t.Fatalf("discovery answer %+v", l.Value)
		}
	})
}

func check[T any](t *testing.T, m Msg[T], status, subject string, data []byte) {
	t.Helper()
	if m.Size != len(data) || m.Subject != subject {
		t.Fatalf("size %d subject %q for %d bytes on %q", m.Size, m.Subject, len(data), subject)
	}
	sender, err := protocol.ReplySender("r", subject)
	if err != nil && m.Kind != Malformed || m.Sender != sender {
		t.Fatalf("kind %s sender %q on %q; ReplySender says %q, %v", m.Kind, m.Sender, subject, sender, err)
	}
	if m.Sender != "" && (protocol.ValidateToken("sender", m.Sender) != nil || subject != "r."+m.Sender) {
		t.Fatalf("sender %q read from %q", m.Sender, subject)
	}
	noResp := len(data) == 0 && status == "503" && subject == "r"
	if (m.Kind == NoResponders) != noResp {
		t.Fatalf("kind %s for status %q and %d bytes", m.Kind, status, len(data))
	}
	if m.Kind == Answer && !json.Valid(data) {
		t.Fatalf("invalid JSON %q decoded as an answer", data)
	}
	if (m.Kind == Malformed) != (m.Err != nil) {
		t.Fatalf("kind %s with err %v", m.Kind, m.Err)
	}
}
