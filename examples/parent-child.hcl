# A parent/child pipeline: the parent prepares a batch, hands the processing
# to a child workflow (the "pipeline" example), waits for it, and reports.
# Cancelling or terminating the parent does the same to the child; a child
# that fails takes the parent's error path.
workflow "parent-child" {
  description = "Run the pipeline workflow as a child, then report."
  labels      = { example = "child-workflows" }

  input {
    source = string
    rows   = number
  }

  step "prepare" {
    activity = "log"
    input    = { message = "preparing ${input.rows} rows from ${input.source}" }
  }

  step "process" {
    depends_on = [step.prepare]
    workflow   = "pipeline"
    input      = { rows = input.rows, source = input.source }
  }

  step "report" {
    activity = "log"
    input    = { loaded = step.process.output.rows, table = step.process.output.table }
  }

  step "alert" {
    depends_on   = [step.process]
    trigger_rule = "any_failed"
    activity     = "log"
    input        = { alert = step.process.error.message }
  }

  output = step.report.output
}
