package metrics

import (
	"math"
	"testing"
)

func TestQuantileOfADiff(t *testing.T) {
	m := New()
	for i := 0; i < 10; i++ {
		m.ObserveDispatch(0.0002) // before the run
	}
	before := m.Histograms()["lockstep_dispatch_latency_seconds"]
	for i := 0; i < 90; i++ {
		m.ObserveDispatch(0.010)
	}
	for i := 0; i < 10; i++ {
		m.ObserveDispatch(1.0)
	}
	after := m.Histograms()["lockstep_dispatch_latency_seconds"]
	if after.Count != 110 {
		t.Fatalf("count %d", after.Count)
	}
	// Only the 100 observations of the run count: p50 near 10ms, p99 near 1s.
	if p := after.QuantileSince(before, 0.5); p < 0.005 || p > 0.02 {
		t.Fatalf("p50 = %v", p)
	}
	if p := after.QuantileSince(before, 0.99); p < 0.5 || p > 2 {
		t.Fatalf("p99 = %v", p)
	}
	if !math.IsNaN(after.QuantileSince(after, 0.5)) {
		t.Fatal("an empty diff has a quantile")
	}
	var none *Metrics
	none.ObserveDispatch(1) // a nil Metrics records nothing and does not panic
	if len(none.Histograms()) != 0 {
		t.Fatal("nil metrics have histograms")
	}
}
