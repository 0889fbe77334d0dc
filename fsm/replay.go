package fsm

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/raft"
)

// Replay re-derives an instance from its history. A scratch FSM holding
// the stored workflows starts the instance again, against its own version
// or another, and is fed, in order, what came from outside in the
// original run: the input, every lease, every result a worker reported,
// every timer that fired, every signal, every operator action and every
// child's end, each at the time it happened. After each of those the
// events the scratch FSM derived are compared with the history's; the
// first difference is the divergence. With no difference, the replayed
// instance's state is compared with the stored one.
//
// Against the instance's own version a divergence means the state machine
// is not deterministic (or the state was damaged); against another version
// it names the first step where the new version would decide differently.
// It reads only tx and builds its own state, so any node can answer.
func (f *FSM) Replay(tx *Txn, id string, version uint64) (*ReplayReport, error) {
	inst := tx.Instance(id)
	if inst == nil {
		return nil, errorf(CodeNotFound, "instance %q not found", id)
	}
	if version == 0 {
		version = inst.Version
	}
	if tx.WorkflowVersion(inst.Workflow, version) == nil {
		return nil, errorf(CodeNotFound, "workflow %s has no version %d", inst.Workflow, version)
	}
	history := tx.History(id, 0, 0)
	r := &replayer{real: tx, id: id, version: version, scratch: f.scratch(tx)}
	rep := &ReplayReport{InstanceID: id, Workflow: inst.Workflow, Version: inst.Version, ReplayedVersion: version, Events: len(history)}
	for start := 0; start < len(history); {
		end := start
		for end < len(history) && history[end].Index == history[start].Index {
			end++
		}
		group := history[start:end]
		before := r.eventCount()
		if reason := r.replayGroup(group, inst.Workflow); reason != "" {
			rep.Divergence = &Divergence{Seq: group[0].Seq, Step: group[0].Step, Reason: reason, Original: group[0]}
			break
		}
		produced := r.scratch.State().Read().History(id, before, 0)
		if d := compareEvents(group, produced); d != nil {
			rep.Divergence = d
			break
		}
		rep.ReplayedEvents += len(produced)
		start = end
	}
	replayed := r.scratch.State().Read().Instance(id)
	if replayed != nil {
		rep.Status = replayed.Status
	}
	if rep.Divergence == nil {
		rep.Divergence = compareState(inst, replayed)
	}
	rep.Matches = rep.Divergence == nil
	return rep, nil
}

// ReplayReport is what a replay found.
type ReplayReport struct {
	InstanceID string `json:"instance_id"`
	Workflow   string `json:"workflow"`
	// Version is the instance's; ReplayedVersion the one replayed against.
	Version         uint64 `json:"version"`
	ReplayedVersion uint64 `json:"replayed_version"`
	// Events is the length of the history; ReplayedEvents how many of them
	// the replay re-derived identically before it stopped.
	Events         int `json:"events"`
	ReplayedEvents int `json:"replayed_events"`
	// Matches is true when every event and the final state were
	// re-derived identically.
	Matches    bool        `json:"matches"`
	Divergence *Divergence `json:"divergence,omitempty"`
	// Status is the state the replayed instance reached.
	Status string `json:"status"`
}

// Divergence is the first place a replay differs from the history: the
// original event and the replayed one (either may be absent), and why.
type Divergence struct {
	Seq      uint64 `json:"seq"`
	Step     string `json:"step,omitempty"`
	Reason   string `json:"reason"`
	Original *Event `json:"original,omitempty"`
	Replayed *Event `json:"replayed,omitempty"`
}

type replayer struct {
	real    *Txn
	scratch *FSM
	id      string
	version uint64
	index   uint64
}

// scratch returns an FSM whose state holds the stored workflow versions
// (with their version counters) and nothing else. Compiled workflows are
// shared: they are immutable and keyed by name and version.
func (f *FSM) scratch(real *Txn) *FSM {
	s := New(nil)
	tx := s.state.write(0)
	for _, latest := range real.Workflows() {
		for _, wv := range real.WorkflowVersions(latest.Name) {
			tx.mustInsert(tableWorkflows, wv)
		}
		tx.setCounter("workflow_version/"+latest.Name, latest.Version)
	}
	tx.Commit()
	f.compiled.Range(func(k, v any) bool {
		s.compiled.Store(k, v)
		return true
	})
	return s
}

func (r *replayer) apply(t MessageType, msg any) any {
	data, err := Encode(t, msg)
	if err != nil {
		return errorf(CodeInvalid, "%v", err)
	}
	r.index++
	return r.scratch.Apply(&raft.Log{Index: r.index, Type: raft.LogCommand, Data: data})
}

func (r *replayer) eventCount() uint64 {
	if inst := r.scratch.State().Read().Instance(r.id); inst != nil {
		return inst.EventSeq
	}
	return 0
}

// replayGroup feeds the scratch FSM the causes among the events one
// command produced. An event is a cause when the scratch state shows it
// has not happened yet (a task still leased that the event ends, a child
// still running); otherwise it is a consequence of an earlier cause and is
// left to the comparison. It returns why a cause could not be replayed.
func (r *replayer) replayGroup(group []*Event, workflow string) string {
	for _, e := range group {
		h := Header{Time: e.Time}
		var res any
		switch e.Type {
		case "instance_started":
			res = r.apply(StartInstanceType, &StartInstanceRequest{Header: h, ID: r.id, Workflow: workflow, Version: r.version, Input: e.Data})
			if err, ok := res.(*Error); ok {
				return fmt.Sprintf("version %d would not start the instance: %s", r.version, err.Message)
			}
			continue
		case "operator_suspend":
			res = r.apply(SuspendInstanceType, &SuspendInstanceRequest{Header: h, ID: r.id, Reason: e.Detail})
		case "operator_resume":
			res = r.apply(ResumeInstanceType, &SuspendInstanceRequest{Header: h, ID: r.id, Reason: e.Detail})
		case "operator_cancel":
			res = r.apply(CancelInstanceType, &CancelInstanceRequest{Header: h, ID: r.id, Reason: e.Detail})
		case "operator_terminate":
			res = r.apply(TerminateInstanceType, &TerminateInstanceRequest{Header: h, ID: r.id, Reason: e.Detail})
		case "operator_retry":
			res = r.apply(RetryInstanceType, &RetryInstanceRequest{Header: h, ID: r.id, Step: e.Step, Reason: e.Detail})
		case "operator_complete", "operator_skip", "operator_fail", "operator_rerun":
			res = r.apply(StepOverrideType, &StepOverrideRequest{Header: h, ID: r.id, Step: e.Step,
				Action: strings.TrimPrefix(e.Type, "operator_"), Output: e.Data, Error: e.Error, Reason: e.Detail})
		case "parent_cancel", "parent_terminate":
			r.index++
			tx := r.scratch.state.write(r.index)
			r.scratch.stopChild(tx, r.id, e.Type == "parent_cancel", e.Detail, e.Time)
			tx.setCounter("index", r.index)
			tx.Commit()
		case "signal_received":
			res = r.apply(SignalInstanceType, &SignalInstanceRequest{Header: h, ID: r.id, Name: e.Detail, Payload: e.Data})
		case "timer_fired":
			tm := r.findTimer(e)
			if tm == nil {
				return fmt.Sprintf("the original fired a %s timer for %s; the replay has none", e.Detail, describeStep(e.Step))
			}
			res = r.apply(FireTimersType, &FireTimersRequest{Header: h, Timers: []string{tm.ID}})
		case "task_leased", "compensation_leased":
			t := r.scratchTask(e)
			if t == nil || t.Status != TaskPending {
				return fmt.Sprintf("the original leased the task of %s to worker %s; %s", describeStep(e.Step), e.Worker, r.stepState(e.Step))
			}
			if t.Service != "" {
				if b := r.scratch.State().Read().Breaker(t.Service); b != nil && b.State != BreakerClosed {
					// Breakers are the cluster's, not the instance's: the
					// original was let through, so the replay is too.
					r.apply(SetBreakerType, &SetBreakerRequest{Header: h, Name: t.Service, State: BreakerClosed})
				}
			}
			res = r.apply(LeaseTasksType, &LeaseTasksRequest{Header: h, Leases: []Lease{{TaskID: t.ID, WorkerID: e.Worker}}})
			if g, ok := res.(*LeaseTasksResponse); ok && len(g.Granted) == 0 {
				return fmt.Sprintf("the original leased the task of %s; the replay would not dispatch it", describeStep(e.Step))
			}
		case "step_succeeded", "element_succeeded", "step_compensated":
			if t := r.leasedTask(e); t != nil {
				res = r.apply(CompleteTaskType, &CompleteTaskRequest{Header: h, TaskID: t.ID, Token: t.Token, Output: e.Data})
			} else if child := r.runningChild(e); child != nil {
				r.childEnded(child, e)
			}
		case "attempt_failed", "step_failed", "element_failed", "compensation_attempt_failed", "compensation_failed", "step_cancelled", "element_cancelled":
			t := r.leasedTask(e)
			switch {
			case t != nil && e.Error != nil && (e.Error.Type == "timeout" || e.Error.Type == "heartbeat_timeout") && !t.deadline().After(e.Time):
				res = r.apply(ExpireLeasesType, &ExpireLeasesRequest{Header: h, Leases: []ExpiredLease{{TaskID: t.ID, Token: t.Token}}})
			case t != nil && e.Error != nil:
				res = r.apply(FailTaskType, &FailTaskRequest{Header: h, TaskID: t.ID, Token: t.Token, Error: *e.Error})
			case t == nil:
				if child := r.runningChild(e); child != nil {
					r.childEnded(child, e)
				}
			}
		}
		if err, ok := res.(*Error); ok {
			return fmt.Sprintf("the replay refused the original's %s: %s", e.Type, err.Message)
		}
	}
	return ""
}

// originalTask is the task an original event names, from the stored state.
func (r *replayer) originalTask(e *Event) *Task {
	if e.TaskID == "" {
		return nil
	}
	return r.real.Task(e.TaskID)
}

// scratchTask finds the replay's counterpart of the task an event names:
// the task of the same step, element and purpose.
func (r *replayer) scratchTask(e *Event) *Task {
	stx := r.scratch.State().Read()
	inst := stx.Instance(r.id)
	if inst == nil || inst.Steps[e.Step] == nil {
		return nil
	}
	st := inst.Steps[e.Step]
	orig := r.originalTask(e)
	switch {
	case strings.HasPrefix(e.Type, "compensation_") || e.Type == "step_compensated" || (orig != nil && orig.Compensation):
		return stx.Task(st.CompensationTaskID)
	case e.Element != "" || (orig != nil && orig.Element != nil):
		for i, el := range st.Elements {
			if el.Key == e.Element || (e.Element == "" && orig != nil && *orig.Element == i) {
				return stx.Task(el.TaskID)
			}
		}
		return nil
	}
	return stx.Task(st.TaskID)
}

// leasedTask is the replay's task for the event if it is leased: the
// event is then the result of the attempt, not a consequence.
func (r *replayer) leasedTask(e *Event) *Task {
	if t := r.scratchTask(e); t != nil && t.Status == TaskLeased {
		return t
	}
	return nil
}

// runningChild is the child instance the event's step waits for, if the
// step is a running child step in the replay.
func (r *replayer) runningChild(e *Event) *Instance {
	inst := r.scratch.State().Read().Instance(r.id)
	if inst == nil || e.Element != "" {
		return nil
	}
	st := inst.Steps[e.Step]
	if st == nil || st.ChildID == "" || st.Status != StepRunning {
		return nil
	}
	return r.scratch.State().Read().Instance(st.ChildID)
}

// childEnded ends the replay's child as the original child ended (its
// stored final state), which moves the parent on as it did then.
func (r *replayer) childEnded(child *Instance, e *Event) {
	orig := r.real.Instance(child.ID)
	c := child.clone()
	switch {
	case orig != nil && orig.Terminal():
		c.Status, c.Output, c.Error = orig.Status, orig.Output, orig.Error
	case e.Type == "step_succeeded":
		c.Status, c.Output = InstanceCompleted, e.Data
	default:
		c.Status = InstanceFailed
		if e.Error != nil {
			c.Error = &InstanceError{Type: e.Error.Type, Message: e.Error.Message}
		}
	}
	r.index++
	tx := r.scratch.state.write(r.index)
	tx.mustInsert(tableInstances, c)
	r.scratch.childEnded(tx, c, e.Time)
	tx.setCounter("index", r.index)
	tx.Commit()
}

// findTimer is the replay's pending timer of the kind and step an event
// names (and of the same task, for a retry or schedule timeout).
func (r *replayer) findTimer(e *Event) *Timer {
	stx := r.scratch.State().Read()
	var want *Task
	if e.TaskID != "" {
		want = r.scratchTask(e)
	}
	it, err := stx.Get(tableTimers, "id")
	if err != nil {
		return nil
	}
	// Of the candidates (a stale one may linger, a no-op when it fires),
	// the one due first that was due when the original fired.
	var best *Timer
	for raw := it.Next(); raw != nil; raw = it.Next() {
		tm := raw.(*Timer)
		if tm.InstanceID != r.id || tm.Kind != e.Detail || tm.Step != e.Step || tm.Due.After(e.Time) {
			continue
		}
		if want != nil && tm.TaskID != want.ID || tm.Kind == TimerScheduleTimeout && tm.Attempt != e.Attempt {
			continue
		}
		if best == nil || tm.Due.Before(best.Due) {
			best = tm
		}
	}
	return best
}

func (r *replayer) stepState(step string) string {
	inst := r.scratch.State().Read().Instance(r.id)
	if inst == nil {
		return "the replay has no instance"
	}
	st := inst.Steps[step]
	if st == nil {
		return fmt.Sprintf("version %d has no step %q", r.version, step)
	}
	return fmt.Sprintf("in the replay the step is %s", st.Status)
}

func describeStep(step string) string {
	if step == "" {
		return "the instance"
	}
	return fmt.Sprintf("step %q", step)
}

// compareEvents returns the first difference between the events one
// command produced originally and in the replay.
func compareEvents(orig, replayed []*Event) *Divergence {
	for i := 0; i < len(orig) || i < len(replayed); i++ {
		var o, p *Event
		if i < len(orig) {
			o = orig[i]
		}
		if i < len(replayed) {
			p = replayed[i]
		}
		if o != nil && p != nil && sameEvent(o, p) {
			continue
		}
		d := &Divergence{Original: o, Replayed: p}
		switch {
		case p == nil:
			d.Seq, d.Step = o.Seq, o.Step
			d.Reason = fmt.Sprintf("the original recorded %s%s; the replay did not", o.Type, onStep(o.Step))
		case o == nil:
			d.Seq, d.Step = p.Seq, p.Step
			d.Reason = fmt.Sprintf("the replay recorded %s%s, which the original did not", p.Type, onStep(p.Step))
		default:
			d.Seq, d.Step = o.Seq, o.Step
			if d.Step == "" {
				d.Step = p.Step
			}
			d.Reason = fmt.Sprintf("the original recorded %s%s; the replay %s%s", o.Type, onStep(o.Step), p.Type, onStep(p.Step))
			if o.Type == p.Type && o.Step == p.Step {
				d.Reason = fmt.Sprintf("%s%s differs: %s", o.Type, onStep(o.Step), eventDiff(o, p))
			}
		}
		return d
	}
	return nil
}

func onStep(step string) string {
	if step == "" {
		return ""
	}
	return fmt.Sprintf(" of step %q", step)
}

// sameEvent compares what an event says, not where it was stored: task
// ids and raft indexes are the replay's own.
func sameEvent(a, b *Event) bool {
	return eventDiff(a, b) == ""
}

func eventDiff(a, b *Event) string {
	switch {
	case a.Type != b.Type || a.Step != b.Step || a.Element != b.Element:
		return "a different event"
	case a.Attempt != b.Attempt:
		return fmt.Sprintf("attempt %d, replayed %d", a.Attempt, b.Attempt)
	case a.Worker != b.Worker:
		return fmt.Sprintf("worker %q, replayed %q", a.Worker, b.Worker)
	case !bytes.Equal(normalizeJSON(a.Data), normalizeJSON(b.Data)) && a.Type != "instance_started":
		return fmt.Sprintf("data %s, replayed %s", normalizeJSON(a.Data), normalizeJSON(b.Data))
	case (a.Error == nil) != (b.Error == nil) || (a.Error != nil && (a.Error.Type != b.Error.Type || a.Error.Message != b.Error.Message)):
		return fmt.Sprintf("error %s, replayed %s", errText(a.Error), errText(b.Error))
	case a.Detail != b.Detail && a.Type != "instance_started":
		return fmt.Sprintf("detail %q, replayed %q", a.Detail, b.Detail)
	}
	return ""
}

func errText(e *TaskError) string {
	if e == nil {
		return "none"
	}
	return e.Type + ": " + e.Message
}

// compareState compares the stored instance with the replayed one: status,
// output, error and every step's status, output and error.
func compareState(stored, replayed *Instance) *Divergence {
	if replayed == nil {
		return &Divergence{Reason: "the replay did not start the instance"}
	}
	if stored.Status != replayed.Status {
		return &Divergence{Seq: stored.EventSeq, Reason: fmt.Sprintf("the instance is %s; the replay ended %s", stored.Status, replayed.Status)}
	}
	if !bytes.Equal(normalizeJSON(stored.Output), normalizeJSON(replayed.Output)) {
		return &Divergence{Seq: stored.EventSeq, Reason: fmt.Sprintf("the instance's output is %s; the replay's %s", normalizeJSON(stored.Output), normalizeJSON(replayed.Output))}
	}
	names := make([]string, 0, len(stored.Steps))
	for n := range stored.Steps {
		names = append(names, n)
	}
	for n := range replayed.Steps {
		if stored.Steps[n] == nil {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		s, p := stored.Steps[n], replayed.Steps[n]
		switch {
		case s == nil:
			return &Divergence{Step: n, Reason: fmt.Sprintf("the replay has a step %q the instance does not", n)}
		case p == nil:
			return &Divergence{Step: n, Reason: fmt.Sprintf("the instance has a step %q the replay does not", n)}
		case s.Status != p.Status:
			return &Divergence{Step: n, Reason: fmt.Sprintf("step %q is %s; in the replay %s", n, s.Status, p.Status)}
		case !bytes.Equal(normalizeJSON(s.Output), normalizeJSON(p.Output)):
			return &Divergence{Step: n, Reason: fmt.Sprintf("step %q's output is %s; in the replay %s", n, normalizeJSON(s.Output), normalizeJSON(p.Output))}
		case errText(s.Error) != errText(p.Error):
			return &Divergence{Step: n, Reason: fmt.Sprintf("step %q's error is %s; in the replay %s", n, errText(s.Error), errText(p.Error))}
		}
	}
	return nil
}
