package fsm

import (
	"strings"
	"testing"
	"time"
)

// An ended instance is kept for its workflow's retention, then deleted
// with its tasks, timers, signals and history; running ones are never
// touched, and a retried instance is kept again from its new end.
func TestRetentionPurgesEndedInstances(t *testing.T) {
	h := newHarness(t)
	src := strings.Replace(diamondSource(t), `description = "Fan out after a, join at d."`, `description = "Fan out after a, join at d."
  retention   = "1h"`, 1)
	h.register(src)
	h.register(approval) // default retention: 7 days
	h.start("done", "diamond", `{"n": 1}`)
	h.runToEnd()
	h.start("waiting", "approval", `{}`)
	h.play()
	h.signal("waiting", "other", `{}`, "") // a buffered signal
	if h.instance("done").Status != InstanceCompleted || h.instance("waiting").Terminal() {
		t.Fatal("setup")
	}
	ended := h.instance("done").EndedAt
	tx := h.fsm.State().Read()
	if next := tx.NextExpiry(); !next.Equal(ended.Add(time.Hour)) {
		t.Fatalf("next expiry %v, want %v", next, ended.Add(time.Hour))
	}
	if n := len(tx.History("done", 0, 0)); n == 0 {
		t.Fatal("no history")
	}

	purge := func(at time.Time) []string {
		return h.apply(PurgeInstancesType, &PurgeInstancesRequest{Header: Header{Time: at}}).(*PurgeInstancesResponse).Purged
	}
	if got := purge(ended.Add(59 * time.Minute)); len(got) != 0 {
		t.Fatalf("purged early: %v", got)
	}
	listed := func(tx *Txn) bool {
		for _, inst := range tx.Instances("diamond", "", 0) {
			if inst.ID == "done" {
				return true
			}
		}
		return false
	}
	if !listed(h.fsm.State().Read()) {
		t.Fatal("the instance is not listed under its workflow")
	}
	if got := purge(ended.Add(time.Hour)); len(got) != 1 || got[0] != "done" {
		t.Fatalf("purged %v", got)
	}
	tx = h.fsm.State().Read()
	if tx.Instance("done") != nil || len(tx.History("done", 0, 0)) != 0 {
		t.Fatal("instance or history left")
	}
	if listed(tx) {
		t.Fatal("the purged instance is still listed under its workflow")
	}
	tx.eachOfWorkflow("diamond", "", func(id string) bool {
		if id == "done" {
			t.Fatal("the purged instance's id is left in its workflow's page")
		}
		return true
	})
	if n := len(h.instanceTaskIDs("waiting")); n == 0 {
		t.Fatal("the running instance lists no tasks")
	}
	it, _ := tx.Get(tableTasks, "id")
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if raw.(*Task).InstanceID == "done" {
			t.Fatalf("task %s left", raw.(*Task).ID)
		}
	}
	// The running instance, its tasks and its buffered signal stay.
	if tx.Instance("waiting") == nil || len(tx.Signals("waiting")) != 1 || !tx.NextExpiry().IsZero() {
		t.Fatalf("running instance touched: %+v", tx.Instance("waiting"))
	}
	if got := purge(ended.Add(30 * 24 * time.Hour)); len(got) != 0 {
		t.Fatalf("purged a running instance: %v", got)
	}
}

// Purging is deterministic: replicas fed the same log hold the same
// bytes, and at most Max instances go per command.
func TestPurgeIsBoundedAndDeterministic(t *testing.T) {
	h := newHarness(t)
	h.register(strings.Replace(diamondSource(t), `description = "Fan out after a, join at d."`, `retention = "1m"`, 1))
	for i := 0; i < 5; i++ {
		h.start("i"+string(rune('0'+i)), "diamond", `{"n": 1}`)
	}
	h.runToEnd()
	later := h.now.Add(time.Hour)
	res := h.apply(PurgeInstancesType, &PurgeInstancesRequest{Header: Header{Time: later}, Max: 2}).(*PurgeInstancesResponse)
	if len(res.Purged) != 2 {
		t.Fatalf("purged %v", res.Purged)
	}
	res = h.apply(PurgeInstancesType, &PurgeInstancesRequest{Header: Header{Time: later}}).(*PurgeInstancesResponse)
	if len(res.Purged) != 3 {
		t.Fatalf("purged %v", res.Purged)
	}
	other := New(nil)
	for _, l := range h.b.logs {
		other.Apply(l)
	}
	if string(snapshotBytes(t, h.fsm)) != string(snapshotBytes(t, other)) {
		t.Fatal("replicas diverged")
	}
	if h.fsm.State().Read().Instance("i0") != nil {
		t.Fatal("i0 left")
	}
}

func (h *harness) instanceTaskIDs(id string) []string {
	return h.fsm.State().Read().Instance(id).TaskIDs
}

// An Idempotency-Key is remembered for IdempotencyWindow: a repeat within
// it gets the first answer; after a purge past it the key is free again.
func TestIdempotencyKeysAreForgottenAfterTheWindow(t *testing.T) {
	h := newHarness(t)
	h.register(diamondSource(t))
	start := func(id string, at time.Time) any {
		inner, _ := Encode(StartInstanceType, &StartInstanceRequest{Header: Header{Time: at}, ID: id, Workflow: "diamond", Input: []byte(`{"n":1}`)})
		return h.apply(IdempotentType, &IdempotentRequest{Header: Header{Time: at}, Key: "k1", Fingerprint: "fp-" + id, Command: inner})
	}
	t1 := h.now.Add(time.Second)
	if r, ok := start("a", t1).(*StartInstanceResponse); !ok || r.ID != "a" {
		t.Fatalf("first = %v", r)
	}
	if e, ok := start("b", t1.Add(time.Hour)).(*Error); !ok || e.Code != CodeConflict {
		t.Fatalf("same key, other request, within the window = %v", e)
	}
	if next := h.fsm.State().Read().NextPurge(); !next.Equal(t1.Add(IdempotencyWindow)) {
		t.Fatalf("next purge %v", next)
	}
	res := h.apply(PurgeInstancesType, &PurgeInstancesRequest{Header: Header{Time: t1.Add(IdempotencyWindow)}}).(*PurgeInstancesResponse)
	if res.Keys != 1 || len(res.Purged) != 0 {
		t.Fatalf("purge = %+v", res)
	}
	if r, ok := start("b", t1.Add(IdempotencyWindow+time.Minute)).(*StartInstanceResponse); !ok || r.ID != "b" {
		t.Fatalf("after the window = %v", r)
	}
}
