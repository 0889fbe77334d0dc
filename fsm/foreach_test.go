package fsm

import (
	"sort"
	"strings"
	"testing"
	"time"
)

const fanout = `workflow "fan" {
  input {
    items = list(string)
    tags  = optional(map(number), {})
  }
  step "each_item" {
    for_each        = input.items
    max_concurrency = 2
    activity        = "noop"
    input           = { i = each.key, item = upper(each.value) }
  }
  step "each_tag" {
    for_each = input.tags
    activity = "noop"
    input    = { tag = each.key, n = each.value * 10 }
  }
  step "join" {
    activity = "noop"
    input    = { items = [for o in step.each_item.output : o.item], tags = step.each_tag.output }
  }
  output = step.join.output
}
`

func keys(tasks []*Task) string {
	var out []string
	for _, t := range tasks {
		out = append(out, t.IdempotencyKey)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func TestForEachBoundedFanOutAndJoin(t *testing.T) {
	h := newHarness(t)
	h.register(fanout)
	h.start("i", "fan", `{"items": ["a", "b", "c", "d", "e"], "tags": {"y": 2, "x": 1}}`)

	first := h.leaseAll("w")
	if got := keys(first); got != "i/each_item/0 i/each_item/1 i/each_tag/x i/each_tag/y" {
		t.Fatalf("first round = %s", got)
	}
	if st := h.instance("i").Steps["each_item"]; st.Status != StepRunning || len(st.Elements) != 5 || st.Elements[2].Status != StepWaiting {
		t.Fatalf("step = %+v", st)
	}
	// Completing one element lets the next start; never more than two at once.
	for round := 0; round < 10; round++ {
		tasks := h.leaseAll("w")
		if round == 0 {
			tasks = append(first, tasks...)
		}
		if len(tasks) == 0 {
			break
		}
		running := 0
		for _, e := range h.instance("i").Steps["each_item"].Elements {
			if e.Status == StepRunning || e.Status == StepScheduled {
				running++
			}
		}
		if running > 2 {
			t.Fatalf("%d elements in flight with max_concurrency 2", running)
		}
		h.complete(tasks[0])
		for _, task := range tasks[1:] {
			h.complete(task)
		}
	}
	inst := h.instance("i")
	if inst.Status != InstanceCompleted {
		t.Fatalf("status %s %+v", inst.Status, inst.Error)
	}
	if got := string(inst.Steps["each_item"].Output); got != `[{"i":0,"item":"A"},{"i":1,"item":"B"},{"i":2,"item":"C"},{"i":3,"item":"D"},{"i":4,"item":"E"}]` {
		t.Fatalf("list output = %s", got)
	}
	if got := string(inst.Output); got != `{"items":["A","B","C","D","E"],"tags":{"x":{"n":10,"tag":"x"},"y":{"n":20,"tag":"y"}}}` {
		t.Fatalf("output = %s", got)
	}
}

func TestForEachEmptyFailingAndRuntimeErrors(t *testing.T) {
	h := newHarness(t)
	h.register(fanout)
	h.start("empty", "fan", `{"items": []}`)
	h.play()
	if inst := h.instance("empty"); inst.Status != InstanceCompleted || string(inst.Output) != `{"items":[],"tags":{}}` {
		t.Fatalf("empty: %s %s %+v", inst.Status, inst.Output, inst.Error)
	}

	h.start("broken", "fan", `{"items": ["a", "b", "c"]}`)
	tasks := h.leaseAll("w")
	var second *Task
	for _, task := range tasks {
		if task.IdempotencyKey == "broken/each_item/1" {
			second = task
		}
	}
	h.apply(FailTaskType, &FailTaskRequest{Header: h.hdr(), TaskID: second.ID, Token: second.Token, Error: TaskError{Type: "bad_item", Message: "no", NonRetryable: true}})
	inst := h.instance("broken")
	if inst.Status != InstanceFailed || inst.Error.Type != "bad_item" || !strings.Contains(inst.Error.Message, "element 1: no") {
		t.Fatalf("broken: %s %+v", inst.Status, inst.Error)
	}
	els := inst.Steps["each_item"].Elements
	if els[0].Status != StepCancelled || els[1].Status != StepFailed || els[2].Status != StepCancelled {
		t.Fatalf("elements = %s %s %s", els[0].Status, els[1].Status, els[2].Status)
	}
	if n := len(h.fsm.State().Read().PendingTasks("default", 0)); n != 0 {
		t.Fatalf("%d tasks still pending", n)
	}

	h.register(`workflow "notalist" {
  step "a" {
    for_each = input.n
    activity = "noop"
  }
}
`)
	h.start("nl", "notalist", `{"n": 3}`)
	if inst := h.instance("nl"); inst.Status != InstanceFailed || inst.Error.Type != "for_each_error" || !strings.Contains(inst.Error.Message, "must be a list, set or map") {
		t.Fatalf("not a list: %s %+v", inst.Status, inst.Error)
	}
}

func TestForEachElementLeaseExpiry(t *testing.T) {
	h := newHarness(t)
	h.register(strings.Replace(fanout, `max_concurrency = 2`, `max_concurrency = 2
    timeout         = "10s"`, 1))
	h.start("i", "fan", `{"items": ["a"]}`)
	task := h.leaseAll("w")[0]
	h.apply(ExpireLeasesType, &ExpireLeasesRequest{Header: Header{Time: task.LeaseDeadline.Add(time.Second)},
		Leases: []ExpiredLease{{TaskID: task.ID, Token: task.Token}}})
	st := h.instance("i").Steps["each_item"]
	if st.Status != StepRetryWait || st.Elements[0].Status != StepRetryWait || st.Elements[0].Error.Type != "timeout" {
		t.Fatalf("after expiry: %s %s", st.Status, st.Elements[0].Status)
	}
	h.fireDue(task.LeaseDeadline.Add(time.Minute))
	if st := h.instance("i").Steps["each_item"]; st.Status != StepScheduled || st.Elements[0].Status != StepScheduled {
		t.Fatalf("after backoff: %s %s", st.Status, st.Elements[0].Status)
	}
	again := h.leaseAll("w")
	if len(again) != 1 || again[0].Attempt != 2 || again[0].IdempotencyKey != "i/each_item/0" {
		t.Fatalf("re-lease = %+v", again)
	}
	h.complete(again[0])
	h.play()
	inst := h.instance("i")
	if inst.Status != InstanceCompleted || inst.Steps["each_item"].Attempts != 2 || inst.Steps["each_item"].Elements[0].Attempts != 2 {
		t.Fatalf("%s %+v", inst.Status, inst.Steps["each_item"])
	}
}
