package fsm

import "math"

func init() {
	registerCommand(SuspendInstanceType, (*FSM).applySuspend)
	registerCommand(ResumeInstanceType, (*FSM).applyResume)
}

// SuspendInstanceRequest pauses an instance: no new tasks are dispatched
// and no timers take effect; attempts in flight may finish and are
// recorded. ResumeInstanceRequest undoes it; what came due meanwhile
// takes effect then.
type SuspendInstanceRequest struct {
	Header
	ID     string `json:"id"`
	Reason string `json:"reason,omitempty"`
}

func (f *FSM) applySuspend(tx *Txn, body []byte) any {
	var req SuspendInstanceRequest
	mustDecode(SuspendInstanceType, body, &req)
	inst := tx.Instance(req.ID)
	if inst == nil {
		return errorf(CodeNotFound, "instance %q not found", req.ID)
	}
	if e := checkTransition(inst, InstanceSuspended); e != nil {
		return e
	}
	ic := inst.clone()
	ic.note(Event{Type: "operator_suspend", Detail: req.Reason})
	ic.Status = InstanceSuspended
	ic.UpdatedAt, ic.ModifyIndex = req.Time, tx.Index
	f.saveInstance(tx, ic, req.Time)
	return &InstanceStatusResponse{ID: ic.ID, Status: ic.Status}
}

func (f *FSM) applyResume(tx *Txn, body []byte) any {
	var req SuspendInstanceRequest
	mustDecode(ResumeInstanceType, body, &req)
	inst := tx.Instance(req.ID)
	if inst == nil {
		return errorf(CodeNotFound, "instance %q not found", req.ID)
	}
	if inst.Status != InstanceSuspended {
		return errorf(CodeConflict, "instance %q is %s and cannot be resumed (only a suspended instance can)", req.ID, inst.Status)
	}
	wf, err := f.workflow(tx.WorkflowVersion(inst.Workflow, inst.Version))
	if err != nil {
		return errorf(CodeInvalid, "%v", err)
	}
	ic := inst.clone()
	ic.note(Event{Type: "operator_resume", Detail: req.Reason})
	ic.Status = InstanceRunning
	// Results recorded while suspended move the graph on now.
	f.advance(tx, ic, wf, req.Time)
	// Timers that came due while suspended take effect now, in due order.
	for _, tm := range tx.deferredTimers(req.ID) {
		if err := tx.Delete(tableTimers, tm); err != nil {
			panic(err)
		}
		if cur := tx.Instance(req.ID); cur != nil && !cur.Terminal() {
			f.fireTimer(tx, cur, tm, req.Time)
		}
	}
	return &InstanceStatusResponse{ID: req.ID, Status: tx.Instance(req.ID).Status}
}

// deferKey parks a timer out of the due index: it came due while its
// instance was suspended and fires at resume.
const deferKey = math.MaxUint64

// deferTimer keeps a due timer of a suspended instance for its resume.
func (tx *Txn) deferTimer(tm *Timer) {
	c := *tm
	c.Deferred = true
	c.DueKey = deferKey
	tx.mustInsert(tableTimers, &c)
}

// deferredTimers lists an instance's deferred timers, earliest due first.
func (tx *Txn) deferredTimers(instance string) []*Timer {
	var out []*Timer
	it, err := tx.Get(tableTimers, "instance", instance)
	if err != nil {
		return nil
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if tm := raw.(*Timer); tm.Deferred {
			out = append(out, tm)
		}
	}
	sortTimers(out)
	return out
}

func sortTimers(ts []*Timer) {
	for i := 1; i < len(ts); i++ {
		for j := i; j > 0 && (ts[j].Due.Before(ts[j-1].Due) || (ts[j].Due.Equal(ts[j-1].Due) && ts[j].ID < ts[j-1].ID)); j-- {
			ts[j], ts[j-1] = ts[j-1], ts[j]
		}
	}
}
