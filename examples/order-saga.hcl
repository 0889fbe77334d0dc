# An order saga on built-in activities: charge, reserve and ship, each with
# the step that undoes it. Cancel an instance while it ships
#   lockstep instance cancel ID -reason "customer changed their mind"
# and the shipment is recalled, the stock released and the charge refunded,
# in that order (the reverse of completion), before it ends cancelled.
workflow "order-saga" {
  description = "Charge, reserve, ship; cancelling undoes what was done."
  labels      = { example = "compensation" }

  input {
    order_id = string
    amount   = number
    ship_ms  = optional(number, 3000)
  }

  defaults {
    timeout = "1m"
  }

  step "charge" {
    activity = "log"
    input    = { charge_id = "ch-${input.order_id}", amount = input.amount }
    compensate {
      activity = "log"
      input    = { refund = step.charge.output.charge_id, amount = input.amount }
    }
  }

  step "reserve" {
    depends_on = [step.charge]
    activity   = "delay"
    input      = { ms = 200, reservation_id = "res-${input.order_id}" }
    compensate {
      activity = "log"
      input    = { release = step.reserve.output.reservation_id }
    }
  }

  step "ship" {
    depends_on = [step.reserve]
    activity   = "delay"
    input      = { ms = input.ship_ms, tracking = "trk-${input.order_id}" }
    compensate {
      activity = "log"
      input    = { recall = step.ship.output.tracking }
    }
  }

  output = { tracking = step.ship.output.tracking }
}
