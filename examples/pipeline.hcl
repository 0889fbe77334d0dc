# An ETL-shaped pipeline on built-in activities: extract, then two
# transforms in parallel, then a load that joins them. `delay` stands in
# for real work (it waits input.ms milliseconds and returns its input).
workflow "pipeline" {
  description = "Extract, transform in parallel, load."

  defaults {
    timeout = "30s"
    retry {
      max_attempts     = 2
      initial_interval = "200ms"
    }
  }

  input {
    rows   = number
    source = string
  }

  step "extract" {
    activity = "delay"
    timeout  = "30s"
    input    = { ms = 300, rows = input.rows, source = input.source }
  }

  step "clean" {
    activity = "delay"
    input    = { ms = 200, rows = step.extract.output.rows - 3 }
  }

  step "enrich" {
    activity = "delay"
    input    = { ms = 250, rows = step.extract.output.rows, fields = ["region", "tier"] }
  }

  step "settle" {
    depends_on = [step.clean, step.enrich]
    sleep      = "200ms"
  }

  step "load" {
    depends_on = [step.settle]
    activity   = "log"
    input = {
      table  = "warehouse.${input.source}"
      rows   = min(step.clean.output.rows, step.enrich.output.rows)
      fields = join(",", step.enrich.output.fields)
    }
  }

  output = { table = step.load.output.table, rows = step.load.output.rows }
}
