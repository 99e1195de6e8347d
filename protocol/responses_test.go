package protocol

import (
	"encoding/json"
	"strings"
	"testing"
)

// Request ids are unpredictable: consecutive ids of one process share no
// prefix beyond chance (a NUID shared its first 12 characters with every
// other id of the process), every id is distinct, and each one is a valid
// request id and makes a valid reply subject.
func TestNewIDsShareNoPrefix(t *testing.T) {
	t.Parallel()
	const n = 2000
	seen := make(map[string]bool, n)
	prev := NewID()
	for range n {
		id := NewID()
		if seen[id] {
			t.Fatalf("id %s came twice", id)
		}
		seen[id] = true
		if len(id) != 26 {
			t.Fatalf("id %q is %d characters, want 26 (130 bits of base32)", id, len(id))
		}
		if err := ValidateRequestID(id); err != nil {
			t.Fatalf("id %q: %v", id, err)
		}
		if err := ValidateReplySubject(DeployResponsesPrefix+id, DeployResponsesPrefix); err != nil {
			t.Fatalf("reply subject of %q: %v", id, err)
		}
		// Two random base32 ids share 5 leading characters with chance
		// 32^-5 (1 in 33 million): over 2000 pairs, about 1 in 17000 runs.
		if p := commonPrefix(prev, id); p >= 5 {
			t.Fatalf("ids %s and %s share a prefix of %d characters", prev, id, p)
		}
		prev = id
	}
}

func commonPrefix(a, b string) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}

func TestReplySender(t *testing.T) {
	t.Parallel()
	const r = "deploy.responses.ID1"
	tests := []struct {
		subject, sender string
		ok              bool
	}{
		{r, "", true},
		{r + ".dns1", "dns1", true},
		{r + "." + BuilderToken, BuilderToken, true},
		{r + ".a.b", "", false},
		{r + ".", "", false},
		{r + ".*", "", false},
		{r + ".>", "", false},
		{r + ".dns1 ", "", false},
		{r + "." + strings.Repeat("h", MaxTokenLen+1), "", false},
		{r + "X.dns1", "", false},
		{"deploy.responses.ID2.dns1", "", false},
		{"deploy.responses", "", false},
	}
	for _, tt := range tests {
		got, err := ReplySender(r, tt.subject)
		if got != tt.sender || (err == nil) != tt.ok {
			t.Errorf("ReplySender(%q) = %q, %v; want %q, ok %v", tt.subject, got, err, tt.sender, tt.ok)
		}
	}
}

// A discovery answer sent to a deploy's reply subject is not a deploy
// status; a status the deployer does not know (an extension) still is.
func TestDecodeDeployStatus(t *testing.T) {
	t.Parallel()
	discovery, _ := json.Marshal(DiscoverResponse{ID: "ID1", Hostname: "testhost1", Tier: "test", Subjects: []string{"deploy.test.testhost1"}, Version: "v1"})
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"completed", `{"id":"ID1","hostname":"dns1","status":"completed","error":null,"message":"ok","tier":"prod"}`, true},
		{"unknown status kept", `{"hostname":"dns1","status":"output","error":null,"message":"line"}`, true},
		{"discovery answer", string(discovery), false},
		{"empty status", `{"hostname":"dns1","status":"","error":null,"message":""}`, false},
		{"status not a word", `{"hostname":"dns1","status":"com pleted","error":null,"message":""}`, false},
		{"bad hostname", `{"hostname":"a.b","status":"completed"}`, false},
		{"case-folded key", `{"hostname":"dns1","STATUS":"completed"}`, false},
	}
	for _, tt := range tests {
		r, err := DecodeDeployStatus([]byte(tt.in))
		if (err == nil) != tt.ok {
			t.Errorf("%s: DecodeDeployStatus = %+v, %v; want ok %v", tt.name, r, err, tt.ok)
		}
		if tt.name == "discovery answer" && (err == nil || !strings.Contains(err.Error(), "discovery answer")) {
			t.Errorf("refusal of a discovery answer = %v; want it named", err)
		}
	}
}

func FuzzReplySender(f *testing.F) {
	for _, s := range []string{"deploy.responses.ID1", "deploy.responses.ID1.dns1", "deploy.responses.ID1.a.b", "deploy.responses.ID1.", "deploy.responses.ID1.*", "deploy.responses.ID1.é", "x"} {
		f.Add("deploy.responses.ID1", s)
	}
	f.Add("build.responses.B", "build.responses.B.builder")
	f.Fuzz(func(t *testing.T, replyTo, subject string) {
		sender, err := ReplySender(replyTo, subject)
		switch {
		case err != nil:
			if sender != "" {
				t.Fatalf("sender %q with error %v", sender, err)
			}
		case sender == "":
			if subject != replyTo {
				t.Fatalf("no sender for %q under %q", subject, replyTo)
			}
		default:
			if BoundReply(replyTo, sender) != subject || ValidateToken("sender", sender) != nil || len(sender) > MaxTokenLen {
				t.Fatalf("sender %q read from %q under %q", sender, subject, replyTo)
			}
		}
	})
}

func FuzzDecodeDeployStatus(f *testing.F) {
	for _, s := range []string{
		`{"id":"ID1","hostname":"dns1","status":"completed","error":null,"message":"ok","tier":"prod"}`,
		`{"id":"ID1","hostname":"testhost1","tier":"test","subjects":["deploy.test.testhost1"],"version":"v1","busy":false}`,
		`{"hostname":"dns1","status":""}`,
		`{"hostname":"dns1","status":"x\u202e"}`,
		`{"hostname":"dns1","status":"completed","status":"failed"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeDeployStatus(data)
		if err != nil {
			return
		}
		if !tokenRe.MatchString(string(r.Status)) || ValidateHostname(r.Hostname) != nil || CleanText(r.Message) != r.Message {
			t.Fatalf("accepted %+v from %q", r, data)
		}
		if _, err := DecodeDeployResponse(data); err != nil {
			t.Fatalf("DecodeDeployStatus accepted what DecodeDeployResponse refuses: %q: %v", data, err)
		}
	})
}
