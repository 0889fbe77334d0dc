# Control flow on built-in activities: a spend over the limit is refused by a
# fail step, the refusal is handled by an error path (any_failed), and an
# audit step runs either way (all_done). The instance completes in both
# cases; `charged` in the output says which way it went.
workflow "spend-guard" {
  description = "Charge within the limit, refuse and report above it, audit always."
  labels      = { team = "payments", example = "control-flow" }

  input {
    account = string
    amount  = number
    limit   = optional(number, 1000)
  }

  step "charge" {
    activity = "log"
    when     = input.amount <= input.limit
    input    = { account = input.account, charged = input.amount }
  }

  step "refuse" {
    when = input.amount > input.limit
    fail {
      error   = "over_limit"
      message = "${input.account} asked for ${input.amount}, over the limit of ${input.limit}"
    }
  }

  step "report_refusal" {
    depends_on   = [step.refuse]
    trigger_rule = "any_failed"
    activity     = "log"
    input        = { alert = step.refuse.error.message }
  }

  step "audit" {
    depends_on   = [step.charge, step.report_refusal]
    trigger_rule = "all_done"
    activity     = "log"
    input = {
      instance = instance.id
      at       = now()
      charge   = step.charge.status
      refusal  = step.report_refusal.status
    }
  }

  output = {
    charged = step.charge.status == "succeeded"
    audit   = step.audit.output
  }
}
