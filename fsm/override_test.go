package fsm

import (
	"strings"
	"testing"
	"time"
)

func (h *harness) retry(id, step string) any {
	return h.apply(RetryInstanceType, &RetryInstanceRequest{Header: h.hdr(), ID: id, Step: step, Reason: "fixed the bug"})
}

func (h *harness) override(id, step, action, output string) any {
	return h.apply(StepOverrideType, &StepOverrideRequest{Header: h.hdr(), ID: id, Step: step, Action: action, Output: []byte(output), Reason: "operator"})
}

// failedDiamond runs diamond instance i until step b fails for good: a
// succeeded, c and d cancelled, the instance failed.
func failedDiamond(t *testing.T) *harness {
	h := newHarness(t)
	h.register(diamondSource(t))
	h.start("i", "diamond", `{"n": 2}`)
	h.complete(h.leaseAll("w")[0]) // a
	for _, task := range h.leaseAll("w") {
		if task.Step == "b" {
			h.apply(FailTaskType, &FailTaskRequest{Header: h.hdr(), TaskID: task.ID, Token: task.Token, Error: TaskError{Type: "bug", Message: "x", NonRetryable: true}})
		}
	}
	return h
}

func TestRetryAFailedInstanceKeepsWhatSucceeded(t *testing.T) {
	h := failedDiamond(t)
	if inst := h.instance("i"); inst.Status != InstanceFailed || statuses(inst) != "a=succeeded b=failed c=cancelled d=cancelled" {
		t.Fatalf("before: %s %s", inst.Status, statuses(inst))
	}
	if r := h.retry("i", "").(*InstanceStatusResponse); r.Status != InstanceRunning {
		t.Fatalf("retry = %+v", r)
	}
	tasks := h.leaseAll("w")
	if keys(tasks) != "i/b i/c" {
		t.Fatalf("re-run = %s", keys(tasks))
	}
	h.runToEnd()
	for _, task := range tasks {
		h.complete(task)
	}
	h.runToEnd()
	inst := h.instance("i")
	if inst.Status != InstanceCompleted || inst.Steps["a"].Attempts != 1 || string(inst.Output) != `{"result":{"b":2,"c":1}}` {
		t.Fatalf("after: %s %+v %s", inst.Status, inst.Steps["a"], inst.Output)
	}
	if !strings.Contains(historyOf(h, "i"), "instance_failed:b operator_retry step_scheduled:b step_scheduled:c step_reset:d task_leased:b") {
		t.Fatalf("history: %s", historyOf(h, "i"))
	}
	if e, ok := h.retry("i", "").(*Error); !ok || e.Code != CodeConflict {
		t.Fatalf("retry completed = %v", e)
	}
}

func TestStepOverrides(t *testing.T) {
	h := newHarness(t)
	h.register(diamondSource(t))
	h.start("i", "diamond", `{"n": 1}`)
	stuck := h.leaseAll("w")[0]
	// Complete a stuck step by hand: its worker's late result is refused.
	if r := h.override("i", "a", OverrideComplete, `{"n": 9}`).(*InstanceStatusResponse); r.Status != InstanceRunning {
		t.Fatalf("complete = %+v", r)
	}
	if e, ok := h.complete(stuck).(*Error); !ok || e.Code != CodeStaleToken {
		t.Fatalf("late result = %v", e)
	}
	if got := keys(h.leaseAll("w")); got != "i/b i/c" {
		t.Fatalf("after complete: %s", got)
	}
	// Skip c; fail b: with no error path the instance fails.
	h.override("i", "c", OverrideSkip, ``)
	h.apply(StepOverrideType, &StepOverrideRequest{Header: h.hdr(), ID: "i", Step: "b", Action: OverrideFail, Error: &TaskError{Type: "bad_data", Message: "row 7"}})
	inst := h.instance("i")
	if inst.Status != InstanceFailed || inst.Error.Type != "bad_data" || inst.Steps["c"].Status != StepSkipped {
		t.Fatalf("%s %+v %s", inst.Status, inst.Error, statuses(inst))
	}
	// Re-run a step of the failed instance: a and everything after it.
	h.retry("i", "a")
	h.runToEnd()
	inst = h.instance("i")
	if inst.Status != InstanceCompleted || string(inst.Output) != `{"result":{"b":1,"c":1}}` {
		t.Fatalf("after rerun: %s %s %+v", inst.Status, inst.Output, inst.Error)
	}
	// Refusals name what is wrong.
	cases := map[string]string{
		"done":  "has already ended",
		"nope":  "no step",
		"rerun": "only a step that has ended",
	}
	h.start("j", "diamond", `{"n": 1}`)
	h.leaseAll("w")
	if e := h.override("j", "a", OverrideRerun, ``).(*Error); !strings.Contains(e.Message, cases["rerun"]) {
		t.Fatalf("rerun running step = %v", e)
	}
	if e := h.override("j", "zz", OverrideSkip, ``).(*Error); !strings.Contains(e.Message, cases["nope"]) {
		t.Fatalf("unknown step = %v", e)
	}
	if e := h.override("i", "a", OverrideSkip, ``).(*Error); e.Code != CodeConflict {
		t.Fatalf("override on a completed instance = %v", e)
	}
	h.override("j", "a", OverrideComplete, `{"n":1}`)
	if e := h.override("j", "a", OverrideSkip, ``).(*Error); !strings.Contains(e.Message, cases["done"]) {
		t.Fatalf("skip a succeeded step = %v", e)
	}
}

// Rerunning the step before a sleep drops the sleep's timer: the step's
// next sleep ends at its own time, not at the old one.
func TestRerunDropsTheOldSleepTimer(t *testing.T) {
	h := newHarness(t)
	h.register(pausable)
	h.start("p", "pausable", `{}`)
	h.complete(h.leaseAll("w")[0]) // a; nap sleeps one minute
	h.now = h.now.Add(30 * time.Second)
	if e, ok := h.override("p", "a", OverrideRerun, ``).(*Error); ok {
		t.Fatal(e)
	}
	h.complete(h.leaseAll("w")[0]) // a again; nap sleeps another minute from now
	second := h.now
	if h.instance("p").Steps["nap"].Status != StepSleeping {
		t.Fatalf("nap = %s", h.instance("p").Steps["nap"].Status)
	}
	// The first sleep's minute is up; the second's is not.
	h.now = second.Add(40 * time.Second)
	h.apply(FireTimersType, &FireTimersRequest{Header: h.hdr(), Timers: timerIDs(h)})
	if st := h.instance("p").Steps["nap"].Status; st != StepSleeping {
		t.Fatalf("the old sleep's timer ended the new sleep: nap = %s", st)
	}
	h.now = second.Add(61 * time.Second)
	h.apply(FireTimersType, &FireTimersRequest{Header: h.hdr(), Timers: timerIDs(h)})
	nap := h.instance("p").Steps["nap"]
	if nap.Status != StepSucceeded || !strings.Contains(string(nap.Output), second.Add(time.Minute).UTC().Format(time.RFC3339Nano)) {
		t.Fatalf("nap = %s %s", nap.Status, nap.Output)
	}
	if rep, err := h.fsm.Replay(h.fsm.State().Read(), "p", 0); err != nil || !rep.Matches {
		t.Fatalf("replay: %+v %v", rep, err)
	}
}

func timerIDs(h *harness) []string {
	var ids []string
	for _, tm := range h.fsm.State().Read().DueTimers(0) {
		ids = append(ids, tm.ID)
	}
	return ids
}
