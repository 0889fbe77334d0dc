workflow "9lives" {
  step "a" {
    activity = "noop"
    colour   = "red"
  }
  step "a" {
    activity = "noop"
    input    = { x = instance.name, y = lenght(inptu) }
  }
}
