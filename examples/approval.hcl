# A human approval: the request is logged, then the instance waits for an
# "approve" signal (lockstep instance signal ID approve -payload '{...}').
# The signal's payload is the step's output; with no answer within the
# timeout, the wait fails and the escalation path runs instead.
workflow "approval" {
  description = "Ask for approval, act on the answer, escalate on silence."
  labels      = { example = "signals" }

  input {
    request = string
    amount  = number
  }

  step "ask" {
    activity = "log"
    input    = { message = "approval needed: ${input.request} (${input.amount})" }
  }

  step "decision" {
    depends_on = [step.ask]
    wait_signal "approve" {
      timeout = "1h"
    }
  }

  step "act" {
    activity = "log"
    when     = step.decision.output.approved
    input    = { request = input.request, approved_by = step.decision.output.by }
  }

  step "escalate" {
    depends_on   = [step.decision]
    trigger_rule = "any_failed"
    activity     = "log"
    input        = { alert = "no decision on ${input.request}", why = step.decision.error.message }
  }

  output = {
    approved = try(step.decision.output.approved, false)
    by       = try(step.decision.output.by, null)
  }
}
