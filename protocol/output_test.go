package protocol

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestOutputStatusRoundTrip(t *testing.T) {
	t.Parallel()
	sent := DeployResponse{ID: "r1", Hostname: "web1", Status: StatusOutput, Message: "building", Tier: "test",
		Output: Output{Lines: OutputLines{"copying path", "building"}, DroppedLines: 3, ElapsedSeconds: 12.5}}
	data, err := json.Marshal(sent)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"status":"output"`, `"lines":["copying path","building"]`, `"dropped_lines":3`, `"elapsed_seconds":12.5`} {
		if !strings.Contains(string(data), field) {
			t.Errorf("%s lacks %s", data, field)
		}
	}
	got, err := DecodeDeployResponse(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Terminal() || strings.Join(got.Lines, "|") != "copying path|building" || got.Dropped() != 3 || got.Elapsed() != 12500*time.Millisecond {
		t.Fatalf("decoded %+v", got)
	}
	// Other statuses carry none of the output fields.
	plain, _ := json.Marshal(DeployResponse{Hostname: "web1", Status: StatusStarted})
	for _, f := range []string{"lines", "dropped_lines", "elapsed_seconds"} {
		if strings.Contains(string(plain), f) {
			t.Errorf("a started status carries %s: %s", f, plain)
		}
	}
}

// What a deployer from before the extension decodes: the fields it knows,
// and a status it does not know (never terminal).
func TestOutputStatusOlderDecoder(t *testing.T) {
	t.Parallel()
	data, _ := json.Marshal(DeployResponse{Hostname: "web1", Status: StatusOutput, Message: "building",
		Output: Output{Lines: OutputLines{"a"}, ElapsedSeconds: 1}})
	type older struct {
		ID       string    `json:"id,omitempty"`
		Hostname string    `json:"hostname"`
		Status   Status    `json:"status"`
		Error    ErrorCode `json:"error"`
		Message  string    `json:"message"`
	}
	var o older
	if err := exactDecode(data, MaxResponseSize, shapeOf(reflect.TypeOf(o)), false, &o); err != nil {
		t.Fatalf("an older exact decoder refuses an output status: %v", err)
	}
	if o.Status.Terminal() || o.Message != "building" || o.Hostname != "web1" {
		t.Fatalf("older decoder read %+v", o)
	}
	bdata, _ := json.Marshal(BuildResponse{Status: StatusOutput, Host: "web1", Message: "x", Output: Output{Lines: OutputLines{"a"}}})
	if _, err := DecodeBuildResponse(bdata); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(bdata), `"succeeded":0`) {
		t.Errorf("a build output status lacks the fields every build status has: %s", bdata)
	}
}

func TestOutputLinesAreCleanedAndBounded(t *testing.T) {
	t.Parallel()
	lines := make([]string, MaxOutputBatchLines+5)
	for i := range lines {
		lines[i] = "line"
	}
	lines[len(lines)-1] = "\x1b[31mred\u202e\tx\ny"
	lines[len(lines)-2] = strings.Repeat("é", MaxOutputLineBytes)
	b, _ := json.Marshal(map[string]any{"hostname": "web1", "status": "output", "error": nil, "message": "", "lines": lines, "dropped_lines": -4, "elapsed_seconds": -1})
	r, err := DecodeDeployResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Lines) != MaxOutputBatchLines {
		t.Fatalf("%d lines kept", len(r.Lines))
	}
	if last := r.Lines[len(r.Lines)-1]; last != "[31mred x y" {
		t.Errorf("last line = %q", last)
	}
	long := r.Lines[len(r.Lines)-2]
	if len(long) > MaxOutputLineBytes || !strings.HasSuffix(long, "…") || !utf8.ValidString(long) {
		t.Errorf("long line kept %d bytes: %q…", len(long), long[:20])
	}
	if r.Dropped() != 0 || r.Elapsed() != 0 {
		t.Errorf("negative counts kept: %d %s", r.Dropped(), r.Elapsed())
	}
	// Exact decoding covers the embedded fields too.
	if _, err := DecodeDeployResponse([]byte(`{"hostname":"web1","status":"output","error":null,"message":"","Lines":["x"]}`)); err == nil {
		t.Error("a case-folded output field was accepted")
	}
	if _, err := DecodeDeployResponse([]byte(`{"hostname":"web1","status":"output","error":null,"message":"","lines":[1]}`)); err == nil {
		t.Error("a number among the lines was accepted")
	}
}

func FuzzDecodeOutputStatus(f *testing.F) {
	f.Add([]byte(`{"hostname":"web1","status":"output","error":null,"message":"x","lines":["a","b"],"dropped_lines":2,"elapsed_seconds":1.5}`))
	f.Add([]byte(`{"status":"output","host":"h1","succeeded":0,"failed":0,"lines":["\u202e\u0000"],"elapsed_seconds":1e308}`))
	f.Add([]byte(`{"hostname":"web1","status":"output","error":null,"message":"","lines":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(o Output) {
			if len(o.Lines) > MaxOutputBatchLines {
				t.Fatalf("%d lines", len(o.Lines))
			}
			for _, l := range o.Lines {
				if len(l) > MaxOutputLineBytes || strings.ContainsAny(l, "\n\t\x1b") || !utf8.ValidString(l) {
					t.Fatalf("line %q", l)
				}
			}
			if o.Dropped() < 0 || o.Elapsed() < 0 {
				t.Fatal("negative count")
			}
		}
		if r, err := DecodeDeployResponse(data); err == nil {
			check(r.Output)
		}
		if r, err := DecodeBuildResponse(data); err == nil {
			check(r.Output)
		}
	})
}

func FuzzCleanOutputLine(f *testing.F) {
	f.Add("plain")
	f.Add("\xff\xfe" + strings.Repeat("é", 400))
	f.Fuzz(func(t *testing.T, s string) {
		out := CleanOutputLine(s)
		if len(out) > MaxOutputLineBytes || strings.ContainsAny(out, "\n\t") || !utf8.ValidString(out) {
			t.Fatalf("CleanOutputLine(%q) = %q", s, out)
		}
	})
}

func TestOutputLinesSince(t *testing.T) {
	t.Parallel()
	o := Output{Lines: OutputLines{"b"}, DroppedLines: 5}
	lines, n := o.LinesSince(2)
	if n != 5 || len(lines) != 2 || !strings.HasPrefix(lines[0], "[3 line(s) of output not sent") || lines[1] != "b" {
		t.Fatalf("LinesSince(2) = %q, %d", lines, n)
	}
	if lines, n := o.LinesSince(5); n != 5 || len(lines) != 1 {
		t.Fatalf("LinesSince(5) = %q, %d", lines, n)
	}
}
