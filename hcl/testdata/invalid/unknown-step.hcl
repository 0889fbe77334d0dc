workflow "order" {
  step "charge" {
    activity = "payments.charge"
  }
  step "ship" {
    activity = "shipping.send"
    input    = { charge = step.chrage.output.id }
  }
}
