package fsm

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// instanceTransitions is the one table of the instance states an instance
// may move between. Anything else is refused with a conflict that names
// both states.
var instanceTransitions = map[string][]string{
	InstanceRunning:    {InstanceCompleted, InstanceFailed, InstanceTimedOut, InstanceTerminated, InstanceCancelling, InstanceSuspended},
	InstanceSuspended:  {InstanceRunning, InstanceTerminated, InstanceCancelling},
	InstanceCancelling: {InstanceCancelled, InstanceFailed, InstanceTerminated},
	InstanceFailed:     {InstanceRunning}, // retry
	InstanceTimedOut:   {InstanceRunning}, // retry
}

// checkTransition refuses a move the table does not allow.
func checkTransition(inst *Instance, to string) *Error {
	for _, s := range instanceTransitions[inst.Status] {
		if s == to {
			return nil
		}
	}
	allowed := instanceTransitions[inst.Status]
	hint := "it has ended"
	if len(allowed) > 0 {
		hint = "from " + inst.Status + " it can only become " + strings.Join(allowed, ", ")
	}
	return errorf(CodeConflict, "instance %q is %s and cannot become %s (%s)", inst.ID, inst.Status, to, hint)
}

// endInstance ends a running instance in a terminal state and cancels every
// step that had not ended, with its tasks, so no worker is handed work for
// an instance that is over.
func (f *FSM) endInstance(tx *Txn, inst *Instance, status string, cause *InstanceError, now time.Time) {
	inst.Status = status
	inst.Error = cause
	inst.EndedAt = now
	inst.UpdatedAt, inst.ModifyIndex = now, tx.Index
	names := make([]string, 0, len(inst.Steps))
	for name := range inst.Steps {
		names = append(names, name)
	}
	sort.Strings(names) // cancel in a fixed order: Apply never depends on map order
	for _, name := range names {
		st := inst.Steps[name]
		switch st.Status {
		case StepWaiting, StepScheduled, StepRunning, StepRetryWait, StepSleeping, StepWaitingSignal:
			if st.TaskID != "" {
				tx.cancelTask(st.TaskID, now)
			}
			if st.ChildID != "" {
				f.stopChild(tx, st.ChildID, false, "its parent "+inst.ID+" ended "+status, now)
			}
			cancelElements(tx, st, now)
			endStep(st, StepCancelled, nil, now)
		case StepCompensating:
			// Ended mid-compensation (terminated): the undo stops here.
			tx.cancelTask(st.CompensationTaskID, now)
		}
	}
}

// failInstance ends the instance as failed because of one step.
func (f *FSM) failInstance(tx *Txn, inst *Instance, step string, cause *TaskError, now time.Time) {
	e := &InstanceError{Step: step, Type: "step_failed", Message: "step " + step + " failed"}
	if cause != nil {
		e.Type, e.Message = cause.Type, "step "+step+" failed: "+cause.Message
	}
	f.endInstance(tx, inst, InstanceFailed, e, now)
}

// timeOut ends an instance that outlived its workflow's timeout.
func (f *FSM) timeOut(tx *Txn, inst *Instance, tm *Timer, now time.Time) {
	ic := inst.clone()
	ic.note(Event{Type: "timer_fired", Detail: tm.Kind})
	f.endInstance(tx, ic, InstanceTimedOut, &InstanceError{Type: "timeout",
		Message: fmt.Sprintf("the instance did not finish by %s (the workflow's timeout)", tm.Due.UTC().Format(time.RFC3339))}, now)
	f.saveInstance(tx, ic, now)
}

func init() {
	registerCommand(TerminateInstanceType, (*FSM).applyTerminate)
}

// TerminateInstanceRequest ends an instance at once, without compensation.
type TerminateInstanceRequest struct {
	Header
	ID     string `json:"id"`
	Reason string `json:"reason,omitempty"`
}

// InstanceStatusResponse names an instance and the state it is now in.
type InstanceStatusResponse struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

func (f *FSM) applyTerminate(tx *Txn, body []byte) any {
	var req TerminateInstanceRequest
	mustDecode(TerminateInstanceType, body, &req)
	inst := tx.Instance(req.ID)
	if inst == nil {
		return errorf(CodeNotFound, "instance %q not found", req.ID)
	}
	if e := checkTransition(inst, InstanceTerminated); e != nil {
		return e
	}
	reason := req.Reason
	if reason == "" {
		reason = "terminated by an operator"
	}
	ic := inst.clone()
	ic.note(Event{Type: "operator_terminate", Detail: reason})
	f.endInstance(tx, ic, InstanceTerminated, &InstanceError{Type: "terminated", Message: reason}, req.Time)
	f.saveInstance(tx, ic, req.Time)
	return &InstanceStatusResponse{ID: ic.ID, Status: ic.Status}
}
