package fsm

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/lockstep-io/lockstep/hcl"
)

func init() {
	registerCommand(RetryInstanceType, (*FSM).applyRetry)
	registerCommand(StepOverrideType, (*FSM).applyOverride)
}

// RetryInstanceRequest runs a failed (or timed out) instance again: its
// succeeded steps keep their results, the rest start over. With Step, that
// step and everything downstream of it run again (the instance may then
// also be running).
type RetryInstanceRequest struct {
	Header
	ID     string `json:"id"`
	Step   string `json:"step,omitempty"`
	Reason string `json:"reason,omitempty"`
}

func (f *FSM) applyRetry(tx *Txn, body []byte) any {
	var req RetryInstanceRequest
	mustDecode(RetryInstanceType, body, &req)
	inst, wf, e := f.instanceAndWorkflow(tx, req.ID)
	if e != nil {
		return e
	}
	switch inst.Status {
	case InstanceFailed, InstanceTimedOut:
	case InstanceRunning:
		if req.Step == "" {
			return errorf(CodeConflict, "instance %q is running; retry a running instance one step at a time ({\"step\": NAME})", req.ID)
		}
	default:
		return errorf(CodeConflict, "instance %q is %s and cannot be retried (only a failed or timed out one can)", req.ID, inst.Status)
	}
	if req.Step != "" && wf.Step(req.Step) == nil {
		return errorf(CodeNotFound, "workflow %s has no step %q", wf.Name, req.Step)
	}
	ic := inst.clone()
	ic.note(Event{Type: "operator_retry", Step: req.Step, Detail: req.Reason})
	if req.Step != "" {
		if st := ic.Steps[req.Step]; !stepEnded(st.Status) {
			return errorf(CodeConflict, "step %q is %s; only a step that has ended can run again", req.Step, st.Status)
		}
		resetSteps(tx, ic, wf, downstream(wf, req.Step), req.Time)
	} else {
		var again []string
		for _, s := range wf.Steps {
			if ic.Steps[s.Name].Status != StepSucceeded {
				again = append(again, s.Name)
			}
		}
		resetSteps(tx, ic, wf, again, req.Time)
	}
	ic.Status, ic.Error, ic.EndedAt, ic.Output = InstanceRunning, nil, time.Time{}, nil
	f.advance(tx, ic, wf, req.Time)
	return &InstanceStatusResponse{ID: ic.ID, Status: tx.Instance(ic.ID).Status}
}

// StepOverrideRequest is an operator's decision about one step of a
// running instance: complete it with an output, skip it, fail it (a final
// failure, which an error path can handle), or run it again.
type StepOverrideRequest struct {
	Header
	ID     string          `json:"id"`
	Step   string          `json:"step"`
	Action string          `json:"action"`
	Output json.RawMessage `json:"output,omitempty"`
	Error  *TaskError      `json:"error,omitempty"`
	Reason string          `json:"reason,omitempty"`
}

// Override actions.
const (
	OverrideComplete = "complete"
	OverrideSkip     = "skip"
	OverrideFail     = "fail"
	OverrideRerun    = "rerun"
)

func (f *FSM) applyOverride(tx *Txn, body []byte) any {
	var req StepOverrideRequest
	mustDecode(StepOverrideType, body, &req)
	inst, wf, e := f.instanceAndWorkflow(tx, req.ID)
	if e != nil {
		return e
	}
	if inst.Status != InstanceRunning {
		return errorf(CodeConflict, "instance %q is %s; steps can be overridden only while it runs", req.ID, inst.Status)
	}
	if wf.Step(req.Step) == nil {
		return errorf(CodeNotFound, "workflow %s has no step %q", wf.Name, req.Step)
	}
	st := inst.Steps[req.Step]
	if req.Action == OverrideRerun {
		if !stepEnded(st.Status) {
			return errorf(CodeConflict, "step %q is %s; only a step that has ended can run again", req.Step, st.Status)
		}
	} else if stepEnded(st.Status) {
		return errorf(CodeConflict, "step %q has already ended (%s); %s applies to a step that has not", req.Step, st.Status, req.Action)
	}
	ic := inst.clone()
	// The event keeps what the operator decided (the output or error given),
	// so that history alone can replay it.
	ev := Event{Type: "operator_" + req.Action, Step: req.Step, Detail: req.Reason, Error: req.Error}
	if req.Action == OverrideComplete {
		ev.Data = normalizeJSON(req.Output)
	}
	ic.note(ev)
	sc := ic.Steps[req.Step]
	switch req.Action {
	case OverrideComplete:
		stopStep(tx, sc, req.Time)
		sc.Output = normalizeJSON(req.Output)
		endStep(sc, StepSucceeded, nil, req.Time)
	case OverrideSkip:
		stopStep(tx, sc, req.Time)
		endStep(sc, StepSkipped, nil, req.Time)
	case OverrideFail:
		stopStep(tx, sc, req.Time)
		te := &TaskError{Type: "failed_by_operator", Message: req.Reason, NonRetryable: true}
		if req.Error != nil && req.Error.Type != "" {
			te.Type, te.Message = req.Error.Type, req.Error.Message
		}
		endStep(sc, StepFailed, te, req.Time)
	case OverrideRerun:
		resetSteps(tx, ic, wf, downstream(wf, req.Step), req.Time)
	default:
		return errorf(CodeInvalid, "unknown step action %q (complete, skip, fail or rerun)", req.Action)
	}
	f.advance(tx, ic, wf, req.Time)
	return &InstanceStatusResponse{ID: ic.ID, Status: tx.Instance(ic.ID).Status}
}

func (f *FSM) instanceAndWorkflow(tx *Txn, id string) (*Instance, *hcl.Workflow, *Error) {
	inst := tx.Instance(id)
	if inst == nil {
		return nil, nil, errorf(CodeNotFound, "instance %q not found", id)
	}
	wf, err := f.workflow(tx.WorkflowVersion(inst.Workflow, inst.Version))
	if err != nil {
		return nil, nil, errorf(CodeInvalid, "%v", err)
	}
	return inst, wf, nil
}

// stopStep cancels what a step has in flight (its task, its elements' tasks
// and any timer becomes a no-op once the step has ended).
func stopStep(tx *Txn, st *StepState, now time.Time) {
	if st.TaskID != "" {
		tx.cancelTask(st.TaskID, now)
	}
	cancelElements(tx, st, now)
}

// downstream lists a step and every step that depends on it, directly or
// not, in declaration order.
func downstream(wf *hcl.Workflow, step string) []string {
	in := map[string]bool{step: true}
	for changed := true; changed; {
		changed = false
		for _, s := range wf.Steps {
			if in[s.Name] {
				continue
			}
			for _, d := range s.Deps {
				if in[d] {
					in[s.Name], changed = true, true
					break
				}
			}
		}
	}
	var out []string
	for _, s := range wf.Steps {
		if in[s.Name] {
			out = append(out, s.Name)
		}
	}
	return out
}

// resetSteps makes steps wait again, stopping whatever they had in flight;
// their earlier attempts stay in the history.
func resetSteps(tx *Txn, inst *Instance, wf *hcl.Workflow, names []string, now time.Time) {
	for _, name := range names {
		st := inst.Steps[name]
		stopStep(tx, st, now)
		tx.dropStepTimers(inst.ID, name)
		inst.Steps[name] = &StepState{Status: StepWaiting}
	}
}

// dropStepTimers deletes a step's sleep and signal-timeout timers. Those
// check only that the step still sleeps or waits when they fire, so one
// left from before a reset would end the step's next sleep or wait at the
// old time. (Retry and schedule timers name their task and attempt.)
func (tx *Txn) dropStepTimers(instance, step string) {
	it, err := tx.Get(tableTimers, "instance", instance)
	if err != nil {
		return
	}
	var doomed []*Timer
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if tm := raw.(*Timer); tm.Step == step && (tm.Kind == TimerSleep || tm.Kind == TimerSignalTimeout) {
			doomed = append(doomed, tm)
		}
	}
	for _, tm := range doomed {
		if err := tx.Delete(tableTimers, tm); err != nil {
			panic(fmt.Sprintf("fsm: delete timer: %v", err))
		}
	}
}
