# Calls an HTTP endpoint with the built-in http activity, then reads a field
# of the JSON answer. By default agents only let http reach loopback
# (-http-allow widens it). The demo points it at the cluster's own API.
workflow "http-check" {
  description = "Ask a Lockstep node who leads, and report it."

  input {
    base_url = optional(string, "http://127.0.0.1:7700")
  }

  step "fetch" {
    activity = "http"
    timeout  = "10s"
    input = {
      method  = "GET"
      url     = "${input.base_url}/v1/status/leader"
      headers = { Accept = "application/json" }
    }
  }

  step "report" {
    activity = "log"
    input = {
      status = step.fetch.output.status
      leader = jsondecode(step.fetch.output.body).node
    }
  }

  output = step.report.output
}
