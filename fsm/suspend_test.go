package fsm

import (
	"strings"
	"testing"
	"time"
)

const pausable = `workflow "pausable" {
  step "a" {
    activity = "work"
  }
  step "nap" {
    depends_on = [step.a]
    sleep      = "1m"
  }
  step "b" {
    depends_on = [step.nap]
    activity   = "work"
  }
}
`

func (h *harness) suspend(id string) any {
	return h.apply(SuspendInstanceType, &SuspendInstanceRequest{Header: h.hdr(), ID: id, Reason: "maintenance"})
}

func (h *harness) resume(id string) any {
	return h.apply(ResumeInstanceType, &SuspendInstanceRequest{Header: h.hdr(), ID: id})
}

func TestSuspendHoldsDispatchAndTimers(t *testing.T) {
	h := newHarness(t)
	h.register(pausable)
	h.start("i", "pausable", `{}`)
	inFlight := h.leaseAll("w")[0]
	if r := h.suspend("i").(*InstanceStatusResponse); r.Status != InstanceSuspended {
		t.Fatalf("suspend = %+v", r)
	}
	// The attempt in flight finishes and is recorded; nothing new starts.
	h.complete(inFlight)
	inst := h.instance("i")
	if inst.Steps["a"].Status != StepSucceeded || inst.Steps["nap"].Status != StepWaiting || inst.Status != InstanceSuspended {
		t.Fatalf("while suspended: %s %s", inst.Status, statuses(inst))
	}
	h.resume("i")
	if st := h.instance("i").Steps["nap"].Status; st != StepSleeping {
		t.Fatalf("after resume nap = %s", st)
	}
	// Suspended again while it sleeps: the wake-up comes due but waits.
	h.suspend("i")
	napDue := h.fsm.State().Read().DueTimers(0)[0].Due
	if fired := h.fireDue(napDue.Add(time.Hour)); len(fired) != 0 {
		t.Fatalf("a timer fired while suspended: %v", fired)
	}
	if tm := h.fsm.State().Read().DueTimers(0); len(tm) != 1 || !tm[0].Deferred {
		t.Fatalf("timer not deferred: %+v", tm)
	}
	if len(h.leaseAll("w")) != 0 {
		t.Fatal("a task was leased while suspended")
	}
	// At resume what came due takes effect: the nap ends, b is scheduled.
	if r := h.resume("i").(*InstanceStatusResponse); r.Status != InstanceRunning {
		t.Fatalf("resume = %+v", r)
	}
	if st := h.instance("i").Steps["nap"].Status; st != StepSucceeded {
		t.Fatalf("nap = %s", st)
	}
	h.play()
	if inst := h.instance("i"); inst.Status != InstanceCompleted {
		t.Fatalf("end: %s %s", inst.Status, statuses(inst))
	}
	got := historyOf(h, "i")
	for _, want := range []string{"operator_suspend instance_suspended", "operator_resume", "timer_fired:nap step_succeeded:nap"} {
		if !strings.Contains(got, want) {
			t.Fatalf("history lacks %q: %s", want, got)
		}
	}
}

func TestSuspendTransitions(t *testing.T) {
	h := newHarness(t)
	h.register(pausable)
	h.start("i", "pausable", `{}`)
	if e, ok := h.resume("i").(*Error); !ok || e.Code != CodeConflict {
		t.Fatalf("resume running = %v", e)
	}
	h.suspend("i")
	if e, ok := h.suspend("i").(*Error); !ok || !strings.Contains(e.Message, "is suspended and cannot become suspended") {
		t.Fatalf("suspend twice = %v", e)
	}
	// A failed attempt while suspended is retried after the resume.
	task := h.leaseAll("w")
	if len(task) != 0 {
		t.Fatal("leased while suspended")
	}
	h.resume("i")
	first := h.leaseAll("w")[0]
	h.suspend("i")
	h.failTask(first, "flaky")
	if st := h.instance("i").Steps["a"].Status; st != StepRetryWait {
		t.Fatalf("a failed attempt while suspended: %s", st)
	}
	// Cancel works from suspended too.
	if r := h.cancel("i", "").(*InstanceStatusResponse); r.Status != InstanceCancelled {
		t.Fatalf("cancel suspended = %+v", r)
	}
}
