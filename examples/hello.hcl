# The smallest workflow: log a greeting, then echo it back as the output.
workflow "hello" {
  description = "Greet someone through the log activity."

  input {
    name = optional(string, "world")
  }

  step "greet" {
    activity = "log"
    input    = { message = format("Hello, %s!", input.name) }
  }

  step "shout" {
    activity = "noop"
    input    = { message = upper(step.greet.output.message) }
  }

  output = step.shout.output.message
}
