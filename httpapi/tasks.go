package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/lockstep-io/lockstep/engine"
	"github.com/lockstep-io/lockstep/fsm"
	"github.com/lockstep-io/lockstep/hcl"
)

// PollRequest is the body of POST /v1/queues/:queue/poll.
type PollRequest struct {
	WorkerID   string   `json:"worker_id"`
	WaitMS     int64    `json:"wait_ms"`
	Activities []string `json:"activities,omitempty"`
	// MaxTasks > 0 asks for up to that many tasks, answered as {"tasks":[...]}.
	MaxTasks int `json:"max_tasks,omitempty"`
}

// LeasedTask is what a worker receives for each task it is handed.
type LeasedTask struct {
	TaskID         string          `json:"task_id"`
	Token          string          `json:"token"`
	InstanceID     string          `json:"instance_id"`
	Step           string          `json:"step"`
	Activity       string          `json:"activity"`
	Input          json.RawMessage `json:"input"`
	Attempt        int             `json:"attempt"`
	IdempotencyKey string          `json:"idempotency_key"`
	Deadline       time.Time       `json:"deadline"`
	// HeartbeatTimeoutMS, when set, is how long the attempt may go without
	// a heartbeat.
	HeartbeatTimeoutMS int64 `json:"heartbeat_timeout_ms,omitempty"`
	// Priority is the step's priority (higher was dispatched first).
	Priority int `json:"priority"`
	// Service, for a step that calls one, is where and how to call it.
	Service *TaskService `json:"service,omitempty"`
}

// TaskService is what a worker needs to call a workflow's service.
type TaskService struct {
	Name      string            `json:"name"`
	BaseURL   string            `json:"base_url"`
	Headers   map[string]string `json:"headers,omitempty"`
	TimeoutMS int64             `json:"timeout_ms,omitempty"`
}

func leasedTask(t *fsm.Task) LeasedTask {
	return LeasedTask{TaskID: t.ID, Token: t.Token, InstanceID: t.InstanceID, Step: t.Step, Activity: t.Activity,
		Input: t.Input, Attempt: t.Attempt, IdempotencyKey: t.IdempotencyKey, Deadline: t.LeaseDeadline,
		HeartbeatTimeoutMS: t.HeartbeatTimeout.Milliseconds(), Priority: t.Priority}
}

// leasedTaskView returns a function that renders a leased task as workers
// receive it, with its service's settings when it calls one.
func (s *Server) leasedTaskView() func(*fsm.Task) LeasedTask {
	tx := s.cfg.FSM.State().Read()
	return func(t *fsm.Task) LeasedTask {
		lt := leasedTask(t)
		if b := tx.Breaker(t.Service); t.Service != "" && b != nil {
			lt.Service = &TaskService{Name: b.Name, BaseURL: b.BaseURL, Headers: b.Headers, TimeoutMS: b.Timeout.Milliseconds()}
		}
		return lt
	}
}

// POST /v1/queues/:queue/poll — answered by the leader's dispatcher.
func (s *Server) poll(r *http.Request, ps httprouter.Params, body []byte) (any, error) {
	var req PollRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	queue := ps.ByName("queue")
	if !hcl.ValidName(queue) {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "invalid queue name " + strconv.Quote(queue)}
	}
	if req.WorkerID == "" || len(req.WorkerID) > 128 {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "worker_id is required (at most 128 characters)"}
	}
	if req.WaitMS < 0 || req.MaxTasks < 0 || req.MaxTasks > 1000 {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "wait_ms must not be negative and max_tasks must be between 0 and 1000"}
	}
	tasks, err := s.cfg.Dispatcher.Poll(r.Context(), engine.PollRequest{
		Queue: queue, WorkerID: req.WorkerID, Activities: req.Activities,
		Wait: time.Duration(req.WaitMS) * time.Millisecond, MaxTasks: req.MaxTasks,
	})
	if err != nil {
		return nil, err
	}
	withService := s.leasedTaskView()
	if req.MaxTasks > 0 {
		out := make([]LeasedTask, 0, len(tasks))
		for _, t := range tasks {
			out = append(out, withService(t))
		}
		return map[string]any{"tasks": out}, nil
	}
	if len(tasks) == 0 {
		return &response{status: http.StatusNoContent}, nil
	}
	return withService(tasks[0]), nil
}

// CompleteRequest is the body of POST /v1/tasks/:id/complete.
type CompleteRequest struct {
	Token  string          `json:"token"`
	Output json.RawMessage `json:"output"`
}

// FailRequest is the body of POST /v1/tasks/:id/fail.
type FailRequest struct {
	Token string        `json:"token"`
	Error fsm.TaskError `json:"error"`
}

// POST /v1/tasks/:id/complete
func (s *Server) completeTask(r *http.Request, ps httprouter.Params, body []byte) (any, error) {
	var req CompleteRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	if req.Token == "" {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "token is required"}
	}
	if len(req.Output) > 0 && !json.Valid(req.Output) {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "output is not valid JSON"}
	}
	return s.apply(r, fsm.CompleteTaskType, &fsm.CompleteTaskRequest{Header: s.header(), TaskID: ps.ByName("id"), Token: req.Token, Output: req.Output})
}

// TaskResultsRequest is the body of POST /v1/task-results.
type TaskResultsRequest struct {
	Results []fsm.TaskOutcome `json:"results"`
	// Next asks for the worker's next tasks in the same raft command: once
	// the results are applied, up to max_tasks pending tasks of the queue
	// are leased to worker_id and returned in "tasks". A task the results
	// made ready goes straight back to the worker that reported them.
	Next *NextTasksRequest `json:"next,omitempty"`
}

// NextTasksRequest is the "next" member of POST /v1/task-results.
type NextTasksRequest struct {
	WorkerID   string   `json:"worker_id"`
	Queue      string   `json:"queue"`
	Activities []string `json:"activities,omitempty"`
	MaxTasks   int      `json:"max_tasks"`
	// Redeliver also returns the tasks already leased to WorkerID: a
	// worker that asked with its results and lost the answer (the leader
	// died after committing it) asks again under the same, once-used
	// worker id, and gets the tasks that answer held instead of leaving
	// them leased to nobody until their leases expire.
	Redeliver bool `json:"redeliver,omitempty"`
}

// POST /v1/task-results — many completions and failures in one request and
// one raft entry. The answer lists each result's outcome in order; a
// refused one (stale token, ended instance) does not stop the others.
func (s *Server) taskResults(r *http.Request, _ httprouter.Params, body []byte) (any, error) {
	var req TaskResultsRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	if len(req.Results) == 0 || len(req.Results) > 1000 {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "results must hold between 1 and 1000 entries"}
	}
	for i, o := range req.Results {
		switch {
		case o.TaskID == "" || o.Token == "":
			return nil, &Error{Status: 400, Code: "bad_request", Message: fmt.Sprintf("results[%d]: task_id and token are required", i)}
		case o.Error != nil && len(o.Output) > 0:
			return nil, &Error{Status: 400, Code: "bad_request", Message: fmt.Sprintf("results[%d]: give an output or an error, not both", i)}
		case len(o.Output) > 0 && !json.Valid(o.Output):
			return nil, &Error{Status: 400, Code: "bad_request", Message: fmt.Sprintf("results[%d]: output is not valid JSON", i)}
		}
	}
	cmd := &fsm.TaskResultsRequest{Header: s.header(), Results: req.Results}
	if n := req.Next; n != nil {
		switch {
		case n.WorkerID == "" || len(n.WorkerID) > 128:
			return nil, &Error{Status: 400, Code: "bad_request", Message: "next.worker_id is required (at most 128 characters)"}
		case !hcl.ValidName(n.Queue):
			return nil, &Error{Status: 400, Code: "bad_request", Message: "next.queue is not a valid queue name: " + strconv.Quote(n.Queue)}
		case n.MaxTasks < 1 || n.MaxTasks > 1000:
			return nil, &Error{Status: 400, Code: "bad_request", Message: "next.max_tasks must be between 1 and 1000"}
		}
		cmd.Next = &fsm.NextTasks{WorkerID: n.WorkerID, Queue: n.Queue, Activities: n.Activities, Max: n.MaxTasks}
	}
	res, err := s.apply(r, cmd.Type(), cmd)
	if err != nil || req.Next == nil {
		return res, err
	}
	out, ok := res.(*fsm.TaskResultsResponse)
	if !ok {
		return res, nil
	}
	view := s.leasedTaskView()
	tasks := make([]LeasedTask, 0, len(out.Leased))
	committed := s.cfg.Now()
	for _, t := range out.Leased {
		s.cfg.Metrics.ObserveDispatch(committed.Sub(t.ReadyAt).Seconds())
		tasks = append(tasks, view(t))
	}
	if req.Next.Redeliver {
		// This leader's state holds the command just applied, and so any
		// earlier one that leased to the worker: those tasks come again.
		fresh := map[string]bool{}
		for _, t := range out.Leased {
			fresh[t.ID] = true
		}
		for _, t := range s.cfg.FSM.State().Read().TasksLeasedTo(req.Next.WorkerID) {
			if !fresh[t.ID] {
				tasks = append(tasks, view(t))
			}
		}
	}
	return map[string]any{"results": out.Results, "tasks": tasks}, nil
}

// POST /v1/tasks/:id/fail
func (s *Server) failTask(r *http.Request, ps httprouter.Params, body []byte) (any, error) {
	var req FailRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	if req.Token == "" {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "token is required"}
	}
	if len(req.Error.Message) > 64<<10 || len(req.Error.Type) > 256 {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "error type is limited to 256 bytes and message to 64 KiB"}
	}
	return s.apply(r, fsm.FailTaskType, &fsm.FailTaskRequest{Header: s.header(), TaskID: ps.ByName("id"), Token: req.Token, Error: req.Error})
}

// HeartbeatRequest is the body of POST /v1/tasks/:id/heartbeat.
type HeartbeatRequest struct {
	Token   string          `json:"token"`
	Details json.RawMessage `json:"details"`
}

// POST /v1/tasks/:id/heartbeat — the attempt is alive; a lost lease
// answers 409 stale_token, which is how a worker learns to stop.
func (s *Server) heartbeatTask(r *http.Request, ps httprouter.Params, body []byte) (any, error) {
	var req HeartbeatRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	if req.Token == "" {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "token is required"}
	}
	if len(req.Details) > 0 && !json.Valid(req.Details) {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "details is not valid JSON"}
	}
	return s.apply(r, fsm.HeartbeatTaskType, &fsm.HeartbeatTaskRequest{Header: s.header(), TaskID: ps.ByName("id"), Token: req.Token, Details: req.Details})
}

// POST /v1/tasks/complete — many results at once, as POST /v1/task-results.
func (s *Server) postTaskAction(r *http.Request, ps httprouter.Params, body []byte) (any, error) {
	if ps.ByName("id") != "complete" {
		return nil, &Error{Status: 405, Code: "method_not_allowed", Message: "POST is not allowed on " + r.URL.Path + "; report one task's result with POST " + r.URL.Path + "/complete or /fail, or many with POST /v1/tasks/complete"}
	}
	return s.taskResults(r, ps, body)
}

// GET /v1/tasks/:id — the task as stored; its token is not shown.
func (s *Server) getTask(_ *http.Request, ps httprouter.Params, _ []byte) (any, error) {
	t := s.cfg.FSM.State().Read().Task(ps.ByName("id"))
	if t == nil {
		return nil, &Error{Status: 404, Code: "not_found", Message: "task " + strconv.Quote(ps.ByName("id")) + " not found"}
	}
	c := *t
	c.Token = ""
	return &c, nil
}

// GET /v1/queues — queues with their pending depth.
func (s *Server) listQueues(*http.Request, httprouter.Params, []byte) (any, error) {
	tx := s.cfg.FSM.State().Read()
	type queue struct {
		Name    string `json:"name"`
		Pending int    `json:"pending"`
	}
	out := []queue{}
	for _, q := range tx.QueueNames() {
		out = append(out, queue{Name: q, Pending: len(tx.PendingTasks(q, 0))})
	}
	return map[string]any{"queues": out}, nil
}
