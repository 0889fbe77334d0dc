package hcl

import (
	"encoding/json"
	"strings"
	"testing"
)

const orderWorkflow = `workflow "order" {
  input {
    order_id = string
    amount   = number
    items    = list(object({ sku = string, qty = optional(number, 1) }))
    express  = optional(bool, false)
    note     = optional(string)
  }
  step "charge" {
    activity = "noop"
    input    = { order = input.order_id, amount = input.amount, express = input.express }
  }
}
`

func TestInputConversionAndDefaults(t *testing.T) {
	wf := mustParse(t, orderWorkflow)
	cases := []struct {
		in, want, err string
	}{
		{in: `{"order_id":"o1","amount":10,"items":[{"sku":"a"}]}`,
			want: `{"amount":10,"express":false,"items":[{"qty":1,"sku":"a"}],"note":null,"order_id":"o1"}`},
		{in: `{"order_id":"o1","amount":"12.5","items":[],"express":true,"note":"hi"}`,
			want: `{"amount":12.5,"express":true,"items":[],"note":"hi","order_id":"o1"}`},
		{in: `{"order_id":"o1","amount":"ten","items":[]}`, err: "input.amount: a number is required"},
		{in: `{"order_id":"o1","amount":1,"items":[{"sku":"a","qty":"x"}]}`, err: "input.items[0].qty: a number is required"},
		{in: `{"amount":1,"items":[]}`, err: `attribute "order_id" is required`},
		{in: `{"order_id":"o1","amount":1,"items":[],"colour":"red"}`, err: "does not declare: colour"},
		{in: `[1]`, err: "input must be an object"},
		{in: ``, err: `attributes "amount", "items", and "order_id" are required`},
	}
	for _, tc := range cases {
		out, err := wf.CheckInput(json.RawMessage(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || string(out) != tc.want {
			t.Errorf("%s: got %s %v, want %s", tc.in, out, err, tc.want)
		}
	}
	// Without an input block any JSON is taken as it is.
	free := mustParse(t, "workflow \"f\" {\n  step \"a\" {\n    activity = \"noop\"\n  }\n}\n")
	if out, err := free.CheckInput(json.RawMessage(`[1,"x"]`)); err != nil || string(out) != `[1,"x"]` {
		t.Fatalf("free input = %s %v", out, err)
	}
}

func TestInputDiagnostics(t *testing.T) {
	cases := map[string][]string{
		`workflow "w" {
  input {
    n = number
  }
  step "a" {
    activity = "noop"
    input    = { x = input.m }
  }
}`: {"test.hcl:7:22", "Reference to undeclared input", `declares n`},
		`workflow "w" {
  step "a" {
    activity = "noop"
    input    = input.amout
  }
  input {
    amount = number
  }
}`: {"test.hcl:4:16", `Did you mean "amount"?`},
		`workflow "w" {
  input {
    n = numbr
  }
  step "a" {
    activity = "noop"
  }
}`: {"test.hcl:3:9", "NAME = TYPE"},
		`workflow "w" {
  input {
    n = optional(number, "many")
  }
  step "a" {
    activity = "noop"
  }
}`: {"test.hcl:3:26", "Default does not match its type"},
		`workflow "w" {
  input {
    n = number
  }
  input {
    m = number
  }
  step "a" {
    activity = "noop"
  }
}`: {"test.hcl:5:3", "Duplicate input block"},
	}
	for src, wants := range cases {
		_, diags := Parse("test.hcl", []byte(src))
		out := RenderDiagnostics(diags, []byte(src))
		for _, w := range wants {
			if !strings.Contains(out, w) {
				t.Errorf("diagnostics lack %q:\n%s", w, out)
			}
		}
	}
}
