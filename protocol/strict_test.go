package protocol

import (
	"encoding/json"
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
