package fsm

import (
	"bytes"
	"encoding/json"
	"sort"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/lockstep-io/lockstep/hcl"
)

// Instance states.
const (
	InstanceRunning   = "running"
	InstanceCompleted = "completed"
	InstanceFailed    = "failed"
)

// Step states.
const (
	StepWaiting   = "waiting"   // dependencies not done yet
	StepScheduled = "scheduled" // task waiting in its queue
	StepRunning   = "running"   // task leased to a worker
	StepSucceeded = "succeeded"
	StepFailed    = "failed"
	StepCancelled = "cancelled" // the instance ended before the step ran
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
	EndedAt     *time.Time            `json:"ended_at,omitempty"`
	CreateIndex uint64                `json:"create_index"`
	ModifyIndex uint64                `json:"modify_index"`
}

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
	ScheduledAt *time.Time `json:"scheduled_at,omitempty"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	EndedAt     *time.Time `json:"ended_at,omitempty"`
}

// Terminal reports whether the instance has ended.
func (i *Instance) Terminal() bool { return i.Status != InstanceRunning }

func (i *Instance) clone() *Instance {
	c := *i
	c.Steps = make(map[string]*StepState, len(i.Steps))
	for k, v := range i.Steps {
		s := *v
		c.Steps[k] = &s
	}
	return &c
}

const tableInstances = "instances"

func init() {
	registerTable(&memdb.TableSchema{
		Name: tableInstances,
		Indexes: map[string]*memdb.IndexSchema{
			"id":       {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
			"workflow": {Name: "workflow", Indexer: &memdb.StringFieldIndex{Field: "Workflow"}},
		},
	})
	registerRecord(tableInstances, func() any { return new(Instance) })
	registerCommand(StartInstanceType, (*FSM).applyStartInstance)
}

// StartInstanceRequest starts an instance. The proposer mints ID when the
// client gave none; Version 0 means the latest version at apply time.
type StartInstanceRequest struct {
	Header
	ID       string          `json:"id"`
	Workflow string          `json:"workflow"`
	Version  uint64          `json:"version,omitempty"`
	Input    json.RawMessage `json:"input"`
}

// StartInstanceResponse names the instance. Created is false when an
// instance with the same id and the same request already existed.
type StartInstanceResponse struct {
	ID      string `json:"id"`
	Version uint64 `json:"version"`
	Created bool   `json:"created"`
}

func (f *FSM) applyStartInstance(tx *Txn, body []byte) any {
	var req StartInstanceRequest
	mustDecode(StartInstanceType, body, &req)
	if existing := tx.Instance(req.ID); existing != nil {
		return f.repeatedStart(tx, existing, &req)
	}
	var wv *WorkflowVersion
	if req.Version == 0 {
		wv = tx.LatestWorkflow(req.Workflow)
	} else {
		wv = tx.WorkflowVersion(req.Workflow, req.Version)
	}
	if wv == nil {
		if req.Version == 0 {
			return errorf(CodeNotFound, "workflow %q is not registered", req.Workflow)
		}
		return errorf(CodeNotFound, "workflow %q has no version %d", req.Workflow, req.Version)
	}
	wf, err := f.workflow(wv)
	if err != nil {
		return errorf(CodeInvalid, "%v", err)
	}
	input, err := wf.CheckInput(req.Input)
	if err != nil {
		return errorf(CodeInvalidInput, "workflow %s version %d: %v", wv.Name, wv.Version, err)
	}
	inst := &Instance{
		ID:          req.ID,
		Workflow:    wv.Name,
		Version:     wv.Version,
		Status:      InstanceRunning,
		Input:       normalizeJSON(input),
		Steps:       make(map[string]*StepState, len(wf.Steps)),
		CreatedAt:   req.Time,
		CreateIndex: tx.Index,
	}
	for _, s := range wf.Steps {
		inst.Steps[s.Name] = &StepState{Status: StepWaiting}
	}
	f.advance(tx, inst, wf, req.Time)
	return &StartInstanceResponse{ID: inst.ID, Version: inst.Version, Created: true}
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

// advance moves an instance as far as its state allows: it schedules every
// step whose dependencies have all succeeded, fails the instance when a step
// failed, and completes it when every step succeeded. It then stores the
// instance. It is the only place step scheduling happens, so a completion,
// a start and (later) a retry all follow the same rules.
func (f *FSM) advance(tx *Txn, inst *Instance, wf *hcl.Workflow, now time.Time) {
	inst.UpdatedAt = now
	inst.ModifyIndex = tx.Index
	if inst.Status == InstanceRunning {
		for _, s := range wf.Steps {
			st := inst.Steps[s.Name]
			if st.Status == StepFailed {
				f.failInstance(tx, inst, s.Name, st.Error, now)
				break
			}
		}
	}
	if inst.Status == InstanceRunning {
		f.scheduleReady(tx, inst, wf, now)
	}
	if inst.Status == InstanceRunning && allSucceeded(inst) {
		out, err := hcl.Eval(wf.Output, scopeOf(inst))
		if err != nil {
			inst.Status = InstanceFailed
			inst.Error = &InstanceError{Type: "output_error", Message: err.Error()}
		} else {
			inst.Status = InstanceCompleted
			inst.Output = out
		}
		inst.EndedAt = &now
	}
	tx.mustInsert(tableInstances, inst)
}

func (f *FSM) scheduleReady(tx *Txn, inst *Instance, wf *hcl.Workflow, now time.Time) {
	for _, s := range wf.Steps {
		st := inst.Steps[s.Name]
		if st.Status != StepWaiting || !depsSucceeded(inst, s) {
			continue
		}
		input, err := hcl.Eval(s.Input, scopeOf(inst))
		if err != nil {
			st.Status = StepFailed
			st.Error = &TaskError{Type: "input_error", Message: err.Error()}
			st.EndedAt = &now
			f.failInstance(tx, inst, s.Name, st.Error, now)
			return
		}
		task := newTask(tx, inst, s, input, now)
		st.Status = StepScheduled
		st.TaskID = task.ID
		st.ScheduledAt = &now
	}
}

// failInstance ends the instance as failed because of one step, and cancels
// what had not run yet so no worker is handed work for a dead instance.
func (f *FSM) failInstance(tx *Txn, inst *Instance, step string, cause *TaskError, now time.Time) {
	inst.Status = InstanceFailed
	inst.Error = &InstanceError{Step: step, Type: "step_failed", Message: "step " + step + " failed"}
	if cause != nil {
		inst.Error.Type, inst.Error.Message = cause.Type, "step "+step+" failed: "+cause.Message
	}
	inst.EndedAt = &now
	names := make([]string, 0, len(inst.Steps))
	for name := range inst.Steps {
		names = append(names, name)
	}
	sort.Strings(names) // cancel in a fixed order: Apply never depends on map order
	for _, name := range names {
		st := inst.Steps[name]
		switch st.Status {
		case StepWaiting, StepScheduled, StepRunning:
			if st.TaskID != "" {
				tx.cancelTask(st.TaskID, now)
			}
			st.Status = StepCancelled
			st.EndedAt = &now
			inst.Steps[name] = st
		}
	}
}

func depsSucceeded(inst *Instance, s *hcl.Step) bool {
	for _, d := range s.Deps {
		if inst.Steps[d].Status != StepSucceeded {
			return false
		}
	}
	return true
}

func allSucceeded(inst *Instance) bool {
	for _, st := range inst.Steps {
		if st.Status != StepSucceeded {
			return false
		}
	}
	return true
}

func scopeOf(inst *Instance) hcl.Scope {
	steps := make(map[string]hcl.StepResult, len(inst.Steps))
	for name, st := range inst.Steps {
		if st.Status == StepSucceeded {
			steps[name] = hcl.StepResult{Status: st.Status, Output: st.Output}
		}
	}
	return hcl.Scope{Input: inst.Input, Steps: steps}
}

// normalizeJSON compacts a JSON document so that equal documents compare
// equal byte for byte; empty becomes null.
func normalizeJSON(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
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
	raw, err := t.First(tableInstances, "id", id)
	if err != nil || raw == nil {
		return nil
	}
	return raw.(*Instance)
}

// Instances lists instances by id, after the given id (exclusive), at most
// limit of them, optionally of one workflow.
func (t *Txn) Instances(workflow, after string, limit int) []*Instance {
	out := []*Instance{}
	var it memdb.ResultIterator
	var err error
	if workflow != "" {
		it, err = t.Get(tableInstances, "workflow", workflow)
	} else {
		it, err = t.LowerBound(tableInstances, "id", after)
	}
	if err != nil {
		return out
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		inst := raw.(*Instance)
		if inst.ID <= after && after != "" {
			continue
		}
		out = append(out, inst)
		if limit > 0 && len(out) >= limit {
			break
		}
	}
	return out
}
