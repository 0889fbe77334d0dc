package fsm

import (
	"sort"
	"strconv"
	"time"

	"github.com/lockstep-io/lockstep/hcl"
)

func init() { registerCommand(CancelInstanceType, (*FSM).applyCancel) }

// CancelInstanceRequest cancels an instance: it stops scheduling, asks
// in-flight attempts to stop, then undoes every succeeded step that has a
// compensate block, in reverse order of completion, and ends cancelled.
type CancelInstanceRequest struct {
	Header
	ID     string `json:"id"`
	Reason string `json:"reason,omitempty"`
}

func (f *FSM) applyCancel(tx *Txn, body []byte) any {
	var req CancelInstanceRequest
	mustDecode(CancelInstanceType, body, &req)
	inst := tx.Instance(req.ID)
	if inst == nil {
		return errorf(CodeNotFound, "instance %q not found", req.ID)
	}
	if e := checkTransition(inst, InstanceCancelling); e != nil {
		return e
	}
	wf, err := f.workflow(tx.WorkflowVersion(inst.Workflow, inst.Version))
	if err != nil {
		return errorf(CodeInvalid, "%v", err)
	}
	reason := req.Reason
	if reason == "" {
		reason = "cancelled by an operator"
	}
	ic := inst.clone()
	ic.note(Event{Type: "operator_cancel", Detail: reason})
	f.cancelInstance(tx, ic, wf, reason, req.Time)
	f.saveInstance(tx, ic, req.Time)
	return &InstanceStatusResponse{ID: ic.ID, Status: ic.Status}
}

// cancelInstance moves an instance (a clone, saved by the caller) to
// cancelling: what is not in flight is cancelled, running children are
// cancelled too, and compensation starts if nothing is in flight.
func (f *FSM) cancelInstance(tx *Txn, ic *Instance, wf *hcl.Workflow, reason string, now time.Time) {
	ic.Status = InstanceCancelling
	ic.CancelReason = reason
	ic.UpdatedAt, ic.ModifyIndex = now, tx.Index
	names := make([]string, 0, len(ic.Steps))
	for name := range ic.Steps {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		st := ic.Steps[name]
		switch st.Status {
		case StepWaiting, StepScheduled, StepRetryWait, StepSleeping, StepWaitingSignal:
			if st.TaskID != "" {
				tx.cancelTask(st.TaskID, now)
			}
			cancelElements(tx, st, now)
			endStep(st, StepCancelled, nil, now)
		case StepRunning:
			if st.ChildID != "" {
				// A child is cancelled too; the step ends with it.
				if child := f.stopChild(tx, st.ChildID, true, "its parent "+ic.ID+" was cancelled", now); child != nil && child.Terminal() {
					if child.Status == InstanceCompleted {
						st.Output = child.Output
						endStep(st, StepSucceeded, nil, now)
					} else {
						endStep(st, StepCancelled, nil, now)
					}
				}
				continue
			}
			// The attempt in flight may finish (its heartbeats now answer
			// cancel_requested); elements not yet running are cancelled.
			for _, e := range st.Elements {
				if e.Status == StepWaiting || e.Status == StepScheduled || e.Status == StepRetryWait {
					if e.TaskID != "" {
						tx.cancelTask(e.TaskID, now)
					}
					e.Status = StepCancelled
				}
			}
		}
	}
	f.compensateNext(tx, ic, wf, now)
}

// compensateNext moves a cancelling instance on: while an attempt is in
// flight or a compensation runs it waits; otherwise it starts the
// compensation of the succeeded step that completed last, or, with none
// left, ends the instance cancelled.
func (f *FSM) compensateNext(tx *Txn, inst *Instance, wf *hcl.Workflow, now time.Time) {
	if inst.Status != InstanceCancelling {
		return
	}
	// A step that succeeded in this very command has no completion number
	// yet (saveInstance stamps it later): it completed last.
	for _, s := range wf.Steps {
		if st := inst.Steps[s.Name]; st.Status == StepSucceeded && st.CompletedSeq == 0 {
			inst.CompletionSeq++
			st.CompletedSeq = inst.CompletionSeq
		}
	}
	for _, st := range inst.Steps {
		if st.Status == StepRunning || st.Status == StepCompensating {
			return
		}
	}
	var pick *hcl.Step
	var last uint64
	for _, s := range wf.Steps {
		st := inst.Steps[s.Name]
		if st.Status == StepSucceeded && s.Compensate != nil && st.CompletedSeq > last {
			pick, last = s, st.CompletedSeq
		}
	}
	if pick == nil {
		inst.Status = InstanceCancelled
		inst.Error = &InstanceError{Type: "cancelled", Message: inst.CancelReason}
		inst.EndedAt = now
		inst.UpdatedAt, inst.ModifyIndex = now, tx.Index
		return
	}
	st := inst.Steps[pick.Name]
	input, err := hcl.Eval(pick.Compensate.Input, scopeOf(inst, now))
	if err != nil {
		f.endInstance(tx, inst, InstanceFailed, &InstanceError{Step: pick.Name, Type: "compensation_failed",
			Message: "compensation of " + pick.Name + " could not start: " + err.Error()}, now)
		return
	}
	task := newCompensationTask(tx, inst, pick, input, now)
	st.Status = StepCompensating
	st.CompensationTaskID = task.ID
}

// settleCancelling records the end of an attempt that was in flight when
// its instance was cancelled, or of a compensation, and moves the
// cancellation on.
func (f *FSM) settleCancelling(tx *Txn, c *Task, inst *Instance, wf *hcl.Workflow, output []byte, taskErr *TaskError, now time.Time) {
	st := inst.Steps[c.Step]
	switch {
	case c.Compensation && taskErr != nil:
		inst.note(Event{Type: "compensation_failed", Step: c.Step, TaskID: c.ID, Attempt: c.Attempt, Error: taskErr})
		f.endInstance(tx, inst, InstanceFailed, &InstanceError{Step: c.Step, Type: "compensation_failed",
			Message: "compensation of " + c.Step + " failed: " + taskErr.Type + ": " + taskErr.Message}, now)
		return
	case c.Compensation:
		st.Status = StepCompensated
	case c.Element != nil:
		e := st.Elements[*c.Element]
		if taskErr != nil {
			e.Status, e.Error = StepFailed, taskErr
		} else {
			e.Status, e.Output = StepSucceeded, output
		}
		if elementsStatus(st) != StepRunning {
			// Only a step whose every element succeeded is undone whole;
			// one cut short by the cancellation is not.
			all := true
			for _, x := range st.Elements {
				all = all && x.Status == StepSucceeded
			}
			if all {
				st.Output = aggregate(st)
				endStep(st, StepSucceeded, nil, now)
			} else {
				endStep(st, StepCancelled, nil, now)
			}
		}
	case taskErr != nil && (taskErr.Type == "timeout" || taskErr.Type == "heartbeat_timeout"):
		// The attempt's outcome is unknown: it is not undone.
		endStep(st, StepCancelled, taskErr, now)
	case taskErr != nil:
		endStep(st, StepFailed, taskErr, now)
	default:
		st.Output = output
		endStep(st, StepSucceeded, nil, now)
		// Its compensation may start in this same command, so the success
		// is noted: the state alone would go from running to compensating.
		inst.note(Event{Type: "step_succeeded", Step: c.Step, TaskID: c.ID, Attempt: c.Attempt, Data: output, Detail: "finished while cancelling"})
	}
	f.compensateNext(tx, inst, wf, now)
}

func newCompensationTask(tx *Txn, inst *Instance, s *hcl.Step, input []byte, now time.Time) *Task {
	seq := tx.nextSeq("task")
	t := &Task{
		Seq:            seq,
		InstanceID:     inst.ID,
		Step:           s.Name,
		Activity:       s.Compensate.Activity,
		Queue:          s.Compensate.Queue,
		Priority:       s.Priority,
		Compensation:   true,
		IdempotencyKey: inst.ID + "/" + s.Name + "/compensate",
		Input:          input,
		Status:         TaskPending,
		Timeout:        s.Compensate.Timeout,
		ReadyAt:        now,
		CreatedAt:      now,
		CreateIndex:    tx.Index,
		ModifyIndex:    tx.Index,
	}
	t.ID, t.key = newTaskKey(seq)
	tx.mustInsert(tableTasks, t)
	inst.TaskIDs = append(inst.TaskIDs, t.ID)
	return t
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }
