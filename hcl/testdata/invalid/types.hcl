workflow "types" {
  input {
    amount = number
    items  = list(objct({ sku = string }))
  }
  step "a" {
    activity     = "noop"
    when         = "sometimes"
    trigger_rule = "all_sucess"
    timeout      = "5 minutes"
    depends_on   = [step.b]
    input        = { amount = input.amont, who = each.value }
  }
  step "b" {
    for_each        = 42
    max_concurrency = 0
    activity        = "noop"
  }
}
