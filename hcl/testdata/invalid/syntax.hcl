workflow "broken" {
  step "a" {
    activity = "noop"
    input    = { x = 1
  }
}
