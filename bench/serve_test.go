package bench

import (
	"bytes"
	"encoding/json"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/homelab-deploy/homelab-deploy/protocol"
	"github.com/homelab-deploy/homelab-deploy/tools/deploy"
)

// BenchmarkServeHalf is the listener's own work per deploy request, with
// no network: decode and validate the request, take the deploy slot, run
// the instant executor in its goroutine and encode the three statuses,
// against a raw responder that hands three ready payloads to the same
// publish function from a goroutine. In a real fleet each listener pays
// this on its own machine; in the in-process fan-out all of them pay it on
// the benchmark's two CPUs.
func BenchmarkServeHalf(b *testing.B) {
	var wg sync.WaitGroup
	completed := []byte(`"status":"completed"`)
	publish := func(_ string, data []byte) error {
		if bytes.Contains(data, completed) {
			wg.Done()
		}
		return nil
	}
	srv, err := deploy.NewServer(deploy.ServerConfig{
		Hostname: hostname(0), Tier: "test", FlakeURL: "git+https://git.example.com/homelab/nixos-configs.git",
		Exec: instant, Metrics: deploy.NewMetrics(prometheus.NewRegistry()), Publish: publish,
	})
	if err != nil {
		b.Fatal(err)
	}
	replies := [][]byte{filler('a', 200), filler('s', 220), append(filler('c', 200), completed...)}
	raw := func(data []byte) {
		reply := protocol.DeployResponsesPrefix + string(requestID(data))
		_ = publish(reply, replies[0])
		go func() {
			_ = publish(reply, replies[1])
			_ = publish(reply, replies[2])
		}()
	}
	var ours, base samples
	for b.Loop() {
		id := protocol.NewID()
		req, _ := json.Marshal(protocol.DeployRequest{ID: id, Action: protocol.ActionSwitch, Revision: "main", ReplyTo: protocol.DeployResponsesPrefix + id})
		start := time.Now()
		wg.Add(1)
		srv.Handle(protocol.DeployAllSubject("test"), req)
		wg.Wait()
		ours = append(ours, time.Since(start))
		for srv.Busy() { // the slot is freed just after the final status
			runtime.Gosched()
		}
		start = time.Now()
		wg.Add(1)
		raw(req)
		wg.Wait()
		base = append(base, time.Since(start))
	}
	record(b, row{Bench: "serve half", Measure: "one request, no network", Ours: ours.median() * 1000, Baseline: base.median() * 1000, Unit: "µs",
		Note: "deploy.Server.Handle to its completed status, against handing three ready payloads to the same publish function"})
}
