package fsm

import (
	"bytes"
	"testing"

	"github.com/hashicorp/go-memdb"
)

// compound must make the bytes memdb.CompoundIndex makes from the same
// parts, since queries still go through the CompoundIndex.
func TestCompoundKeysAreCompoundIndexKeys(t *testing.T) {
	tasks := []*Task{
		{ID: "t1", Queue: "default", Status: TaskPending, Priority: 0, Seq: 1},
		{ID: "t22", Queue: "q", Status: TaskLeased, Priority: 100, Seq: 1 << 40, DeadlineKey: 12345},
		{ID: "t3", Queue: "", Status: TaskPending, Seq: 3}, // a missing part
	}
	for name, idx := range tableSchemas[tableTasks].Indexes {
		o, ok := idx.Indexer.(onlyIf)
		if !ok {
			continue
		}
		for _, task := range tasks {
			gotOK, got, err := o.inner.FromObject(task)
			if err != nil {
				t.Fatal(err)
			}
			wantOK, want, err := o.inner.CompoundIndex.FromObject(task)
			if err != nil {
				t.Fatal(err)
			}
			if gotOK != wantOK || !bytes.Equal(got, want) {
				t.Errorf("%s index of %s: %v %q, CompoundIndex %v %q", name, task.ID, gotOK, got, wantOK, want)
			}
			if cap(got) != len(got) {
				t.Errorf("%s index of %s: capacity %d for %d bytes", name, task.ID, cap(got), len(got))
			}
		}
	}
}

// A record's id key is made once and shared by its copies; a copy given
// another id gets a key of its own.
func TestIDKeys(t *testing.T) {
	id, key := newTaskKey(42)
	if id != "t42" || string(key) != "t42\x00" || cap(key) != len(key) {
		t.Fatalf("newTaskKey(42) = %q, %q (cap %d)", id, key, cap(key))
	}
	task := &Task{ID: id, key: key}
	idx := idIndex{strIndex{taskID}}
	if _, got, _ := idx.FromObject(task); &got[0] != &key[0] {
		t.Error("the id index did not use the task's key")
	}
	moved := *task
	moved.ID = "t43"
	if _, got, _ := idx.FromObject(&moved); string(got) != "t43\x00" {
		t.Errorf("a copy with another id got the key %q", got)
	}
	var plain Task
	plain.ID = "t7"
	if _, got, _ := idx.FromObject(&plain); string(got) != "t7\x00" {
		t.Errorf("a task without a key got %q", got)
	}
	if got, _ := (strIndex{taskID}).FromArgs("t42"); !bytes.Equal(got, key) {
		t.Errorf("lookups use %q, records %q", got, key)
	}
	// The store finds records by the keys they carry.
	db, err := memdb.NewMemDB(&memdb.DBSchema{Tables: map[string]*memdb.TableSchema{tableTasks: tableSchemas[tableTasks]}})
	if err != nil {
		t.Fatal(err)
	}
	tx := db.Txn(true)
	if err := tx.Insert(tableTasks, task); err != nil {
		t.Fatal(err)
	}
	tx.Commit()
	if got, _ := db.Txn(false).First(tableTasks, "id", "t42"); got != task {
		t.Errorf("lookup by id found %v", got)
	}
}
