workflow "kinds" {
  step "nothing" {
    input = 1
  }
  step "both" {
    activity = "noop"
    fail {
      error = "x"
    }
  }
}
