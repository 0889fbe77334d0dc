package fsm

import (
	"encoding/json"
	"strings"
	"testing"
)

// play runs an instance to its end with a worker that fails the steps named
// in failing and completes the others with their input.
func (h *harness) play(failing ...string) {
	h.t.Helper()
	fail := map[string]bool{}
	for _, s := range failing {
		fail[s] = true
	}
	for i := 0; i < 50; i++ {
		tasks := h.leaseAll("w")
		if len(tasks) == 0 {
			break
		}
		for _, task := range tasks {
			if fail[task.Step] {
				h.apply(FailTaskType, &FailTaskRequest{Header: h.hdr(), TaskID: task.ID, Token: task.Token,
					Error: TaskError{Type: "boom", Message: task.Step + " broke", NonRetryable: true}})
			} else {
				h.complete(task)
			}
		}
	}
}

func (h *harness) instance(id string) *Instance { return h.fsm.State().Read().Instance(id) }

func statuses(inst *Instance) string {
	var out []string
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		if st, ok := inst.Steps[name]; ok {
			out = append(out, name+"="+st.Status)
		}
	}
	return strings.Join(out, " ")
}

const saga = `workflow "saga" {
  input {
    amount = number
  }
  step "a" {
    activity = "charge"
    input    = { amount = input.amount }
  }
  step "b" {
    activity = "ship"
    input    = { paid = step.a.output.amount }
  }
  step "c" {
    depends_on   = [step.a]
    trigger_rule = "any_failed"
    activity     = "notify"
    input        = { why = step.a.error.message, tries = step.a.attempts }
  }
  step "d" {
    depends_on   = [step.b, step.c]
    trigger_rule = "all_done"
    activity     = "cleanup"
    input        = { b = step.b.status, c = step.c.status }
  }
}
`

func TestErrorPathCatchesAFailure(t *testing.T) {
	h := newHarness(t)
	h.register(saga)
	h.start("ok", "saga", `{"amount": 5}`)
	h.play()
	if inst := h.instance("ok"); inst.Status != InstanceCompleted || statuses(inst) != "a=succeeded b=succeeded c=skipped d=succeeded" {
		t.Fatalf("happy path: %s %s", inst.Status, statuses(inst))
	}

	h.start("declined", "saga", `{"amount": 5}`)
	h.play("a")
	inst := h.instance("declined")
	if inst.Status != InstanceCompleted || statuses(inst) != "a=failed b=skipped c=succeeded d=succeeded" {
		t.Fatalf("error path: %s %s %+v", inst.Status, statuses(inst), inst.Error)
	}
	if got := string(inst.Steps["c"].Output); got != `{"tries":1,"why":"a broke"}` {
		t.Fatalf("error path input = %s", got)
	}
	if got := string(inst.Steps["d"].Output); got != `{"b":"skipped","c":"succeeded"}` {
		t.Fatalf("finally input = %s", got)
	}

	// The error path itself failing is not caught: the instance fails, after
	// the finally ran.
	h.start("worse", "saga", `{"amount": 5}`)
	h.play("a", "c")
	inst = h.instance("worse")
	if inst.Status != InstanceFailed || inst.Error.Step != "c" || statuses(inst) != "a=failed b=skipped c=failed d=succeeded" {
		t.Fatalf("failed error path: %s %s %+v", inst.Status, statuses(inst), inst.Error)
	}
}

func TestFinallyRunsButTheFailureStands(t *testing.T) {
	h := newHarness(t)
	h.register(`workflow "fin" {
  step "a" {
    activity = "work"
  }
  step "b" {
    depends_on   = [step.a]
    trigger_rule = "all_done"
    activity     = "release"
  }
}
`)
	h.start("i", "fin", `{}`)
	h.play("a")
	inst := h.instance("i")
	if inst.Status != InstanceFailed || inst.Error.Step != "a" || inst.Steps["b"].Status != StepSucceeded {
		t.Fatalf("%s %s %+v", inst.Status, statuses(inst), inst.Error)
	}
}

func TestWhenSkipsAndSkipsCascade(t *testing.T) {
	h := newHarness(t)
	h.register(`workflow "gate" {
  input {
    amount = number
  }
  step "a" {
    activity = "noop"
    when     = input.amount > 1000
    input    = { approve = input.amount }
  }
  step "b" {
    activity = "noop"
    input    = { approved = step.a.output.approve }
  }
  step "c" {
    activity = "noop"
    input    = { n = input.amount }
  }
  step "d" {
    activity     = "noop"
    depends_on   = [step.b, step.c]
    trigger_rule = "all_succeeded"
  }
  step "e" {
    activity   = "noop"
    depends_on = [step.b, step.c]
    input      = { seen = step.b.status }
  }
  output = { approved = try(step.b.output.approved, "not needed"), e = step.e.output }
}
`)
	h.start("small", "gate", `{"amount": 10}`)
	h.play()
	inst := h.instance("small")
	if inst.Status != InstanceCompleted || statuses(inst) != "a=skipped b=skipped c=succeeded d=skipped e=succeeded" {
		t.Fatalf("%s %s %+v", inst.Status, statuses(inst), inst.Error)
	}
	if string(inst.Output) != `{"approved":"not needed","e":{"seen":"skipped"}}` {
		t.Fatalf("output = %s", inst.Output)
	}
	h.start("big", "gate", `{"amount": 5000}`)
	h.play()
	inst = h.instance("big")
	if inst.Status != InstanceCompleted || statuses(inst) != "a=succeeded b=succeeded c=succeeded d=succeeded e=succeeded" {
		t.Fatalf("%s %s", inst.Status, statuses(inst))
	}
}

func TestFailStepAndWhenErrors(t *testing.T) {
	h := newHarness(t)
	h.register(`workflow "limit" {
  input {
    amount = number
  }
  step "a" {
    when = input.amount > 100
    fail {
      error   = "over_limit"
      message = "amount ${input.amount} is over the limit of 100"
    }
  }
  step "b" {
    activity = "noop"
    input    = { id = instance.id, wf = instance.workflow, at = now(), started = instance.started_at }
  }
}
`)
	h.start("over", "limit", `{"amount": 250}`)
	inst := h.instance("over")
	if inst.Status != InstanceFailed || inst.Error.Type != "over_limit" || inst.Error.Message != "step a failed: amount 250 is over the limit of 100" {
		t.Fatalf("fail step: %s %+v", inst.Status, inst.Error)
	}
	if inst.Steps["b"].Status != StepCancelled {
		t.Fatalf("b = %s", inst.Steps["b"].Status)
	}
	h.start("under", "limit", `{"amount": 50}`)
	task := h.leaseAll("w")[0]
	var in map[string]string
	if err := json.Unmarshal(task.Input, &in); err != nil {
		t.Fatal(err)
	}
	created := h.instance("under").CreatedAt.Format("2006-01-02T15:04:05.999999999Z07:00")
	if in["id"] != "under" || in["wf"] != "limit" || in["at"] != created || in["started"] != created {
		t.Fatalf("scope = %v (created %s)", in, created)
	}

	// A when that cannot be evaluated fails its step, saying where.
	h.register(`workflow "badwhen" {
  step "a" {
    activity = "noop"
    when     = input.flag
  }
}
`)
	h.start("bw", "badwhen", `{"other": 1}`)
	inst = h.instance("bw")
	if inst.Status != InstanceFailed || inst.Error.Type != "when_error" || !strings.Contains(inst.Error.Message, ".hcl:4") {
		t.Fatalf("when error: %s %+v", inst.Status, inst.Error)
	}
}
