package fsm

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"unsafe"

	"github.com/hashicorp/go-memdb"
)

// The archive. An ended instance whose tasks have all ended changes no more
// (until an operator retries it, or retention deletes it), yet kept as
// records in go-memdb it is about sixty objects on every node (the
// instance's copy, its steps, three task records, the radix nodes of six
// index keys) that every garbage collection walks: with tens of thousands
// retained, each mark phase took hundreds of milliseconds of a loaded
// node's CPU, and that was most of the latency tail (docs/performance-history.md).
// So when a transaction writes such an instance, its record leaves the
// instances table for an archivedInstance: one pointer-free encoded value
// (archiveBlob) holding the instance and its tasks, kept in a page of the
// archive table (archivepages.go), under the same expiry; and its tasks
// leave the tasks table. Task ids ("t" and a sequence number)
// find their archived instance through the task_owner table, one record
// per taskBlock sequence numbers. Reads (Txn.Instance, Txn.Task, lists,
// expiry) decode; snapshots write archived instances as instance records
// and their tasks as "archived_tasks" records, and a restore archives them
// again at its commit. What is archived depends on the state alone (ended,
// every task ended), so every node archives the same instances, and no
// read can tell.

const (
	tableTaskOwner = "task_owner"
	// snapshotArchivedTasks is the snapshot stream of archived instances'
	// tasks (no go-memdb table has the name).
	snapshotArchivedTasks = "archived_tasks"
	// taskBlock is how many task sequence numbers one task_owner record
	// maps.
	taskBlock = 64
)

// archivedInstance is the record of an archived instance in its archive
// page: the instance and its tasks, encoded (archiveBlob). Its one
// pointer is Blob, which begins with the instance's id (ID reads it from
// there): every pointer a retained instance keeps is one more word each
// garbage collection must follow, on every node (docs/performance.md,
// "Retained instances").
type archivedInstance struct {
	Blob        []byte
	ExpiresKey  uint64
	ModifyIndex uint64
	// Tasks counts the tasks in Blob (Counts reads it without decoding).
	Tasks int
}

// ID is the archived instance's id, sharing the blob's memory: the blob
// begins with it, as encodeArchiveIn writes an instance.
func (a *archivedInstance) ID() string {
	n, k := binary.Uvarint(a.Blob)
	if n == 0 || k <= 0 || uint64(len(a.Blob)-k) < n {
		panic(fmt.Sprintf("fsm: an archived record of %d bytes does not begin with an id", len(a.Blob)))
	}
	return unsafe.String(&a.Blob[k], int(n))
}

// archiveBlob is what an archive record holds.
type archiveBlob struct {
	Instance *Instance
	Tail     []byte // the sealed history tail
	Tasks    []*Task
}

// taskOwners maps the task sequence numbers [Block*taskBlock,
// (Block+1)*taskBlock) to the ids of the archived instances that hold
// them ("" for none). A stored block keeps them packed (idList); a
// transaction's copy works on Owners and packs them when it writes the
// block.
type taskOwners struct {
	Block  uint64
	Owners []string
	packed idList
}

// owner is the owner of the block's i-th sequence number.
func (b *taskOwners) owner(i int) string {
	if b.Owners != nil {
		return b.Owners[i]
	}
	return b.packed.at(i)
}

// instanceID and instanceExpires read a stored record of an instance,
// live or archived; asInstance returns it as an instance (decoding an
// archived one).
func instanceID(o any) string {
	if a, ok := o.(*archivedInstance); ok {
		return a.ID()
	}
	return o.(*Instance).ID
}

func instanceExpires(o any) uint64 {
	if a, ok := o.(*archivedInstance); ok {
		return a.ExpiresKey
	}
	return o.(*Instance).ExpiresKey
}

func asInstance(o any) *Instance {
	if a, ok := o.(*archivedInstance); ok {
		return a.decodeInstance()
	}
	return o.(*Instance)
}

// InstanceVersion says whether an instance exists, whether it has ended,
// and the index that last changed it, without decoding an archived one:
// what readers that wait for an instance to change or end ask at every
// wake.
func (t *Txn) InstanceVersion(id string) (found, ended bool, modifyIndex uint64) {
	o, ok := t.heldRecord(tableInstances, id)
	if !ok {
		if o = t.storedInstance(id); o == nil {
			return false, false, 0
		}
	}
	if a, ok := o.(*archivedInstance); ok {
		return true, true, a.ModifyIndex
	}
	inst := o.(*Instance)
	return true, inst.Terminal(), inst.ModifyIndex
}

// instance returns a record of the instances table as an instance. A
// write transaction notes the archived ones it reads: only those can it
// write again (a handler reads an instance before it changes it), so at
// commit it looks for no others in the archive.
func (t *Txn) instance(o any) *Instance {
	a, ok := o.(*archivedInstance)
	if !ok {
		return o.(*Instance)
	}
	if t.write {
		if t.unsealed == nil {
			t.unsealed = map[string]*archivedInstance{}
		}
		t.unsealed[a.ID()] = a
	}
	return a.decodeInstance()
}

func init() {
	registerTable(&memdb.TableSchema{
		Name: tableTaskOwner,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: uintIndex{func(o any) uint64 { return o.(*taskOwners).Block }}},
		},
	})
	// Snapshots carry archived instances as instance records and their
	// tasks as archived_tasks records; a restore archives them again.
	derivedTables[tableTaskOwner] = true
	registerRecord(snapshotArchivedTasks, func() any { return new(Task) })
}

func (a *archivedInstance) decode() *archiveBlob {
	inst, tail, tasks := decodeArchive(a.Blob, a.ID(), true)
	a.restore(inst, tail)
	return &archiveBlob{Instance: inst, Tail: tail, Tasks: tasks}
}

// decodeInstance decodes the instance alone, for readers that do not need
// its tasks: every answer with an ended instance reads it so.
func (a *archivedInstance) decodeInstance() *Instance {
	inst, tail, _ := decodeArchive(a.Blob, a.ID(), false)
	a.restore(inst, tail)
	return inst
}

// restore gives a decoded instance what its blob leaves out. Its index
// key is made afresh if it is ever written to the instances table again.
func (a *archivedInstance) restore(inst *Instance, tail []byte) {
	inst.sealedTail = tail
}

// taskSeq reads the sequence number of a task id ("t" and a number written
// as strconv does).
func taskSeq(id string) (uint64, bool) {
	rest, ok := strings.CutPrefix(id, "t")
	if !ok || rest == "" || (rest[0] == '0' && len(rest) > 1) {
		return 0, false
	}
	seq, err := strconv.ParseUint(rest, 10, 64)
	return seq, err == nil
}

// ownerBlock returns the task_owner record of a block: the copy this
// transaction writes, if it has made one, else the stored one (nil if
// none).
func (t *Txn) ownerBlock(block uint64) *taskOwners {
	if b, ok := t.owners[block]; ok {
		return b
	}
	raw, err := t.Txn.First(tableTaskOwner, "id", block)
	if err != nil || raw == nil {
		return nil
	}
	return raw.(*taskOwners)
}

// taskOwner returns the archived instance holding a task, or "".
func (t *Txn) taskOwner(taskID string) string {
	seq, ok := taskSeq(taskID)
	if !ok {
		return ""
	}
	if b := t.ownerBlock(seq / taskBlock); b != nil {
		return b.owner(int(seq % taskBlock))
	}
	return ""
}

// setTaskOwner records (or, with "", clears) the archived instance of a
// task. Blocks are copied once per transaction and written at its commit.
func (t *Txn) setTaskOwner(taskID, owner string) {
	seq, ok := taskSeq(taskID)
	if !ok {
		panic(fmt.Sprintf("fsm: task id %q has no sequence number", taskID))
	}
	block := seq / taskBlock
	b, mine := t.owners[block]
	if !mine {
		b = &taskOwners{Block: block, Owners: make([]string, taskBlock)}
		if old := t.ownerBlock(block); old != nil {
			for i := range b.Owners {
				b.Owners[i] = old.owner(i)
			}
		}
		if t.owners == nil {
			t.owners = map[uint64]*taskOwners{}
		}
		t.owners[block] = b
	}
	b.Owners[seq%taskBlock] = owner
}

// flushOwners writes the task_owner blocks this transaction changed,
// deleting those left empty.
func (t *Txn) flushOwners() {
	for _, b := range t.owners {
		b.packed, b.Owners = packIDs(b.Owners), nil
	}
	writeChanged(t, tableTaskOwner, t.owners, func(b *taskOwners) bool { return len(b.packed.buf) == 0 })
	t.owners = nil
}

// archiveHeld runs before the held instances go into go-memdb: an ended
// instance whose tasks have all ended goes in archived; one that runs
// again (an operator's retry) leaves the archive, its tasks back in the
// tasks table.
//
// It reads everything it needs before it deletes anything: reading an
// index of go-memdb that the transaction has written resets that index's
// cache of the nodes the transaction already copied, so looking up each
// task just before deleting it copied the tasks table's paths afresh for
// every task (about a hundred allocations per archived instance).
// Instances own their tasks, so no instance's reads see another's
// deletes, and the order of the writes is still the ids' order.
func (t *Txn) archiveHeld(ids []string) {
	m := t.held[tableInstances]
	if t.settled == nil {
		t.settled = map[string]bool{}
	}
	type toArchive struct {
		inst   *Instance
		tasks  []*Task
		stored []any // the tasks table's records of tasks, nil where none
	}
	var pending []toArchive
	for _, id := range ids {
		inst, ok := m[id].(*Instance)
		if !ok {
			continue
		}
		t.settled[id] = true
		old := t.unsealed[id]
		if old != nil && !sameArchived(t.archivedRecord(id), old) {
			old = nil // purged since it was read; the instance is new
		}
		if inst.Terminal() {
			if tasks, stored, ok := t.archivableTasks(inst, old); ok {
				pending = append(pending, toArchive{inst, tasks, stored})
				continue
			}
		}
		if old != nil {
			t.unarchive(old)
		}
		delete(t.unsealed, id)
	}
	for _, a := range pending {
		m[a.inst.ID] = t.archive(a.inst, a.tasks, a.stored)
	}
}

// archivableTasks returns an ended instance's tasks, the latest version of
// each, if every one has ended, and the records of them the tasks table
// holds (nil where it holds none).
func (t *Txn) archivableTasks(inst *Instance, old *archivedInstance) ([]*Task, []any, bool) {
	var archived map[string]*Task
	if old != nil {
		archived = map[string]*Task{}
		for _, task := range old.decode().Tasks {
			archived[task.ID] = task
		}
	}
	tasks := make([]*Task, 0, len(inst.TaskIDs))
	stored := make([]any, 0, len(inst.TaskIDs))
	for _, id := range inst.TaskIDs {
		raw, err := t.Txn.First(tableTasks, "id", id)
		if err != nil {
			raw = nil
		}
		var task *Task
		if o, ok := t.heldRecord(tableTasks, id); ok {
			task = o.(*Task)
		} else if raw != nil {
			task = raw.(*Task)
		} else {
			task = archived[id]
		}
		if task == nil {
			return nil, nil, false // not expected: leave it live
		}
		switch task.Status {
		case TaskCompleted, TaskFailed, TaskCancelled:
		default:
			return nil, nil, false
		}
		tasks = append(tasks, task)
		stored = append(stored, raw)
	}
	return tasks, stored, true
}

// liveTask returns a task held or stored in the tasks table.
func (t *Txn) liveTask(id string) *Task {
	if o, ok := t.heldRecord(tableTasks, id); ok {
		return o.(*Task)
	}
	raw, err := t.Txn.First(tableTasks, "id", id)
	if err != nil || raw == nil {
		return nil
	}
	return raw.(*Task)
}

// archive returns the archived record of an ended instance and its tasks,
// and takes the tasks out of the tasks table (stored: their records there,
// as archivableTasks read them).
func (t *Txn) archive(inst *Instance, tasks []*Task, stored []any) *archivedInstance {
	tail := inst.sealedTail
	if tail == nil && len(inst.historyTail) > 0 {
		tail = encodeEvents(inst.historyTail)
	}
	rec := &archivedInstance{
		ExpiresKey:  inst.ExpiresKey,
		ModifyIndex: inst.ModifyIndex,
		Tasks:       len(tasks),
		Blob:        encodeArchiveIn(t.chunks, retentionOf(inst), &archiveBlob{Instance: inst, Tail: tail, Tasks: tasks}),
	}
	id := rec.ID()
	held := t.held[tableTasks]
	for i, task := range tasks {
		delete(held, task.ID)
		if stored[i] != nil {
			if err := t.Txn.Delete(tableTasks, stored[i]); err != nil {
				panic(fmt.Sprintf("fsm: archive %s task %s: %v", inst.ID, task.ID, err))
			}
		}
		t.setTaskOwner(task.ID, id)
	}
	return rec
}

// retentionOf is how long an ended instance is kept: its expiry less its
// end (0 when it has none). Blobs of one retention share chunks.
func retentionOf(inst *Instance) uint64 {
	if inst.ExpiresKey == 0 || inst.EndedAt.IsZero() {
		return 0
	}
	return inst.ExpiresKey - uint64(inst.EndedAt.UnixNano())
}

// unarchive puts an archived instance's tasks back in the tasks table
// (unless this transaction holds a newer version); the held instance
// replaces its record.
func (t *Txn) unarchive(rec *archivedInstance) {
	for _, task := range rec.decode().Tasks {
		t.setTaskOwner(task.ID, "")
		if t.liveTask(task.ID) == nil { // else this transaction wrote a newer one
			if err := t.Txn.Insert(tableTasks, task); err != nil {
				panic(fmt.Sprintf("fsm: unarchive %s task %s: %v", rec.ID(), task.ID, err))
			}
		}
	}
}

// rearchiveTasks runs before the held tasks go into go-memdb: a task of an
// archived instance that was written again goes back into its archive
// record. (No command changes a task of an ended instance today; this
// keeps such a write from leaving two versions of the task.)
func (t *Txn) rearchiveTasks(ids []string) []string {
	m := t.held[tableTasks]
	keep := ids[:0]
	for _, id := range ids {
		task := m[id].(*Task)
		// A task whose instance this transaction writes is settled with
		// it (archiveHeld): archived with it, or live with it.
		_, instHeld := t.heldRecord(tableInstances, task.InstanceID)
		owner := ""
		if !instHeld && !t.settled[task.InstanceID] {
			owner = t.taskOwner(id)
		}
		if owner == "" {
			keep = append(keep, id)
			continue
		}
		rec := t.archivedRecord(owner)
		if o, ok := t.heldRecord(tableInstances, owner); ok {
			rec, _ = o.(*archivedInstance)
		}
		if rec == nil {
			panic(fmt.Sprintf("fsm: task %s: its archived instance %s is missing", id, owner))
		}
		b := rec.decode()
		for i, old := range b.Tasks {
			if old.ID == id {
				b.Tasks[i] = task
			}
		}
		n := *rec
		n.Blob = encodeArchiveIn(t.chunks, retentionOf(b.Instance), b)
		t.storeInstance(&n, t.storedInstance(owner))
		delete(m, id)
	}
	return keep
}

// archivedTask returns a task of an archived instance, decoded, or nil.
func (t *Txn) archivedTask(id string) *Task {
	owner := t.taskOwner(id)
	if owner == "" {
		return nil
	}
	rec := t.archivedRecord(owner)
	if rec == nil {
		return nil
	}
	for _, task := range rec.decode().Tasks {
		if task.ID == id {
			return task
		}
	}
	return nil
}

// dropArchived forgets the tasks of an archived instance that a purge
// deletes (the purge deletes its record).
func (t *Txn) dropArchived(rec *archivedInstance, taskIDs []string) {
	owner := rec.ID()
	for _, id := range taskIDs {
		if t.taskOwner(id) == owner {
			t.setTaskOwner(id, "")
		}
	}
	delete(t.unsealed, owner)
}

// eachInstance calls fn with every instance, live or archived, in id order,
// until fn returns false.
func (t *Txn) eachInstance(fn func(*Instance) bool) error {
	return t.eachStoredInstance("", func(raw any) bool { return fn(asInstance(raw)) })
}
