# A nightly ETL: a cron trigger starts it at 02:00 Paris time with the day
# to load; extraction fans out over the sources, at most two at a time,
# with retries; a finally reports either way. Fire it at once with
#   lockstep trigger fire nightly-etl.nightly
workflow "nightly-etl" {
  description = "Extract every source for a day, two at a time, then load and report."
  labels      = { example = "cron" }

  trigger "cron" "nightly" {
    schedule = "0 2 * * *"
    timezone = "Europe/Paris"
    overlap  = "skip"
    input    = { day = formatdate("YYYY-MM-DD", timeadd(now(), "-24h")) }
  }

  input {
    day     = string
    sources = optional(list(string), ["orders", "users", "events", "refunds"])
  }

  defaults {
    timeout = "1m"
    retry {
      max_attempts     = 3
      initial_interval = "500ms"
    }
  }

  step "extract" {
    for_each        = input.sources
    max_concurrency = 2
    activity        = "delay"
    input           = { ms = 150, source = each.value, day = input.day }
  }

  step "load" {
    activity = "log"
    input    = { day = input.day, sources = [for e in step.extract.output : e.source] }
  }

  step "report" {
    depends_on   = [step.load]
    trigger_rule = "all_done"
    activity     = "log"
    input        = { day = input.day, load = step.load.status }
  }

  output = step.load.output
}
