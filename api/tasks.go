package api

import (
	"context"
	"encoding/json"
	"net/url"
	"time"
)

// Task is a task leased to a worker.
type Task struct {
	TaskID         string          `json:"task_id"`
	Token          string          `json:"token"`
	InstanceID     string          `json:"instance_id"`
	Step           string          `json:"step"`
	Activity       string          `json:"activity"`
	Input          json.RawMessage `json:"input"`
	Attempt        int             `json:"attempt"`
	IdempotencyKey string          `json:"idempotency_key"`
	Deadline       time.Time       `json:"deadline"`
	// HeartbeatTimeoutMS, when set, is how long the attempt may go
	// without a heartbeat before it is given up.
	HeartbeatTimeoutMS int64 `json:"heartbeat_timeout_ms"`
	// Priority is the step's priority: within a queue, higher is
	// dispatched first.
	Priority int `json:"priority"`
	// Service, for a step that calls a workflow service, is where and how.
	Service *TaskService `json:"service,omitempty"`
}

// TaskService is a workflow service as a worker calls it.
type TaskService struct {
	Name      string            `json:"name"`
	BaseURL   string            `json:"base_url"`
	Headers   map[string]string `json:"headers"`
	TimeoutMS int64             `json:"timeout_ms"`
}

// Breaker is a service's circuit breaker.
type Breaker struct {
	Name        string     `json:"name"`
	BaseURL     string     `json:"base_url"`
	State       string     `json:"state"`
	Failures    int64      `json:"failures"`
	Window      int64      `json:"window"`
	ResetAfter  int64      `json:"reset_after"`
	Recent      []string   `json:"recent"`
	OpenedAt    *time.Time `json:"opened_at"`
	ProbeTaskID string     `json:"probe_task_id"`
}

// Services lists every service's breaker.
func (c *Client) Services(ctx context.Context) ([]Breaker, error) {
	var out struct {
		Services []Breaker `json:"services"`
	}
	_, err := c.doJSON(ctx, "GET", "/v1/services", nil, &out)
	return out.Services, err
}

// SetBreaker resets ("closed") or trips ("open") a service's breaker.
func (c *Client) SetBreaker(ctx context.Context, name, state string) (*Breaker, error) {
	var out Breaker
	if _, err := c.doJSON(ctx, "POST", "/v1/services/"+url.PathEscape(name)+"/breaker", map[string]string{"state": state}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PollRequest asks for work from a queue.
type PollRequest struct {
	WorkerID   string   `json:"worker_id"`
	WaitMS     int64    `json:"wait_ms"`
	Activities []string `json:"activities,omitempty"`
}

// Poll long-polls a queue on any node; it returns nil, nil when nothing
// arrived in time.
func (c *Client) Poll(ctx context.Context, queue string, req PollRequest) (*Task, error) {
	var out Task
	meta, err := c.doJSON(ctx, "POST", "/v1/queues/"+url.PathEscape(queue)+"/poll", req, &out)
	if err != nil {
		return nil, err
	}
	if meta.StatusCode == 204 {
		return nil, nil
	}
	return &out, nil
}

// TaskError is an activity's error. NonRetryable says that trying again
// cannot help (bad input, a refused card): the step fails at once, whatever
// its retry policy.
type TaskError struct {
	Type         string `json:"type"`
	Message      string `json:"message"`
	NonRetryable bool   `json:"non_retryable,omitempty"`
}

// TaskResult is the answer to a completion or failure.
type TaskResult struct {
	TaskID         string `json:"task_id"`
	InstanceID     string `json:"instance_id"`
	InstanceStatus string `json:"instance_status"`
}

// Complete reports a task's output. A stale token answers 409.
func (c *Client) Complete(ctx context.Context, taskID, token string, output json.RawMessage) (*TaskResult, error) {
	var out TaskResult
	_, err := c.doJSON(ctx, "POST", "/v1/tasks/"+url.PathEscape(taskID)+"/complete", map[string]any{"token": token, "output": output}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Fail reports a task's error. A stale token answers 409.
func (c *Client) Fail(ctx context.Context, taskID, token string, taskErr TaskError) (*TaskResult, error) {
	var out TaskResult
	_, err := c.doJSON(ctx, "POST", "/v1/tasks/"+url.PathEscape(taskID)+"/fail", map[string]any{"token": token, "error": taskErr}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// PollTasks long-polls a queue for up to max tasks at once; it returns an
// empty slice when nothing arrived in time.
func (c *Client) PollTasks(ctx context.Context, queue string, req PollRequest, max int) ([]Task, error) {
	var out struct {
		Tasks []Task `json:"tasks"`
	}
	body := struct {
		PollRequest
		MaxTasks int `json:"max_tasks"`
	}{req, max}
	if _, err := c.doJSON(ctx, "POST", "/v1/queues/"+url.PathEscape(queue)+"/poll", body, &out); err != nil {
		return nil, err
	}
	return out.Tasks, nil
}

// TaskOutcome is one result of a batch: an output, or an error.
type TaskOutcome struct {
	TaskID string          `json:"task_id"`
	Token  string          `json:"token"`
	Output json.RawMessage `json:"output,omitempty"`
	Error  *TaskError      `json:"error,omitempty"`
}

// TaskOutcomeResult is the answer to one result of a batch; Error is set
// when that result was refused (a stale token, an ended instance).
type TaskOutcomeResult struct {
	TaskResult
	Error *Error `json:"error,omitempty"`
}

// ReportResults sends many completions and failures in one request and one
// raft entry; the answer has one entry per outcome, in order.
func (c *Client) ReportResults(ctx context.Context, outcomes []TaskOutcome) ([]TaskOutcomeResult, error) {
	res, _, err := c.ReportResultsNext(ctx, outcomes, nil)
	return res, err
}

// NextTasks asks, with a batch of results, for the worker's next tasks in
// the same request and raft command.
type NextTasks struct {
	WorkerID   string   `json:"worker_id"`
	Queue      string   `json:"queue"`
	Activities []string `json:"activities,omitempty"`
	MaxTasks   int      `json:"max_tasks"`
	// Redeliver also takes back the tasks already leased to WorkerID: set
	// it when retrying a request whose answer was lost, with the same
	// worker id (use a fresh id per request that asks, so that only that
	// request's tasks come back).
	Redeliver bool `json:"redeliver,omitempty"`
}

// ReportResultsNext reports results like ReportResults and, with next set,
// takes up to next.MaxTasks tasks leased to next.WorkerID as the results
// were applied: a task the results made ready comes straight back, with
// no poll and no lease round of its own. The tasks are the worker's to run
// and report like polled ones.
func (c *Client) ReportResultsNext(ctx context.Context, outcomes []TaskOutcome, next *NextTasks) ([]TaskOutcomeResult, []Task, error) {
	var out struct {
		Results []TaskOutcomeResult `json:"results"`
		Tasks   []Task              `json:"tasks"`
	}
	body := map[string]any{"results": outcomes}
	if next != nil {
		body["next"] = next
	}
	if _, err := c.doJSON(ctx, "POST", "/v1/task-results", body, &out); err != nil {
		return nil, nil, err
	}
	return out.Results, out.Tasks, nil
}

// HeartbeatResult answers a heartbeat.
type HeartbeatResult struct {
	CancelRequested bool      `json:"cancel_requested"`
	Deadline        time.Time `json:"deadline"`
}

// Heartbeat reports that an attempt is alive, with optional progress
// details. A 409 means the lease was lost: stop the activity.
func (c *Client) Heartbeat(ctx context.Context, taskID, token string, details json.RawMessage) (*HeartbeatResult, error) {
	var out HeartbeatResult
	if _, err := c.doJSON(ctx, "POST", "/v1/tasks/"+url.PathEscape(taskID)+"/heartbeat", map[string]any{"token": token, "details": details}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// TaskInfo is a task as stored, as GET /v1/tasks/:id shows it (never with
// its token).
type TaskInfo struct {
	ID             string          `json:"id"`
	InstanceID     string          `json:"instance_id"`
	Step           string          `json:"step"`
	Activity       string          `json:"activity"`
	Queue          string          `json:"queue"`
	Priority       int             `json:"priority,omitempty"`
	Status         string          `json:"status"`
	Attempt        int             `json:"attempt"`
	WorkerID       string          `json:"worker_id,omitempty"`
	IdempotencyKey string          `json:"idempotency_key"`
	Input          json.RawMessage `json:"input"`
	LeaseDeadline  time.Time       `json:"lease_deadline,omitzero"`
}

// Task reads a task: its status, attempt, and the worker holding it.
func (c *Client) Task(ctx context.Context, id string) (*TaskInfo, error) {
	var out TaskInfo
	if _, err := c.doJSON(ctx, "GET", "/v1/tasks/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
