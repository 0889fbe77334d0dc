// Package poll waits for a condition in tests: it checks the condition until
// it holds or a deadline passes. Tests use it instead of sleeping, and never
// assert on how long the wait took.
package poll

import (
	"testing"
	"time"
)

// Interval is how often Until checks its condition.
const Interval = 20 * time.Millisecond

// Until calls cond until it returns nil; it fails the test with the last
// error when timeout passes first. what names the condition in the failure.
func Until(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
	}
}
