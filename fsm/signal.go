package fsm

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/lockstep-io/lockstep/hcl"
)

// Signal is a named message sent to an instance. It waits, in order of
// arrival, until a wait_signal step of that name takes it; the step's
// output is its payload.
type Signal struct {
	ID         string          `json:"id"`
	InstanceID string          `json:"instance_id"`
	Seq        uint64          `json:"seq"`
	Name       string          `json:"name"`
	Payload    json.RawMessage `json:"payload"`
	// RequestID makes a send idempotent: a repeat is accepted once.
	RequestID  string    `json:"request_id,omitempty"`
	ReceivedAt time.Time `json:"received_at"`
	// ConsumedBy is the step that took the signal, if any yet.
	ConsumedBy  string `json:"consumed_by,omitempty"`
	CreateIndex uint64 `json:"create_index"`
}

const tableSignals = "signals"

// TimerSignalTimeout fails a wait_signal step that waited too long.
const TimerSignalTimeout = "signal_timeout"

func init() {
	registerTable(&memdb.TableSchema{
		Name: tableSignals,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
			"instance": {Name: "instance", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
				&memdb.StringFieldIndex{Field: "InstanceID"},
				&memdb.UintFieldIndex{Field: "Seq"},
			}}},
		},
	})
	registerRecord(tableSignals, func() any { return new(Signal) })
	registerCommand(SignalInstanceType, (*FSM).applySignal)
}

// SignalInstanceRequest sends a signal to an instance.
type SignalInstanceRequest struct {
	Header
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Payload   json.RawMessage `json:"payload"`
	RequestID string          `json:"request_id,omitempty"`
}

// SignalResponse says what became of a signal: taken by a waiting step
// (DeliveredTo), or buffered until one waits. Duplicate is true when the
// request id had been seen: nothing changed.
type SignalResponse struct {
	SignalID    string `json:"signal_id"`
	DeliveredTo string `json:"delivered_to,omitempty"`
	Duplicate   bool   `json:"duplicate,omitempty"`
}

func (f *FSM) applySignal(tx *Txn, body []byte) any {
	var req SignalInstanceRequest
	mustDecode(SignalInstanceType, body, &req)
	inst := tx.Instance(req.ID)
	if inst == nil {
		return errorf(CodeNotFound, "instance %q not found", req.ID)
	}
	if req.RequestID != "" {
		for _, s := range tx.Signals(req.ID) {
			if s.RequestID == req.RequestID {
				return &SignalResponse{SignalID: s.ID, DeliveredTo: s.ConsumedBy, Duplicate: true}
			}
		}
	}
	if inst.Status != InstanceRunning && inst.Status != InstanceSuspended {
		return errorf(CodeConflict, "instance %q is %s; it takes no more signals", req.ID, inst.Status)
	}
	wf, err := f.workflow(tx.WorkflowVersion(inst.Workflow, inst.Version))
	if err != nil {
		return errorf(CodeInvalid, "%v", err)
	}
	seq := tx.nextSeq("signal")
	sig := &Signal{ID: fmt.Sprintf("%s/%d", req.ID, seq), InstanceID: req.ID, Seq: seq, Name: req.Name,
		Payload: normalizeJSON(req.Payload), RequestID: req.RequestID, ReceivedAt: req.Time, CreateIndex: tx.Index}
	ic := inst.clone()
	ic.note(Event{Type: "signal_received", Detail: req.Name, Data: sig.Payload})
	for _, s := range wf.Steps {
		if s.Kind == hcl.KindSignal && s.SignalName == req.Name && ic.Steps[s.Name].Status == StepWaitingSignal {
			sig.ConsumedBy = s.Name
			takeSignal(ic, s, ic.Steps[s.Name], sig, req.Time)
			break
		}
	}
	tx.mustInsert(tableSignals, sig)
	if sig.ConsumedBy != "" {
		f.advance(tx, ic, wf, req.Time)
	} else {
		f.saveInstance(tx, ic, req.Time)
	}
	return &SignalResponse{SignalID: sig.ID, DeliveredTo: sig.ConsumedBy}
}

// waitForSignal starts a wait_signal step: it takes the oldest buffered
// signal of its name at once, or waits (with a timer for its timeout).
func (f *FSM) waitForSignal(tx *Txn, inst *Instance, s *hcl.Step, st *StepState, now time.Time) {
	for _, sig := range tx.Signals(inst.ID) {
		if sig.Name == s.SignalName && sig.ConsumedBy == "" {
			c := *sig
			c.ConsumedBy = s.Name
			tx.mustInsert(tableSignals, &c)
			takeSignal(inst, s, st, &c, now)
			return
		}
	}
	st.Status = StepWaitingSignal
	st.ScheduledAt = now
	if s.SignalTimeout > 0 {
		newTimer(tx, TimerSignalTimeout, inst.ID, s.Name, "", now.Add(s.SignalTimeout))
	}
}

// takeSignal ends a wait_signal step with the signal it took: its output
// is the payload, or what the step's output expression makes of the
// signal. An output expression that cannot be evaluated fails the step.
func takeSignal(inst *Instance, s *hcl.Step, st *StepState, sig *Signal, now time.Time) {
	if s.SignalOutput == nil {
		st.Output = sig.Payload
		endStep(st, StepSucceeded, nil, now)
		return
	}
	scope := scopeOf(inst, now)
	scope.Signal = &hcl.SignalInfo{Name: sig.Name, Payload: sig.Payload, RequestID: sig.RequestID, ReceivedAt: sig.ReceivedAt}
	out, err := hcl.Eval(s.SignalOutput, scope)
	if err != nil {
		endStep(st, StepFailed, &TaskError{Type: "output_error", Message: err.Error()}, now)
		return
	}
	st.Output = out
	endStep(st, StepSucceeded, nil, now)
}

// signalTimedOut fails a wait_signal step still waiting at its deadline.
func (f *FSM) signalTimedOut(tx *Txn, inst *Instance, tm *Timer, now time.Time) {
	if inst.Steps[tm.Step].Status != StepWaitingSignal {
		return
	}
	wf, err := f.workflow(tx.WorkflowVersion(inst.Workflow, inst.Version))
	if err != nil {
		return
	}
	ic := inst.clone()
	ic.note(Event{Type: "timer_fired", Step: tm.Step, Detail: tm.Kind})
	name := wf.Step(tm.Step).SignalName
	endStep(ic.Steps[tm.Step], StepFailed, &TaskError{Type: "signal_timeout",
		Message: fmt.Sprintf("no %q signal arrived by %s", name, tm.Due.UTC().Format(time.RFC3339))}, now)
	f.advance(tx, ic, wf, now)
}

// Signals lists an instance's signals in order of arrival.
func (t *Txn) Signals(instance string) []*Signal {
	out := []*Signal{}
	it, err := t.Get(tableSignals, "instance_prefix", instance)
	if err != nil {
		return out
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		s := raw.(*Signal)
		if s.InstanceID != instance {
			continue
		}
		out = append(out, s)
	}
	return out
}
