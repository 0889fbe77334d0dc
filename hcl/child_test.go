package hcl

import (
	"strings"
	"testing"
)

const childSrc = `workflow "charge" {
  input {
    order_id = string
    amount   = number
    currency = optional(string, "EUR")
  }
  step "charge" {
    activity = "noop"
  }
}
`

func TestCheckChildInputs(t *testing.T) {
	child, diags := Parse("child.hcl", []byte(childSrc))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	lookup := func(name string, version uint64) *Workflow {
		if name == "charge" && version <= 1 {
			return child
		}
		return nil
	}
	cases := []struct {
		name, input, want string
	}{
		{"matches", `{ order_id = input.id, amount = input.total }`, ""},
		{"step outputs are not known yet", `{ order_id = step.a.output.id, amount = step.a.output.total }`, ""},
		{"optional left out", `{ order_id = "o-1", amount = 3 }`, ""},
		{"number as string converts", `{ order_id = "o-1", amount = "3" }`, ""},
		{"literal of the wrong type", `{ order_id = "o-1", amount = "lots" }`, `input.amount: a number is required`},
		{"parent input of the wrong type", `{ order_id = input.tags, amount = 1 }`, `"order_id": string required, but have list of string`},
		{"missing required", `{ order_id = input.id }`, `attribute "amount" is required`},
		{"undeclared attribute", `{ order_id = input.id, amount = 1, colour = "red" }`, `it declares no colour`},
		{"not an object", `"o-1"`, `the input must be an object, and this is string`},
		{"no input at all", ``, `attributes "amount" and "order_id" are required`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := ""
			if c.input != "" {
				in = "input = " + c.input
			}
			src := `workflow "parent" {
  input {
    id    = string
    total = number
    tags  = list(string)
  }
  step "a" {
    activity = "noop"
  }
  step "pay" {
    depends_on = [step.a]
    workflow   = "charge"
    ` + in + `
  }
}
`
			wf, diags := Parse("parent.hcl", []byte(src))
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			got := CheckChildInputs(wf, lookup)
			if c.want == "" {
				if len(got) > 0 {
					t.Fatalf("unexpected: %s", got.Error())
				}
				return
			}
			if len(got) != 1 || !strings.Contains(got[0].Detail, c.want) || got[0].Subject.Start.Line < 10 {
				t.Fatalf("want %q, got %v", c.want, got)
			}
		})
	}
}

// An unknown child, or a version that is not known, is not checked: the
// check happens when the child instance starts.
func TestCheckChildInputsUnknownChild(t *testing.T) {
	src := `workflow "parent" {
  step "pay" {
    workflow = "charge"
    version  = 7
    input    = "anything"
  }
}
`
	wf, diags := Parse("parent.hcl", []byte(src))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	child, _ := Parse("child.hcl", []byte(childSrc))
	lookup := func(name string, version uint64) *Workflow {
		if version == 0 {
			return child
		}
		return nil
	}
	if got := CheckChildInputs(wf, lookup); len(got) > 0 {
		t.Fatal(got.Error())
	}
}
