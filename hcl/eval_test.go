package hcl

import (
	"encoding/json"
	"testing"
	"time"

	hhcl "github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// An evaluation sees exactly what its expression names: now() wherever it
// is called, library functions, a step named directly or by a computed
// index; the scope's steps are asked for only when read.
func TestEvalReadsWhatTheExpressionNames(t *testing.T) {
	at := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	steps := &countingSteps{StepMap: StepMap{
		"a": {Status: "succeeded", Output: json.RawMessage(`{"n":1}`)},
		"b": {Status: "failed", ErrorType: "boom", ErrorMsg: "no"},
	}}
	scope := Scope{Input: json.RawMessage(`{"k":"b"}`), Steps: steps, Now: at}
	cases := []struct{ src, want string }{
		{`{ t = try(now(), "x") }`, `{"t":"2026-11-27T03:00:00Z"}`},
		{`[for s in ["x"] : now()]`, `["2026-11-27T03:00:00Z"]`},
		{`upper("x")`, `"X"`},
		{`step.a.output.n + 1`, `2`},
		{`step[input.k].error.type`, `"boom"`},
	}
	for _, c := range cases {
		expr, diags := hclsyntax.ParseExpression([]byte(c.src), "t.hcl", hhcl.InitialPos)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		steps.asked = nil
		got, err := Eval(expr, scope)
		if err != nil || string(got) != c.want {
			t.Fatalf("%s = %s, %v; want %s", c.src, got, err, c.want)
		}
		if c.src == `step.a.output.n + 1` && (len(steps.asked) != 1 || steps.asked[0] != "a") {
			t.Fatalf("%s asked for steps %v", c.src, steps.asked)
		}
	}
}

type countingSteps struct {
	StepMap
	asked []string
}

func (c *countingSteps) Step(name string) (StepResult, bool) {
	c.asked = append(c.asked, name)
	return c.StepMap.Step(name)
}
