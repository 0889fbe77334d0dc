package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/api"
)

// BenchmarkClusterChain3 runs b.N instances of a 3-step noop chain on an
// in-process 3-node cluster with the built-in workers, 64 in flight,
// started round-robin on every node, each followed to its end with a
// blocking read. It reports completed instances per second and the
// start-to-completion latency percentiles. Timing is reported, never
// asserted.
//
//	go test ./e2e -run '^$' -bench ClusterChain3 -benchtime 2000x
func BenchmarkClusterChain3(b *testing.B) {
	c := startCluster(b, 3, true)
	ctx := context.Background()
	src := []byte("workflow \"chain3\" {\n  step \"a\" {\n    activity = \"noop\"\n    input    = { n = input.n }\n  }\n  step \"b\" {\n    activity = \"noop\"\n    input    = { n = step.a.output.n + 1 }\n  }\n  step \"c\" {\n    activity = \"noop\"\n    input    = { n = step.b.output.n + 1 }\n  }\n}\n")
	if _, err := c.client(c.agents[0]).RegisterWorkflow(ctx, "chain3.hcl", src); err != nil {
		b.Fatal(err)
	}
	const inFlight = 64
	var mu sync.Mutex
	var lat []time.Duration
	jobs := make(chan int)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < inFlight; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			cl := c.client(c.agents[w%len(c.agents)])
			for i := range jobs {
				t0 := time.Now()
				s, err := cl.StartInstance(ctx, "chain3", api.StartRequest{ID: fmt.Sprintf("b%d", i), Input: json.RawMessage(`{"n":1}`)})
				if err != nil {
					b.Error(err)
					return
				}
				if inst, err := cl.WaitInstanceSince(ctx, s.ID, s.Index); err != nil || inst.Status != "completed" {
					b.Errorf("instance %s: %v %v", s.ID, inst, err)
					return
				}
				mu.Lock()
				lat = append(lat, time.Since(t0))
				mu.Unlock()
			}
		}(w)
	}
	for i := 0; i < b.N; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "instances/s")
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
