package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// Decode benchmarks: a listener decodes every deploy request it hears, a
// deployer every status (docs/BENCHMARKS.md, serve half and fan-out rows).
var (
	benchDeployRequest  = []byte(`{"id":"Zk3q9aP0c1xYbT7mWn2r","action":"switch","revision":"main","reply_to":"deploy.responses.Zk3q9aP0c1xYbT7mWn2r"}`)
	benchDeployResponse = []byte(`{"id":"Zk3q9aP0c1xYbT7mWn2r","hostname":"host0042","status":"completed","error":null,"message":"nixos-rebuild switch finished in 12.3s","tier":"test","action":"switch","revision":"main","duration_seconds":12.345}`)
)

func BenchmarkDecodeDeployRequest(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeDeployRequest(benchDeployRequest); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeDeployResponse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		var r DeployResponse
		if err := json.Unmarshal(benchDeployResponse, &r); err != nil || !r.Clean() {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeDeployResponseExact(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeDeployResponse(benchDeployResponse); err != nil {
			b.Fatal(err)
		}
	}
}

// TestExactDecodeAttacks: messages that encoding/json alone would read
// loosely are refused, say why, and keep a readable reply subject.
func TestExactDecodeAttacks(t *testing.T) {
	t.Parallel()
	const to = `"reply_to":"deploy.responses.r1"`
	tests := []struct {
		name, in  string
		wantErr   string // in the error
		wantReply string
		wantID    string
	}{
		{"upper-case name", `{"id":"r1","action":"switch","REVISION":"main",` + to + `}`, `unknown field "REVISION": field names are case-sensitive, the field is "revision"`, "deploy.responses.r1", "r1"},
		{"mixed-case reply_to", `{"action":"switch","revision":"main","Reply_To":"deploy.responses.r1"}`, `unknown field "Reply_To"`, "", ""},
		{"unicode fold", `{"action":"switch","reviſion":"main",` + to + `}`, `case-sensitive`, "deploy.responses.r1", ""},
		{"duplicate revision", `{"action":"switch","revision":"main","revision":"-o",` + to + `}`, `field "revision" appears twice`, "deploy.responses.r1", ""},
		{"escaped duplicate", `{"action":"switch","revision":"main","revisio\u006e":"x",` + to + `}`, `field "revision" appears twice`, "deploy.responses.r1", ""},
		{"duplicate reply_to", `{"action":"switch","revision":"main",` + to + `,"reply_to":"deploy.responses.r2"}`, `field "reply_to" appears twice`, "", ""},
		{"id a number", `{"id":5,"action":"switch","revision":"main",` + to + `}`, `field "id" must be a string, not number`, "deploy.responses.r1", ""},
		{"revision an object", `{"id":"r1","action":"switch","revision":{"a":1},` + to + `}`, `field "revision" must be a string, not object`, "deploy.responses.r1", "r1"},
		{"reply_to a number", `{"action":"switch","revision":"main","reply_to":7}`, `field "reply_to" must be a string`, "", ""},
		{"not an object", `["deploy.responses.r1"]`, `must be a JSON object`, "", ""},
		{"null", `null`, `must be a JSON object`, "", ""},
		{"truncated", `{"action":"switch",` + to, `malformed request`, "", ""},
		{"trailing", `{"action":"switch","revision":"main",` + to + `}{}`, `trailing data`, "", ""},
		{"long unknown key", `{"` + strings.Repeat("k", 3000) + `":1,` + to + `}`, `unknown field`, "deploy.responses.r1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, err := DecodeDeployRequest([]byte(tt.in))
			if err == nil {
				t.Fatalf("accepted %s as %+v", tt.in, req)
			}
			if ErrorCodeOf(err) != ErrInvalidRequest || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q (code %s), want one containing %q", err, ErrorCodeOf(err), tt.wantErr)
			}
			if len(err.Error()) > 300 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
			if req.ReplyTo != tt.wantReply || req.ID != tt.wantID {
				t.Errorf("salvaged reply_to %q id %q, want %q %q", req.ReplyTo, req.ID, tt.wantReply, tt.wantID)
			}
		})
	}
}

func TestExactDecodeBuildRequest(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		`{"repo":"r","target":"all","Branch":"x","reply_to":"build.responses.x"}`:                   `case-sensitive`,
		`{"repo":"r","target":"all","branch":"a","branch":"b","reply_to":"build.responses.x"}`:      `appears twice`,
		`{"id":5,"repo":"r","target":"all","reply_to":"build.responses.x"}`:                         `field "id" must be a string`,
		`{"repo":"r","target":"all","reply_to":"build.responses.x","reply_to":"build.responses.y"}`: `appears twice`,
	} {
		req, err := DecodeBuildRequest([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", in, err, want)
		}
		if strings.Count(in, "reply_to") == 1 && req.ReplyTo != "build.responses.x" {
			t.Errorf("%s: reply_to not salvaged", in)
		}
	}
}

func TestDecodeDiscoverRequestExact(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`{"reply_to":"deploy.responses.a","TIER":"prod"}`,
		`{"reply_to":"deploy.responses.a","tier":"test","tier":"prod"}`,
		`{"reply_to":"deploy.responses.a","tier":1}`,
	} {
		if _, err := DecodeDiscoverRequest([]byte(in)); err == nil {
			t.Errorf("accepted %s", in)
		}
	}
	if _, err := DecodeDiscoverRequest([]byte(`{"reply_to":"deploy.responses.a","tier":"test"}`)); err != nil {
		t.Error(err)
	}
}

func TestDecodeAnswers(t *testing.T) {
	t.Parallel()
	if r, err := DecodeDeployResponse(benchDeployResponse); err != nil || r.Hostname != "host0042" || r.Status != StatusCompleted {
		t.Fatalf("%+v %v", r, err)
	}
	// A later listener's extension is ignored; loose names, duplicates and
	// wrong types are refused.
	if r, err := DecodeDeployResponse([]byte(`{"hostname":"h","status":"started","error":null,"message":"","progress":{"x":[1]}}`)); err != nil || r.Status != StatusStarted {
		t.Errorf("extension: %+v %v", r, err)
	}
	for in, want := range map[string]string{
		`{"hostname":"h","Status":"completed","error":null,"message":""}`:                        "case-sensitive",
		`{"hostname":"h","hostname":"other","status":"completed","error":null,"message":""}`:     "appears twice",
		`{"hostname":"h","status":"completed","error":5,"message":""}`:                           `field "error" must be`,
		`{"hostname":"h","status":"completed","error":null,"message":"","duration_seconds":"1"}`: `field "duration_seconds" must be a number`,
		`{"hostname":"a.b","status":"completed","error":null,"message":""}`:                      "status refused",
		`[{"hostname":"h"}]`: "JSON object",
	} {
		if _, err := DecodeDeployResponse([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", in, err, want)
		}
	}
	if r, err := DecodeDiscoverResponse([]byte(`{"hostname":"h","tier":"test","subjects":["deploy.test.h"],"version":"1","busy":false,"last_deploy":{"action":"switch","revision":"main","status":"completed","error":null,"finished_at":"2024-01-01T00:00:00Z","duration_seconds":1}}`)); err != nil || r.LastDeploy == nil {
		t.Errorf("discover: %+v %v", r, err)
	}
	for _, in := range []string{
		`{"hostname":"h","tier":"test","subjects":[],"version":"1","busy":false,"last_deploy":{"action":"switch","Action":"boot"}}`,
		`{"hostname":"h","tier":"test","subjects":[],"version":"1","busy":false,"last_deploy":{"action":"switch","action":"boot"}}`,
		`{"hostname":"h","hostname":"i","tier":"test","subjects":[],"version":"1","busy":false}`,
		`{"hostname":"h","tier":"test","subjects":"deploy.test.h","version":"1","busy":false}`,
	} {
		if r, err := DecodeDiscoverResponse([]byte(in)); err == nil {
			t.Errorf("accepted %s as %+v", in, r)
		}
	}
	if r, err := DecodeBuildResponse([]byte(`{"status":"completed","results":[{"host":"a","success":true,"duration_seconds":1}],"succeeded":1,"failed":0}`)); err != nil || len(r.Results) != 1 {
		t.Errorf("build: %+v %v", r, err)
	}
	for in, want := range map[string]string{
		`{"status":"completed","results":[{"host":"a","Host":"b","success":true}],"succeeded":1,"failed":0}`: `"results.Host"`,
		`{"status":"completed","results":[{"host":"a","host":"b"}],"succeeded":1,"failed":0}`:                `"results.host" appears twice`,
		`{"status":"completed","succeeded":"1","failed":0}`:                                                  `field "succeeded" must be an integer`,
		`{"status":"completed","results":[{"host":"a.b"}],"succeeded":1,"failed":0}`:                         "results[0]",
	} {
		if _, err := DecodeBuildResponse([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", in, err, want)
		}
	}
}

// TestExactDecodeManyUnknownKeys: answers may carry unknown keys; many of
// them must not make the duplicate check quadratic.
func TestExactDecodeManyUnknownKeys(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString(`{"hostname":"h","status":"started","error":null,"message":""`)
	for i := 0; b.Len() < MaxResponseSize-64; i++ {
		fmt.Fprintf(&b, `,"k%d":0`, i)
	}
	b.WriteString(`,"k0":1}`)
	_, err := DecodeDeployResponse([]byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), `"k0" appears twice`) {
		t.Fatalf("error %v", err)
	}
}

func TestShapeOf(t *testing.T) {
	t.Parallel()
	var names []string
	for k := range deployRequestShape.fields {
		names = append(names, k)
	}
	slices.Sort(names)
	if got := strings.Join(names, ","); got != "action,id,reply_to,revision" {
		t.Errorf("DeployRequest names %s", got)
	}
	if discoverResponseShape.fields["last_deploy"] == nil || buildResponseShape.fields["results"].elem == nil || deployResponseShape.fields["error"] != nil {
		t.Error("nested shapes")
	}
}

// FuzzExactDecode checks the pre-pass against encoding/json: whatever it
// accepts, encoding/json decodes to the same value it would reach reading
// the keys exactly, and it refuses every message with a repeated or
// case-variant key.
func FuzzExactDecode(f *testing.F) {
	for _, s := range []string{
		string(benchDeployRequest), string(benchDeployResponse),
		`{"action":"switch","REVISION":"main","reply_to":"deploy.responses.a"}`,
		`{"revision":"a","revision":"b"}`, `{"id":5}`, `{"revisio\u006e":"x"}`, `{"a":{"b":[1,{"c":"\""}]}}`,
		`{"hostname":"h","last_deploy":{"action":"x","ACTION":"y"}}`, `{"results":[{"host":"a"},{"host":"b","host":"c"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, strict := range []bool{true, false} {
			var got DiscoverResponse
			if exactDecode(data, MaxResponseSize, discoverResponseShape, strict, &got) != nil {
				continue
			}
			// Accepted: a map decode sees the same keys, none twice, none
			// a case variant of a field name.
			dec := json.NewDecoder(bytes.NewReader(data))
			if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
				t.Fatalf("accepted a non-object %q", data)
			}
			seen := map[string]bool{}
			for dec.More() {
				tok, err := dec.Token()
				if err != nil {
					t.Fatalf("accepted malformed %q: %v", data, err)
				}
				k := tok.(string)
				if seen[k] {
					t.Fatalf("accepted duplicate %q in %q", k, data)
				}
				seen[k] = true
				if _, ok := discoverResponseShape.fields[k]; !ok {
					if strict {
						t.Fatalf("strict accepted unknown %q in %q", k, data)
					}
					for n := range discoverResponseShape.fields {
						if strings.EqualFold(n, k) {
							t.Fatalf("accepted case variant %q in %q", k, data)
						}
					}
				}
				var raw json.RawMessage
				if err := dec.Decode(&raw); err != nil {
					t.Fatalf("accepted malformed %q: %v", data, err)
				}
			}
			var loose DiscoverResponse
			if err := json.Unmarshal(data, &loose); err != nil {
				t.Fatalf("accepted %q that encoding/json refuses: %v", data, err)
			}
		}
	})
}

// FuzzDecodeAnswers: the answer decoders never panic and what they accept
// is clean.
func FuzzDecodeAnswers(f *testing.F) {
	f.Add([]byte(benchDeployResponse))
	f.Add([]byte(`{"hostname":"h","tier":"test","subjects":["deploy.test.h","deploy.responses.x"],"version":"1\u202e","busy":true}`))
	f.Add([]byte(`{"status":"progress","host":"h","error":"\u001b[31mfail","results":[{"host":"a"}],"succeeded":0,"failed":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if r, err := DecodeDeployResponse(data); err == nil {
			if ValidateHostname(r.Hostname) != nil || CleanText(r.Message) != r.Message {
				t.Fatalf("accepted %+v", r)
			}
		}
		if r, err := DecodeDiscoverResponse(data); err == nil {
			if ValidateHostname(r.Hostname) != nil || len(r.Subjects) > MaxDiscoverSubjects || len(r.Version) > MaxVersionLen {
				t.Fatalf("accepted %+v", r)
			}
		}
		if r, err := DecodeBuildResponse(data); err == nil {
			if CleanText(r.Error) != r.Error || len(r.Branch) > MaxFieldLen {
				t.Fatalf("accepted %+v", r)
			}
		}
	})
}
