package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// Instance states an instance ends in.
var terminalStatus = map[string]bool{"completed": true, "failed": true, "cancelled": true, "terminated": true, "timed_out": true}

// Instance is the status of one instance.
type Instance struct {
	ID        string               `json:"id"`
	Workflow  string               `json:"workflow"`
	Version   uint64               `json:"version"`
	Status    string               `json:"status"`
	Input     json.RawMessage      `json:"input"`
	Output    json.RawMessage      `json:"output,omitempty"`
	Error     *InstanceError       `json:"error,omitempty"`
	Steps     map[string]StepState `json:"steps"`
	CreatedAt time.Time            `json:"created_at"`
	UpdatedAt time.Time            `json:"updated_at"`
	EndedAt   *time.Time           `json:"ended_at,omitempty"`
}

// Terminal reports whether the instance has ended.
func (i *Instance) Terminal() bool { return terminalStatus[i.Status] }

// InstanceError says why an instance failed.
type InstanceError struct {
	Step    string `json:"step,omitempty"`
	Type    string `json:"type"`
	Message string `json:"message"`
}

// StepState is one step's progress.
type StepState struct {
	Status   string          `json:"status"`
	Output   json.RawMessage `json:"output,omitempty"`
	Error    *TaskError      `json:"error,omitempty"`
	Attempts int             `json:"attempts"`
	TaskID   string          `json:"task_id,omitempty"`
	// ChildID is the child instance of a workflow step.
	ChildID string `json:"child_id,omitempty"`
	// Elements are a for_each step's elements, in order.
	Elements []ElementState `json:"elements,omitempty"`
}

// ElementState is one for_each element's progress.
type ElementState struct {
	Key      string          `json:"key"`
	Value    json.RawMessage `json:"value"`
	Status   string          `json:"status"`
	Output   json.RawMessage `json:"output,omitempty"`
	Error    *TaskError      `json:"error,omitempty"`
	Attempts int             `json:"attempts"`
}

// Instance reads an instance from the node the client talks to.
func (c *Client) Instance(ctx context.Context, id string) (*Instance, error) {
	var out Instance
	_, err := c.doJSON(ctx, "GET", "/v1/instances/"+url.PathEscape(id), nil, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// InstanceAfter blocks until the node's state passes index (or wait
// elapses) and then reads the instance; it returns the index to pass next.
func (c *Client) InstanceAfter(ctx context.Context, id string, index string, wait time.Duration) (*Instance, string, error) {
	var out Instance
	path := fmt.Sprintf("/v1/instances/%s?index=%s&wait=%s", url.PathEscape(id), url.QueryEscape(index), wait)
	meta, err := c.doJSON(ctx, "GET", path, nil, &out)
	if err != nil {
		return nil, index, err
	}
	return &out, meta.Index, nil
}

// WaitInstance follows an instance with blocking queries until it ends or
// ctx is done.
func (c *Client) WaitInstance(ctx context.Context, id string) (*Instance, error) {
	return c.WaitInstanceSince(ctx, id, 0)
}

// WaitInstanceSince is WaitInstance for an instance written at raft index
// since (its own Started.Index): the first read waits until the node it
// asks holds the instance as of that write, so a follower never answers
// "not found" for an instance the leader just started. Pass only the
// instance's own write index: a blocking read of an instance waits for that
// instance to change after the index given.
func (c *Client) WaitInstanceSince(ctx context.Context, id string, since uint64) (*Instance, error) {
	return c.waitEnd(ctx, id, since, "")
}

// WaitInstanceOutcome is WaitInstanceSince asking for the instance's
// outcome only (?view=outcome: no input, no steps).
func (c *Client) WaitInstanceOutcome(ctx context.Context, id string, since uint64) (*Instance, error) {
	return c.waitEnd(ctx, id, since, "outcome")
}

func (c *Client) waitEnd(ctx context.Context, id string, since uint64, view string) (*Instance, error) {
	if view != "" {
		view = "&view=" + view
	}
	index := "0"
	if since > 1 {
		index = strconv.FormatUint(since-1, 10)
	}
	for {
		// until=ended: the node answers at the end (or after the wait),
		// not at every transition.
		var inst Instance
		path := fmt.Sprintf("/v1/instances/%s?index=%s&wait=%s&until=ended%s", url.PathEscape(id), url.QueryEscape(index), 10*time.Second, view)
		meta, err := c.doJSON(ctx, "GET", path, nil, &inst)
		if err != nil {
			return nil, err
		}
		if inst.Terminal() {
			return &inst, nil
		}
		index = meta.Index
	}
}

// InstanceSummary is one instance in a listing.
type InstanceSummary struct {
	ID        string    `json:"id"`
	Workflow  string    `json:"workflow"`
	Version   uint64    `json:"version"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
}

// Instances lists one page of instances, optionally of one workflow.
func (c *Client) Instances(ctx context.Context, workflow, nextToken string, pageSize int) ([]InstanceSummary, string, error) {
	q := url.Values{}
	if workflow != "" {
		q.Set("workflow", workflow)
	}
	if nextToken != "" {
		q.Set("next_token", nextToken)
	}
	if pageSize > 0 {
		q.Set("page_size", fmt.Sprint(pageSize))
	}
	var out struct {
		Instances []InstanceSummary `json:"instances"`
		NextToken string            `json:"next_token"`
	}
	_, err := c.doJSON(ctx, "GET", "/v1/instances?"+q.Encode(), nil, &out)
	return out.Instances, out.NextToken, err
}

// Terminate ends an instance at once, without compensation. An instance
// that has already ended answers 409.
func (c *Client) Terminate(ctx context.Context, id, reason string) (string, error) {
	var out struct {
		Status string `json:"status"`
	}
	_, err := c.doJSON(ctx, "POST", "/v1/instances/"+url.PathEscape(id)+"/terminate", map[string]string{"reason": reason}, &out)
	return out.Status, err
}

// SignalResult says what became of a signal: taken by a waiting step, or
// buffered until one waits; Duplicate when its request id was seen before.
type SignalResult struct {
	SignalID    string `json:"signal_id"`
	DeliveredTo string `json:"delivered_to"`
	Duplicate   bool   `json:"duplicate"`
}

// Signal sends a named signal with a JSON payload to an instance. A
// non-empty requestID makes retries of the same send safe.
func (c *Client) Signal(ctx context.Context, id, name string, payload json.RawMessage, requestID string) (*SignalResult, error) {
	var out SignalResult
	body := map[string]any{"payload": payload, "request_id": requestID}
	if _, err := c.doJSON(ctx, "POST", "/v1/instances/"+url.PathEscape(id)+"/signals/"+url.PathEscape(name), body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Event is one entry of an instance's history.
type Event struct {
	Seq     uint64          `json:"seq"`
	Time    time.Time       `json:"time"`
	Index   uint64          `json:"index"`
	Type    string          `json:"type"`
	Step    string          `json:"step,omitempty"`
	Element string          `json:"element,omitempty"`
	TaskID  string          `json:"task_id,omitempty"`
	Attempt int             `json:"attempt,omitempty"`
	Worker  string          `json:"worker,omitempty"`
	Error   *TaskError      `json:"error,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Detail  string          `json:"detail,omitempty"`
}

// History reads an instance's events after seq (0: from the start).
func (c *Client) History(ctx context.Context, id string, after uint64) ([]Event, error) {
	events, _, err := c.HistoryAfter(ctx, id, after, "", 0)
	return events, err
}

// HistoryAfter is History as a blocking query: it waits (up to wait) until
// the node's state passes index, then returns the events after seq and the
// index to pass next.
func (c *Client) HistoryAfter(ctx context.Context, id string, after uint64, index string, wait time.Duration) ([]Event, string, error) {
	var out struct {
		Events []Event `json:"events"`
	}
	path := fmt.Sprintf("/v1/instances/%s/history?after=%d", url.PathEscape(id), after)
	if index != "" {
		path += fmt.Sprintf("&index=%s&wait=%s", url.QueryEscape(index), wait)
	}
	meta, err := c.doJSON(ctx, "GET", path, nil, &out)
	if err != nil {
		return nil, index, err
	}
	return out.Events, meta.Index, nil
}

// StepDetail is one step's state and all its events.
type StepDetail struct {
	Step   string    `json:"step"`
	State  StepState `json:"state"`
	Events []Event   `json:"events"`
}

// Step reads one step of an instance with every event of it.
func (c *Client) Step(ctx context.Context, id, step string) (*StepDetail, error) {
	var out StepDetail
	if _, err := c.doJSON(ctx, "GET", "/v1/instances/"+url.PathEscape(id)+"/steps/"+url.PathEscape(step), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ReplayReport is what replaying an instance from its history found.
type ReplayReport struct {
	InstanceID      string      `json:"instance_id"`
	Workflow        string      `json:"workflow"`
	Version         uint64      `json:"version"`
	ReplayedVersion uint64      `json:"replayed_version"`
	Events          int         `json:"events"`
	ReplayedEvents  int         `json:"replayed_events"`
	Matches         bool        `json:"matches"`
	Divergence      *Divergence `json:"divergence,omitempty"`
	Status          string      `json:"status"`
}

// Divergence is the first place a replay differs from the history.
type Divergence struct {
	Seq      uint64 `json:"seq"`
	Step     string `json:"step,omitempty"`
	Reason   string `json:"reason"`
	Original *Event `json:"original,omitempty"`
	Replayed *Event `json:"replayed,omitempty"`
}

// Replay re-derives an instance from its history on the node answering,
// against its own workflow version (version 0) or another, and reports
// whether it matches and, if not, the first divergence.
func (c *Client) Replay(ctx context.Context, id string, version uint64) (*ReplayReport, error) {
	path := "/v1/instances/" + url.PathEscape(id) + "/replay"
	if version > 0 {
		path += fmt.Sprintf("?version=%d", version)
	}
	var out ReplayReport
	if _, err := c.doJSON(ctx, "GET", path, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *Client) instanceAction(ctx context.Context, id, action, reason string) (string, error) {
	var out struct {
		Status string `json:"status"`
	}
	_, err := c.doJSON(ctx, "POST", "/v1/instances/"+url.PathEscape(id)+"/"+action, map[string]string{"reason": reason}, &out)
	return out.Status, err
}

// Suspend pauses an instance: nothing new is dispatched and no timer takes
// effect until Resume; attempts in flight may finish.
func (c *Client) Suspend(ctx context.Context, id, reason string) (string, error) {
	return c.instanceAction(ctx, id, "suspend", reason)
}

// Resume continues a suspended instance; what came due meanwhile takes
// effect at once.
func (c *Client) Resume(ctx context.Context, id, reason string) (string, error) {
	return c.instanceAction(ctx, id, "resume", reason)
}

// Cancel cancels an instance: in-flight attempts are asked to stop, then
// the compensate of every succeeded step runs in reverse order of
// completion, and the instance ends cancelled. It answers the status right
// after the request (usually cancelling, or cancelled when there was
// nothing to undo).
func (c *Client) Cancel(ctx context.Context, id, reason string) (string, error) {
	var out struct {
		Status string `json:"status"`
	}
	_, err := c.doJSON(ctx, "POST", "/v1/instances/"+url.PathEscape(id)+"/cancel", map[string]string{"reason": reason}, &out)
	return out.Status, err
}

// Retry runs a failed instance again, keeping its succeeded steps; with a
// step name, that step and everything after it run again.
func (c *Client) Retry(ctx context.Context, id, step, reason string) (string, error) {
	var out struct {
		Status string `json:"status"`
	}
	_, err := c.doJSON(ctx, "POST", "/v1/instances/"+url.PathEscape(id)+"/retry", map[string]string{"step": step, "reason": reason}, &out)
	return out.Status, err
}

// OverrideStep decides a step of a running instance by hand: action is
// complete (with output), skip, fail (with taskErr) or rerun.
func (c *Client) OverrideStep(ctx context.Context, id, step, action string, output json.RawMessage, taskErr *TaskError, reason string) (string, error) {
	var out struct {
		Status string `json:"status"`
	}
	body := map[string]any{"reason": reason}
	if len(output) > 0 {
		body["output"] = output
	}
	if taskErr != nil {
		body["error"] = taskErr
	}
	_, err := c.doJSON(ctx, "POST", "/v1/instances/"+url.PathEscape(id)+"/steps/"+url.PathEscape(step)+"/"+url.PathEscape(action), body, &out)
	return out.Status, err
}
