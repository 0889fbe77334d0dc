package fsm

import (
	"testing"
)

// A worker that asks for its next tasks with its results gets the task its
// results made ready in the same command: chain3 runs with one command per
// step after the first lease, and replays identically.
func TestResultsLeaseTheNextTasks(t *testing.T) {
	h := newHarness(t)
	h.register(chain3)
	h.start("e", "chain3", `{"n":1}`)
	leased := h.leaseAll("w")
	if len(leased) != 1 {
		t.Fatalf("leased %v", leased)
	}
	commands := 0
	for len(leased) > 0 {
		var outcomes []TaskOutcome
		for _, task := range leased {
			outcomes = append(outcomes, TaskOutcome{TaskID: task.ID, Token: task.Token, Output: task.Input})
		}
		res := h.apply(TaskResultsType, &TaskResultsRequest{Header: h.hdr(), Results: outcomes,
			Next: &NextTasks{WorkerID: "w", Queue: "default", Activities: []string{"noop"}, Max: 4}}).(*TaskResultsResponse)
		commands++
		for _, r := range res.Results {
			if r.Error != nil {
				t.Fatalf("result refused: %v", r.Error)
			}
		}
		leased = res.Leased
		for _, task := range leased {
			if task.Status != TaskLeased || task.WorkerID != "w" || task.Token == "" {
				t.Fatalf("leased task %+v", task)
			}
		}
	}
	inst := h.instance("e")
	if inst.Status != InstanceCompleted || string(inst.Output) != `{"n":3}` || commands != 3 {
		t.Fatalf("instance %s output %s after %d result commands", inst.Status, inst.Output, commands)
	}
	if got := historyOf(h, "e"); got != "instance_started step_scheduled:a task_leased:a step_succeeded:a step_scheduled:b task_leased:b step_succeeded:b step_scheduled:c task_leased:c step_succeeded:c instance_completed" {
		t.Fatalf("history: %s", got)
	}
	rep, err := h.fsm.Replay(h.fsm.State().Read(), "e", 0)
	if err != nil || !rep.Matches {
		t.Fatalf("replay: %+v %v", rep, err)
	}
}

// Next takes only pending, dispatchable tasks of its queue and activities,
// highest priority first, at most Max; with no results refused it leases
// nothing twice.
func TestNextTasksRespectsQueueActivitiesAndMax(t *testing.T) {
	h := newHarness(t)
	h.register(chain3)
	for _, id := range []string{"p1", "p2", "p3"} {
		h.start(id, "chain3", `{"n":1}`)
	}
	pending := h.fsm.State().Read().PendingTasks("default", 0)
	first := h.apply(LeaseTasksType, &LeaseTasksRequest{Header: h.hdr(), Leases: []Lease{{TaskID: pending[0].ID, WorkerID: "w"}}}).(*LeaseTasksResponse).Granted[0]
	res := h.apply(TaskResultsType, &TaskResultsRequest{Header: h.hdr(),
		Results: []TaskOutcome{{TaskID: first.ID, Token: first.Token, Output: first.Input}},
		Next:    &NextTasks{WorkerID: "w", Queue: "default", Activities: []string{"other"}, Max: 10}}).(*TaskResultsResponse)
	if len(res.Leased) != 0 {
		t.Fatalf("leased tasks of another activity: %v", res.Leased)
	}
	second := h.fsm.State().Read().PendingTasks("default", 0)
	if len(second) != 3 {
		t.Fatalf("pending: %d", len(second))
	}
	res = h.apply(TaskResultsType, &TaskResultsRequest{Header: h.hdr(),
		Results: []TaskOutcome{{TaskID: first.ID, Token: first.Token, Output: first.Input}},
		Next:    &NextTasks{WorkerID: "w2", Queue: "default", Max: 2}}).(*TaskResultsResponse)
	if res.Results[0].Error == nil || len(res.Leased) != 2 {
		t.Fatalf("repeated result %+v, leased %d", res.Results[0], len(res.Leased))
	}
	if res.Leased[0].Token == res.Leased[1].Token {
		t.Fatal("two leases share a token")
	}
	if n := len(h.fsm.State().Read().PendingTasks("default", 0)); n != 1 {
		t.Fatalf("pending after leasing two: %d", n)
	}
}

// A start with Next leases its first step (after older pending tasks of
// the queue, in dispatch order) in its own command; a repeated start
// leases nothing; replay matches.
func TestStartLeasesWithNext(t *testing.T) {
	h := newHarness(t)
	h.register(chain3)
	h.start("old", "chain3", `{"n":1}`)
	next := &NextTasks{WorkerID: "w", Queue: "default", Activities: []string{"noop"}, Max: 2}
	res := h.apply(StartInstanceType, &StartInstanceRequest{Header: h.hdr(), ID: "e", Workflow: "chain3", Input: []byte(`{"n":1}`), Next: next}).(*StartInstanceResponse)
	if !res.Created || len(res.Leased) != 2 || res.Leased[0].InstanceID != "old" || res.Leased[1].InstanceID != "e" {
		t.Fatalf("start answered %+v", res)
	}
	for _, task := range res.Leased {
		if task.Status != TaskLeased || task.WorkerID != "w" || task.Token == "" {
			t.Fatalf("leased %+v", task)
		}
	}
	if res.Leased[0].Token == res.Leased[1].Token {
		t.Fatal("two leases share a token")
	}
	again := h.apply(StartInstanceType, &StartInstanceRequest{Header: h.hdr(), ID: "e", Workflow: "chain3", Input: []byte(`{"n":1}`), Next: next}).(*StartInstanceResponse)
	if again.Created || len(again.Leased) != 0 {
		t.Fatalf("repeated start answered %+v", again)
	}
	if got := historyOf(h, "e"); got != "instance_started step_scheduled:a task_leased:a" {
		t.Fatalf("history: %s", got)
	}
	rep, err := h.fsm.Replay(h.fsm.State().Read(), "e", 0)
	if err != nil || !rep.Matches {
		t.Fatalf("replay: %+v %v", rep, err)
	}
}
