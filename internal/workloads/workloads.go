// Package workloads holds workflow shapes that `lockstep bench` runs and
// that tests of the same paths (the state machine's benchmarks, eager
// leasing) use too, so that all of them measure one source.
package workloads

// Chain3 is three sequential noop steps, each passing n + 1 to the next:
// the engine's own overhead per transition. name is the workflow's name.
func Chain3(name string) string {
	return `workflow "` + name + `" {
  step "a" {
    activity = "noop"
    input    = { n = input.n }
  }
  step "b" {
    activity = "noop"
    input    = { n = step.a.output.n + 1 }
  }
  step "c" {
    activity = "noop"
    input    = { n = step.b.output.n + 1 }
  }
  output = step.c.output
}
`
}
