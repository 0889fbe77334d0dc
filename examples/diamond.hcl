# The smallest interesting graph: b waits for a's output, c runs beside b
# because it only depends_on a, and d joins both.
workflow "diamond" {
  description = "Fan out after a, join at d."

  step "a" {
    activity = "noop"
    input    = { n = input.n }
  }

  step "b" {
    activity = "noop"
    input    = { from_a = step.a.output.n }
  }

  step "c" {
    activity   = "noop"
    input      = { x = 1 }
    depends_on = [step.a]
  }

  step "d" {
    activity = "noop"
    input    = { b = step.b.output.from_a, c = step.c.output.x }
  }

  output = { result = step.d.output }
}
