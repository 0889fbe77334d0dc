workflow "triggers" {
  trigger "cron" "bad" {
    schedule = "every tuesday"
    timezone = "Mars/Olympus"
    overlap  = "queue"
    input    = { day = input.day }
  }
  trigger "webhook" "hook" {
    input = {}
  }
  service "payments" {
    base_url = "ftp://x"
  }
  step "a" {
    activity = "http"
    service  = "paymnets"
  }
}
