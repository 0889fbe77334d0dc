package fsm

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

const approval = `workflow "approval" {
  step "prepare" {
    activity = "noop"
  }
  step "approve" {
    depends_on = [step.prepare]
    wait_signal "approve" {
      timeout = "24h"
    }
  }
  step "act" {
    activity = "noop"
    input    = { by = step.approve.output.by }
  }
  step "escalate" {
    depends_on   = [step.approve]
    trigger_rule = "any_failed"
    activity     = "page"
    input        = { why = step.approve.error.message }
  }
}
`

func (h *harness) signal(id, name, payload, requestID string) any {
	return h.apply(SignalInstanceType, &SignalInstanceRequest{Header: h.hdr(), ID: id, Name: name, Payload: json.RawMessage(payload), RequestID: requestID})
}

func TestSignalDeliveredToWaitingStep(t *testing.T) {
	h := newHarness(t)
	h.register(approval)
	h.start("i", "approval", `{}`)
	h.play()
	if st := h.instance("i").Steps["approve"].Status; st != StepWaitingSignal {
		t.Fatalf("approve = %s", st)
	}
	r := h.signal("i", "approve", `{"by": "ada"}`, "req-1").(*SignalResponse)
	if r.DeliveredTo != "approve" || r.Duplicate {
		t.Fatalf("signal = %+v", r)
	}
	// The same request again is accepted once: nothing changes.
	again := h.signal("i", "approve", `{"by": "someone else"}`, "req-1").(*SignalResponse)
	if !again.Duplicate || again.SignalID != r.SignalID {
		t.Fatalf("repeat = %+v", again)
	}
	h.play()
	inst := h.instance("i")
	if inst.Status != InstanceCompleted || string(inst.Steps["act"].Output) != `{"by":"ada"}` || inst.Steps["escalate"].Status != StepSkipped {
		t.Fatalf("%s %s act=%s", inst.Status, statuses(inst), inst.Steps["act"].Output)
	}
	if n := len(h.fsm.State().Read().Signals("i")); n != 1 {
		t.Fatalf("%d signals stored", n)
	}
	if e, ok := h.signal("i", "approve", `{}`, "").(*Error); !ok || e.Code != CodeConflict {
		t.Fatalf("signal to a completed instance = %v", e)
	}
	if e, ok := h.signal("nope", "approve", `{}`, "").(*Error); !ok || e.Code != CodeNotFound {
		t.Fatalf("signal to nothing = %v", e)
	}
}

func TestSignalsBufferedInOrder(t *testing.T) {
	h := newHarness(t)
	h.register(approval)
	h.start("i", "approval", `{}`)
	// Both arrive while "prepare" still runs: buffered.
	if r := h.signal("i", "approve", `{"by": "first"}`, "").(*SignalResponse); r.DeliveredTo != "" {
		t.Fatalf("delivered early: %+v", r)
	}
	h.signal("i", "approve", `{"by": "second"}`, "")
	h.signal("i", "other", `{}`, "")
	h.play()
	inst := h.instance("i")
	if inst.Status != InstanceCompleted || string(inst.Steps["approve"].Output) != `{"by":"first"}` {
		t.Fatalf("%s approve=%s", inst.Status, inst.Steps["approve"].Output)
	}
	sigs := h.fsm.State().Read().Signals("i")
	if sigs[0].ConsumedBy != "approve" || sigs[1].ConsumedBy != "" || sigs[2].ConsumedBy != "" {
		t.Fatalf("consumed: %q %q %q", sigs[0].ConsumedBy, sigs[1].ConsumedBy, sigs[2].ConsumedBy)
	}
}

func TestSignalTimeoutTakesTheErrorPath(t *testing.T) {
	h := newHarness(t)
	h.register(approval)
	h.start("i", "approval", `{}`)
	h.play()
	waitingSince := h.instance("i").Steps["approve"].ScheduledAt
	if fired := h.fireDue(waitingSince.Add(24*time.Hour - time.Second)); len(fired) != 0 {
		t.Fatal("signal wait timed out early")
	}
	h.fireDue(waitingSince.Add(24 * time.Hour))
	h.play()
	inst := h.instance("i")
	if inst.Status != InstanceCompleted || inst.Steps["approve"].Error.Type != "signal_timeout" || inst.Steps["escalate"].Status != StepSucceeded || inst.Steps["act"].Status != StepSkipped {
		t.Fatalf("%s %+v", statuses(inst), inst.Steps["approve"].Error)
	}
	if !strings.Contains(string(inst.Steps["escalate"].Output), `no \"approve\" signal arrived`) {
		t.Fatalf("escalate input = %s", inst.Steps["escalate"].Output)
	}
	// A late signal finds the instance over.
	if _, ok := h.signal("i", "approve", `{}`, "").(*Error); !ok {
		t.Fatal("signal after the end accepted")
	}
}

const shapedApproval = `workflow "shaped" {
  step "approve" {
    wait_signal "approve" {
      output = {
        by      = signal.payload.by
        via     = signal.name
        request = signal.request_id
        at      = signal.received_at
        run     = instance.id
      }
    }
  }
  step "strict" {
    depends_on = [step.approve]
    wait_signal "strict" {
      output = signal.payload.missing
    }
  }
}
`

// A wait_signal output shapes the step's output from the signal, whether
// the signal was waiting in the buffer or arrived while the step waited; an
// output that cannot be evaluated fails the step, naming the expression.
func TestSignalOutputReadsTheSignal(t *testing.T) {
	h := newHarness(t)
	h.register(shapedApproval)
	h.start("i", "shaped", `{}`)
	h.signal("i", "approve", `{"by": "ada"}`, "req-7")
	h.play()
	inst := h.instance("i")
	var out map[string]any
	if err := json.Unmarshal(inst.Steps["approve"].Output, &out); err != nil {
		t.Fatal(err)
	}
	at, _ := time.Parse(time.RFC3339Nano, out["at"].(string))
	if out["by"] != "ada" || out["via"] != "approve" || out["request"] != "req-7" || out["run"] != "i" || at.IsZero() {
		t.Fatalf("approve output = %s", inst.Steps["approve"].Output)
	}
	h.signal("i", "strict", `{"other": 1}`, "")
	h.play()
	inst = h.instance("i")
	st := inst.Steps["strict"]
	if st.Status != StepFailed || st.Error.Type != "output_error" || !strings.Contains(st.Error.Message, ".hcl:") {
		t.Fatalf("strict = %s %+v", st.Status, st.Error)
	}
	if inst.Status != InstanceFailed {
		t.Fatalf("instance = %s", inst.Status)
	}
}
