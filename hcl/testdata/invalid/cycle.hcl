workflow "loop" {
  step "a" {
    activity = "noop"
    input    = step.c.output
  }
  step "b" {
    activity = "noop"
    input    = step.a.output
  }
  step "c" {
    activity   = "noop"
    depends_on = [step.b]
  }
}
