package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/lockstep-io/lockstep/hcl"
)

// Instance states.
const (
	InstanceRunning    = "running"
	InstanceCompleted  = "completed"
	InstanceFailed     = "failed"
	InstanceTimedOut   = "timed_out"  // outlived the workflow's timeout
	InstanceTerminated = "terminated" // ended by an operator, without compensation
	InstanceSuspended  = "suspended"  // paused by an operator: nothing dispatched, no timer takes effect
	InstanceCancelling = "cancelling" // cancel asked: in-flight attempts end, then compensations run
	InstanceCancelled  = "cancelled"  // every compensation ran
)

// Step states.
const (
	StepWaiting       = "waiting"        // dependencies not done yet
	StepScheduled     = "scheduled"      // task waiting in its queue
	StepRunning       = "running"        // task leased to a worker
	StepRetryWait     = "retry_wait"     // an attempt failed; the next waits for its backoff
	StepSleeping      = "sleeping"       // a sleep step waits for its time
	StepWaitingSignal = "waiting_signal" // a wait_signal step waits for its signal
	StepCompensating  = "compensating"   // its compensate task runs (instance cancelling)
	StepCompensated   = "compensated"    // its compensate task succeeded
	StepSucceeded     = "succeeded"
	StepFailed        = "failed"
	StepSkipped       = "skipped"   // its trigger rule or when said not to run
	StepCancelled     = "cancelled" // the instance ended before the step ran
)

// Instance is one execution of one workflow version. Records are immutable
// once inserted: handlers copy before they change one.
type Instance struct {
	ID          string                `json:"id"`
	Workflow    string                `json:"workflow"`
	Version     uint64                `json:"version"`
	Status      string                `json:"status"`
	Input       json.RawMessage       `json:"input"`
	Output      json.RawMessage       `json:"output,omitempty"`
	Error       *InstanceError        `json:"error,omitempty"`
	Steps       map[string]*StepState `json:"steps"`
	CreatedAt   time.Time             `json:"created_at"`
	UpdatedAt   time.Time             `json:"updated_at"`
	EndedAt     time.Time             `json:"ended_at,omitzero"`
	CreateIndex uint64                `json:"create_index"`
	ModifyIndex uint64                `json:"modify_index"`
	// EventSeq is the sequence number of the instance's last history event.
	EventSeq uint64 `json:"event_seq"`
	// CompletionSeq counts step completions; each succeeded step keeps its
	// number (StepState.CompletedSeq), the order compensation reverses.
	CompletionSeq uint64 `json:"completion_seq,omitempty"`
	// ChildSeq counts the children the instance started; it numbers their
	// ids, so that they depend on the instance alone (a replay derives the
	// same ids) and are never reused.
	ChildSeq     uint64 `json:"child_seq,omitempty"`
	CancelReason string `json:"cancel_reason,omitempty"`
	// Parent is set on a child instance: the step of the parent waiting
	// for it.
	Parent *ParentRef `json:"parent,omitempty"`
	// Trigger is the trigger that started the instance, if any.
	Trigger string `json:"trigger,omitempty"`
	// TaskIDs lists every task the instance created (every run of every
	// step, and compensations), so that retention deletes them all. A
	// clone's list has no spare capacity: its first append copies it.
	TaskIDs []string `json:"task_ids,omitempty"`
	// ExpiresKey is when an ended instance is deleted (its end plus its
	// workflow's retention), in Unix nanoseconds; 0 while it runs.
	ExpiresKey uint64 `json:"expires_key,omitempty"`

	quiet bool // ended by its parent: no call back to the parent

	// historyTail holds the events after the instance's last complete
	// history chunk (appendHistory). It is not part of the record's JSON:
	// snapshots write it inside the history chunks (historyRecords).
	// Read it through tail(): once the instance has ended, the tail is
	// kept encoded in sealedTail instead (sealHistory).
	historyTail []*Event
	sealedTail  []byte

	pending []Event // noted events, written by saveInstance

	key []byte // the id index key (newKey), shared by every copy
}

func (i *Instance) idKey() []byte { return keyOf(i.key, i.ID) }

// InstanceError says why an instance failed.
type InstanceError struct {
	Step    string `json:"step,omitempty"`
	Type    string `json:"type"`
	Message string `json:"message"`
}

// StepState is the progress of one step of an instance.
type StepState struct {
	Status   string          `json:"status"`
	Output   json.RawMessage `json:"output,omitempty"`
	Error    *TaskError      `json:"error,omitempty"`
	Attempts int             `json:"attempts"`
	TaskID   string          `json:"task_id,omitempty"`
	// ScheduledAt, StartedAt and EndedAt are the command times at which the
	// step's task was enqueued, last leased, and the step ended.
	// They are values, not pointers: a pointer would cost an allocation
	// at every transition and an object for the collector to mark in
	// every retained instance (zero is left out of the JSON, as nil was).
	ScheduledAt time.Time `json:"scheduled_at,omitzero"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	EndedAt     time.Time `json:"ended_at,omitzero"`
	// Elements are the for_each elements of the step, in order; the step's
	// output is then the list (or, with ForEachMap, the map) of theirs.
	Elements   []*ElementState `json:"elements,omitempty"`
	ForEachMap bool            `json:"for_each_map,omitempty"`
	// CompletedSeq orders the step among the instance's completions.
	CompletedSeq uint64 `json:"completed_seq,omitempty"`
	// CompensationTaskID is the task undoing the step, once cancelling.
	CompensationTaskID string `json:"compensation_task_id,omitempty"`
	// ChildID is the child instance of a workflow step.
	ChildID string `json:"child_id,omitempty"`
}

// ElementState is the progress of one for_each element: one task.
type ElementState struct {
	Key      string          `json:"key"`
	Index    bool            `json:"index,omitempty"`
	Value    json.RawMessage `json:"value"`
	Status   string          `json:"status"`
	Output   json.RawMessage `json:"output,omitempty"`
	Error    *TaskError      `json:"error,omitempty"`
	Attempts int             `json:"attempts"`
	TaskID   string          `json:"task_id,omitempty"`
}

// Dispatchable reports whether a task of this instance may be leased now:
// any of a running instance, only compensations of a cancelling one, none
// of a suspended or ended one.
func (i *Instance) Dispatchable(t *Task) bool {
	switch i.Status {
	case InstanceRunning:
		return !t.Compensation
	case InstanceCancelling:
		return t.Compensation
	}
	return false
}

// Terminal reports whether the instance has ended.
func (i *Instance) Terminal() bool {
	switch i.Status {
	case InstanceRunning, InstanceCancelling, InstanceSuspended:
		return false
	}
	return true
}

func (i *Instance) clone() *Instance {
	c := *i
	c.TaskIDs = i.TaskIDs[:len(i.TaskIDs):len(i.TaskIDs)]
	c.Steps = make(map[string]*StepState, len(i.Steps))
	// One allocation for all the steps' copies (a clone is made at every
	// change of an instance).
	states := make([]StepState, 0, len(i.Steps))
	for k, v := range i.Steps {
		states = append(states, *v)
		s := &states[len(states)-1]
		if v.Elements != nil {
			elems := make([]ElementState, len(v.Elements))
			s.Elements = make([]*ElementState, len(v.Elements))
			for j, e := range v.Elements {
				elems[j] = *e
				s.Elements[j] = &elems[j]
			}
		}
		c.Steps[k] = s
	}
	return &c
}

const (
	tableInstances = "instances"
	// tableInstanceWorkflow lists instances by workflow (workflowlist.go).
	tableInstanceWorkflow = "instance_workflow"
)

func init() {
	registerTable(&memdb.TableSchema{
		Name: tableInstances,
		// Only by id: ended instances by when they expire are in the
		// expiry table (expiry.go), instances by workflow in
		// instance_workflow (workflowlist.go).
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: idIndex{strIndex{instanceID}}},
		},
	})
	registerRecord(tableInstances, func() any { return new(Instance) })
	writeBack[tableInstances] = instanceID
	registerCommand(StartInstanceType, (*FSM).applyStartInstance)
	registerCommand(StartInstanceNextType, (*FSM).applyStartInstance)
}

// StartInstanceRequest starts an instance. The proposer mints ID when the
// client gave none; Version 0 means the latest version at apply time.
type StartInstanceRequest struct {
	Header
	ID       string          `json:"id"`
	Workflow string          `json:"workflow"`
	Version  uint64          `json:"version,omitempty"`
	Input    json.RawMessage `json:"input"`
	// Next, when set on a start that creates the instance, leases pending
	// tasks of its queue (the new instance's first steps among them) to a
	// worker whose poll the leader holds, in the same command, as results
	// with Next do.
	Next *NextTasks `json:"next,omitempty"`
}

// Type is the message type to propose the request with: with Next, one a
// node that cannot lease for it does not apply.
func (r *StartInstanceRequest) Type() MessageType {
	if r.Next != nil {
		return StartInstanceNextType
	}
	return StartInstanceType
}

// StartInstanceResponse names the instance. Created is false when an
// instance with the same id and the same request already existed.
type StartInstanceResponse struct {
	ID      string `json:"id"`
	Version uint64 `json:"version"`
	Created bool   `json:"created"`
	// Leased are the tasks leased for Next, in dispatch order.
	Leased []*Task `json:"leased,omitempty"`
}

func (f *FSM) applyStartInstance(tx *Txn, body []byte) any {
	var req StartInstanceRequest
	mustDecode(StartInstanceType, body, &req)
	if existing := tx.Instance(req.ID); existing != nil {
		return f.repeatedStart(tx, existing, &req)
	}
	inst, e := f.createInstance(tx, req.ID, req.Workflow, req.Version, req.Input, req.Time, nil, "")
	if e != nil {
		return e
	}
	out := &StartInstanceResponse{ID: inst.ID, Version: inst.Version, Created: true}
	if req.Next != nil && req.Next.Max > 0 {
		out.Leased = f.leaseNext(tx, req.Next, req.Time, 0)
	}
	return out
}

// createInstance starts a new instance (version 0: the latest) and decides
// its first steps; it returns the instance as stored.
func (f *FSM) createInstance(tx *Txn, id, workflow string, version uint64, rawInput json.RawMessage, now time.Time, parent *ParentRef, trigger string) (*Instance, *Error) {
	var wv *WorkflowVersion
	if version == 0 {
		wv = tx.LatestWorkflow(workflow)
	} else {
		wv = tx.WorkflowVersion(workflow, version)
	}
	if wv == nil {
		if version == 0 {
			return nil, errorf(CodeNotFound, "workflow %q is not registered", workflow)
		}
		return nil, errorf(CodeNotFound, "workflow %q has no version %d", workflow, version)
	}
	wf, err := f.workflow(wv)
	if err != nil {
		return nil, errorf(CodeInvalid, "%v", err)
	}
	input, err := wf.CheckInput(rawInput)
	if err != nil {
		return nil, errorf(CodeInvalidInput, "workflow %s version %d: %v", wv.Name, wv.Version, err)
	}
	inst := &Instance{
		Workflow:    wv.Name,
		Version:     wv.Version,
		Status:      InstanceRunning,
		Input:       normalizeJSON(input),
		Steps:       make(map[string]*StepState, len(wf.Steps)),
		CreatedAt:   now,
		CreateIndex: tx.Index,
		Parent:      parent,
		Trigger:     trigger,
	}
	inst.ID, inst.key = newKey(id)
	for _, s := range wf.Steps {
		inst.Steps[s.Name] = &StepState{Status: StepWaiting}
	}
	if wf.Timeout > 0 {
		newTimer(tx, TimerInstanceTimeout, inst.ID, "", "", now.Add(wf.Timeout))
	}
	f.advance(tx, inst, wf, now)
	return tx.Instance(id), nil
}

// repeatedStart answers a start whose id already exists: the same request
// (workflow, version and input as the instance stored them) gets the
// existing instance; anything else is a conflict.
func (f *FSM) repeatedStart(tx *Txn, existing *Instance, req *StartInstanceRequest) any {
	same := existing.Workflow == req.Workflow && (req.Version == 0 || req.Version == existing.Version)
	if same {
		input := normalizeJSON(req.Input)
		if wv := tx.WorkflowVersion(existing.Workflow, existing.Version); wv != nil {
			if wf, err := f.workflow(wv); err == nil {
				if in, err := wf.CheckInput(req.Input); err == nil {
					input = normalizeJSON(in)
				}
			}
		}
		same = bytes.Equal(existing.Input, input)
	}
	if !same {
		return errorf(CodeConflict, "instance %q already exists with a different workflow or input", req.ID)
	}
	return &StartInstanceResponse{ID: existing.ID, Version: existing.Version}
}

// advance moves an instance as far as its state allows, then stores it.
// It is the only place steps are decided, so a start, a completion and a
// failure all follow the same rules:
//
//   - a waiting step whose dependencies are all done runs if its trigger
//     rule and its when allow, and is skipped otherwise;
//   - an activity step enqueues its task; a fail step fails at once;
//   - a failed step that no error path (any_failed) or finally (all_done)
//     depends on fails the instance at once, cancelling what has not ended;
//   - when every step has ended, the instance fails on the first failure
//     no error path that ran handled, or completes with its output.
//
// Steps are visited in declaration order, repeatedly until nothing changes,
// so skips and fail steps settle within one apply.
func (f *FSM) advance(tx *Txn, inst *Instance, wf *hcl.Workflow, now time.Time) {
	inst.UpdatedAt = now
	inst.ModifyIndex = tx.Index
	for inst.Status == InstanceRunning {
		if step := unhandledFailure(inst, wf); step != "" {
			f.failInstance(tx, inst, step, inst.Steps[step].Error, now)
			break
		}
		if !f.decideReady(tx, inst, wf, now) {
			break
		}
	}
	if inst.Status == InstanceRunning && allEnded(inst) {
		if step := uncaughtFailure(inst, wf); step != "" {
			f.failInstance(tx, inst, step, inst.Steps[step].Error, now)
		} else if out, err := hcl.Eval(wf.Output, scopeOf(inst, now)); err != nil {
			inst.Status = InstanceFailed
			inst.Error = &InstanceError{Type: "output_error", Message: err.Error()}
			inst.EndedAt = now
		} else {
			inst.Status = InstanceCompleted
			inst.Output = out
			inst.EndedAt = now
		}
	}
	f.saveInstance(tx, inst, now)
}

// decideReady runs or skips every waiting step whose dependencies have all
// ended. It reports whether any step changed.
func (f *FSM) decideReady(tx *Txn, inst *Instance, wf *hcl.Workflow, now time.Time) bool {
	changed := false
	for _, s := range wf.Steps {
		st := inst.Steps[s.Name]
		if st.Status != StepWaiting || !depsEnded(inst, s) {
			continue
		}
		changed = true
		run := ruleAllows(inst, s)
		if run && s.When != nil {
			ok, err := hcl.EvalBool(s.When, scopeOf(inst, now))
			if err != nil {
				endStep(st, StepFailed, &TaskError{Type: "when_error", Message: err.Error()}, now)
				continue
			}
			run = ok
		}
		if !run {
			endStep(st, StepSkipped, nil, now)
			continue
		}
		switch s.Kind {
		case hcl.KindChild:
			f.startChild(tx, inst, s, st, now)
		case hcl.KindSignal:
			f.waitForSignal(tx, inst, s, st, now)
		case hcl.KindSleep:
			due := now.Add(s.Sleep)
			if s.SleepUntil != nil {
				t, err := hcl.EvalTime(s.SleepUntil, scopeOf(inst, now))
				if err != nil {
					endStep(st, StepFailed, &TaskError{Type: "input_error", Message: err.Error()}, now)
					continue
				}
				due = t
			}
			if !due.After(now) {
				st.Output = sleptUntil(due)
				endStep(st, StepSucceeded, nil, now)
				continue
			}
			st.Status = StepSleeping
			st.ScheduledAt = now
			newTimer(tx, TimerSleep, inst.ID, s.Name, "", due)
		case hcl.KindFail:
			msg := "step " + s.Name + " failed the instance on purpose"
			if s.FailMessage != nil {
				raw, err := hcl.Eval(s.FailMessage, scopeOf(inst, now))
				if err != nil {
					endStep(st, StepFailed, &TaskError{Type: "input_error", Message: err.Error()}, now)
					continue
				}
				msg = jsonText(raw)
			}
			endStep(st, StepFailed, &TaskError{Type: s.FailError, Message: msg}, now)
		default:
			if s.ForEach != nil {
				f.startForEach(tx, inst, s, st, now)
				continue
			}
			input, err := hcl.Eval(s.Input, scopeOf(inst, now))
			if err != nil {
				endStep(st, StepFailed, &TaskError{Type: "input_error", Message: err.Error()}, now)
				continue
			}
			task := newTask(tx, inst, s, input, now, nil)
			st.Status = StepScheduled
			st.TaskID = task.ID
			st.ScheduledAt = now
		}
	}
	return changed
}

func endStep(st *StepState, status string, err *TaskError, now time.Time) {
	st.Status = status
	st.Error = err
	st.EndedAt = now
}

// ruleAllows applies a step's trigger rule to its (ended) dependencies.
func ruleAllows(inst *Instance, s *hcl.Step) bool {
	succeeded, failed, skipped := 0, 0, 0
	for _, d := range s.Deps {
		switch inst.Steps[d].Status {
		case StepSucceeded:
			succeeded++
		case StepFailed:
			failed++
		default:
			skipped++
		}
	}
	switch s.TriggerRule {
	case hcl.RuleAllSucceeded:
		return succeeded == len(s.Deps)
	case hcl.RuleAnyFailed:
		return failed > 0
	case hcl.RuleAllDone:
		return true
	default: // none_failed
		return failed == 0 && (len(s.Deps) == 0 || skipped < len(s.Deps))
	}
}

// unhandledFailure names a failed step that no error path or finally waits
// for: such a failure ends the instance at once.
func unhandledFailure(inst *Instance, wf *hcl.Workflow) string {
	for _, s := range wf.Steps {
		if inst.Steps[s.Name].Status == StepFailed && !wf.FailureHandled(s.Name) {
			return s.Name
		}
	}
	return ""
}

// uncaughtFailure names, once every step has ended, the first failed step
// that no error path (any_failed) which ran has handled.
func uncaughtFailure(inst *Instance, wf *hcl.Workflow) string {
	caught := map[string]bool{}
	for _, s := range wf.Steps {
		if s.TriggerRule != hcl.RuleAnyFailed {
			continue
		}
		if st := inst.Steps[s.Name].Status; st == StepSucceeded || st == StepFailed {
			for _, d := range s.Deps {
				caught[d] = true
			}
		}
	}
	for _, s := range wf.Steps {
		if inst.Steps[s.Name].Status == StepFailed && !caught[s.Name] {
			return s.Name
		}
	}
	return ""
}

// jsonText turns an evaluated message into text: strings without quotes,
// anything else as JSON.
func jsonText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

func stepEnded(status string) bool {
	switch status {
	case StepSucceeded, StepFailed, StepSkipped, StepCancelled:
		return true
	}
	return false
}

func depsEnded(inst *Instance, s *hcl.Step) bool {
	for _, d := range s.Deps {
		if !stepEnded(inst.Steps[d].Status) {
			return false
		}
	}
	return true
}

func allEnded(inst *Instance) bool {
	for _, st := range inst.Steps {
		if !stepEnded(st.Status) {
			return false
		}
	}
	return true
}

// scopeOf is what the instance's expressions see: its input, every step's
// status, output, error and attempts, the instance itself, and now.
func scopeOf(inst *Instance, now time.Time) hcl.Scope {
	return hcl.Scope{
		Input:    inst.Input,
		Steps:    instanceSteps{inst},
		Instance: hcl.InstanceInfo{ID: inst.ID, Workflow: inst.Workflow, Version: inst.Version, StartedAt: inst.CreatedAt},
		Now:      now,
	}
}

// instanceSteps gives an expression the results of the steps it reads,
// built from the instance when asked.
type instanceSteps struct{ inst *Instance }

func (s instanceSteps) Step(name string) (hcl.StepResult, bool) {
	st := s.inst.Steps[name]
	if st == nil {
		return hcl.StepResult{}, false
	}
	return stepResult(st), true
}

// EachStep goes in name order, so that the first error is always the same.
func (s instanceSteps) EachStep(fn func(string, hcl.StepResult)) {
	names := make([]string, 0, len(s.inst.Steps))
	for name := range s.inst.Steps {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fn(name, stepResult(s.inst.Steps[name]))
	}
}

func stepResult(st *StepState) hcl.StepResult {
	r := hcl.StepResult{Status: st.Status, Attempts: st.Attempts}
	if st.Status == StepSucceeded {
		r.Output = st.Output
	}
	if st.Error != nil {
		r.ErrorType, r.ErrorMsg = st.Error.Type, st.Error.Message
	}
	return r
}

// normalizeJSON compacts a JSON document so that equal documents compare
// equal byte for byte; empty becomes null. A document with no white space
// at all is compact already and is returned as it is (the caller's bytes,
// which commands decode afresh), saving a copy that a retained instance
// would keep.
func normalizeJSON(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage("null")
	}
	if bytes.IndexAny(raw, " \t\r\n") < 0 {
		if json.Valid(raw) {
			return raw
		}
		return json.RawMessage("null")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return json.RawMessage("null")
	}
	return buf.Bytes()
}

// Instance returns an instance by id, or nil.
func (t *Txn) Instance(id string) *Instance {
	if o, ok := t.heldRecord(tableInstances, id); ok {
		return t.instance(o)
	}
	raw := t.storedInstance(id) // not held: stored, if anywhere
	if raw == nil {
		return nil
	}
	return t.instance(raw)
}

// Instances lists instances by id, after the given id (exclusive), at most
// limit of them, optionally of one workflow.
func (t *Txn) Instances(workflow, after string, limit int) []*Instance {
	out := []*Instance{}
	add := func(inst *Instance) bool {
		if inst == nil || (after != "" && inst.ID <= after) {
			return true
		}
		out = append(out, inst)
		return limit <= 0 || len(out) < limit
	}
	if workflow != "" {
		t.eachOfWorkflow(workflow, after, func(id string) bool { return add(t.Instance(id)) })
		return out
	}
	_ = t.eachStoredInstance(after, func(raw any) bool {
		if after != "" && instanceID(raw) <= after {
			return true
		}
		return add(t.instance(raw))
	})
	return out
}

// startForEach evaluates a step's for_each into elements and schedules the
// first of them. An empty collection succeeds at once.
func (f *FSM) startForEach(tx *Txn, inst *Instance, s *hcl.Step, st *StepState, now time.Time) {
	elems, isMap, err := hcl.EvalForEach(s.ForEach, scopeOf(inst, now))
	if err != nil {
		endStep(st, StepFailed, &TaskError{Type: "for_each_error", Message: err.Error()}, now)
		return
	}
	st.ForEachMap = isMap
	st.ScheduledAt = now
	st.Elements = make([]*ElementState, len(elems))
	for i, e := range elems {
		st.Elements[i] = &ElementState{Key: e.Key, Index: e.Index, Value: e.Value, Status: StepWaiting}
	}
	if len(elems) == 0 {
		st.Output = aggregate(st)
		endStep(st, StepSucceeded, nil, now)
		return
	}
	st.Status = StepScheduled
	if err := f.fillElements(tx, inst, s, st, now); err != nil {
		failElements(tx, st, &TaskError{Type: "input_error", Message: err.Error()}, now)
	}
}

// fillElements schedules waiting elements, in order, while fewer than
// max_concurrency are in flight.
func (f *FSM) fillElements(tx *Txn, inst *Instance, s *hcl.Step, st *StepState, now time.Time) error {
	inFlight := 0
	for _, e := range st.Elements {
		if e.Status == StepScheduled || e.Status == StepRunning || e.Status == StepRetryWait {
			inFlight++
		}
	}
	scope := scopeOf(inst, now)
	for i, e := range st.Elements {
		if e.Status != StepWaiting {
			continue
		}
		if s.MaxConcurrency > 0 && inFlight >= s.MaxConcurrency {
			break
		}
		scope.Each = &hcl.Element{Key: e.Key, Value: e.Value, Index: e.Index}
		input, err := hcl.Eval(s.Input, scope)
		if err != nil {
			return fmt.Errorf("element %s: %v", e.Key, err)
		}
		idx := i
		task := newTask(tx, inst, s, input, now, &idx)
		e.Status = StepScheduled
		e.TaskID = task.ID
		inFlight++
	}
	return nil
}

// finishElement records one element's result and moves its step: a failed
// element fails the step (cancelling its siblings); when every element has
// succeeded the step succeeds with their outputs; otherwise the next
// elements are scheduled.
func (f *FSM) finishElement(tx *Txn, inst *Instance, s *hcl.Step, st *StepState, idx int, output json.RawMessage, taskErr *TaskError, now time.Time) {
	e := st.Elements[idx]
	if taskErr != nil {
		e.Status, e.Error = StepFailed, taskErr
		failElements(tx, st, &TaskError{Type: taskErr.Type, Message: "element " + e.Key + ": " + taskErr.Message}, now)
		return
	}
	e.Status, e.Output, e.Error = StepSucceeded, output, nil
	done := true
	for _, x := range st.Elements {
		if x.Status != StepSucceeded {
			done = false
			break
		}
	}
	if done {
		st.Output = aggregate(st)
		endStep(st, StepSucceeded, nil, now)
		return
	}
	if err := f.fillElements(tx, inst, s, st, now); err != nil {
		failElements(tx, st, &TaskError{Type: "input_error", Message: err.Error()}, now)
		return
	}
	st.Status = elementsStatus(st)
}

// failElements fails a for_each step and cancels its unfinished elements.
func failElements(tx *Txn, st *StepState, err *TaskError, now time.Time) {
	cancelElements(tx, st, now)
	endStep(st, StepFailed, err, now)
}

func cancelElements(tx *Txn, st *StepState, now time.Time) {
	for _, e := range st.Elements {
		switch e.Status {
		case StepWaiting, StepScheduled, StepRunning, StepRetryWait:
			if e.TaskID != "" {
				tx.cancelTask(e.TaskID, now)
			}
			e.Status = StepCancelled
		}
	}
}

// elementsStatus sums up a for_each step in flight: running while any
// element's task is leased, scheduled while any waits in its queue, else
// retry_wait.
func elementsStatus(st *StepState) string {
	status := StepRetryWait
	for _, e := range st.Elements {
		switch e.Status {
		case StepRunning:
			return StepRunning
		case StepScheduled, StepWaiting:
			status = StepScheduled
		}
	}
	return status
}

// aggregate builds a for_each step's output: a list in element order, or a
// map by key (keys are already in sorted order).
func aggregate(st *StepState) json.RawMessage {
	var b bytes.Buffer
	open, close := byte('['), byte(']')
	if st.ForEachMap {
		open, close = '{', '}'
	}
	b.WriteByte(open)
	for i, e := range st.Elements {
		if i > 0 {
			b.WriteByte(',')
		}
		if st.ForEachMap {
			k, _ := json.Marshal(e.Key)
			b.Write(k)
			b.WriteByte(':')
		}
		b.Write(normalizeJSON(e.Output))
	}
	b.WriteByte(close)
	return b.Bytes()
}
