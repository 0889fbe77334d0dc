package fsm

import (
	"strings"
	"testing"
)

const parentWF = `workflow "parent" {
  input {
    n = number
  }
  step "prep" {
    activity = "noop"
    input    = { n = input.n }
  }
  step "kid" {
    workflow = "child"
    input    = { n = step.prep.output.n * 2 }
  }
  step "after" {
    activity = "noop"
    input    = { got = step.kid.output.doubled }
  }
  step "rescue" {
    depends_on   = [step.kid]
    trigger_rule = "any_failed"
    activity     = "noop"
    input        = { why = step.kid.error.type }
  }
}
`

const childWF = `workflow "child" {
  input {
    n = number
  }
  step "work" {
    activity = "noop"
    input    = { doubled = input.n }
    compensate {
      activity = "undo"
    }
  }
  step "guard" {
    when = input.n > 100
    fail {
      error = "too_big"
    }
  }
  output = step.work.output
}
`

func TestChildWorkflowRunsAndReturnsItsOutput(t *testing.T) {
	h := newHarness(t)
	h.register(childWF)
	h.register(parentWF)
	h.start("p", "parent", `{"n": 4}`)
	h.runToEnd()
	p := h.instance("p")
	if p.Status != InstanceCompleted || string(p.Steps["after"].Output) != `{"got":8}` || p.Steps["rescue"].Status != StepSkipped {
		t.Fatalf("parent: %s after=%s rescue=%s", p.Status, p.Steps["after"].Output, p.Steps["rescue"].Status)
	}
	kid := h.instance(p.Steps["kid"].ChildID)
	if kid == nil || kid.Status != InstanceCompleted || kid.Parent.InstanceID != "p" || kid.ID != "p:kid:1" {
		t.Fatalf("child: %+v", kid)
	}
	// A child that fails as it starts fails the parent's step; the error
	// path handles it.
	h.start("q", "parent", `{"n": 60}`)
	h.runToEnd()
	q := h.instance("q")
	if q.Status != InstanceCompleted || q.Steps["kid"].Error.Type != "child_failed" || string(q.Steps["rescue"].Output) != `{"why":"child_failed"}` {
		t.Fatalf("failed child: %s %+v %s", q.Status, q.Steps["kid"].Error, q.Steps["rescue"].Output)
	}
	// An input the child would reject whatever happens is refused at
	// registration.
	bad := strings.Replace(parentWF, `input    = { n = step.prep.output.n * 2 }`, `input    = { n = "many" }`, 1)
	if e, ok := h.apply(RegisterWorkflowType, &RegisterWorkflowRequest{Header: h.hdr(), Source: bad}).(*Error); !ok || e.Code != CodeInvalid || !strings.Contains(e.Message, "a number is required") {
		t.Fatalf("register mismatched parent = %v", e)
	}
	// A child that cannot start (input of the wrong type, known only at
	// run time) fails the step.
	h.register(strings.Replace(parentWF, `input    = { n = step.prep.output.n * 2 }`, `input    = { n = "many${step.prep.output.n}" }`, 1))
	h.start("r", "parent", `{"n": 1}`)
	h.runToEnd()
	if r := h.instance("r"); r.Steps["kid"].Error == nil || r.Steps["kid"].Error.Type != "child_start_failed" {
		t.Fatalf("bad child input: %+v", r.Steps["kid"])
	}
}

func TestTerminatingOrCancellingAParentDoesTheSameToItsChild(t *testing.T) {
	h := newHarness(t)
	h.register(childWF)
	h.register(parentWF)
	h.start("p", "parent", `{"n": 1}`)
	h.complete(h.leaseAll("w")[0]) // prep: the child starts
	childID := h.instance("p").Steps["kid"].ChildID
	h.apply(TerminateInstanceType, &TerminateInstanceRequest{Header: h.hdr(), ID: "p", Reason: "stop"})
	if c := h.instance(childID); c.Status != InstanceTerminated || !strings.Contains(c.Error.Message, "its parent p ended terminated") {
		t.Fatalf("child after parent terminate: %s %+v", c.Status, c.Error)
	}
	if n := len(h.fsm.State().Read().PendingTasks("default", 0)); n != 0 {
		t.Fatalf("%d tasks left", n)
	}

	// Cancel after the child completed: the child stays completed (the
	// parent's kid step has no compensate of its own).
	h.start("c", "parent", `{"n": 1}`)
	h.complete(h.leaseAll("w")[0]) // prep
	childID = h.instance("c").Steps["kid"].ChildID
	h.complete(h.leaseAll("w")[0]) // the child's work: the child completes, "after" starts
	after := h.leaseAll("w")[0]
	h.cancel("c", "")
	h.complete(after)
	if p := h.instance("c"); p.Status != InstanceCancelled || h.instance(childID).Status != InstanceCompleted {
		t.Fatalf("parent: %s %s", p.Status, historyOf(h, "c"))
	}
	if got := historyOf(h, "c"); !strings.Contains(got, "child_started:kid step_succeeded:kid") {
		t.Fatalf("history: %s", got)
	}

	// Cancel while the child works: the child cancels (undoing its work),
	// and the parent's step ends with it.
	h = newHarness(t)
	h.register(childWF)
	h.register(parentWF)
	h.start("e", "parent", `{"n": 1}`)
	h.complete(h.leaseAll("w")[0]) // prep of e
	eChild := h.instance("e").Steps["kid"].ChildID
	work := h.leaseAll("w")[0] // e's child's work in flight
	h.cancel("e", "")
	if c := h.instance(eChild); c.Status != InstanceCancelling {
		t.Fatalf("e's child while its work runs: %s", c.Status)
	}
	if p := h.instance("e"); p.Status != InstanceCancelling || p.Steps["kid"].Status != StepRunning {
		t.Fatalf("e while its child cancels: %s %s", p.Status, p.Steps["kid"].Status)
	}
	h.complete(work) // the child's in-flight work completes: it will be undone
	h.runToEnd()     // the undo runs; the child ends cancelled, and so does the parent
	if c := h.instance(eChild); c.Status != InstanceCancelled || c.Steps["work"].Status != StepCompensated {
		t.Fatalf("e's child: %s %s", c.Status, c.Steps["work"].Status)
	}
	if p := h.instance("e"); p.Status != InstanceCancelled || p.Steps["kid"].Status != StepCancelled {
		t.Fatalf("e: %s kid=%s", p.Status, p.Steps["kid"].Status)
	}
}
