package fsm

import (
	"strings"
	"testing"
	"time"
)

const bounded = `workflow "bounded" {
  timeout = "1h"
  step "a" {
    activity = "slow"
  }
  step "b" {
    activity = "noop"
    input    = step.a.output
  }
}
`

func TestInstanceTimeout(t *testing.T) {
	h := newHarness(t)
	h.register(bounded)
	h.start("i", "bounded", `{}`)
	task := h.leaseAll("w")[0]
	started := h.instance("i").CreatedAt
	if fired := h.fireDue(started.Add(time.Hour - time.Nanosecond)); len(fired) != 0 {
		t.Fatal("instance timed out early")
	}
	h.fireDue(started.Add(time.Hour))
	inst := h.instance("i")
	if inst.Status != InstanceTimedOut || inst.Error.Type != "timeout" || statuses(inst) != "a=cancelled b=cancelled" {
		t.Fatalf("%s %s %+v", inst.Status, statuses(inst), inst.Error)
	}
	if e, ok := h.complete(task).(*Error); !ok || e.Code != CodeStaleToken {
		t.Fatalf("late result = %v", e)
	}
	// An instance that completes first leaves a timer that changes nothing.
	h.start("quick", "bounded", `{}`)
	h.play()
	h.fireDue(h.now.Add(2 * time.Hour))
	if st := h.instance("quick").Status; st != InstanceCompleted {
		t.Fatalf("quick = %s", st)
	}
}

func TestTerminate(t *testing.T) {
	h := newHarness(t)
	h.register(bounded)
	h.start("i", "bounded", `{}`)
	task := h.leaseAll("w")[0]
	res := h.apply(TerminateInstanceType, &TerminateInstanceRequest{Header: h.hdr(), ID: "i", Reason: "bad deploy"})
	if r, ok := res.(*InstanceStatusResponse); !ok || r.Status != InstanceTerminated {
		t.Fatalf("terminate = %v", res)
	}
	inst := h.instance("i")
	if inst.Error.Message != "bad deploy" || statuses(inst) != "a=cancelled b=cancelled" {
		t.Fatalf("%s %+v", statuses(inst), inst.Error)
	}
	if e, ok := h.complete(task).(*Error); !ok || e.Code != CodeStaleToken {
		t.Fatalf("result after terminate = %v", e)
	}
	e, ok := h.apply(TerminateInstanceType, &TerminateInstanceRequest{Header: h.hdr(), ID: "i"}).(*Error)
	if !ok || e.Code != CodeConflict || !strings.Contains(e.Message, "is terminated and cannot become terminated") {
		t.Fatalf("terminate twice = %v", e)
	}
	if e, ok := h.apply(TerminateInstanceType, &TerminateInstanceRequest{Header: h.hdr(), ID: "nope"}).(*Error); !ok || e.Code != CodeNotFound {
		t.Fatalf("unknown = %v", e)
	}
}
