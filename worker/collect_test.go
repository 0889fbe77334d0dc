package worker

import (
	"fmt"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/api"
)

func outcome(i int) api.TaskOutcome {
	return api.TaskOutcome{TaskID: fmt.Sprintf("t%d", i), Token: "1.0", Output: []byte(`null`)}
}

// A batch takes the results that keep coming within the gap, one after
// another (here each sent only once the one before was taken), up to the
// channel's close.
func TestCollectTakesResultsThatFollowClosely(t *testing.T) {
	results := make(chan api.TaskOutcome)
	go func() {
		for i := 1; i < 5; i++ {
			results <- outcome(i)
		}
		close(results)
	}()
	batch := collect(outcome(0), results, time.Hour, time.Hour)
	if len(batch) != 5 || batch[4].TaskID != "t4" {
		t.Fatalf("batch = %+v", batch)
	}
}

// collectWithin runs collect and fails the test when it has not returned
// within a minute: a wait its gap or linger should have ended.
func collectWithin(t *testing.T, results <-chan api.TaskOutcome, gap, linger time.Duration) []api.TaskOutcome {
	t.Helper()
	done := make(chan []api.TaskOutcome, 1)
	go func() { done <- collect(outcome(0), results, gap, linger) }()
	select {
	case batch := <-done:
		return batch
	case <-time.After(time.Minute):
		t.Fatalf("collect (gap %v, linger %v) still waiting after a minute", gap, linger)
		return nil
	}
}

// With nothing more coming, a result goes alone once the gap has passed,
// long before the linger.
func TestCollectSendsAloneAfterTheGap(t *testing.T) {
	if batch := collectWithin(t, make(chan api.TaskOutcome), time.Millisecond, time.Hour); len(batch) != 1 {
		t.Fatalf("batch = %+v", batch)
	}
}

// Results that never stop coming are cut off once the linger has passed
// (or at maxBatch); a linger shorter than the gap bounds the wait for a
// result that does not come; and what is already waiting goes together,
// up to maxBatch.
func TestCollectStopsAtItsBounds(t *testing.T) {
	results := make(chan api.TaskOutcome)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 1; ; i++ {
			select {
			case results <- outcome(i):
			case <-stop:
				return
			}
		}
	}()
	if batch := collectWithin(t, results, time.Hour, 5*time.Millisecond); len(batch) < 1 || len(batch) > maxBatch {
		t.Fatalf("%d results", len(batch))
	}
	if batch := collectWithin(t, make(chan api.TaskOutcome), time.Hour, 5*time.Millisecond); len(batch) != 1 {
		t.Fatalf("batch = %+v", batch)
	}

	queued := make(chan api.TaskOutcome, 2*maxBatch)
	for i := 0; i < 2*maxBatch; i++ {
		queued <- outcome(i)
	}
	if batch := collect(outcome(-1), queued, time.Hour, time.Hour); len(batch) != maxBatch {
		t.Fatalf("%d results, want %d", len(batch), maxBatch)
	}
}
