# An HTTP integration behind a circuit breaker, with retries: every call
# goes to the "lockstep" service (here the cluster's own API, reachable on
# loopback, so it runs on the built-in http activity). Five failed calls
# within a minute open the breaker and the service's tasks wait instead of
# hammering it; after 20 seconds one probe tests it again.
#   lockstep service list                      # see the breaker
#   lockstep service breaker lockstep closed   # reset it by hand
workflow "http-integration" {
  description = "Call an HTTP service through its breaker, retrying with backoff."
  labels      = { example = "circuit-breaker" }

  service "lockstep" {
    base_url = "http://127.0.0.1:7700"
    headers  = { Accept = "application/json" }
    timeout  = "5s"
    circuit_breaker {
      failures    = 5
      window      = "1m"
      reset_after = "20s"
    }
  }

  input {
    workflow = optional(string, "diamond")
  }

  defaults {
    timeout = "30s"
    retry {
      max_attempts     = 4
      initial_interval = "500ms"
      backoff          = 2
      max_interval     = "5s"
      non_retryable    = ["http.forbidden", "invalid_input"]
    }
  }

  step "health" {
    activity = "http"
    service  = "lockstep"
    input    = { url = "/v1/health" }
  }

  step "describe" {
    depends_on = [step.health]
    activity   = "http"
    service    = "lockstep"
    input      = { url = "/v1/workflows/${input.workflow}" }
  }

  step "summarize" {
    activity = "log"
    input = {
      leader   = jsondecode(step.health.output.body).leader_node
      workflow = input.workflow
      latest   = jsondecode(step.describe.output.body).latest
    }
  }

  output = step.summarize.output
}
