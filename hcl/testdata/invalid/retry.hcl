workflow "retry" {
  defaults {
    queue   = "bad queue"
    timeout = "forever"
    retry {
      max_attempts     = 0
      initial_interval = "10s"
      max_interval     = "1s"
    }
  }
  step "a" {
    activity = "noop"
    retry {
      backoff       = 0.5
      non_retryable = "all"
    }
  }
  step "b" {
    sleep       = "5 minutes"
    sleep_until = "2026-01-01T00:00:00Z"
  }
  step "c" {
    sleep = "1m"
    retry {
      max_attempts = 2
    }
  }
}
