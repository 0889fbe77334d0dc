package fsm

import (
	"fmt"
	"time"

	"github.com/hashicorp/go-memdb"
)

// Timer kinds.
const (
	TimerRetry = "retry" // a task's backoff ends: back to its queue
	TimerSleep = "sleep" // a sleep step's time has come
	// TimerInstanceTimeout ends an instance still running at its deadline.
	TimerInstanceTimeout = "instance_timeout"
	// TimerScheduleTimeout fails a step whose task no worker took in time.
	TimerScheduleTimeout = "schedule_timeout"
)

// Timer is a point in time at which the state must change. Timers live in
// the replicated state; only the leader reads the clock and proposes
// FireTimers when one is due, so every node fires the same timers, and a new
// leader finds them all after its barrier.
type Timer struct {
	ID         string `json:"id"`
	Kind       string `json:"kind"`
	InstanceID string `json:"instance_id"`
	Step       string `json:"step"`
	TaskID     string `json:"task_id,omitempty"`
	// Attempt is the task's attempt count when a schedule timer was armed.
	Attempt int `json:"attempt,omitempty"`
	// Deferred marks a timer that came due while its instance was
	// suspended: it fires when the instance resumes.
	Deferred bool      `json:"deferred,omitempty"`
	Due      time.Time `json:"due"`
	// DueKey is Due in Unix nanoseconds, indexed so the leader finds the
	// next timer without a scan.
	DueKey      uint64 `json:"due_key"`
	CreateIndex uint64 `json:"create_index"`
}

const tableTimers = "timers"

func init() {
	registerTable(&memdb.TableSchema{
		Name: tableTimers,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
			"due": {Name: "due", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
				&memdb.UintFieldIndex{Field: "DueKey"},
				&memdb.StringFieldIndex{Field: "ID"},
			}}},
			"instance": {Name: "instance", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "InstanceID"}},
		},
	})
	registerRecord(tableTimers, func() any { return new(Timer) })
	registerCommand(FireTimersType, (*FSM).applyFireTimers)
}

func newTimer(tx *Txn, kind, instance, step, task string, due time.Time) *Timer {
	t := &Timer{
		ID:          fmt.Sprintf("%s-%d", kind, tx.nextSeq("timer")),
		Kind:        kind,
		InstanceID:  instance,
		Step:        step,
		TaskID:      task,
		Due:         due,
		DueKey:      uint64(due.UnixNano()),
		CreateIndex: tx.Index,
	}
	tx.mustInsert(tableTimers, t)
	return t
}

// FireTimersRequest fires timers the leader saw come due at Time. A timer
// whose Due is after Time is left alone (never early); a fired timer is
// deleted (never twice).
type FireTimersRequest struct {
	Header
	Timers []string `json:"timers"`
}

// FireTimersResponse lists the timers that fired.
type FireTimersResponse struct {
	Fired []string `json:"fired"`
}

func (f *FSM) applyFireTimers(tx *Txn, body []byte) any {
	var req FireTimersRequest
	mustDecode(FireTimersType, body, &req)
	resp := &FireTimersResponse{Fired: []string{}}
	for _, id := range req.Timers {
		tm := tx.Timer(id)
		if tm == nil || tm.Deferred || tm.Due.After(req.Time) {
			continue
		}
		if tm.Kind == TimerBreakerReset { // a service's, not an instance's
			if err := tx.Delete(tableTimers, tm); err != nil {
				panic(fmt.Sprintf("fsm: delete timer: %v", err))
			}
			tx.halfOpen(tm.Step, req.Time)
			resp.Fired = append(resp.Fired, id)
			continue
		}
		inst := tx.Instance(tm.InstanceID)
		if inst != nil && inst.Status == InstanceSuspended {
			tx.deferTimer(tm) // takes effect at resume
			continue
		}
		if err := tx.Delete(tableTimers, tm); err != nil {
			panic(fmt.Sprintf("fsm: delete timer: %v", err))
		}
		resp.Fired = append(resp.Fired, id)
		if inst == nil || inst.Terminal() {
			continue // the instance ended meanwhile; nothing is waiting
		}
		f.fireTimer(tx, inst, tm, req.Time)
	}
	return resp
}

// fireTimer makes a due (already deleted) timer take effect.
func (f *FSM) fireTimer(tx *Txn, inst *Instance, tm *Timer, now time.Time) {
	switch tm.Kind {
	case TimerRetry:
		f.endBackoff(tx, inst, tm, now)
	case TimerSleep:
		f.wake(tx, inst, tm, now)
	case TimerInstanceTimeout:
		if inst.Status == InstanceRunning { // a cancellation runs to its end
			f.timeOut(tx, inst, tm, now)
		}
	case TimerSignalTimeout:
		f.signalTimedOut(tx, inst, tm, now)
	case TimerScheduleTimeout:
		f.scheduleTimedOut(tx, inst, tm, now)
	}
}

// endBackoff puts a task whose retry wait is over back in its queue.
func (f *FSM) endBackoff(tx *Txn, inst *Instance, tm *Timer, now time.Time) {
	task := tx.Task(tm.TaskID)
	if task == nil || task.Status != TaskRetryWait {
		return
	}
	c := *task
	c.Status = TaskPending
	c.ReadyAt = now
	c.ModifyIndex = tx.Index
	tx.mustInsert(tableTasks, &c)
	armScheduleTimeout(tx, &c, now)
	ic := inst.clone()
	st := ic.Steps[c.Step]
	switch {
	case c.Compensation: // the step stays compensating
	case c.Element != nil:
		st.Elements[*c.Element].Status = StepScheduled
		st.Status = elementsStatus(st)
	default:
		st.Status = StepScheduled
	}
	ic.UpdatedAt, ic.ModifyIndex = now, tx.Index
	ic.note(Event{Type: "timer_fired", Step: tm.Step, TaskID: tm.TaskID, Detail: tm.Kind})
	f.saveInstance(tx, ic, now)
}

// scheduleTimedOut fails the step of a task that is still waiting in its
// queue for the attempt the timer was armed for: no worker took it. It is
// not retried; another attempt would wait for the same absent workers.
func (f *FSM) scheduleTimedOut(tx *Txn, inst *Instance, tm *Timer, now time.Time) {
	task := tx.Task(tm.TaskID)
	if task == nil || task.Status != TaskPending || task.Attempt != tm.Attempt {
		return
	}
	ic := inst.clone()
	ic.note(Event{Type: "timer_fired", Step: tm.Step, TaskID: tm.TaskID, Attempt: tm.Attempt, Detail: tm.Kind})
	_, _ = f.settleTask(tx, task, ic, now, nil, &TaskError{Type: "schedule_timeout", NonRetryable: true,
		Message: fmt.Sprintf("no worker took the %s task from queue %s within %s", task.Activity, task.Queue, task.ScheduleTimeout)})
}

// wake ends a sleep step and moves the instance on.
func (f *FSM) wake(tx *Txn, inst *Instance, tm *Timer, now time.Time) {
	if inst.Steps[tm.Step].Status != StepSleeping {
		return
	}
	wf, err := f.workflow(tx.WorkflowVersion(inst.Workflow, inst.Version))
	if err != nil {
		return
	}
	ic := inst.clone()
	ic.note(Event{Type: "timer_fired", Step: tm.Step, Detail: tm.Kind})
	st := ic.Steps[tm.Step]
	st.Output = sleptUntil(tm.Due)
	endStep(st, StepSucceeded, nil, now)
	f.advance(tx, ic, wf, now)
}

func sleptUntil(t time.Time) []byte {
	return []byte(fmt.Sprintf(`{"slept_until":%q}`, t.UTC().Format(time.RFC3339Nano)))
}

// Timer returns a timer by id, or nil.
func (t *Txn) Timer(id string) *Timer {
	raw, err := t.First(tableTimers, "id", id)
	if err != nil || raw == nil {
		return nil
	}
	return raw.(*Timer)
}

// DueTimers returns up to limit timers, earliest first.
func (t *Txn) DueTimers(limit int) []*Timer {
	out := []*Timer{}
	it, err := t.Get(tableTimers, "due")
	if err != nil {
		return out
	}
	for raw := it.Next(); raw != nil && (limit <= 0 || len(out) < limit); raw = it.Next() {
		out = append(out, raw.(*Timer))
	}
	return out
}
