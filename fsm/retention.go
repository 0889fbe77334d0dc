package fsm

import (
	"fmt"
	"time"

	"github.com/hashicorp/go-memdb"
)

func init() { registerCommand(PurgeInstancesType, (*FSM).applyPurge) }

// PurgeInstancesRequest deletes ended instances whose retention has passed
// by the command's time (the leader's clock when it proposed), with their
// tasks, timers, signals and history, oldest first, at most Max of them;
// and up to Max idempotency keys older than IdempotencyWindow.
// Every node deletes the same ones: the choice depends only on the state
// and the command.
type PurgeInstancesRequest struct {
	Header
	Max int `json:"max"`
}

// PurgeInstancesResponse lists the instances deleted, and counts the
// idempotency keys forgotten (older than IdempotencyWindow).
type PurgeInstancesResponse struct {
	Purged []string `json:"purged"`
	Keys   int      `json:"keys,omitempty"`
}

// MaxPurge bounds one PurgeInstances command, so that one raft entry's
// apply stays short.
const MaxPurge = 256

func (f *FSM) applyPurge(tx *Txn, body []byte) any {
	var req PurgeInstancesRequest
	mustDecode(PurgeInstancesType, body, &req)
	limit := req.Max
	if limit <= 0 || limit > MaxPurge {
		limit = MaxPurge
	}
	resp := &PurgeInstancesResponse{Purged: []string{}}
	for _, inst := range tx.Expired(req.Time, limit) {
		tx.purge(inst)
		resp.Purged = append(resp.Purged, inst.ID)
	}
	for _, rec := range tx.expiredKeys(req.Time, limit) {
		if err := tx.Delete(tableIdempotency, rec); err != nil {
			panic(fmt.Sprintf("fsm: purge idempotency key: %v", err))
		}
		resp.Keys++
	}
	return resp
}

// expiredKeys lists up to limit idempotency records older than the window
// at now, oldest (by raft index, the order they were written) first.
func (t *Txn) expiredKeys(now time.Time, limit int) []*idempotencyRecord {
	var out []*idempotencyRecord
	it, err := t.Get(tableIdempotency, "created_prefix")
	if err != nil {
		return out
	}
	for raw := it.Next(); raw != nil && len(out) < limit; raw = it.Next() {
		rec := raw.(*idempotencyRecord)
		if rec.CreatedAt.Add(IdempotencyWindow).After(now) {
			break
		}
		out = append(out, rec)
	}
	return out
}

// NextPurge is when the next ended instance expires or the oldest
// idempotency key leaves its window, whichever is first (zero when neither
// exists).
func (t *Txn) NextPurge() time.Time {
	next := t.NextExpiry()
	if raw, err := t.First(tableIdempotency, "created_prefix"); err == nil && raw != nil {
		k := raw.(*idempotencyRecord).CreatedAt.Add(IdempotencyWindow)
		if next.IsZero() || k.Before(next) {
			next = k
		}
	}
	return next
}

// purge deletes an instance and everything recorded for it.
func (t *Txn) purge(inst *Instance) {
	del := func(table string, obj any) {
		if err := t.Delete(table, obj); err != nil {
			panic(fmt.Sprintf("fsm: purge %s of %s: %v", table, inst.ID, err))
		}
	}
	var doomed []any
	collect := func(it memdb.ResultIterator, err error, keep func(any) bool) {
		if err != nil {
			panic(fmt.Sprintf("fsm: purge %s: %v", inst.ID, err))
		}
		for raw := it.Next(); raw != nil; raw = it.Next() {
			if keep(raw) {
				doomed = append(doomed, raw)
			}
		}
	}
	if rec := t.archivedRecord(inst.ID); rec != nil {
		t.dropArchived(rec, inst.TaskIDs)
	}
	for _, id := range inst.TaskIDs {
		if task := t.liveTask(id); task != nil {
			del(tableTasks, task)
		}
	}
	it, err := t.Get(tableTimers, "instance", inst.ID)
	collect(it, err, func(any) bool { return true })
	for _, x := range doomed {
		del(tableTimers, x)
	}
	for _, s := range t.Signals(inst.ID) {
		del(tableSignals, s)
	}
	for _, c := range t.historyChunks(inst.ID, 1) {
		del(tableHistory, c)
	}
	t.removeInstanceRef(inst.Workflow, inst.ID)
	del(tableInstances, inst)
	t.touch(inst.ID, true)
}
