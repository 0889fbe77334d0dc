// Package fsm is Lockstep's replicated state machine: the commands of the
// raft log, the state store they change, the workflow semantics, and
// snapshots. It is pure: Apply never reads the clock, randomness, the
// environment or the network, and it never imports cluster, engine or
// httpapi.
package fsm

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/lockstep-io/lockstep/hcl"
)

// FSM implements raft.FSM over a StateStore.
type FSM struct {
	logger hclog.Logger

	mu    sync.RWMutex
	state *StateStore

	// compiled caches parsed workflow versions. It is derived from the
	// (immutable) sources in the state, so it never needs invalidating.
	compiled sync.Map // workflowKey -> *hcl.Workflow

	// stopping is set by AbortSnapshots: snapshots being written stop.
	stopping atomic.Bool
}

// ErrSnapshotAborted is what a snapshot's Persist returns when the node
// began shutting down while it was written.
var ErrSnapshotAborted = errors.New("fsm: snapshot abandoned: the node is shutting down")

// AbortSnapshots makes the snapshots being written (and any begun after)
// stop and cancel their sink. The cluster calls it before stopping raft,
// which otherwise waits for a snapshot in progress: with a million
// instances retained that is minutes of a shutdown. The log the snapshot
// would have compacted stays, and the next start replays it.
func (f *FSM) AbortSnapshots() { f.stopping.Store(true) }

// New returns an FSM with an empty state.
func New(logger hclog.Logger) *FSM {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &FSM{logger: logger.Named("fsm"), state: NewStateStore()}
}

// State returns the current state store. A restore replaces it, so callers
// fetch it anew for each read rather than keeping it.
func (f *FSM) State() *StateStore {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state
}

// Apply runs one committed log entry. Business errors come back as *Error
// values; a corrupt or unknown command panics, because carrying on would
// let this node diverge from the others.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand || len(l.Data) == 0 {
		return nil
	}
	state := f.State()
	tx := state.write(l.Index)
	res := f.applyOne(tx, l)
	tx.setCounter("index", l.Index)
	tx.Commit()
	state.notify(tx.touched, false)
	return res
}

// ApplyBatch applies a batch of committed entries in one state-store
// transaction (raft.BatchingFSM): one commit and one wake-up of readers per
// batch rather than per command. Each command still sees the changes of
// the ones before it, so the result equals applying them one by one.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	state := f.State()
	tx := state.write(0)
	var last uint64
	for i, l := range logs {
		if l.Type != raft.LogCommand || len(l.Data) == 0 {
			continue
		}
		tx.Index = l.Index
		out[i] = f.applyOne(tx, l)
		last = l.Index
	}
	if last == 0 {
		tx.Abort()
		return out
	}
	tx.setCounter("index", last)
	tx.Commit()
	state.notify(tx.touched, false)
	return out
}

// applyOne runs one command in tx. Handlers validate before they write,
// so a refused command leaves tx as it found it and batches stay exact.
func (f *FSM) applyOne(tx *Txn, l *raft.Log) any {
	t := MessageType(l.Data[0])
	ignoreUnknown := t&IgnoreUnknownTypeFlag != 0
	fn, ok := commands[t&^IgnoreUnknownTypeFlag]
	if !ok {
		if ignoreUnknown {
			f.logger.Warn("ignoring unknown command", "type", uint8(t), "index", l.Index)
			return nil
		}
		panic(fmt.Sprintf("fsm: unknown command type %d at index %d", uint8(t), l.Index))
	}
	return fn(f, tx, l.Data[1:])
}

var _ raft.BatchingFSM = (*FSM)(nil)

// Snapshot returns a cheap point-in-time view; Persist writes it out.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &snapshot{tx: f.State().Read(), stop: &f.stopping}, nil
}

// Restore replaces the state with the one read from r, then wakes every
// reader blocked on the old state.
func (f *FSM) Restore(r io.ReadCloser) error {
	defer r.Close()
	fresh, err := readSnapshot(r)
	if err != nil {
		return err
	}
	f.mu.Lock()
	old := f.state
	f.state = fresh
	f.mu.Unlock()
	old.notify(nil, true)
	return nil
}

// workflow returns the compiled form of a stored workflow version.
func (f *FSM) workflow(wv *WorkflowVersion) (*hcl.Workflow, error) {
	if wf := wv.compiled.Load(); wf != nil {
		return wf, nil
	}
	key := wv.key()
	if wf, ok := f.compiled.Load(key); ok {
		wv.compiled.Store(wf.(*hcl.Workflow))
		return wf.(*hcl.Workflow), nil
	}
	wf, diags := hcl.Parse(wv.Name+".hcl", []byte(wv.Source))
	if diags.HasErrors() {
		return nil, fmt.Errorf("stored workflow %s does not compile: %s", key, diags.Error())
	}
	f.compiled.Store(key, wf)
	wv.compiled.Store(wf)
	return wf, nil
}

// Workflow returns the compiled form of a stored workflow version, for
// readers outside the FSM (the API shows graphs, the engine reads queues).
func (f *FSM) Workflow(wv *WorkflowVersion) (*hcl.Workflow, error) { return f.workflow(wv) }
