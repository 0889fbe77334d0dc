package fsm

import (
	"strings"
	"testing"
)

// An instance replays to the state it is in, and a version that would
// decide differently is caught at the first step where it does.
func TestReplayAgainstOwnAndOtherVersions(t *testing.T) {
	h := newHarness(t)
	src := diamondSource(t)
	h.register(src)
	h.start("i", "diamond", `{"n": 2}`)
	h.runToEnd()
	if st := h.instance("i").Status; st != InstanceCompleted {
		t.Fatalf("instance = %s", st)
	}
	tx := h.fsm.State().Read()
	rep, err := h.fsm.Replay(tx, "i", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Matches || rep.Divergence != nil || rep.Status != InstanceCompleted || rep.ReplayedEvents != rep.Events || rep.Events < 10 {
		t.Fatalf("own version: %+v %+v", rep, rep.Divergence)
	}

	// Version 2 feeds c a different input: the first difference is c's
	// scheduling, and it names the step.
	h.register(strings.Replace(src, `input      = { x = 1 }`, `input      = { x = 2 }`, 1))
	rep, err = h.fsm.Replay(h.fsm.State().Read(), "i", 2)
	if err != nil {
		t.Fatal(err)
	}
	d := rep.Divergence
	if rep.Matches || d == nil || d.Step != "c" || d.Original == nil || d.Original.Type != "step_scheduled" || !strings.Contains(d.Reason, `data {"x":1}, replayed {"x":2}`) {
		t.Fatalf("changed input: %+v %+v", rep, d)
	}
	if rep.ReplayedVersion != 2 || rep.Version != 1 {
		t.Fatalf("versions: %+v", rep)
	}

	// Version 3 has no step c: the original leased c's task, which the new
	// version never schedules.
	v3 := strings.Replace(src, "  step \"c\" {\n    activity   = \"noop\"\n    input      = { x = 1 }\n    depends_on = [step.a]\n  }\n", "", 1)
	v3 = strings.Replace(v3, `input    = { b = step.b.output.from_a, c = step.c.output.x }`, `input    = { b = step.b.output.from_a }`, 1)
	h.register(v3)
	rep, _ = h.fsm.Replay(h.fsm.State().Read(), "i", 3)
	if rep.Matches || rep.Divergence == nil || rep.Divergence.Step != "c" {
		t.Fatalf("removed step: %+v %+v", rep, rep.Divergence)
	}

	// The replay left the real state alone.
	if got := h.fsm.State().Read().Instance("i"); got.EventSeq != tx.Instance("i").EventSeq {
		t.Fatal("replay changed the instance")
	}
	if _, err := h.fsm.Replay(h.fsm.State().Read(), "nope", 0); err == nil {
		t.Fatal("replayed an unknown instance")
	}
	_, err = h.fsm.Replay(h.fsm.State().Read(), "i", 9)
	if e, ok := err.(*Error); !ok || e.Code != CodeNotFound {
		t.Fatalf("replay against an unknown version = %v", err)
	}
}

// Signals, timers, retries, operator actions and a cancellation with
// compensation all come back from history.
func TestReplayCoversEveryCause(t *testing.T) {
	h := newHarness(t)
	h.register(approval)
	h.start("a", "approval", `{}`)
	h.play()
	h.signal("a", "approve", `{"by": "ada"}`, "r1")
	h.play()

	h.register(sagaWithUndo)
	h.start("s", "order", `{"n": 3}`)
	h.completeActivities("payments.charge")
	h.apply(CancelInstanceType, &CancelInstanceRequest{Header: h.hdr(), ID: "s", Reason: "customer changed their mind"})
	h.runToEnd()

	h.register(retrying)
	h.start("r", "retrying", `{}`)
	for _, task := range h.leaseAll("w") {
		h.apply(FailTaskType, &FailTaskRequest{Header: h.hdr(), TaskID: task.ID, Token: task.Token, Error: TaskError{Type: "flaky", Message: "try again"}})
	}
	h.fireDue(h.now.Add(24 * 60 * 60 * 1e9))
	h.apply(SuspendInstanceType, &SuspendInstanceRequest{Header: h.hdr(), ID: "r"})
	h.apply(ResumeInstanceType, &SuspendInstanceRequest{Header: h.hdr(), ID: "r"})
	h.runToEnd()

	// Each instance went through what it is meant to exercise.
	for id, want := range map[string]string{"a": "signal_received", "s": "step_compensated", "r": "timer_fired"} {
		found := false
		for _, e := range h.fsm.State().Read().History(id, 0, 0) {
			found = found || e.Type == want
		}
		if !found {
			t.Fatalf("%s has no %s event", id, want)
		}
	}
	for _, id := range []string{"a", "s", "r"} {
		rep, err := h.fsm.Replay(h.fsm.State().Read(), id, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Matches {
			t.Fatalf("%s: %+v %+v", id, rep, rep.Divergence)
		}
	}
	if st := h.instance("s").Status; st != InstanceCancelled {
		t.Fatalf("saga = %s", st)
	}
}
