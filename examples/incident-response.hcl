# A webhook-started incident response: an alerting system POSTs to
#   /v1/webhooks/incident-response/alert
# signed with the cluster secret "alerts" (PUT /v1/secrets/alerts first):
#   X-Lockstep-Signature: sha256=<hex HMAC-SHA256 of the body>
# The alert id names the instance, so a redelivered alert is recognised.
# High-severity alerts wait for an on-call acknowledgement (a signal); with
# none within 15 minutes the escalation path runs.
workflow "incident-response" {
  description = "Open an incident from an alert, page, wait for an ack, escalate on silence."
  labels      = { example = "webhook" }

  trigger "webhook" "alert" {
    secret = "alerts"
    id     = request.body.alert_id
    input = {
      service  = request.body.service
      severity = try(request.body.severity, "low")
      summary  = try(request.body.summary, "no summary")
    }
  }

  input {
    service  = string
    severity = string
    summary  = string
  }

  step "open" {
    activity = "log"
    input    = { incident = "INC-${instance.id}", service = input.service, summary = input.summary }
  }

  step "page" {
    depends_on = [step.open]
    when       = input.severity == "high"
    activity   = "log"
    input      = { page = "on-call for ${input.service}", incident = step.open.output.incident }
  }

  step "ack" {
    depends_on = [step.page]
    wait_signal "ack" {
      timeout = "15m"
    }
  }

  step "escalate" {
    depends_on   = [step.ack]
    trigger_rule = "any_failed"
    activity     = "log"
    input        = { escalate = step.open.output.incident, why = step.ack.error.message }
  }

  step "close" {
    depends_on   = [step.ack, step.escalate]
    trigger_rule = "all_done"
    activity     = "log"
    input        = { closed = step.open.output.incident, acked_by = try(step.ack.output.by, null) }
  }

  output = step.close.output
}
