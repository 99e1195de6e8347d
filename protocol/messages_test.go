package protocol

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDecodeDeployRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       string
		wantCode ErrorCode
		wantTo   string // reply_to recovered for the rejection
	}{
		{"spec example", `{"action":"switch","revision":"main","reply_to":"deploy.responses.abc123"}`, ErrNone, "deploy.responses.abc123"},
		{"with id", `{"id":"r1","action":"boot","revision":"v1","reply_to":"deploy.responses.r1"}`, ErrNone, "deploy.responses.r1"},
		{"bad action", `{"action":"rm","revision":"main","reply_to":"deploy.responses.a"}`, ErrInvalidAction, "deploy.responses.a"},
		{"bad revision", `{"action":"switch","revision":"-o","reply_to":"deploy.responses.a"}`, ErrInvalidRevision, "deploy.responses.a"},
		{"unknown field", `{"action":"switch","revision":"main","reply_to":"deploy.responses.a","flake":"x"}`, ErrInvalidRequest, "deploy.responses.a"},
		{"malformed", `{"action":`, ErrInvalidRequest, ""},
		{"trailing", `{"action":"switch","revision":"main","reply_to":"deploy.responses.a"} {}`, ErrInvalidRequest, ""},
		{"reply outside", `{"action":"switch","revision":"main","reply_to":"deploy.prod.all"}`, ErrInvalidRequest, ""},
		{"bad id", `{"id":"a.b","action":"switch","revision":"main","reply_to":"deploy.responses.a"}`, ErrInvalidRequest, "deploy.responses.a"},
		{"huge", `{"action":"switch","revision":"` + strings.Repeat("a", 1<<20) + `","reply_to":"deploy.responses.a"}`, ErrInvalidRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := DecodeDeployRequest([]byte(tt.in))
			if tt.wantCode == ErrNone {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
			} else if err == nil || ErrorCodeOf(err) != tt.wantCode {
				t.Fatalf("err = %v (code %q), want code %q", err, ErrorCodeOf(err), tt.wantCode)
			}
			if req.ReplyTo != tt.wantTo {
				t.Fatalf("reply_to = %q, want %q", req.ReplyTo, tt.wantTo)
			}
		})
	}
}

func TestDeployResponseJSON(t *testing.T) {
	t.Parallel()
	b, _ := json.Marshal(DeployResponse{Hostname: "myhost", Status: StatusCompleted, Message: "ok"})
	if !strings.Contains(string(b), `"error":null`) || !strings.Contains(string(b), `"hostname":"myhost"`) || !strings.Contains(string(b), `"status":"completed"`) {
		t.Fatalf("encoding = %s", b)
	}
	var r DeployResponse
	if err := json.Unmarshal([]byte(`{"hostname":"h","status":"failed","error":"timeout","message":"m"}`), &r); err != nil || r.Error != ErrTimeout {
		t.Fatalf("decode: %+v %v", r, err)
	}
}

func FuzzDecodeDeployRequest(f *testing.F) {
	f.Add([]byte(`{"action":"switch","revision":"main","reply_to":"deploy.responses.abc123"}`))
	f.Add([]byte(`{"id":"x","action":"test","revision":"0123456789abcdef0123456789abcdef01234567","reply_to":"deploy.responses.x"}`))
	f.Add([]byte(`{"action":"switch","revision":"--option x y","reply_to":"deploy.responses.a"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := DecodeDeployRequest(data)
		if req.ReplyTo != "" && ValidateReplySubject(req.ReplyTo, DeployResponsesPrefix) != nil {
			t.Fatalf("returned an unsafe reply_to %q", req.ReplyTo)
		}
		if err != nil {
			return
		}
		if ValidateAction(string(req.Action)) != nil || ValidateRevision(req.Revision) != nil {
			t.Fatalf("accepted invalid request %+v", req)
		}
	})
}

func FuzzDecodeDiscoverRequest(f *testing.F) {
	f.Add([]byte(`{"reply_to":"deploy.responses.abc","tier":"test"}`))
	f.Add([]byte(`{"reply_to":"deploy.prod.x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := DecodeDiscoverRequest(data)
		if err != nil {
			return
		}
		if ValidateReplySubject(req.ReplyTo, DeployResponsesPrefix) != nil {
			t.Fatalf("accepted reply_to %q", req.ReplyTo)
		}
	})
}
