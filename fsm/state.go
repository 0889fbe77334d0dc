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
	// watches are the readers waiting for one instance to change, by id
	// (WatchInstance); a commit wakes only those of the instances it wrote.
	watches map[string]map[chan struct{}]struct{}
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
	return &StateStore{db: db.Snapshot(), changed: make(chan struct{})}
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
	ch := make(chan struct{})
	s.mu.Lock()
	if s.watches == nil {
		s.watches = map[string]map[chan struct{}]struct{}{}
	}
	set := s.watches[id]
	if set == nil {
		set = map[chan struct{}]struct{}{}
		s.watches[id] = set
	}
	set[ch] = struct{}{}
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
// the commit wrote (all of them when all is set: a restore).
func (s *StateStore) notify(touched map[string]struct{}, all bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.changed)
	s.changed = make(chan struct{})
	wake := func(id string) {
		for ch := range s.watches[id] {
			close(ch)
		}
		delete(s.watches, id)
	}
	if all {
		for id := range s.watches {
			wake(id)
		}
		return
	}
	for id := range touched {
		wake(id)
	}
}

// Txn is a transaction on the store; read-only unless made by the FSM.
type Txn struct {
	*memdb.Txn
	// Index is the raft index being applied (0 for reads).
	Index uint64
	// touched holds the ids of the instances written or deleted, whose
	// watchers the commit wakes.
	touched map[string]struct{}
}

// touch notes that an instance was written or deleted.
func (t *Txn) touch(id string) {
	if t.touched == nil {
		t.touched = map[string]struct{}{}
	}
	t.touched[id] = struct{}{}
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
