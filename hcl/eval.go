package hcl

import (
	"encoding/json"
	"fmt"
	"sort"

	hhcl "github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

// functions is the whole function library of the language. Every function is
// a pure function of its arguments: none reads the clock, the environment,
// files or the network, so evaluation is deterministic on every node.
var functions = map[string]function.Function{
	"abs":        stdlib.AbsoluteFunc,
	"ceil":       stdlib.CeilFunc,
	"coalesce":   stdlib.CoalesceFunc,
	"concat":     stdlib.ConcatFunc,
	"contains":   stdlib.ContainsFunc,
	"distinct":   stdlib.DistinctFunc,
	"flatten":    stdlib.FlattenFunc,
	"floor":      stdlib.FloorFunc,
	"format":     stdlib.FormatFunc,
	"join":       stdlib.JoinFunc,
	"jsondecode": stdlib.JSONDecodeFunc,
	"jsonencode": stdlib.JSONEncodeFunc,
	"keys":       stdlib.KeysFunc,
	"length":     stdlib.LengthFunc,
	"lookup":     stdlib.LookupFunc,
	"lower":      stdlib.LowerFunc,
	"max":        stdlib.MaxFunc,
	"merge":      stdlib.MergeFunc,
	"min":        stdlib.MinFunc,
	"range":      stdlib.RangeFunc,
	"regex":      stdlib.RegexFunc,
	"replace":    stdlib.ReplaceFunc,
	"reverse":    stdlib.ReverseListFunc,
	"sort":       stdlib.SortFunc,
	"split":      stdlib.SplitFunc,
	"substr":     stdlib.SubstrFunc,
	"tostring":   stdlib.MakeToFunc(cty.String),
	"tonumber":   stdlib.MakeToFunc(cty.Number),
	"trimspace":  stdlib.TrimSpaceFunc,
	"upper":      stdlib.UpperFunc,
	"values":     stdlib.ValuesFunc,
}

// FunctionNames lists the functions expressions may call, sorted.
func FunctionNames() []string {
	names := make([]string, 0, len(functions))
	for n := range functions {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// StepResult is what an expression sees of a step as step.NAME.
type StepResult struct {
	Status string
	Output json.RawMessage
}

// Scope is everything an expression may read. It is built by the caller
// from replicated state only.
type Scope struct {
	Input json.RawMessage
	Steps map[string]StepResult
}

func (s Scope) evalContext() (*hhcl.EvalContext, error) {
	input, err := FromJSON(s.Input)
	if err != nil {
		return nil, fmt.Errorf("instance input: %w", err)
	}
	steps := make(map[string]cty.Value, len(s.Steps))
	for name, r := range s.Steps {
		out, err := FromJSON(r.Output)
		if err != nil {
			return nil, fmt.Errorf("output of step %q: %w", name, err)
		}
		steps[name] = cty.ObjectVal(map[string]cty.Value{
			"status": cty.StringVal(r.Status),
			"output": out,
		})
	}
	return &hhcl.EvalContext{
		Variables: map[string]cty.Value{"input": input, "step": cty.ObjectVal(steps)},
		Functions: functions,
	}, nil
}

// Eval evaluates expr in scope and returns the result as JSON. A nil
// expression evaluates to JSON null.
func Eval(expr hhcl.Expression, scope Scope) (json.RawMessage, error) {
	if expr == nil {
		return json.RawMessage("null"), nil
	}
	ctx, err := scope.evalContext()
	if err != nil {
		return nil, err
	}
	v, diags := expr.Value(ctx)
	if diags.HasErrors() {
		return nil, diagError(diags)
	}
	return ToJSON(v)
}

// FromJSON converts a JSON document to a cty value of its implied type.
// Empty input is null.
func FromJSON(raw json.RawMessage) (cty.Value, error) {
	if len(raw) == 0 {
		return cty.NullVal(cty.DynamicPseudoType), nil
	}
	var v ctyjson.SimpleJSONValue
	if err := v.UnmarshalJSON(raw); err != nil {
		return cty.NilVal, err
	}
	return v.Value, nil
}

// ToJSON converts a cty value to JSON. Unknown values are an error.
func ToJSON(v cty.Value) (json.RawMessage, error) {
	if !v.IsWhollyKnown() {
		return nil, fmt.Errorf("value is not known")
	}
	if v.IsNull() {
		return json.RawMessage("null"), nil
	}
	b, err := ctyjson.SimpleJSONValue{Value: v}.MarshalJSON()
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}

// EvalError is an expression that could not be evaluated; its text names the
// source position.
type EvalError struct{ Diags hhcl.Diagnostics }

func (e *EvalError) Error() string {
	d := e.Diags[0]
	for _, x := range e.Diags {
		if x.Severity == hhcl.DiagError {
			d = x
			break
		}
	}
	msg := d.Summary
	if d.Detail != "" {
		msg += ": " + d.Detail
	}
	if d.Subject != nil {
		msg = fmt.Sprintf("%s:%d,%d: %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, msg)
	}
	return msg
}

func diagError(diags hhcl.Diagnostics) error { return &EvalError{Diags: diags} }
