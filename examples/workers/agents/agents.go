// Package agents holds the activities of the worker documented by
// examples/agent-team.hcl: agent.plan, agent.act and agent.review. The
// "agents" are deterministic stand-ins (no model is called) so the example
// runs anywhere; a real worker would call its models and tools in the same
// three functions. cmd/agents-worker runs them against a cluster.
package agents

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/lockstep-io/lockstep/api"
	"github.com/lockstep-io/lockstep/worker"
)

// Activities are the agent team's activities, by name.
func Activities() map[string]worker.Activity {
	return map[string]worker.Activity{"agent.plan": plan, "agent.act": act, "agent.review": review}
}

// plan splits the goal into sub-tasks.
func plan(_ context.Context, t *api.Task) (json.RawMessage, error) {
	var in struct {
		Goal string `json:"goal"`
	}
	if err := json.Unmarshal(t.Input, &in); err != nil || in.Goal == "" {
		return nil, &worker.ActivityError{Type: "invalid_input", Message: "plan needs a goal", NonRetryable: true}
	}
	tasks := []string{"research: " + in.Goal, "draft: " + in.Goal, "check facts: " + in.Goal}
	return json.Marshal(map[string]any{"tasks": tasks})
}

// act works on one sub-task, "calling" up to max_tools tools.
func act(_ context.Context, t *api.Task) (json.RawMessage, error) {
	var in struct {
		Task     string `json:"task"`
		MaxTools int    `json:"max_tools"`
	}
	if err := json.Unmarshal(t.Input, &in); err != nil {
		return nil, &worker.ActivityError{Type: "invalid_input", Message: err.Error(), NonRetryable: true}
	}
	calls := []string{}
	for i := 0; i < in.MaxTools && i < 2; i++ {
		calls = append(calls, fmt.Sprintf("tool-%d(%q)", i+1, in.Task))
	}
	return json.Marshal(map[string]any{"task": in.Task, "tool_calls": calls, "result": "done: " + in.Task})
}

// review accepts the work on its second round: the first asks for a
// revision (the workflow's retry is the review loop).
func review(_ context.Context, t *api.Task) (json.RawMessage, error) {
	var in struct {
		Goal    string            `json:"goal"`
		Results []json.RawMessage `json:"results"`
	}
	if err := json.Unmarshal(t.Input, &in); err != nil {
		return nil, &worker.ActivityError{Type: "invalid_input", Message: err.Error(), NonRetryable: true}
	}
	if strings.Contains(strings.ToLower(in.Goal), "impossible") {
		return nil, &worker.ActivityError{Type: "rejected", Message: "the goal cannot be met", NonRetryable: true}
	}
	if t.Attempt < 2 {
		return nil, &worker.ActivityError{Type: "needs_revision", Message: "round 1: tighten the draft"}
	}
	return json.Marshal(map[string]any{"summary": fmt.Sprintf("%d results accepted for %q after %d rounds", len(in.Results), in.Goal, t.Attempt)})
}
