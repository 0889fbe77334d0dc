package fsm

import (
	"fmt"
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
}

// StateStore holds the replicated state in go-memdb. Writes come only from
// the FSM; anyone may read through a snapshot transaction.
type StateStore struct {
	db *memdb.MemDB

	mu      sync.Mutex
	changed chan struct{}
}

// NewStateStore returns an empty store.
func NewStateStore() *StateStore {
	db, err := memdb.NewMemDB(&memdb.DBSchema{Tables: tableSchemas})
	if err != nil {
		panic(fmt.Sprintf("fsm: invalid schema: %v", err))
	}
	// Nothing watches go-memdb's per-record channels (readers wait on
	// Changed), so the store is a non-primary copy, which does not track
	// and close a channel for every radix node each write touches.
	return &StateStore{db: db.Snapshot(), changed: make(chan struct{})}
}

// Changed returns a channel that is closed at the next change of the state
// (an applied command or a restore). Blocking readers and the leader's
// dispatcher wait on it.
func (s *StateStore) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func (s *StateStore) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// Txn is a transaction on the store; read-only unless made by the FSM.
type Txn struct {
	*memdb.Txn
	// Index is the raft index being applied (0 for reads).
	Index uint64
}

// Read returns a consistent read-only view of the state.
func (s *StateStore) Read() *Txn { return &Txn{Txn: s.db.Txn(false)} }

func (s *StateStore) write(index uint64) *Txn { return &Txn{Txn: s.db.Txn(true), Index: index} }

// LatestIndex is the raft index of the last command applied to the store.
func (t *Txn) LatestIndex() uint64 { return t.counter("index") }

func (t *Txn) counter(key string) uint64 {
	raw, err := t.First(tableMeta, "id", key)
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
func (s *StateStore) Counts() map[string]int {
	txn := s.Read()
	out := make(map[string]int, len(tableSchemas))
	for name := range tableSchemas {
		it, err := txn.Get(name, "id")
		if err != nil {
			continue
		}
		n := 0
		for o := it.Next(); o != nil; o = it.Next() {
			n++
		}
		out[name] = n
	}
	return out
}
