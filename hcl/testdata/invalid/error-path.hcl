workflow "paths" {
  step "handler" {
    activity     = "noop"
    trigger_rule = "any_failed"
  }
  step "b" {
    activity = "noop"
    input    = step.handler.outputs
  }
  output = each.key
}
