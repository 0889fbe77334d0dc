# A data backfill over a map: one task per table, at most two at a time,
# then a summary that reads every element's output. `delay` stands in for
# copying a table (it waits input.ms milliseconds and returns its input).
workflow "backfill" {
  description = "Copy each table's missing days, two tables at a time."

  input {
    tables = map(object({ days = number, ms_per_day = optional(number, 20) }))
    target = optional(string, "warehouse")
  }

  step "copy" {
    for_each        = input.tables
    max_concurrency = 2
    activity        = "delay"
    timeout         = "1m"
    input = {
      ms    = each.value.days * each.value.ms_per_day
      table = each.key
      into  = "${input.target}.${each.key}"
      days  = each.value.days
    }
  }

  step "summary" {
    activity = "log"
    input = {
      tables = keys(step.copy.output)
      days   = sum([for t in step.copy.output : t.days])
    }
  }

  output = step.summary.output
}
