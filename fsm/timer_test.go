package fsm

import (
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/hcl"
)

const retrying = `workflow "retrying" {
  defaults {
    retry {
      max_attempts     = 3
      initial_interval = "2s"
      backoff          = 3
      max_interval     = "5s"
      non_retryable    = ["card_declined"]
    }
  }
  step "a" {
    activity = "charge"
  }
  step "b" {
    activity = "other"
    depends_on = [step.a]
    retry {
      max_attempts = 1
    }
  }
}
`

func (h *harness) failTask(task *Task, typ string) {
	h.t.Helper()
	h.apply(FailTaskType, &FailTaskRequest{Header: h.hdr(), TaskID: task.ID, Token: task.Token, Error: TaskError{Type: typ, Message: typ + " happened"}})
}

func TestRetryBackoffThenSuccess(t *testing.T) {
	h := newHarness(t)
	h.register(retrying)
	h.start("i", "retrying", `{}`)
	first := h.leaseAll("w")[0]
	h.failTask(first, "network")
	st := h.instance("i").Steps["a"]
	if st.Status != StepRetryWait || st.Error.Type != "network" {
		t.Fatalf("after 1st failure: %+v", st)
	}
	timers := h.fsm.State().Read().DueTimers(0)
	if len(timers) != 1 || timers[0].Kind != TimerRetry {
		t.Fatalf("timers = %+v", timers)
	}
	// 2s after the failure, plus at most 10% jitter.
	wait := timers[0].Due.Sub(h.now)
	if wait < 2*time.Second || wait > 2200*time.Millisecond {
		t.Fatalf("first backoff = %s", wait)
	}
	h.fireDue(timers[0].Due)
	second := h.leaseAll("w")[0]
	if second.ID != first.ID || second.Attempt != 2 {
		t.Fatalf("second attempt = %+v", second)
	}
	h.complete(second)
	st = h.instance("i").Steps["a"]
	if st.Status != StepSucceeded || st.Attempts != 2 || st.Error != nil {
		t.Fatalf("after success: %+v", st)
	}
}

func TestRetriesExhaustedAndNonRetryable(t *testing.T) {
	h := newHarness(t)
	h.register(retrying)
	h.start("i", "retrying", `{}`)
	var delays []time.Duration
	for attempt := 1; attempt <= 3; attempt++ {
		task := h.leaseAll("w")[0]
		if task.Attempt != attempt {
			t.Fatalf("attempt = %d, want %d", task.Attempt, attempt)
		}
		h.failTask(task, "network")
		if attempt < 3 {
			tm := h.fsm.State().Read().DueTimers(0)[0]
			delays = append(delays, tm.Due.Sub(h.now).Truncate(time.Second))
			h.fireDue(tm.Due)
		}
	}
	// 2s, then 2s×3 = 6s capped at 5s.
	if len(delays) != 2 || delays[0] != 2*time.Second || delays[1] != 5*time.Second {
		t.Fatalf("delays = %v", delays)
	}
	inst := h.instance("i")
	if inst.Status != InstanceFailed || inst.Error.Type != "network" || inst.Steps["a"].Attempts != 3 {
		t.Fatalf("exhausted: %s %+v", inst.Status, inst.Error)
	}

	h.start("j", "retrying", `{}`)
	h.failTask(h.leaseAll("w")[0], "card_declined")
	if inst := h.instance("j"); inst.Status != InstanceFailed || inst.Steps["a"].Attempts != 1 {
		t.Fatalf("non-retryable type: %s %+v", inst.Status, inst.Steps["a"])
	}
	h.start("k", "retrying", `{}`)
	task := h.leaseAll("w")[0]
	h.apply(FailTaskType, &FailTaskRequest{Header: h.hdr(), TaskID: task.ID, Token: task.Token, Error: TaskError{Type: "x", Message: "y", NonRetryable: true}})
	if inst := h.instance("k"); inst.Status != InstanceFailed {
		t.Fatalf("non-retryable flag: %s", inst.Status)
	}
	// A step's own retry block overrides the defaults.
	h.start("l", "retrying", `{}`)
	h.complete(h.leaseAll("w")[0])
	h.failTask(h.leaseAll("w")[0], "network")
	if inst := h.instance("l"); inst.Status != InstanceFailed || inst.Error.Step != "b" {
		t.Fatalf("max_attempts 1: %s %+v", inst.Status, inst.Error)
	}
}

func TestSleepSteps(t *testing.T) {
	h := newHarness(t)
	h.register(`workflow "naps" {
  input {
    until = string
  }
  step "short" {
    sleep = "10m"
  }
  step "until" {
    sleep_until = input.until
  }
  step "after" {
    activity = "noop"
    input    = { short = step.short.output.slept_until, until = step.until.output.slept_until }
  }
}
`)
	h.start("past", "naps", `{"until": "2000-01-01T00:00:00Z"}`)
	inst := h.instance("past")
	if inst.Steps["until"].Status != StepSucceeded || inst.Steps["short"].Status != StepSleeping {
		t.Fatalf("statuses: %s", statuses(inst))
	}
	started := inst.CreatedAt
	if fired := h.fireDue(started.Add(10*time.Minute - time.Nanosecond)); len(fired) != 0 {
		t.Fatal("a sleep ended early")
	}
	if fired := h.fireDue(started.Add(10 * time.Minute)); len(fired) != 1 {
		t.Fatal("the sleep did not end on time")
	}
	task := h.leaseAll("w")[0]
	if want := `{"short":"` + started.Add(10*time.Minute).Format(time.RFC3339Nano) + `","until":"2000-01-01T00:00:00Z"}`; string(task.Input) != want {
		t.Fatalf("after input = %s, want %s", task.Input, want)
	}

	h.start("bad", "naps", `{"until": "next tuesday"}`)
	if inst := h.instance("bad"); inst.Status != InstanceFailed || !strings.Contains(inst.Error.Message, "RFC 3339") {
		t.Fatalf("bad time: %s %+v", inst.Status, inst.Error)
	}
	// The instance ended while "short" slept: its timer later fires and
	// changes nothing.
	if fired := h.fireDue(h.now.Add(time.Hour)); len(fired) != 1 {
		t.Fatalf("fired = %v", fired)
	}
	if st := h.instance("bad").Steps["short"].Status; st != StepCancelled {
		t.Fatalf("short = %s", st)
	}
}

func TestDefaultRetryPolicy(t *testing.T) {
	p := hcl.DefaultRetry
	if p.MaxAttempts != 3 || p.Delay(1, "t1") < time.Second || p.Delay(1, "t1") != p.Delay(1, "t1") || p.Delay(2, "t1") < 2*time.Second {
		t.Fatalf("default policy = %+v, delays %s %s", p, p.Delay(1, "t1"), p.Delay(2, "t1"))
	}
	if p.Delay(1, "t1") == p.Delay(1, "t2") && p.Delay(1, "t3") == p.Delay(1, "t4") {
		t.Fatal("jitter does not depend on the task")
	}
}
