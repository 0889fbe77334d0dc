package fsm

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"
	"unique"
	"unsafe"

	"github.com/hashicorp/go-memdb"

	"github.com/lockstep-io/lockstep/hcl"
)

// Task states.
const (
	TaskPending   = "pending"    // waiting in its queue for a worker
	TaskLeased    = "leased"     // handed to one worker until its deadline
	TaskRetryWait = "retry_wait" // an attempt failed; pending again when its backoff timer fires
	TaskCompleted = "completed"
	TaskFailed    = "failed"
	TaskCancelled = "cancelled"
)

// Task is the work of one activity step, waiting in a queue and leased to
// one worker at a time. Each lease carries a new fencing token; only the
// holder of the current token may complete or fail the task.
type Task struct {
	ID         string `json:"id"`
	Seq        uint64 `json:"seq"`
	InstanceID string `json:"instance_id"`
	Step       string `json:"step"`
	Activity   string `json:"activity"`
	Queue      string `json:"queue"`
	// Priority orders pending tasks of a queue: higher first, then by Seq.
	Priority int `json:"priority,omitempty"`
	// Element is the for_each element the task runs, if any.
	Element *int `json:"element,omitempty"`
	// Compensation marks the task that undoes its step (instance cancelling).
	Compensation bool `json:"compensation,omitempty"`
	// Service is the workflow service the step calls, whose breaker gates
	// the task.
	Service string `json:"service,omitempty"`
	// IdempotencyKey is stable across attempts (instance/step, or
	// instance/step/key for a for_each element) so that a worker can make
	// its side effects idempotent.
	IdempotencyKey string          `json:"idempotency_key"`
	Input          json.RawMessage `json:"input"`
	Status         string          `json:"status"`
	Attempt        int             `json:"attempt"`
	Timeout        time.Duration   `json:"timeout"`
	// HeartbeatTimeout and ScheduleTimeout come from the step (0: none).
	HeartbeatTimeout time.Duration `json:"heartbeat_timeout,omitempty"`
	ScheduleTimeout  time.Duration `json:"schedule_timeout,omitempty"`
	Token            string        `json:"token,omitempty"`
	WorkerID         string        `json:"worker_id,omitempty"`
	LeaseDeadline    time.Time     `json:"lease_deadline,omitzero"`
	// HeartbeatDeadline is when the current attempt ends unless it
	// heartbeats again; Details are the last heartbeat's.
	HeartbeatDeadline time.Time       `json:"heartbeat_deadline,omitzero"`
	Details           json.RawMessage `json:"details,omitempty"`
	// DeadlineKey is the effective deadline (the earlier of the lease's and
	// the heartbeat's) in Unix nanoseconds, indexed so the leader finds the
	// next lease to expire without a scan.
	DeadlineKey uint64 `json:"deadline_key,omitempty"`
	// ReadyAt is when the task last entered its queue (created, or back
	// from a backoff): dispatch latency is measured from it.
	ReadyAt     time.Time `json:"ready_at"`
	CreatedAt   time.Time `json:"created_at"`
	CreateIndex uint64    `json:"create_index"`
	ModifyIndex uint64    `json:"modify_index"`

	key []byte // the id index key (newTaskKey), shared by every copy
}

func (t *Task) idKey() []byte { return keyOf(t.key, t.ID) }

// newTaskKey returns the id of the task numbered seq ("t" and the number)
// and its index key, in one allocation.
func newTaskKey(seq uint64) (string, []byte) {
	b := strconv.AppendUint(append(make([]byte, 0, 22), 't'), seq, 10)
	b = append(b, 0)
	b = b[:len(b):len(b)]
	return unsafe.String(&b[0], len(b)-1), b
}

// TaskError is the error a worker reports for an attempt. NonRetryable
// tells the engine not to try again, whatever the step's retry policy.
type TaskError struct {
	Type         string `json:"type"`
	Message      string `json:"message"`
	NonRetryable bool   `json:"non_retryable,omitempty"`
}

const tableTasks = "tasks"

func init() {
	registerTable(&memdb.TableSchema{
		Name: tableTasks,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: idIndex{strIndex{taskID}}},
			// Only pending tasks are in the queue index and only leased
			// ones in the deadline index: the ended tasks that retained
			// instances keep cost no index entries there, and an attempt's
			// end is a delete, not a re-insert.
			"queue": {Name: "queue", AllowMissing: true, Indexer: onlyIf{status: TaskPending, inner: newCompound(
				strIndex{func(o any) string { return o.(*Task).Queue }},
				strIndex{taskStatus},
				priorityIndex{},
				uintIndex{func(o any) uint64 { return o.(*Task).Seq }},
			)}},
			"deadline": {Name: "deadline", AllowMissing: true, Indexer: onlyIf{status: TaskLeased, inner: newCompound(
				strIndex{taskStatus},
				uintIndex{func(o any) uint64 { return o.(*Task).DeadlineKey }},
				strIndex{taskID},
			)}},
		},
	})
	registerRecord(tableTasks, func() any { return new(Task) })
	writeBack[tableTasks] = taskID
	registerCommand(LeaseTasksType, (*FSM).applyLeaseTasks)
	registerCommand(CompleteTaskType, (*FSM).applyCompleteTask)
	registerCommand(FailTaskType, (*FSM).applyFailTask)
	registerCommand(TaskResultsType, (*FSM).applyTaskResults)
	registerCommand(TaskResultsNextType, (*FSM).applyTaskResults)
	registerCommand(ExpireLeasesType, (*FSM).applyExpireLeases)
}

func newTask(tx *Txn, inst *Instance, s *hcl.Step, input json.RawMessage, now time.Time, element *int) *Task {
	seq := tx.nextSeq("task")
	key := inst.ID + "/" + s.Name
	if element != nil {
		key += "/" + inst.Steps[s.Name].Elements[*element].Key
	}
	t := &Task{
		Seq:              seq,
		InstanceID:       inst.ID,
		Step:             s.Name,
		Activity:         s.Activity,
		Queue:            s.Queue,
		Priority:         s.Priority,
		Element:          element,
		IdempotencyKey:   key,
		Input:            input,
		Status:           TaskPending,
		Timeout:          s.Timeout,
		HeartbeatTimeout: s.HeartbeatTimeout,
		Service:          s.Service,
		ScheduleTimeout:  s.ScheduleTimeout,
		ReadyAt:          now,
		CreatedAt:        now,
		CreateIndex:      tx.Index,
		ModifyIndex:      tx.Index,
	}
	t.ID, t.key = newTaskKey(seq)
	tx.mustInsert(tableTasks, t)
	inst.TaskIDs = append(inst.TaskIDs, t.ID)
	armScheduleTimeout(tx, t, now)
	return t
}

// armScheduleTimeout starts the schedule-to-start clock of a task that just
// entered its queue; the timer remembers the attempt it was armed for, so a
// later lease makes it a no-op.
func armScheduleTimeout(tx *Txn, t *Task, now time.Time) {
	if t.ScheduleTimeout > 0 {
		tm := newTimer(tx, TimerScheduleTimeout, t.InstanceID, t.Step, t.ID, now.Add(t.ScheduleTimeout))
		if t.Attempt > 0 {
			c := *tm
			c.Attempt = t.Attempt
			tx.mustInsert(tableTimers, &c)
		}
	}
}

// deadline is when a leased task's current attempt ends: the lease's end,
// or earlier if it must heartbeat by then.
func (t *Task) deadline() time.Time {
	if !t.HeartbeatDeadline.IsZero() && t.HeartbeatDeadline.Before(t.LeaseDeadline) {
		return t.HeartbeatDeadline
	}
	return t.LeaseDeadline
}

// Deadline is when the current attempt ends unless a result (or, with a
// heartbeat timeout, a heartbeat) arrives.
func (t *Task) Deadline() time.Time { return t.deadline() }

func (tx *Txn) cancelTask(id string, now time.Time) {
	t := tx.Task(id)
	if t == nil || t.Status == TaskCompleted || t.Status == TaskFailed || t.Status == TaskCancelled {
		return
	}
	c := *t
	c.Status = TaskCancelled
	c.Token, c.DeadlineKey = "", 0
	c.ModifyIndex = tx.Index
	tx.mustInsert(tableTasks, &c)
}

// Lease hands one pending task to one worker.
type Lease struct {
	TaskID   string `json:"task_id"`
	WorkerID string `json:"worker_id"`
}

// LeaseTasksRequest is one dispatch round of the leader: every lease it
// matched in that round, committed together.
type LeaseTasksRequest struct {
	Header
	Leases []Lease `json:"leases"`
}

// LeaseTasksResponse lists the tasks actually leased, in request order;
// a task that was no longer pending when the command applied is left out.
type LeaseTasksResponse struct {
	Granted []*Task `json:"granted"`
}

func (f *FSM) applyLeaseTasks(tx *Txn, body []byte) any {
	var req LeaseTasksRequest
	mustDecode(LeaseTasksType, body, &req)
	resp := &LeaseTasksResponse{Granted: []*Task{}}
	for i, l := range req.Leases {
		if c := f.leaseTask(tx, l.TaskID, l.WorkerID, req.Time, i); c != nil {
			resp.Granted = append(resp.Granted, c)
		}
	}
	return resp
}

// leaseTask leases a task to a worker if it is pending and may be
// dispatched now, and returns the leased copy (nil otherwise). The fencing
// token is unique per lease: the index of the command that granted it and
// the lease's place (n) in that command.
func (f *FSM) leaseTask(tx *Txn, id, worker string, now time.Time, n int) *Task {
	t := tx.Task(id)
	if t == nil || t.Status != TaskPending {
		return nil
	}
	inst := tx.Instance(t.InstanceID)
	if !tx.Dispatchable(t, inst) {
		return nil
	}
	tx.leasedThrough(t)
	c := *t
	c.Status = TaskLeased
	c.Attempt++
	c.Token = fmt.Sprintf("%d.%d", tx.Index, n)
	// Each command decodes the worker's id afresh; the canonical copy
	// spares every retained task (and its events) a string of its own.
	c.WorkerID = unique.Make(worker).Value()
	c.LeaseDeadline = now.Add(c.Timeout)
	c.HeartbeatDeadline = time.Time{}
	if c.HeartbeatTimeout > 0 {
		c.HeartbeatDeadline = now.Add(c.HeartbeatTimeout)
	}
	c.Details = nil
	c.DeadlineKey = uint64(c.deadline().UnixNano())
	c.ModifyIndex = tx.Index
	tx.mustInsert(tableTasks, &c)

	ic := inst.clone()
	st := ic.Steps[c.Step]
	if c.Compensation {
		ic.note(Event{Type: "compensation_leased", Step: c.Step, TaskID: c.ID, Attempt: c.Attempt, Worker: c.WorkerID})
		ic.UpdatedAt, ic.ModifyIndex = now, tx.Index
		f.saveInstance(tx, ic, now)
		return &c
	}
	st.Status = StepRunning
	if c.Element != nil {
		e := st.Elements[*c.Element]
		e.Status, e.Attempts = StepRunning, c.Attempt
		st.Attempts = max(st.Attempts, c.Attempt)
		if st.StartedAt.IsZero() {
			st.StartedAt = now
		}
	} else {
		st.Attempts = c.Attempt
		st.StartedAt = now
	}
	ic.UpdatedAt, ic.ModifyIndex = now, tx.Index
	f.saveInstance(tx, ic, now)
	return &c
}

// NextTasks asks, in a batch of results, for more work in the same
// command: the worker's next tasks are leased as the results are applied,
// so a task its own results made ready goes to it without a lease round of
// its own (one raft entry per step instead of two).
type NextTasks struct {
	WorkerID string `json:"worker_id"`
	Queue    string `json:"queue"`
	// Activities, when set, limits the tasks to those activities.
	Activities []string `json:"activities,omitempty"`
	Max        int      `json:"max"`
}

// maxNextScan bounds how many pending tasks one NextTasks looks at, so a
// long queue of tasks for other activities costs a command a bounded time.
const maxNextScan = 256

// leaseNext leases up to next.Max pending tasks of next.Queue, in dispatch
// order (priority, then age), to next.WorkerID. Tokens are numbered after
// the command's own first positions (from offset).
func (f *FSM) leaseNext(tx *Txn, next *NextTasks, now time.Time, offset int) []*Task {
	accept := func(string) bool { return true }
	if len(next.Activities) > 0 {
		set := make(map[string]bool, len(next.Activities))
		for _, a := range next.Activities {
			set[a] = true
		}
		accept = func(a string) bool { return set[a] }
	}
	// Collect first: leasing changes the queue index being walked.
	var ids []string
	scanned := 0
	tx.EachPendingTask(next.Queue, func(t *Task) bool {
		scanned++
		if accept(t.Activity) && tx.Dispatchable(t, tx.Instance(t.InstanceID)) {
			ids = append(ids, t.ID)
		}
		return len(ids) < next.Max && scanned < maxNextScan
	})
	out := []*Task{}
	for i, id := range ids {
		if c := f.leaseTask(tx, id, next.WorkerID, now, offset+i); c != nil {
			out = append(out, c)
		}
	}
	return out
}

// CompleteTaskRequest reports an attempt's output.
type CompleteTaskRequest struct {
	Header
	TaskID string          `json:"task_id"`
	Token  string          `json:"token"`
	Output json.RawMessage `json:"output"`
}

// FailTaskRequest reports an attempt's error.
type FailTaskRequest struct {
	Header
	TaskID string    `json:"task_id"`
	Token  string    `json:"token"`
	Error  TaskError `json:"error"`
}

// TaskResultResponse is the answer to a completion or failure.
type TaskResultResponse struct {
	TaskID         string `json:"task_id"`
	InstanceID     string `json:"instance_id"`
	InstanceStatus string `json:"instance_status"`
}

// checkLease validates a result against the task's current lease. A result
// is accepted once: a stale or repeated token is refused, so a step moves
// exactly once however often a worker reports.
func checkLease(tx *Txn, id, token string) (*Task, *Instance, *Error) {
	t := tx.Task(id)
	if t == nil {
		return nil, nil, errorf(CodeNotFound, "task %q not found", id)
	}
	if t.Status != TaskLeased || t.Token == "" || t.Token != token {
		return nil, nil, errorf(CodeStaleToken, "task %q: token %q does not hold the current lease (task is %s)", id, token, t.Status)
	}
	inst := tx.Instance(t.InstanceID)
	if inst == nil || inst.Terminal() {
		return nil, nil, errorf(CodeConflict, "task %q: instance is no longer running", id)
	}
	return t, inst, nil
}

func (f *FSM) applyCompleteTask(tx *Txn, body []byte) any {
	var req CompleteTaskRequest
	mustDecode(CompleteTaskType, body, &req)
	return f.finishTask(tx, req.TaskID, req.Token, req.Time, normalizeJSON(req.Output), nil)
}

func (f *FSM) applyFailTask(tx *Txn, body []byte) any {
	var req FailTaskRequest
	mustDecode(FailTaskType, body, &req)
	e := req.Error
	if e.Type == "" {
		e.Type = "error"
	}
	return f.finishTask(tx, req.TaskID, req.Token, req.Time, nil, &e)
}

// TaskOutcome is one attempt's result in a batch: an output, or an error.
type TaskOutcome struct {
	TaskID string          `json:"task_id"`
	Token  string          `json:"token"`
	Output json.RawMessage `json:"output,omitempty"`
	Error  *TaskError      `json:"error,omitempty"`
}

// TaskResultsRequest reports many attempts' results in one command, so a
// busy worker pays one HTTP round trip and one raft entry for a batch.
type TaskResultsRequest struct {
	Header
	Results []TaskOutcome `json:"results"`
	// Next, if set, leases the worker's next tasks once the results are
	// applied (see NextTasks).
	Next *NextTasks `json:"next,omitempty"`
}

// Type is the message type to propose the request with: with Next, one a
// node that cannot lease for it does not apply.
func (r *TaskResultsRequest) Type() MessageType {
	if r.Next != nil {
		return TaskResultsNextType
	}
	return TaskResultsType
}

// TaskOutcomeResult is the answer to one result of a batch: what a single
// completion would have answered, or its error.
type TaskOutcomeResult struct {
	TaskResultResponse
	Error *Error `json:"error,omitempty"`
}

// TaskResultsResponse answers a batch, one entry per result in order.
type TaskResultsResponse struct {
	Results []TaskOutcomeResult `json:"results"`
	// Leased are the tasks leased for Next, in dispatch order.
	Leased []*Task `json:"leased,omitempty"`
}

// applyTaskResults settles each result as its own completion or failure
// would, in order. A refused result (stale token, ended instance) changes
// nothing and does not stop the others.
func (f *FSM) applyTaskResults(tx *Txn, body []byte) any {
	var req TaskResultsRequest
	mustDecode(TaskResultsType, body, &req)
	out := &TaskResultsResponse{Results: make([]TaskOutcomeResult, len(req.Results))}
	for i, r := range req.Results {
		var res any
		if r.Error != nil {
			e := *r.Error
			if e.Type == "" {
				e.Type = "error"
			}
			res = f.finishTask(tx, r.TaskID, r.Token, req.Time, nil, &e)
		} else {
			res = f.finishTask(tx, r.TaskID, r.Token, req.Time, normalizeJSON(r.Output), nil)
		}
		switch v := res.(type) {
		case *TaskResultResponse:
			out.Results[i].TaskResultResponse = *v
		case *Error:
			out.Results[i].TaskID, out.Results[i].Error = r.TaskID, v
		}
	}
	if req.Next != nil && req.Next.Max > 0 {
		out.Leased = f.leaseNext(tx, req.Next, req.Time, len(req.Results))
	}
	return out
}

func (f *FSM) finishTask(tx *Txn, id, token string, now time.Time, output json.RawMessage, taskErr *TaskError) any {
	t, inst, e := checkLease(tx, id, token)
	if e != nil {
		return e
	}
	res, err := f.settleTask(tx, t, inst, now, output, taskErr)
	if err != nil {
		return errorf(CodeInvalid, "%v", err)
	}
	return res
}

// settleTask ends one attempt of a leased task. A failed attempt that the
// step's retry policy allows again waits in retry_wait for a backoff timer;
// otherwise the result moves the step (or its for_each element) and the
// instance. Failures the worker reports and leases that run out both come
// here, so they follow one policy.
func (f *FSM) settleTask(tx *Txn, t *Task, inst *Instance, now time.Time, output json.RawMessage, taskErr *TaskError) (*TaskResultResponse, error) {
	wf, err := f.workflow(tx.WorkflowVersion(inst.Workflow, inst.Version))
	if err != nil {
		return nil, err
	}
	s := wf.Step(t.Step)
	policy := s.Retry
	if t.Compensation {
		policy = s.Compensate.Retry
	}
	c := *t
	c.Token, c.DeadlineKey = "", 0
	c.LeaseDeadline, c.HeartbeatDeadline = time.Time{}, time.Time{}
	c.ModifyIndex = tx.Index
	ic := inst.clone()
	st := ic.Steps[c.Step]
	if taskErr == nil || taskErr.Type != "schedule_timeout" { // never reached the service
		tx.serviceResult(&c, taskErr == nil, now)
	}
	retry := taskErr != nil && !taskErr.NonRetryable && policy.Retryable(c.Attempt, taskErr.Type) &&
		(ic.Status == InstanceRunning || ic.Status == InstanceSuspended || c.Compensation)
	if retry {
		c.Status = TaskRetryWait
		tx.mustInsert(tableTasks, &c)
		// The jitter comes from the idempotency key, not the task id: the
		// same for the same step of the same instance wherever it is derived
		// (a replay numbers its tasks afresh).
		newTimer(tx, TimerRetry, ic.ID, c.Step, c.ID, now.Add(policy.Delay(c.Attempt, c.IdempotencyKey)))
		if c.Compensation {
			ic.note(Event{Type: "compensation_attempt_failed", Step: c.Step, TaskID: c.ID, Attempt: c.Attempt, Error: taskErr, Detail: "retrying after a backoff"})
		} else if c.Element != nil {
			e := st.Elements[*c.Element]
			e.Status, e.Error = StepRetryWait, taskErr
			st.Status = elementsStatus(st)
		} else {
			st.Status, st.Error = StepRetryWait, taskErr
		}
		ic.UpdatedAt, ic.ModifyIndex = now, tx.Index
		f.saveInstance(tx, ic, now)
		return &TaskResultResponse{TaskID: c.ID, InstanceID: ic.ID, InstanceStatus: ic.Status}, nil
	}
	if taskErr != nil {
		c.Status = TaskFailed
	} else {
		c.Status = TaskCompleted
	}
	tx.mustInsert(tableTasks, &c)
	if ic.Status == InstanceCancelling {
		f.settleCancelling(tx, &c, ic, wf, output, taskErr, now)
		ic.UpdatedAt, ic.ModifyIndex = now, tx.Index
		f.saveInstance(tx, ic, now)
		return &TaskResultResponse{TaskID: c.ID, InstanceID: ic.ID, InstanceStatus: ic.Status}, nil
	}
	if c.Element != nil {
		f.finishElement(tx, ic, s, st, *c.Element, output, taskErr, now)
	} else if taskErr != nil {
		endStep(st, StepFailed, taskErr, now)
	} else {
		st.Output = output
		endStep(st, StepSucceeded, nil, now)
	}
	f.advance(tx, ic, wf, now)
	return &TaskResultResponse{TaskID: c.ID, InstanceID: ic.ID, InstanceStatus: ic.Status}, nil
}

// ExpiredLease names a lease the leader saw pass its deadline.
type ExpiredLease struct {
	TaskID string `json:"task_id"`
	Token  string `json:"token"`
}

// ExpireLeasesRequest ends the attempts whose leases ran out, as failures
// of type "timeout": retried after a backoff when the step's policy allows,
// else failing the step. Time is when the leader's timer fired; a lease
// whose deadline is after it is left alone, so a lease never expires early
// whatever the proposer believed.
type ExpireLeasesRequest struct {
	Header
	Leases []ExpiredLease `json:"leases"`
}

// ExpireLeasesResponse lists the tasks whose leases ended.
type ExpireLeasesResponse struct {
	Expired []string `json:"expired"`
}

func (f *FSM) applyExpireLeases(tx *Txn, body []byte) any {
	var req ExpireLeasesRequest
	mustDecode(ExpireLeasesType, body, &req)
	return f.endLeases(tx, req.Leases, req.Time, func(t *Task) *TaskError {
		if t.deadline().After(req.Time) {
			return nil // not yet: a lease never expires early
		}
		if t.LeaseDeadline.After(req.Time) {
			return &TaskError{Type: "heartbeat_timeout", Message: fmt.Sprintf("no heartbeat within %s from worker %s (attempt %d)", t.HeartbeatTimeout, t.WorkerID, t.Attempt)}
		}
		return &TaskError{Type: "timeout", Message: fmt.Sprintf("no result within %s: the lease of worker %s ran out (attempt %d)", t.Timeout, t.WorkerID, t.Attempt)}
	})
}

// endLeases ends, as failed attempts, the listed leases still held with
// their token whose instance runs, with the error cause gives (nil leaves
// a lease alone).
func (f *FSM) endLeases(tx *Txn, leases []ExpiredLease, now time.Time, cause func(*Task) *TaskError) *ExpireLeasesResponse {
	resp := &ExpireLeasesResponse{Expired: []string{}}
	for _, l := range leases {
		t := tx.Task(l.TaskID)
		if t == nil || t.Status != TaskLeased || t.Token != l.Token {
			continue
		}
		inst := tx.Instance(t.InstanceID)
		if inst == nil || inst.Terminal() {
			continue
		}
		taskErr := cause(t)
		if taskErr == nil {
			continue
		}
		if _, err := f.settleTask(tx, t, inst, now, nil, taskErr); err != nil {
			continue
		}
		resp.Expired = append(resp.Expired, t.ID)
	}
	return resp
}

func init() { registerCommand(ReleaseLeasesType, (*FSM).applyReleaseLeases) }

// ReleaseLeasesRequest ends attempts whose worker is known to be gone (its
// node left the cluster or failed) before their deadline: each is settled
// as a retryable "worker_lost" failure, as an expired lease would be. A
// lease whose token changed meanwhile is left alone; a worker that was in
// fact alive finds its token stale (at least once, never lost).
type ReleaseLeasesRequest struct {
	Header
	Leases []ExpiredLease `json:"leases"`
	Reason string         `json:"reason"`
}

func (f *FSM) applyReleaseLeases(tx *Txn, body []byte) any {
	var req ReleaseLeasesRequest
	mustDecode(ReleaseLeasesType, body, &req)
	return f.endLeases(tx, req.Leases, req.Time, func(t *Task) *TaskError {
		return &TaskError{Type: "worker_lost", Message: fmt.Sprintf("worker %s is gone: %s (attempt %d)", t.WorkerID, req.Reason, t.Attempt)}
	})
}

func init() { registerCommand(HeartbeatTaskType, (*FSM).applyHeartbeat) }

// HeartbeatTaskRequest tells the engine a leased attempt is alive, with
// optional progress details.
type HeartbeatTaskRequest struct {
	Header
	TaskID  string          `json:"task_id"`
	Token   string          `json:"token"`
	Details json.RawMessage `json:"details,omitempty"`
}

// HeartbeatResponse answers a heartbeat. CancelRequested asks the worker to
// stop; a lease that was lost is answered with a stale_token error instead.
type HeartbeatResponse struct {
	CancelRequested bool      `json:"cancel_requested"`
	Deadline        time.Time `json:"deadline"`
}

func (f *FSM) applyHeartbeat(tx *Txn, body []byte) any {
	var req HeartbeatTaskRequest
	mustDecode(HeartbeatTaskType, body, &req)
	t, inst, e := checkLease(tx, req.TaskID, req.Token)
	if e != nil {
		return e
	}
	c := *t
	if c.HeartbeatTimeout > 0 {
		c.HeartbeatDeadline = req.Time.Add(c.HeartbeatTimeout)
		c.DeadlineKey = uint64(c.deadline().UnixNano())
	}
	if len(req.Details) > 0 {
		c.Details = normalizeJSON(req.Details)
	}
	c.ModifyIndex = tx.Index
	tx.mustInsert(tableTasks, &c)
	return &HeartbeatResponse{Deadline: c.deadline(), CancelRequested: inst.Status == InstanceCancelling && !c.Compensation}
}

// Task returns a task by id, or nil.
func (t *Txn) Task(id string) *Task {
	if o, ok := t.heldRecord(tableTasks, id); ok {
		return o.(*Task)
	}
	raw, err := t.Txn.First(tableTasks, "id", id) // not held: in go-memdb, if anywhere
	if err != nil || raw == nil {
		return t.archivedTask(id)
	}
	return raw.(*Task)
}

// priorityIndex orders tasks by descending priority: one byte, 255 minus
// the priority (0 to 100), so that an ascending walk meets the highest
// first.
// onlyIf indexes a task only while it has the given status.
func taskID(o any) string     { return o.(*Task).ID }
func taskStatus(o any) string { return o.(*Task).Status }

type onlyIf struct {
	status string
	inner  compound
}

func (o onlyIf) FromObject(obj any) (bool, []byte, error) {
	if t, ok := obj.(*Task); !ok || t.Status != o.status {
		return false, nil, nil
	}
	return o.inner.FromObject(obj)
}

func (o onlyIf) FromArgs(args ...any) ([]byte, error) { return o.inner.FromArgs(args...) }

func (o onlyIf) PrefixFromArgs(args ...any) ([]byte, error) { return o.inner.PrefixFromArgs(args...) }

type priorityIndex struct{}

func (priorityIndex) FromObject(obj any) (bool, []byte, error) {
	t, ok := obj.(*Task)
	if !ok {
		return false, nil, fmt.Errorf("priority index: %T is not a task", obj)
	}
	return true, []byte{byte(255 - t.Priority)}, nil
}

func (priorityIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("priority index: one argument, got %d", len(args))
	}
	p, ok := args[0].(int)
	if !ok {
		return nil, fmt.Errorf("priority index: %T is not an int", args[0])
	}
	return []byte{byte(255 - p)}, nil
}

// PendingTasks returns up to limit pending tasks of a queue, highest
// priority first, then oldest first.
func (t *Txn) PendingTasks(queue string, limit int) []*Task {
	out := []*Task{}
	it, err := t.Get(tableTasks, "queue_prefix", queue, TaskPending)
	if err != nil {
		return out
	}
	for raw := it.Next(); raw != nil && (limit <= 0 || len(out) < limit); raw = it.Next() {
		task := raw.(*Task)
		if task.Queue != queue || task.Status != TaskPending {
			break
		}
		out = append(out, task)
	}
	return out
}

// EachPendingTask calls fn with the pending tasks of a queue, highest
// priority first, then oldest first, until fn returns false. The tasks
// this transaction holds (created or put back in this raft batch) are
// merged into go-memdb's queue index as they come, rather than inserted
// first: a task created and leased in one batch is then inserted once.
func (t *Txn) EachPendingTask(queue string, fn func(*Task) bool) {
	held := t.held[tableTasks]
	var extra []*Task
	for _, o := range held {
		if task := o.(*Task); task.Queue == queue && task.Status == TaskPending {
			extra = append(extra, task)
		}
	}
	sort.Slice(extra, func(i, j int) bool { return queuedBefore(extra[i], extra[j]) })
	it, err := t.Txn.Get(tableTasks, "queue_prefix", queue, TaskPending)
	if err != nil {
		return
	}
	next := func() *Task {
		for raw := it.Next(); raw != nil; raw = it.Next() {
			task := raw.(*Task)
			if task.Queue != queue || task.Status != TaskPending {
				return nil
			}
			// A held task's stored copy is out of date: the held one
			// is in extra if it is still pending.
			if _, ok := held[task.ID]; !ok {
				return task
			}
		}
		return nil
	}
	stored := next()
	for stored != nil || len(extra) > 0 {
		var task *Task
		if stored != nil && (len(extra) == 0 || queuedBefore(stored, extra[0])) {
			task, stored = stored, next()
		} else {
			task, extra = extra[0], extra[1:]
		}
		if !fn(task) {
			return
		}
	}
}

// queuedBefore is the queue index's order: higher priority, then older.
func queuedBefore(a, b *Task) bool {
	if a.Priority != b.Priority {
		return a.Priority > b.Priority
	}
	return a.Seq < b.Seq
}

// LeasedTasks returns leased tasks ordered by lease deadline, earliest
// first, at most limit of them.
func (t *Txn) LeasedTasks(limit int) []*Task {
	out := []*Task{}
	it, err := t.Get(tableTasks, "deadline_prefix", TaskLeased)
	if err != nil {
		return out
	}
	for raw := it.Next(); raw != nil && (limit <= 0 || len(out) < limit); raw = it.Next() {
		task := raw.(*Task)
		if task.Status != TaskLeased {
			break
		}
		out = append(out, task)
	}
	return out
}

// TasksLeasedTo returns the tasks leased to worker right now, by lease
// deadline: what a worker whose answer was lost is owed again. It walks
// every leased task, so it serves retries, not every request.
func (t *Txn) TasksLeasedTo(worker string) []*Task {
	var out []*Task
	for _, task := range t.LeasedTasks(0) {
		if task.WorkerID == worker {
			out = append(out, task)
		}
	}
	return out
}

// QueueNames lists the queues that hold any pending task.
func (t *Txn) QueueNames() []string {
	out := []string{}
	it, err := t.Get(tableTasks, "queue")
	if err != nil {
		return out
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		q := raw.(*Task).Queue
		if n := len(out); n == 0 || out[n-1] != q {
			out = append(out, q)
		}
	}
	return out
}
