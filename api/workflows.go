package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"time"
)

// Registration is the answer to registering a workflow.
type Registration struct {
	Name    string `json:"name"`
	Version uint64 `json:"version"`
	Created bool   `json:"created"`
}

// RegisterWorkflow registers HCL source; filename is used in diagnostics.
// Unchanged source returns the existing version with Created false.
func (c *Client) RegisterWorkflow(ctx context.Context, filename string, src []byte) (*Registration, error) {
	var out Registration
	_, err := c.do(ctx, "POST", "/v1/workflows?filename="+url.QueryEscape(filename), bytes.NewReader(src), "application/hcl", &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Validation is the answer to validating a workflow.
type Validation struct {
	Name        string       `json:"name"`
	Valid       bool         `json:"valid"`
	Diagnostics []Diagnostic `json:"diagnostics"`
}

// ValidateWorkflow checks HCL source on the server without registering it.
func (c *Client) ValidateWorkflow(ctx context.Context, filename string, src []byte) (*Validation, error) {
	var out Validation
	_, err := c.do(ctx, "POST", "/v1/workflows/validate?filename="+url.QueryEscape(filename), bytes.NewReader(src), "application/hcl", &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// WorkflowSummary is one workflow version in a listing.
type WorkflowSummary struct {
	Name        string            `json:"name"`
	Version     uint64            `json:"version"`
	Description string            `json:"description"`
	Labels      map[string]string `json:"labels"`
	CreatedAt   time.Time         `json:"created_at"`
}

// Workflows lists the latest version of every workflow.
func (c *Client) Workflows(ctx context.Context) ([]WorkflowSummary, error) {
	var out struct {
		Workflows []WorkflowSummary `json:"workflows"`
	}
	_, err := c.doJSON(ctx, "GET", "/v1/workflows", nil, &out)
	return out.Workflows, err
}

// StartRequest starts an instance.
type StartRequest struct {
	Input   json.RawMessage `json:"input,omitempty"`
	ID      string          `json:"id,omitempty"`
	Version uint64          `json:"version,omitempty"`
}

// Started names a started instance. Created is false when the id already
// existed with the same request.
type Started struct {
	ID      string `json:"id"`
	Version uint64 `json:"version"`
	Created bool   `json:"created"`
	// Index is the raft index the start was applied at; reading with it
	// (WaitInstanceSince) sees the instance on any node.
	Index uint64 `json:"-"`
	// Instance is the instance when the start waited (StartInstanceWait):
	// ended, unless the wait passed first; nil if the node asked did not
	// hold it yet.
	Instance *Instance `json:"instance,omitempty"`
}

// StartInstance starts an instance of the named workflow.
func (c *Client) StartInstance(ctx context.Context, workflow string, req StartRequest) (*Started, error) {
	var out Started
	meta, err := c.doJSON(ctx, "POST", "/v1/workflows/"+url.PathEscape(workflow)+"/instances", req, &out)
	if err != nil {
		return nil, err
	}
	out.Index = meta.index()
	return &out, nil
}

// StartInstanceWait starts an instance and answers when it has ended or
// wait has passed (at most five minutes), whichever comes first: one
// request (POST ...?wait=) where StartInstance and WaitInstanceSince take
// two. Started.Instance is the instance as it is then.
func (c *Client) StartInstanceWait(ctx context.Context, workflow string, req StartRequest, wait time.Duration) (*Started, error) {
	return c.startWait(ctx, workflow, req, wait, "")
}

// StartInstanceOutcome is StartInstanceWait asking for the instance's
// outcome only (?view=outcome): Started.Instance then has no input and no
// steps, and the answer is a fraction of the size. It is how to run an
// instance for its result.
func (c *Client) StartInstanceOutcome(ctx context.Context, workflow string, req StartRequest, wait time.Duration) (*Started, error) {
	return c.startWait(ctx, workflow, req, wait, "outcome")
}

func (c *Client) startWait(ctx context.Context, workflow string, req StartRequest, wait time.Duration, view string) (*Started, error) {
	var out Started
	path := "/v1/workflows/" + url.PathEscape(workflow) + "/instances?wait=" + url.QueryEscape(wait.String())
	if view != "" {
		path += "&view=" + view
	}
	meta, err := c.doJSON(ctx, "POST", path, req, &out)
	if err != nil {
		return nil, err
	}
	out.Index = meta.index()
	return &out, nil
}

// RunInstance starts an instance and follows it until it ends or ctx is
// done: StartInstanceWait, then blocking reads while it runs longer.
func (c *Client) RunInstance(ctx context.Context, workflow string, req StartRequest) (*Started, *Instance, error) {
	s, err := c.StartInstanceWait(ctx, workflow, req, 30*time.Second)
	if err != nil {
		return nil, nil, err
	}
	if s.Instance != nil && s.Instance.Terminal() {
		return s, s.Instance, nil
	}
	inst, err := c.WaitInstanceSince(ctx, s.ID, s.Index)
	return s, inst, err
}

// Trigger is a workflow's cron trigger.
type Trigger struct {
	ID        string    `json:"id"`
	Workflow  string    `json:"workflow"`
	Name      string    `json:"name"`
	Schedule  string    `json:"schedule"`
	Timezone  string    `json:"timezone"`
	Overlap   string    `json:"overlap"`
	Catchup   bool      `json:"catchup"`
	Enabled   bool      `json:"enabled"`
	LastFire  time.Time `json:"last_fire"`
	RunningID string    `json:"running_id"`
	Fired     uint64    `json:"fired"`
	Skipped   uint64    `json:"skipped"`
	LastError string    `json:"last_error"`
}

// Triggers lists every cron trigger.
func (c *Client) Triggers(ctx context.Context) ([]Trigger, error) {
	var out struct {
		Triggers []Trigger `json:"triggers"`
	}
	_, err := c.doJSON(ctx, "GET", "/v1/triggers", nil, &out)
	return out.Triggers, err
}

// TriggerAction enables, disables or fires (now) a trigger; it returns the
// raw answer.
func (c *Client) TriggerAction(ctx context.Context, id, action string) (map[string]any, error) {
	var out map[string]any
	_, err := c.doJSON(ctx, "POST", "/v1/triggers/"+url.PathEscape(id)+"/"+url.PathEscape(action), nil, &out)
	return out, err
}
