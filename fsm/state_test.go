package fsm

import (
	"fmt"
	"reflect"
	"testing"
)

func taskIDs(ts []*Task) []string {
	out := []string{}
	for _, t := range ts {
		out = append(out, t.ID)
	}
	return out
}

// A write transaction holds instances, tasks and counters until it
// commits; reads by id, listings and queue walks all see them, and the
// committed store equals one written straight through.
func TestWriteBackReadsSeeHeldRecords(t *testing.T) {
	s := NewStateStore()
	tx := s.write(1)
	for i, p := range []int{0, 50, 0, 100} {
		tx.mustInsert(tableTasks, &Task{ID: fmt.Sprintf("s%d", i), Seq: uint64(i + 1), Queue: "q", Priority: p, Status: TaskPending})
	}
	tx.setCounter("task", 4)
	tx.Commit()
	if got := taskIDs(s.Read().PendingTasks("q", 0)); !reflect.DeepEqual(got, []string{"s3", "s1", "s0", "s2"}) {
		t.Fatalf("stored queue = %v", got)
	}

	tx = s.write(2)
	// Held: a new task of each priority, one stored task leased, one
	// stored task re-prioritised copy-on-write, a task created and deleted.
	tx.mustInsert(tableTasks, &Task{ID: "h5", Seq: 5, Queue: "q", Priority: 50, Status: TaskPending})
	tx.mustInsert(tableTasks, &Task{ID: "h6", Seq: 6, Queue: "q", Priority: 0, Status: TaskPending})
	tx.mustInsert(tableTasks, &Task{ID: "h7", Seq: 7, Queue: "other", Priority: 100, Status: TaskPending})
	tx.mustInsert(tableTasks, &Task{ID: "s3", Seq: 4, Queue: "q", Priority: 100, Status: TaskLeased})
	gone := &Task{ID: "h8", Seq: 8, Queue: "q", Status: TaskPending}
	tx.mustInsert(tableTasks, gone)
	if err := tx.Delete(tableTasks, gone); err != nil {
		t.Fatalf("delete a held task: %v", err)
	}
	if tx.Task("s3").Status != TaskLeased || tx.Task("h5") == nil || tx.Task("h8") != nil {
		t.Fatal("reads by id do not see the held tasks")
	}
	if v := tx.nextSeq("task"); v != 5 || tx.counter("task") != 5 {
		t.Fatalf("sequence = %d", v)
	}
	var walked []string
	tx.EachPendingTask("q", func(task *Task) bool { walked = append(walked, task.ID); return true })
	want := []string{"s1", "h5", "s0", "s2", "h6"}
	if !reflect.DeepEqual(walked, want) {
		t.Fatalf("merged walk = %v, want %v", walked, want)
	}
	walked = nil
	tx.EachPendingTask("q", func(task *Task) bool { walked = append(walked, task.ID); return len(walked) < 2 })
	if !reflect.DeepEqual(walked, want[:2]) {
		t.Fatalf("walk stopped at two = %v", walked)
	}
	// A walk through go-memdb's index (which moves the held tasks in)
	// agrees with the merged one.
	if got := taskIDs(tx.PendingTasks("q", 0)); !reflect.DeepEqual(got, want) {
		t.Fatalf("index walk = %v, want %v", got, want)
	}
	tx.Commit()
	r := s.Read()
	if got := taskIDs(r.PendingTasks("q", 0)); !reflect.DeepEqual(got, want) {
		t.Fatalf("committed queue = %v", got)
	}
	if r.Task("h8") != nil || r.Task("s3").Status != TaskLeased || r.counter("task") != 5 {
		t.Fatal("committed records differ from the transaction's")
	}

	// An aborted transaction leaves nothing behind.
	tx = s.write(3)
	tx.mustInsert(tableInstances, &Instance{ID: "i1", Workflow: "w"})
	if got := tx.Instances("", "", 0); len(got) != 1 {
		t.Fatalf("listing in the transaction = %d", len(got))
	}
	tx.Abort()
	if s.Read().Instance("i1") != nil {
		t.Fatal("an aborted instance was stored")
	}
}
