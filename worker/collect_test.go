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

// With nothing more coming, a result goes alone once the gap has passed,
// long before the linger.
func TestCollectSendsAloneAfterTheGap(t *testing.T) {
	results := make(chan api.TaskOutcome)
	done := make(chan []api.TaskOutcome, 1)
	go func() { done <- collect(outcome(0), results, time.Millisecond, time.Hour) }()
	select {
	case batch := <-done:
		if len(batch) != 1 {
			t.Fatalf("batch = %+v", batch)
		}
	case <-time.After(time.Minute):
		t.Fatal("collect waited past its gap")
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
	endless := make(chan []api.TaskOutcome, 1)
	go func() { endless <- collect(outcome(0), results, time.Hour, 5*time.Millisecond) }()
	select {
	case batch := <-endless:
		if len(batch) < 1 || len(batch) > maxBatch {
			t.Fatalf("%d results", len(batch))
		}
	case <-time.After(time.Minute):
		t.Fatal("collect did not stop at its linger")
	}

	quiet := make(chan api.TaskOutcome)
	done := make(chan []api.TaskOutcome, 1)
	go func() { done <- collect(outcome(0), quiet, time.Hour, 5*time.Millisecond) }()
	select {
	case batch := <-done:
		if len(batch) != 1 {
			t.Fatalf("batch = %+v", batch)
		}
	case <-time.After(time.Minute):
		t.Fatal("collect waited past its linger")
	}

	queued := make(chan api.TaskOutcome, 2*maxBatch)
	for i := 0; i < 2*maxBatch; i++ {
		queued <- outcome(i)
	}
	if batch := collect(outcome(-1), queued, time.Hour, time.Hour); len(batch) != maxBatch {
		t.Fatalf("%d results, want %d", len(batch), maxBatch)
	}
}
