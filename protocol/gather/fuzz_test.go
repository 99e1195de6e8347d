package gather

import (
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// FuzzClassify feeds arbitrary bodies and status headers through the
// classification and the three response decoders: nothing panics, only an
// empty body with status 503 is "no responders", and a decoded answer has
// passed its Clean check (a hostname that is one token, clean text).
func FuzzClassify(f *testing.F) {
	seeds := []struct {
		status string
		data   []byte
	}{
		{"503", nil},
		{"503", []byte(`{}`)},
		{"", nil},
		{"", []byte(`{"id":"x","hostname":"web1","status":"completed","error":null,"message":"done"}`)},
		{"", []byte(`{"hostname":"evil\u001b[2J","status":"completed"}`)},
		{"", []byte(`{"status":"completed","results":[{"host":"a","success":true}],"succeeded":1,"failed":0}`)},
		{"", []byte(`{"hostname":"web1","tier":"test","subjects":["deploy.test.web1","deploy.>"],"version":"v1"}`)},
		{"", []byte(`{"hostname":`)},
		{"404", []byte(`null`)},
	}
	for _, s := range seeds {
		f.Add(s.status, s.data)
	}
	f.Fuzz(func(t *testing.T, status string, data []byte) {
		h := nats.Header{}
		if status != "" {
			h.Set("Status", status)
		}
		d := classify("r", h, data, protocol.DecodeDeployResponse)
		check(t, d, status, data)
		if d.Kind == Answer && protocol.ValidateHostname(d.Value.Hostname) != nil {
			t.Fatalf("deploy answer with hostname %q", d.Value.Hostname)
		}
		if d.Kind == Answer && protocol.CleanText(d.Value.Message) != d.Value.Message {
			t.Fatalf("deploy answer with unclean message %q", d.Value.Message)
		}
		b := classify("r", h, data, protocol.DecodeBuildResponse)
		check(t, b, status, data)
		if b.Kind == Answer {
			for _, r := range b.Value.Results {
				if protocol.ValidateToken("host", r.Host) != nil {
					t.Fatalf("build answer with host %q", r.Host)
				}
			}
		}
		l := classify("r", h, data, protocol.DecodeDiscoverResponse)
		check(t, l, status, data)
		if l.Kind == Answer && (protocol.ValidateHostname(l.Value.Hostname) != nil || protocol.ValidateTier(l.Value.Tier) != nil) {
			t.Fatalf("discovery answer %+v", l.Value)
		}
	})
}

func check[T any](t *testing.T, m Msg[T], status string, data []byte) {
	t.Helper()
	if m.Size != len(data) || m.Subject != "r" {
		t.Fatalf("size %d subject %q for %d bytes", m.Size, m.Subject, len(data))
	}
	noResp := len(data) == 0 && status == "503"
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
