package fsm

import (
	"testing"
	"time"
)

const withService = `workflow "calls" {
  service "payments" {
    base_url = "https://payments.internal"
    circuit_breaker {
      failures    = 2
      window      = "1m"
      reset_after = "30s"
    }
  }
  step "a" {
    activity = "http"
    service  = "payments"
    retry {
      max_attempts     = 5
      initial_interval = "1s"
    }
  }
}
`

func (h *harness) breaker() *Breaker { return h.fsm.State().Read().Breaker("payments") }

func TestBreakerOpensHoldsTasksAndProbes(t *testing.T) {
	h := newHarness(t)
	h.register(withService)
	if b := h.breaker(); b == nil || b.State != BreakerClosed || b.BaseURL != "https://payments.internal" || b.Failures != 2 {
		t.Fatalf("registered breaker = %+v", b)
	}
	h.start("x", "calls", `{}`)
	h.start("y", "calls", `{}`)
	for _, task := range h.leaseAll("w") {
		h.failTask(task, "http.status")
	}
	b := h.breaker()
	if b.State != BreakerOpen {
		t.Fatalf("after 2 failures: %+v", b)
	}
	// Backoffs end, but while the breaker is open nothing of the service is
	// dispatched.
	h.fireDue(h.now.Add(10 * time.Second))
	if got := h.leaseAll("w"); len(got) != 0 {
		t.Fatalf("dispatched through an open breaker: %d", len(got))
	}
	// reset_after: half open, and exactly one probe goes.
	h.fireDue(b.OpenedAt.Add(30 * time.Second))
	if h.breaker().State != BreakerHalfOpen {
		t.Fatalf("not half open: %+v", h.breaker())
	}
	probe := h.leaseAll("w")
	if len(probe) != 1 {
		t.Fatalf("probes = %d, want 1", len(probe))
	}
	// The probe fails: open again. Then the operator resets it.
	h.failTask(probe[0], "http.status")
	if h.breaker().State != BreakerOpen {
		t.Fatalf("after a failed probe: %+v", h.breaker())
	}
	res := h.apply(SetBreakerType, &SetBreakerRequest{Header: h.hdr(), Name: "payments", State: BreakerClosed})
	if b, ok := res.(*Breaker); !ok || b.State != BreakerClosed {
		t.Fatalf("reset = %v", res)
	}
	h.fireDue(h.now.Add(time.Minute))
	tasks := h.leaseAll("w")
	if len(tasks) != 2 {
		t.Fatalf("after reset: %d tasks, want 2", len(tasks))
	}
	for _, task := range tasks {
		h.complete(task)
	}
	if h.instance("x").Status != InstanceCompleted || h.instance("y").Status != InstanceCompleted {
		t.Fatal("instances did not complete after the reset")
	}
	if e, ok := h.apply(SetBreakerType, &SetBreakerRequest{Header: h.hdr(), Name: "nope", State: BreakerOpen}).(*Error); !ok || e.Code != CodeNotFound {
		t.Fatalf("unknown service = %v", e)
	}
}

func TestHalfOpenProbeSuccessCloses(t *testing.T) {
	h := newHarness(t)
	h.register(withService)
	h.apply(SetBreakerType, &SetBreakerRequest{Header: h.hdr(), Name: "payments", State: BreakerOpen})
	h.start("x", "calls", `{}`)
	if len(h.leaseAll("w")) != 0 {
		t.Fatal("dispatched while tripped")
	}
	h.fireDue(h.now.Add(31 * time.Second))
	probe := h.leaseAll("w")
	h.complete(probe[0])
	if b := h.breaker(); b.State != BreakerClosed {
		t.Fatalf("after a good probe: %+v", b)
	}
}
