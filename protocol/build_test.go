package protocol

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDecodeBuildRequest(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, in string
		code     ErrorCode
		salvage  bool // reply_to survives the error
	}{
		{"ok all", `{"id":"a1","repo":"nixos-servers","target":"all","branch":"main","reply_to":"build.responses.a1"}`, ErrNone, true},
		{"ok host no branch", `{"repo":"r","target":"host1","reply_to":"build.responses.x"}`, ErrNone, true},
		{"unknown field", `{"repo":"r","target":"all","reply_to":"build.responses.x","attr":"y"}`, ErrInvalidRequest, true},
		{"deploy reply", `{"repo":"r","target":"all","reply_to":"deploy.responses.x"}`, ErrInvalidRequest, false},
		{"wildcard reply", `{"repo":"r","target":"all","reply_to":"build.responses.>"}`, ErrInvalidRequest, false},
		{"repo dot", `{"repo":"a.b","target":"all","reply_to":"build.responses.x"}`, ErrInvalidRequest, true},
		{"repo reserved", `{"repo":"responses","target":"all","reply_to":"build.responses.x"}`, ErrInvalidRequest, true},
		{"target empty", `{"repo":"r","target":"","reply_to":"build.responses.x"}`, ErrInvalidRequest, true},
		{"target wildcard", `{"repo":"r","target":"*","reply_to":"build.responses.x"}`, ErrInvalidRequest, true},
		{"branch dash", `{"repo":"r","target":"all","branch":"-x","reply_to":"build.responses.x"}`, ErrInvalidRevision, true},
		{"branch hash", `{"repo":"r","target":"all","branch":"main#other","reply_to":"build.responses.x"}`, ErrInvalidRevision, true},
		{"branch dots", `{"repo":"r","target":"all","branch":"a..b","reply_to":"build.responses.x"}`, ErrInvalidRevision, true},
		{"branch query", `{"repo":"r","target":"all","branch":"x?dir=/","reply_to":"build.responses.x"}`, ErrInvalidRevision, true},
		{"branch long", `{"repo":"r","target":"all","branch":"` + strings.Repeat("b", 300) + `","reply_to":"build.responses.x"}`, ErrInvalidRevision, true},
		{"trailing", `{"repo":"r","target":"all","reply_to":"build.responses.x"} {}`, ErrInvalidRequest, false},
		{"huge", `{"repo":"` + strings.Repeat("r", MaxMessageSize) + `"}`, ErrInvalidRequest, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			req, err := DecodeBuildRequest([]byte(c.in))
			if c.code == ErrNone {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted %s", c.in)
			}
			if got := ErrorCodeOf(err); got != c.code {
				t.Errorf("code %s, want %s (%v)", got, c.code, err)
			}
			if (req.ReplyTo != "") != c.salvage {
				t.Errorf("reply_to %q salvaged=%v, want %v", req.ReplyTo, req.ReplyTo != "", c.salvage)
			}
		})
	}
}

func TestBuildResponseJSONNames(t *testing.T) {
	t.Parallel()
	ok := true
	b, _ := json.Marshal(BuildResponse{Status: StatusProgress, Host: "h", HostSuccess: &ok, HostsCompleted: 1, HostsTotal: 2, Duration: 1.5})
	for _, k := range []string{`"status":"progress"`, `"host":"h"`, `"host_success":true`, `"hosts_completed":1`, `"hosts_total":2`, `"duration_seconds":1.5`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("%s lacks %s", b, k)
		}
	}
	b, _ = json.Marshal(BuildResponse{Status: StatusCompleted, Message: "built 1/1 hosts successfully", Succeeded: 1, TotalDurationSeconds: 2,
		Results: []BuildHostResult{{Host: "h", Success: true, DurationSeconds: 1}}})
	for _, k := range []string{`"results":[{"host":"h","success":true,"duration_seconds":1}]`, `"succeeded":1`, `"failed":0`, `"total_duration_seconds":2`, `"message":"built 1/1 hosts successfully"`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("%s lacks %s", b, k)
		}
	}
}

func FuzzDecodeBuildRequest(f *testing.F) {
	f.Add([]byte(`{"id":"a1","repo":"nixos-servers","target":"all","branch":"main","reply_to":"build.responses.a1"}`))
	f.Add([]byte(`{"repo":"r","target":"h","branch":"x?dir=/","reply_to":"build.responses.x"}`))
	f.Add([]byte(`{"repo":"r","target":"h","reply_to":"build.responses.>"}`))
	f.Add([]byte(`{"repo":"r","target":"h","reply_to":"build.responses.x","x":1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := DecodeBuildRequest(data)
		if req.ReplyTo != "" && ValidateReplySubject(req.ReplyTo, BuildResponsesPrefix) != nil {
			t.Fatalf("returned an invalid reply_to %q", req.ReplyTo)
		}
		if err != nil {
			return
		}
		if ValidateRepo(req.Repo) != nil || ValidateBuildTarget(req.Target) != nil {
			t.Fatalf("accepted %+v", req)
		}
		if req.Branch != "" {
			if ValidateRevision(req.Branch) != nil || strings.ContainsAny(req.Branch, "#?&= ") || strings.HasPrefix(req.Branch, "-") {
				t.Fatalf("accepted branch %q", req.Branch)
			}
		}
	})
}
