package fsm

import (
	"strings"
	"testing"
	"time"
)

const sagaWithUndo = `workflow "order" {
  step "charge" {
    activity = "payments.charge"
    compensate {
      activity = "payments.refund"
      input    = { charge = step.charge.output.id }
    }
  }
  step "reserve" {
    depends_on = [step.charge]
    activity   = "inventory.reserve"
    compensate {
      activity = "inventory.release"
      input    = { reservation = step.reserve.output.id, charge = step.charge.output.id }
      retry {
        max_attempts     = 2
        initial_interval = "1s"
      }
    }
  }
  step "note" {
    depends_on = [step.charge]
    activity   = "log"
  }
  step "ship" {
    depends_on = [step.reserve, step.note]
    activity   = "shipping.send"
    compensate {
      activity = "shipping.recall"
    }
  }
}
`

// completeWith completes every leased task of the given activities with
// output {"id": "<activity>-<step>"}.
func (h *harness) completeActivities(acts ...string) []*Task {
	h.t.Helper()
	var leased []*Task
	for _, task := range h.leaseAll("w") {
		leased = append(leased, task)
	}
	want := map[string]bool{}
	for _, a := range acts {
		want[a] = true
	}
	var rest []*Task
	for _, task := range leased {
		if want[task.Activity] {
			h.apply(CompleteTaskType, &CompleteTaskRequest{Header: h.hdr(), TaskID: task.ID, Token: task.Token,
				Output: []byte(`{"id":"` + task.Activity + `"}`)})
		} else {
			rest = append(rest, task)
		}
	}
	return rest
}

func (h *harness) cancel(id, reason string) any {
	return h.apply(CancelInstanceType, &CancelInstanceRequest{Header: h.hdr(), ID: id, Reason: reason})
}

func TestCancelCompensatesInReverseOrderOfCompletion(t *testing.T) {
	h := newHarness(t)
	h.register(sagaWithUndo)
	h.start("o", "order", `{}`)
	h.completeActivities("payments.charge")
	// reserve and note run; note finishes first, then reserve: ship starts.
	inFlight := h.leaseAll("w")
	var reserve *Task
	for _, task := range inFlight {
		if task.Step == "note" {
			h.complete(task)
		} else {
			reserve = task
		}
	}
	h.apply(CompleteTaskType, &CompleteTaskRequest{Header: h.hdr(), TaskID: reserve.ID, Token: reserve.Token, Output: []byte(`{"id":"r-1"}`)})
	ship := h.leaseAll("w")[0]

	// Cancel while ship runs: it is asked to stop; nothing else starts.
	if r := h.cancel("o", "customer changed their mind").(*InstanceStatusResponse); r.Status != InstanceCancelling {
		t.Fatalf("cancel = %+v", r)
	}
	if hb := h.heartbeat(ship, h.now, ``).(*HeartbeatResponse); !hb.CancelRequested {
		t.Fatal("the in-flight attempt was not asked to stop")
	}
	if len(h.leaseAll("w")) != 0 {
		t.Fatal("a compensation started while an attempt was in flight")
	}
	// ship finishes anyway: it did its work, so it is undone too, first.
	h.apply(CompleteTaskType, &CompleteTaskRequest{Header: h.hdr(), TaskID: ship.ID, Token: ship.Token, Output: []byte(`{"id":"s-1"}`)})
	var order []string
	for i := 0; i < 10; i++ {
		tasks := h.leaseAll("w")
		if len(tasks) == 0 {
			break
		}
		if len(tasks) != 1 || !tasks[0].Compensation {
			t.Fatalf("compensations must run one at a time: %+v", tasks)
		}
		order = append(order, tasks[0].Activity+" "+string(tasks[0].Input))
		h.complete(tasks[0])
	}
	want := []string{`shipping.recall null`, `inventory.release {"charge":"payments.charge","reservation":"r-1"}`, `payments.refund {"charge":"payments.charge"}`}
	if strings.Join(order, " | ") != strings.Join(want, " | ") {
		t.Fatalf("compensations:\n got %v\nwant %v", order, want)
	}
	inst := h.instance("o")
	if inst.Status != InstanceCancelled || inst.Error.Message != "customer changed their mind" {
		t.Fatalf("%s %+v", inst.Status, inst.Error)
	}
	if got := historyOf(h, "o"); !strings.Contains(got, "operator_cancel instance_cancelling step_succeeded:ship compensation_scheduled:ship compensation_leased:ship compensation_scheduled:reserve step_compensated:ship") ||
		!strings.HasSuffix(got, "step_compensated:charge instance_cancelled") {
		t.Fatalf("history: %s", got)
	}
	if got := statuses4(inst); got != "charge=compensated reserve=compensated note=succeeded ship=compensated" {
		t.Fatalf("steps: %s", got)
	}
	if e, ok := h.cancel("o", "").(*Error); !ok || e.Code != CodeConflict || !strings.Contains(e.Message, "cancelled and cannot become cancelling") {
		t.Fatalf("cancel twice = %v", e)
	}
}

func statuses4(inst *Instance) string {
	var out []string
	for _, n := range []string{"charge", "reserve", "note", "ship"} {
		out = append(out, n+"="+inst.Steps[n].Status)
	}
	return strings.Join(out, " ")
}

func TestCancelEdgeCases(t *testing.T) {
	h := newHarness(t)
	h.register(sagaWithUndo)

	// Nothing succeeded yet: cancelled at once, the waiting task cancelled.
	h.start("early", "order", `{}`)
	task := h.leaseAll("w")[0]
	h.cancel("early", "")
	h.expire(task, task.LeaseDeadline) // the in-flight charge never answers
	if inst := h.instance("early"); inst.Status != InstanceCancelled || inst.Steps["charge"].Status != StepCancelled {
		t.Fatalf("early: %s %s", inst.Status, statuses4(inst))
	}

	// A compensation that keeps failing ends the instance failed, naming it.
	h.start("stuck", "order", `{}`)
	h.completeActivities("payments.charge")
	h.completeActivities("inventory.reserve", "log")
	h.cancel("stuck", "")
	for attempt := 1; attempt <= 2; attempt++ {
		comp := h.leaseAll("w")
		if len(comp) != 1 || comp[0].Activity != "inventory.release" || comp[0].Attempt != attempt {
			t.Fatalf("attempt %d: %+v", attempt, comp)
		}
		h.failTask(comp[0], "warehouse_down")
		h.fireDue(h.now.Add(time.Minute))
	}
	inst := h.instance("stuck")
	if inst.Status != InstanceFailed || inst.Error.Type != "compensation_failed" || !strings.Contains(inst.Error.Message, "compensation of reserve failed: warehouse_down") {
		t.Fatalf("stuck: %s %+v", inst.Status, inst.Error)
	}
	if inst.Steps["charge"].Status != StepSucceeded {
		t.Fatalf("charge should not have been refunded: %s", inst.Steps["charge"].Status)
	}

	// Terminate is the way out of a cancellation.
	h.start("out", "order", `{}`)
	h.completeActivities("payments.charge")
	h.cancel("out", "")
	comp := h.leaseAll("w")[0]
	if r := h.apply(TerminateInstanceType, &TerminateInstanceRequest{Header: h.hdr(), ID: "out"}); r.(*InstanceStatusResponse).Status != InstanceTerminated {
		t.Fatalf("terminate = %v", r)
	}
	if e, ok := h.complete(comp).(*Error); !ok || e.Code != CodeStaleToken {
		t.Fatalf("compensation result after terminate = %v", e)
	}
	// Signals are refused while cancelling, as after the end.
	h.register(approval)
	h.start("a", "approval", `{}`)
	h.play()
	h.cancel("a", "")
	if h.instance("a").Status != InstanceCancelled {
		t.Fatalf("approval cancel: %s", h.instance("a").Status)
	}
}
