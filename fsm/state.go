package fsm

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"

	"github.com/hashicorp/go-memdb"
)

// tableSchemas is filled by each concept file's init, so a table lives in the
// file of the records it holds.
var tableSchemas = map[string]*memdb.TableSchema{}

// derivedTables are rebuilt from other tables on Restore and left out of
// snapshots.
var derivedTables = map[string]bool{}

func registerTable(s *memdb.TableSchema) {
	if _, dup := tableSchemas[s.Name]; dup {
		panic(fmt.Sprintf("fsm: table %s registered twice", s.Name))
	}
	tableSchemas[s.Name] = s
}

// meta is a small table of named counters that must survive snapshots (the
// last applied index, id sequences).
type meta struct {
	Key   string `json:"key"`
	Value uint64 `json:"value"`
}

const tableMeta = "meta"

func init() {
	registerTable(&memdb.TableSchema{
		Name: tableMeta,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: strIndex{func(o any) string { return o.(*meta).Key }}},
		},
	})
	writeBack[tableMeta] = func(o any) string { return o.(*meta).Key }
}

// writeBack names the tables whose records a write transaction holds in a
// map, by id, until it commits or a read needs the table's indexes, and
// gives each record's id. A record written several times in one raft
// batch (an instance moved by a result and then by the lease of its next
// step, a task created and leased in one command, the id sequences) then
// costs go-memdb one insert instead of one per write: each insert copies
// a radix path in every index it touches.
var writeBack = map[string]func(any) string{}

// StateStore holds the replicated state in go-memdb. Writes come only from
// the FSM; anyone may read through a snapshot transaction.
type StateStore struct {
	db *memdb.MemDB

	mu      sync.Mutex
	changed chan struct{}
	// watches are the readers waiting for one instance to change, by id
	// (WatchInstance), or to end (WatchInstanceEnd: the value is true); a
	// commit wakes only those of the instances it wrote, and those waiting
	// for an end only when it ended or deleted the instance.
	watches map[string]map[chan struct{}]bool
	// noArchive keeps ended instances in the live tables (archive.go):
	// tests compare the two.
	noArchive bool
	// chunks are the chunks archived blobs are being written into
	// (archivechunks.go), by the write transactions, one at a time.
	chunks *blobChunks
}

// NewStateStore returns an empty store.
func NewStateStore() *StateStore {
	db, err := memdb.NewMemDB(&memdb.DBSchema{Tables: tableSchemas})
	if err != nil {
		panic(fmt.Sprintf("fsm: invalid schema: %v", err))
	}
	// Nothing watches go-memdb's per-record channels (readers wait on
	// Changed or WatchInstance), so the store is a non-primary copy, which
	// does not track and close a channel for every radix node each write
	// touches.
	return &StateStore{db: db.Snapshot(), changed: make(chan struct{}), chunks: &blobChunks{}}
}

// Changed returns a channel that is closed at the next change of the state
// (an applied command or a restore). Blocking readers and the leader's
// engine wait on it instead of polling.
func (s *StateStore) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// WatchInstance returns a channel closed at the next commit that writes or
// deletes the instance, or when a restore replaces this store; and a
// function that stops watching. A reader blocked on one instance thus
// wakes for its changes only, not for every command.
func (s *StateStore) WatchInstance(id string) (<-chan struct{}, func()) {
	return s.watch(id, false)
}

// WatchInstanceEnd is WatchInstance for a reader that waits for the
// instance's end: the channel is closed at the next commit that leaves the
// instance ended or deletes it (or at a restore), not at every transition.
func (s *StateStore) WatchInstanceEnd(id string) (<-chan struct{}, func()) {
	return s.watch(id, true)
}

func (s *StateStore) watch(id string, endOnly bool) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	if s.watches == nil {
		s.watches = map[string]map[chan struct{}]bool{}
	}
	set := s.watches[id]
	if set == nil {
		set = map[chan struct{}]bool{}
		s.watches[id] = set
	}
	set[ch] = endOnly
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if set := s.watches[id]; set != nil {
			delete(set, ch)
			if len(set) == 0 {
				delete(s.watches, id)
			}
		}
	}
}

// notify wakes the readers of any change and those watching the instances
// the commit wrote (touched: true for those it ended or deleted), or all of
// them when all is set (a restore).
func (s *StateStore) notify(touched map[string]bool, all bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.changed)
	s.changed = make(chan struct{})
	wake := func(id string, ended bool) {
		set := s.watches[id]
		for ch, endOnly := range set {
			if ended || !endOnly {
				close(ch)
				delete(set, ch)
			}
		}
		if len(set) == 0 {
			delete(s.watches, id)
		}
	}
	if all {
		for id := range s.watches {
			wake(id, true)
		}
		return
	}
	for id, ended := range touched {
		wake(id, ended)
	}
}

// Txn is a transaction on the store; read-only unless made by the FSM.
type Txn struct {
	*memdb.Txn
	// Index is the raft index being applied (0 for reads).
	Index uint64
	// touched holds the ids of the instances written or deleted, whose
	// watchers the commit wakes; true for those left ended or deleted.
	touched map[string]bool
	// write is set on the FSM's transactions, which hold the records of
	// the writeBack tables in held (table, then id) until they are needed
	// in go-memdb. Reads by id see held records; any other read of a
	// table first moves its held records into go-memdb.
	write bool
	held  map[string]map[string]any
	// versions are the workflow versions this write transaction has read,
	// forgotten when it writes the workflows table.
	versions map[versionKey]*WorkflowVersion
	// owners are the task_owner blocks this transaction changed (archive.go),
	// written at its commit.
	owners map[uint64]*taskOwners
	// expiries are the expiry buckets this transaction changed
	// (expiry.go), written at its commit or before it reads them.
	expiries map[uint64]*expiryBucket
	// pages are the instance_workflow pages this transaction changed
	// (workflowlist.go), by key, written at its commit.
	pages     pageCopies[*workflowPage]
	noArchive bool
	// unsealed are the archived instances this write transaction has read,
	// settled those whose records it has flushed (archive.go).
	unsealed map[string]*archivedInstance
	settled  map[string]bool
	// apages are the archive pages this transaction changed, by Lo, and
	// absent the instances it found stored nowhere (archivepages.go).
	apages pageCopies[*archivePage]
	absent map[string]bool
	// chunks are where this write transaction puts the blobs it archives.
	chunks *blobChunks
}

// touch notes that an instance was written or deleted, and whether it is
// now ended (or gone).
func (t *Txn) touch(id string, ended bool) {
	if t.touched == nil {
		t.touched = map[string]bool{}
	}
	t.touched[id] = t.touched[id] || ended
}

// Read returns a consistent read-only view of the state.
func (s *StateStore) Read() *Txn { return &Txn{Txn: s.db.Txn(false)} }

func (s *StateStore) write(index uint64) *Txn {
	return &Txn{Txn: s.db.Txn(true), Index: index, write: true, noArchive: s.noArchive, chunks: s.chunks}
}

// Insert writes a record: held until commit for the writeBack tables.
func (t *Txn) Insert(table string, obj any) error {
	t.wrote(table)
	if id := writeBack[table]; id != nil && t.write {
		if t.held == nil {
			t.held = map[string]map[string]any{}
		}
		m := t.held[table]
		if m == nil {
			m = map[string]any{}
			t.held[table] = m
		}
		m[id(obj)] = obj
		return nil
	}
	return t.Txn.Insert(table, obj)
}

// Delete removes a record, held or stored.
func (t *Txn) Delete(table string, obj any) error {
	t.wrote(table)
	if m := t.held[table]; m != nil {
		id := writeBack[table](obj)
		if _, ok := m[id]; ok {
			delete(m, id)
			// A record created in this transaction is not in go-memdb.
			if err := t.deleteStored(table, obj); err != nil && !errors.Is(err, memdb.ErrNotFound) {
				return err
			}
			return nil
		}
	}
	return t.deleteStored(table, obj)
}

func (t *Txn) deleteStored(table string, obj any) error {
	if table == tableInstances {
		return t.deleteInstance(obj)
	}
	return t.Txn.Delete(table, obj)
}

// First returns the first record of an index: a held record when read by
// id, otherwise from go-memdb once the table's held records are in it.
func (t *Txn) First(table, index string, args ...any) (any, error) {
	if m := t.held[table]; m != nil {
		if index == "id" && len(args) == 1 {
			if key, ok := args[0].(string); ok {
				if o, ok := m[key]; ok {
					return o, nil
				}
				return t.Txn.First(table, index, args...)
			}
		}
		t.flush(table)
	}
	return t.Txn.First(table, index, args...)
}

// heldRecord returns a record this transaction holds by id, as First
// would, without boxing the id into First's arguments (the hot lookups of
// instances and tasks by id hit held records most of the time in a batch).
func (t *Txn) heldRecord(table, id string) (any, bool) {
	o, ok := t.held[table][id]
	return o, ok
}

// The other reads and deletes of go-memdb see every record written so far.

func (t *Txn) FirstWatch(table, index string, args ...any) (<-chan struct{}, any, error) {
	t.flush(table)
	return t.Txn.FirstWatch(table, index, args...)
}

func (t *Txn) Last(table, index string, args ...any) (any, error) {
	t.flush(table)
	return t.Txn.Last(table, index, args...)
}

func (t *Txn) Get(table, index string, args ...any) (memdb.ResultIterator, error) {
	t.flush(table)
	return t.Txn.Get(table, index, args...)
}

func (t *Txn) GetReverse(table, index string, args ...any) (memdb.ResultIterator, error) {
	t.flush(table)
	return t.Txn.GetReverse(table, index, args...)
}

func (t *Txn) LowerBound(table, index string, args ...any) (memdb.ResultIterator, error) {
	t.flush(table)
	return t.Txn.LowerBound(table, index, args...)
}

func (t *Txn) ReverseLowerBound(table, index string, args ...any) (memdb.ResultIterator, error) {
	t.flush(table)
	return t.Txn.ReverseLowerBound(table, index, args...)
}

func (t *Txn) DeleteAll(table, index string, args ...any) (int, error) {
	t.wrote(table)
	t.flush(table)
	return t.Txn.DeleteAll(table, index, args...)
}

func (t *Txn) DeletePrefix(table, index, prefix string) (bool, error) {
	t.wrote(table)
	t.flush(table)
	return t.Txn.DeletePrefix(table, index, prefix)
}

// wrote forgets what the transaction cached of a table it changes.
func (t *Txn) wrote(table string) {
	if table == tableWorkflows {
		t.versions = nil
	}
}

// flush moves a table's held records into go-memdb, in id order, so that
// every node does the same work in the same order.
func (t *Txn) flush(table string) {
	m := t.held[table]
	if len(m) == 0 {
		delete(t.held, table)
		return
	}
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	switch {
	case t.noArchive:
	case table == tableInstances:
		t.archiveHeld(ids)
	case table == tableTasks:
		ids = t.rearchiveTasks(ids)
	}
	if table == tableInstances {
		// Every stored record first: a read of an index written in this
		// transaction would reset that index's copied-node cache.
		stored := make([]any, len(ids))
		for i, id := range ids {
			stored[i] = t.storedInstance(id)
		}
		for i, id := range ids {
			t.storeInstance(m[id], stored[i])
		}
		delete(t.held, table)
		return
	}
	for _, id := range ids {
		if err := t.Txn.Insert(table, m[id]); err != nil {
			panic(fmt.Sprintf("fsm: insert %s: %v", table, err))
		}
	}
	delete(t.held, table)
}

// writeChanged writes the records of a table of blocks (task owners,
// expiry buckets, workflow pages) that a transaction changed, in key
// order, so that every node does the same work, deleting those left
// empty.
func writeChanged[K cmp.Ordered, R any](t *Txn, table string, changed map[K]R, empty func(R) bool) {
	for _, k := range slices.Sorted(maps.Keys(changed)) {
		r := changed[k]
		var err error
		if empty(r) {
			if err = t.Txn.Delete(table, r); err == memdb.ErrNotFound {
				err = nil
			}
		} else {
			err = t.Txn.Insert(table, r)
		}
		if err != nil {
			panic(fmt.Sprintf("fsm: %s %v: %v", table, k, err))
		}
	}
}

// Commit writes the held records, then commits.
func (t *Txn) Commit() {
	tables := make([]string, 0, len(t.held))
	for table := range t.held {
		tables = append(tables, table)
	}
	sort.Strings(tables)
	for _, table := range tables {
		t.flush(table)
	}
	t.flushOwners()
	t.flushExpiry()
	t.flushPages()
	t.flushArchive()
	t.Txn.Commit()
}

// Abort drops the held records with the rest of the transaction.
func (t *Txn) Abort() {
	t.held = nil
	t.expiries = nil
	t.pages.reset()
	t.apages.reset()
	t.absent = nil
	t.Txn.Abort()
}

// LatestIndex is the raft index of the last command applied to the store.
func (t *Txn) LatestIndex() uint64 { return t.counter("index") }

func (t *Txn) counter(key string) uint64 {
	if o, ok := t.heldRecord(tableMeta, key); ok { // a sequence this batch already moved
		return o.(*meta).Value
	}
	raw, err := t.Txn.First(tableMeta, "id", key)
	if err != nil || raw == nil {
		return 0
	}
	return raw.(*meta).Value
}

func (t *Txn) setCounter(key string, v uint64) {
	if err := t.Insert(tableMeta, &meta{Key: key, Value: v}); err != nil {
		panic(fmt.Sprintf("fsm: insert meta: %v", err))
	}
}

// nextSeq returns the next value of a named sequence stored in the state, so
// ids are minted from replicated state and never from one node's memory.
func (t *Txn) nextSeq(key string) uint64 {
	v := t.counter(key) + 1
	t.setCounter(key, v)
	return v
}

func (t *Txn) mustInsert(table string, obj any) {
	if err := t.Insert(table, obj); err != nil {
		panic(fmt.Sprintf("fsm: insert %s: %v", table, err))
	}
}

// Counts returns the number of records in each table. It walks every
// record, so it is meant for operators and load tools, not hot paths.
func (s *StateStore) Counts() map[string]int { return s.Read().countsOf() }

func (t *Txn) countsOf() map[string]int {
	out := make(map[string]int, len(tableSchemas))
	// Archived instances count as instances, their tasks as tasks.
	t.eachArchived("", func(rec *archivedInstance) bool {
		out[tableInstances]++
		out[tableTasks] += rec.Tasks
		return true
	})
	for name := range tableSchemas {
		if derivedTables[name] { // blocks of other tables' records
			continue
		}
		it, err := t.Get(name, "id")
		if err != nil {
			continue
		}
		n := 0
		for o := it.Next(); o != nil; o = it.Next() {
			n++
		}
		out[name] += n
	}
	return out
}
