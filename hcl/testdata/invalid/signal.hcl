workflow "signals" {
  step "approve" {
    wait_signal "approve" {
      timeout = "1h"
      output  = { by = signal.payload.by, when = signal.sent_at }
    }
  }
  step "act" {
    activity = "noop"
    input    = { by = signal.payload.by }
  }
}
