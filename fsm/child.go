package fsm

import (
	"time"

	"github.com/lockstep-io/lockstep/hcl"
)

// ParentRef links a child instance to the step of its parent that waits
// for it.
type ParentRef struct {
	InstanceID string `json:"instance_id"`
	Step       string `json:"step"`
}

// startChild starts the child instance of a workflow step, in the same
// command. Its id is derived from the parent, the step and the parent's
// count of children, so it is the same on every node and in a replay, and
// never reused.
func (f *FSM) startChild(tx *Txn, inst *Instance, s *hcl.Step, st *StepState, now time.Time) {
	input, err := hcl.Eval(s.Input, scopeOf(inst, now))
	if err != nil {
		endStep(st, StepFailed, &TaskError{Type: "input_error", Message: err.Error()}, now)
		return
	}
	inst.ChildSeq++
	id := inst.ID + ":" + s.Name + ":" + itoa(inst.ChildSeq)
	child, e := f.createInstance(tx, id, s.ChildWorkflow, s.ChildVersion, input, now, &ParentRef{InstanceID: inst.ID, Step: s.Name}, "")
	if e != nil {
		endStep(st, StepFailed, &TaskError{Type: "child_start_failed", Message: e.Message}, now)
		return
	}
	st.ChildID = id
	st.Status = StepRunning
	st.ScheduledAt, st.StartedAt = now, now
	if child.Terminal() { // it ended as it started (a fail step, say)
		settleChildStep(st, child, now)
	}
}

// settleChildStep ends a parent's step from its child's end: the child's
// output when it completed, a failure naming how it ended otherwise.
func settleChildStep(st *StepState, child *Instance, now time.Time) {
	if child.Status == InstanceCompleted {
		st.Output = child.Output
		endStep(st, StepSucceeded, nil, now)
		return
	}
	msg := "child instance " + child.ID + " " + child.Status
	if child.Error != nil {
		msg += ": " + child.Error.Message
	}
	endStep(st, StepFailed, &TaskError{Type: "child_" + child.Status, Message: msg}, now)
}

// childEnded moves the parent of an instance that just ended, when the
// parent's step is still waiting for that child (a parent ending or
// cancelling its children settles its own steps).
func (f *FSM) childEnded(tx *Txn, child *Instance, now time.Time) {
	parent := tx.Instance(child.Parent.InstanceID)
	if parent == nil || parent.Terminal() {
		return
	}
	st := parent.Steps[child.Parent.Step]
	if st == nil || st.ChildID != child.ID || stepEnded(st.Status) {
		return
	}
	wf, err := f.workflow(tx.WorkflowVersion(parent.Workflow, parent.Version))
	if err != nil {
		return
	}
	pc := parent.clone()
	pst := pc.Steps[child.Parent.Step]
	if pc.Status == InstanceCancelling {
		if child.Status == InstanceCompleted {
			pst.Output = child.Output
			endStep(pst, StepSucceeded, nil, now) // it did its work: it will be undone
		} else {
			endStep(pst, StepCancelled, nil, now)
		}
		f.compensateNext(tx, pc, wf, now)
		f.saveInstance(tx, pc, now)
		return
	}
	settleChildStep(pst, child, now)
	f.advance(tx, pc, wf, now)
}

// stopChild ends (terminates) or cancels a running child because its
// parent asked; the parent settles its own step, so the child's end does
// not call back.
func (f *FSM) stopChild(tx *Txn, id string, cancel bool, reason string, now time.Time) *Instance {
	child := tx.Instance(id)
	if child == nil || child.Terminal() {
		return child
	}
	cc := child.clone()
	cc.quiet = true
	// The cause is the parent's, so the child's history says so: a replay
	// of the child reads it there.
	if cancel {
		cc.note(Event{Type: "parent_cancel", Detail: reason})
	} else {
		cc.note(Event{Type: "parent_terminate", Detail: reason})
	}
	if cancel && cc.Status != InstanceCancelling {
		if wf, err := f.workflow(tx.WorkflowVersion(cc.Workflow, cc.Version)); err == nil {
			f.cancelInstance(tx, cc, wf, reason, now)
		}
	} else if !cancel {
		f.endInstance(tx, cc, InstanceTerminated, &InstanceError{Type: "terminated", Message: reason}, now)
	}
	f.saveInstance(tx, cc, now)
	return cc
}
