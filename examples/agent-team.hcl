# A multi-agent task: a planner splits a goal into sub-tasks, one agent per
# sub-task works in parallel (tool calls are the agent's business), and a
# reviewer checks the combined result. The review loop is a retry: the
# reviewer fails with "needs_revision" and the step runs again (up to four
# times); "rejected" is final and takes the error path.
#
# Runs with the documented worker in examples/workers/agents:
#   go run ./examples/workers/agents/cmd/agents-worker &   # polls the "agents" queue
#   lockstep instance start agent-team -input '{"goal": "compare three databases"}' -wait
workflow "agent-team" {
  description = "Plan, work in parallel, review until accepted."
  labels      = { example = "multi-agent" }

  input {
    goal      = string
    max_tools = optional(number, 3)
  }

  defaults {
    queue   = "agents"
    timeout = "2m"
    retry {
      max_attempts     = 2
      initial_interval = "200ms"
    }
  }

  step "plan" {
    activity = "agent.plan"
    input    = { goal = input.goal }
  }

  step "work" {
    for_each        = step.plan.output.tasks
    max_concurrency = 3
    activity        = "agent.act"
    input           = { task = each.value, max_tools = input.max_tools }
  }

  step "review" {
    activity = "agent.review"
    input    = { goal = input.goal, results = step.work.output }
    retry {
      max_attempts     = 4
      initial_interval = "100ms"
      non_retryable    = ["rejected"]
    }
  }

  step "escalate" {
    depends_on   = [step.review]
    trigger_rule = "any_failed"
    activity     = "log"
    queue        = "default"
    input        = { goal = input.goal, why = step.review.error.message }
  }

  output = {
    summary = try(step.review.output.summary, null)
    rounds  = step.review.attempts
  }
}
