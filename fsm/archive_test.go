package fsm

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// rows counts the records of a go-memdb table.
func rows(tx *Txn, table string) int {
	it, err := tx.Txn.Get(table, "id")
	if err != nil {
		panic(err)
	}
	n := 0
	for o := it.Next(); o != nil; o = it.Next() {
		n++
	}
	return n
}

// archivedRows counts the archived records of the instances table, and
// liveRows the others.
func archivedRows(tx *Txn) int {
	n := 0
	tx.eachArchived("", func(*archivedInstance) bool { n++; return true })
	return n
}

func liveRows(tx *Txn) int {
	it, err := tx.Txn.Get(tableInstances, "id")
	if err != nil {
		panic(err)
	}
	n := 0
	for o := it.Next(); o != nil; o = it.Next() {
		if _, ok := o.(*Instance); ok {
			n++
		}
	}
	return n
}

// An ended instance whose tasks have ended leaves the live tables for one
// archive record, and reads the same as before.
func TestEndedInstancesAreArchived(t *testing.T) {
	h := newHarness(t)
	h.register(chain3)
	h.start("a", "chain3", `{"n":1}`)
	h.start("b", "chain3", `{"n":1}`)
	h.runToEnd()
	tx := h.fsm.State().Read()
	if got := [4]int{liveRows(tx), rows(tx, tableTasks), archivedRows(tx), rows(tx, tableTaskOwner)}; got != [4]int{0, 0, 2, 1} {
		t.Fatalf("live instances, tasks, archived instances, task_owner records = %v", got)
	}
	inst := tx.Instance("a")
	if inst == nil || inst.Status != InstanceCompleted || len(inst.TaskIDs) != 3 || len(tx.History("a", 0, 0)) == 0 {
		t.Fatalf("archived instance reads %+v", inst)
	}
	// Read alone (without its tasks), it is what the whole record holds.
	var rec *archivedInstance
	tx.eachArchived("", func(a *archivedInstance) bool { rec = a; return false })
	if whole := rec.decode(); len(whole.Tasks) != 3 || !reflect.DeepEqual(rec.decodeInstance(), whole.Instance) {
		t.Fatalf("the instance read alone differs from the record's: %+v against %+v", rec.decodeInstance(), whole.Instance)
	}
	for _, id := range inst.TaskIDs {
		if task := tx.Task(id); task == nil || task.Status != TaskCompleted || task.InstanceID != "a" {
			t.Fatalf("archived task %s reads %+v", id, task)
		}
	}
	if tx.Task("t999") != nil || tx.Task("x1") != nil || tx.Instance("c") != nil {
		t.Fatal("found what does not exist")
	}
	if got := tx.Instances("", "", 0); len(got) != 2 || got[0].ID != "a" || got[1].ID != "b" {
		t.Fatalf("list = %v", got)
	}
	if got := tx.Instances("", "a", 0); len(got) != 1 || got[0].ID != "b" {
		t.Fatalf("list after a = %v", got)
	}
	if got := tx.Instances("chain3", "", 1); len(got) != 1 || got[0].ID != "a" {
		t.Fatalf("list by workflow = %v", got)
	}
	if c := h.fsm.State().Counts(); c[tableInstances] != 2 || c[tableTasks] != 6 {
		t.Fatalf("counts = %v", c)
	}
	// A result for an archived task is refused as for any ended task.
	task := tx.Task(inst.TaskIDs[0])
	if e, ok := h.complete(task).(*Error); !ok {
		t.Fatalf("result for an archived task = %v", e)
	}
	if n := rows(h.fsm.State().Read(), tableTasks); n != 0 {
		t.Fatalf("a refused result left %d live tasks", n)
	}
}

// A retried instance leaves the archive with its tasks; when it ends again
// it goes back.
func TestRetryTakesAnInstanceOutOfTheArchive(t *testing.T) {
	h := failedDiamond(t)
	tx := h.fsm.State().Read()
	if tx.Instance("i").Status != InstanceFailed || archivedRows(tx) != 1 || rows(tx, tableTasks) != 0 {
		t.Fatalf("failed instance not archived: %d archived, %d live tasks", archivedRows(tx), rows(tx, tableTasks))
	}
	old := tx.Instance("i").TaskIDs
	h.retry("i", "")
	tx = h.fsm.State().Read()
	if archivedRows(tx) != 0 || rows(tx, tableTaskOwner) != 0 || liveRows(tx) != 1 {
		t.Fatalf("retried instance still archived")
	}
	for _, id := range old {
		if task := tx.Task(id); task == nil {
			t.Fatalf("task %s of the first run lost", id)
		}
	}
	h.runToEnd()
	tx = h.fsm.State().Read()
	if inst := tx.Instance("i"); inst.Status != InstanceCompleted || archivedRows(tx) != 1 || rows(tx, tableTasks) != 0 {
		t.Fatalf("after the retry: %s, %d archived, %d live tasks", inst.Status, archivedRows(tx), rows(tx, tableTasks))
	}
	for _, id := range tx.Instance("i").TaskIDs {
		if tx.Task(id) == nil {
			t.Fatalf("task %s lost", id)
		}
	}
}

// Retention deletes archived instances with their tasks and task owners.
func TestPurgeDeletesArchivedInstances(t *testing.T) {
	h := newHarness(t)
	h.register(chain3)
	for _, id := range []string{"a", "b", "c"} {
		h.start(id, "chain3", `{"n":1}`)
	}
	h.runToEnd()
	tx := h.fsm.State().Read()
	next := tx.NextExpiry()
	if next.IsZero() || len(tx.Expired(next.Add(time.Hour), 10)) != 3 {
		t.Fatalf("expiry %v, expired %d", next, len(tx.Expired(next, 10)))
	}
	got := h.apply(PurgeInstancesType, &PurgeInstancesRequest{Header: Header{Time: next.Add(time.Hour)}, Max: 2}).(*PurgeInstancesResponse).Purged
	if len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("purged %v", got)
	}
	tx = h.fsm.State().Read()
	if tx.Instance("a") != nil || tx.Instance("c") == nil || archivedRows(tx) != 1 || len(tx.History("a", 0, 0)) != 0 {
		t.Fatal("purge left or took the wrong instances")
	}
	h.apply(PurgeInstancesType, &PurgeInstancesRequest{Header: Header{Time: next.Add(time.Hour)}})
	tx = h.fsm.State().Read()
	if archivedRows(tx) != 0 || rows(tx, tableTaskOwner) != 0 || rows(tx, tableInstanceWorkflow) != 0 || !tx.NextExpiry().IsZero() {
		t.Fatalf("left: %d archived, %d task owner blocks, %d refs", archivedRows(tx), rows(tx, tableTaskOwner), rows(tx, tableInstanceWorkflow))
	}
}

// A snapshot holds archived instances as instance records and their tasks
// as archived_tasks records; a restore archives them again, and a store
// restored from a snapshot written without the archive holds the same.
func TestSnapshotsOfTheArchive(t *testing.T) {
	h := newHarness(t)
	h.register(chain3)
	h.start("a", "chain3", `{"n":1}`)
	h.runToEnd()
	h.start("b", "chain3", `{"n":1}`) // left running
	snap := snapshotBytes(t, h.fsm)
	if !bytes.Contains(snap, []byte(`"t":"archived_tasks"`)) {
		t.Fatal("no archived tasks in the snapshot")
	}
	restored := restoreFrom(t, snap)
	tx := restored.State().Read()
	if archivedRows(tx) != 1 || liveRows(tx) != 1 {
		t.Fatalf("restored: %d archived, %d live", archivedRows(tx), liveRows(tx))
	}
	again := snapshotBytes(t, restored)
	if !bytes.Equal(snap, again) {
		t.Fatal("snapshot -> restore -> snapshot differs")
	}
	// The same log without the archive: its snapshot (every task in the
	// tasks table) restores to the same state.
	plain := New(nil)
	plain.State().noArchive = true
	for _, l := range h.b.logs {
		plain.Apply(l)
	}
	old := snapshotBytes(t, plain)
	fromOld := restoreFrom(t, old)
	fromOldSnap := snapshotBytes(t, fromOld)
	if !bytes.Equal(snap, fromOldSnap) {
		t.Fatal("a store restored from a snapshot without the archive differs")
	}
	a, _ := json.Marshal(h.fsm.State().Read().Instance("a"))
	b, _ := json.Marshal(plain.State().Read().Instance("a"))
	if !bytes.Equal(a, b) {
		t.Fatalf("archived instance reads\n%s\nlive\n%s", a, b)
	}
}

// Waiting readers learn an instance's end and version without decoding.
func TestInstanceVersion(t *testing.T) {
	h := newHarness(t)
	h.register(chain3)
	h.start("a", "chain3", `{"n":1}`)
	tx := h.fsm.State().Read()
	if found, ended, idx := tx.InstanceVersion("a"); !found || ended || idx != tx.Instance("a").ModifyIndex {
		t.Fatalf("running: %v %v %d", found, ended, idx)
	}
	h.runToEnd()
	tx = h.fsm.State().Read()
	if archivedRows(tx) != 1 {
		t.Fatal("not archived")
	}
	if found, ended, idx := tx.InstanceVersion("a"); !found || !ended || idx != tx.Instance("a").ModifyIndex {
		t.Fatalf("archived: %v %v %d (instance at %d)", found, ended, idx, tx.Instance("a").ModifyIndex)
	}
	if found, _, _ := tx.InstanceVersion("b"); found {
		t.Fatal("found b")
	}
}

// archivedChain3 is a state holding one ended chain3 instance, "a",
// archived with its three tasks.
func archivedChain3() *Txn {
	h := newHarness(&testing.T{})
	h.register(chain3)
	h.start("a", "chain3", `{"n":1}`)
	h.runToEnd()
	return h.fsm.State().Read()
}

// BenchmarkReadArchived reads an ended chain3 instance as an answer with
// it does: decoded from its archive record.
func BenchmarkReadArchived(b *testing.B) {
	tx := archivedChain3()
	b.ReportAllocs()
	for b.Loop() {
		if tx.Instance("a") == nil {
			b.Fatal("no instance")
		}
	}
}

// BenchmarkWriteArchived writes the archive record of an ended chain3
// instance with its three tasks, as archiving it does.
func BenchmarkWriteArchived(b *testing.B) {
	var rec *archivedInstance
	archivedChain3().eachArchived("", func(a *archivedInstance) bool { rec = a; return false })
	blob := rec.decode()
	b.ReportAllocs()
	for b.Loop() {
		encodeArchiveIn(nil, 0, blob)
	}
}
