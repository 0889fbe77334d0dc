package hcl

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	hhcl "github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
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
	"try":        tryfunc.TryFunc,
	"can":        tryfunc.CanFunc,
	"chunklist":  stdlib.ChunklistFunc,
	"compact":    stdlib.CompactFunc,
	"element":    stdlib.ElementFunc,
	"formatdate": stdlib.FormatDateFunc,
	"formatlist": stdlib.FormatListFunc,
	"index":      stdlib.IndexFunc,
	"parseint":   stdlib.ParseIntFunc,
	"pow":        stdlib.PowFunc,
	"regexall":   stdlib.RegexAllFunc,
	"setunion":   stdlib.SetUnionFunc,
	"slice":      stdlib.SliceFunc,
	"strlen":     stdlib.StrlenFunc,
	"timeadd":    stdlib.TimeAddFunc,
	"title":      stdlib.TitleFunc,
	"trim":       stdlib.TrimFunc,
	"trimprefix": stdlib.TrimPrefixFunc,
	"trimsuffix": stdlib.TrimSuffixFunc,
	"zipmap":     stdlib.ZipmapFunc,
	"sum":        sumFunc,
	"base64encode": function.New(&function.Spec{
		Params: []function.Parameter{{Name: "str", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.StringVal(base64.StdEncoding.EncodeToString([]byte(args[0].AsString()))), nil
		},
	}),
	"base64decode": function.New(&function.Spec{
		Params: []function.Parameter{{Name: "str", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			b, err := base64.StdEncoding.DecodeString(args[0].AsString())
			if err != nil {
				return cty.NilVal, function.NewArgErrorf(0, "not valid base64: %v", err)
			}
			if !utf8.Valid(b) {
				return cty.NilVal, function.NewArgErrorf(0, "the decoded bytes are not UTF-8 text")
			}
			return cty.StringVal(string(b)), nil
		},
	}),
	// now is replaced in every evaluation by the time of the command being
	// applied (nowFunc); this entry only makes the name known to validation.
	"now": nowFunc(time.Time{}),
}

// sumFunc adds up a list, set or tuple of numbers.
var sumFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "list", Type: cty.DynamicPseudoType}},
	Type:   function.StaticReturnType(cty.Number),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		v := args[0]
		if !v.Type().IsListType() && !v.Type().IsSetType() && !v.Type().IsTupleType() {
			return cty.NilVal, function.NewArgErrorf(0, "sum takes a list of numbers, not %s", v.Type().FriendlyName())
		}
		total := cty.Zero
		for it := v.ElementIterator(); it.Next(); {
			_, ev := it.Element()
			n, err := convert.Convert(ev, cty.Number)
			if err != nil || n.IsNull() {
				return cty.NilVal, function.NewArgErrorf(0, "sum takes a list of numbers; an element is %s", ev.Type().FriendlyName())
			}
			total = total.Add(n)
		}
		return total, nil
	},
})

// nowFunc returns the time of the event being applied, as RFC 3339: never
// the clock, so every node computes the same value.
func nowFunc(t time.Time) function.Function {
	return function.New(&function.Spec{
		Type: function.StaticReturnType(cty.String),
		Impl: func([]cty.Value, cty.Type) (cty.Value, error) {
			return cty.StringVal(t.UTC().Format(time.RFC3339Nano)), nil
		},
	})
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

// StepResult is what an expression sees of a step as step.NAME: its
// status, output (null until it succeeded), error (null unless it failed)
// and attempts.
type StepResult struct {
	Status    string
	Output    json.RawMessage
	ErrorType string
	ErrorMsg  string
	Attempts  int
}

// StepResults gives an evaluation the steps' results. An expression reads
// only the steps it names, and only those are asked for, so a caller may
// build each result on demand.
type StepResults interface {
	// Step returns one step's result, false if the step is unknown.
	Step(name string) (StepResult, bool)
	// EachStep calls fn with every step, for expressions that index step
	// by a computed name.
	EachStep(fn func(name string, r StepResult))
}

// StepMap is StepResults held in a map.
type StepMap map[string]StepResult

func (m StepMap) Step(name string) (StepResult, bool) { r, ok := m[name]; return r, ok }

// EachStep calls fn in name order, so that the first error is always the
// same one.
func (m StepMap) EachStep(fn func(string, StepResult)) {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fn(name, m[name])
	}
}

// InstanceInfo is what an expression sees as instance.
type InstanceInfo struct {
	ID        string
	Workflow  string
	Version   uint64
	StartedAt time.Time
}

// Scope is everything an expression may read. It is built by the caller
// from replicated state only; Now is the time of the command being applied.
type Scope struct {
	Input    json.RawMessage
	Steps    StepResults
	Instance InstanceInfo
	Now      time.Time
	// Each is the for_each element being evaluated, if any.
	Each *Element
	// Request is the webhook delivery a trigger's expressions read.
	Request *Request
	// Signal is the signal a wait_signal step took, for its output.
	Signal *SignalInfo
}

// SignalInfo is what a wait_signal output sees as signal.
type SignalInfo struct {
	Name       string
	Payload    json.RawMessage
	RequestID  string
	ReceivedAt time.Time
}

// Element is one element of a for_each: its key (the index of a list or
// set, the key of a map) and its value.
type Element struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
	// Index says the key is a list position (each.key is then a number).
	Index bool `json:"index,omitempty"`
}

// stepErrType is the type of step.<name>.error.
var stepErrType = cty.Object(map[string]cty.Type{"type": cty.String, "message": cty.String})

// refs is what an expression can read: the roots it names and, under
// step, the steps it names. all is set when it reads step in a way that
// does not name one (step[x]), so every step must be in scope.
type refs struct {
	roots map[string]bool
	steps map[string]bool
	all   bool
	// now is set when the expression may call now(), whose value is the
	// scope's own time.
	now bool
	// stepNames are the keys of steps, sorted.
	stepNames []string
}

// refsCache remembers what each parsed expression reads: a workflow's
// expressions are evaluated at every step of every instance and never
// change. Only expressions that are pointers are cached (every hclsyntax
// node is); their number is bounded by the workflows parsed.
var refsCache sync.Map

func referencesOf(expr hhcl.Expression) refs {
	if expr == nil || reflect.TypeOf(expr).Kind() != reflect.Pointer {
		return scanReferences(expr)
	}
	if r, ok := refsCache.Load(expr); ok {
		return r.(refs)
	}
	r := scanReferences(expr)
	refsCache.Store(expr, r)
	return r
}

func scanReferences(expr hhcl.Expression) refs {
	r := refs{roots: map[string]bool{}, steps: map[string]bool{}}
	if expr == nil {
		return r
	}
	if node, ok := expr.(hclsyntax.Node); ok {
		hclsyntax.VisitAll(node, func(n hclsyntax.Node) hhcl.Diagnostics {
			if call, ok := n.(*hclsyntax.FunctionCallExpr); ok && (call.Name == "now" || strings.HasSuffix(call.Name, "::now")) {
				r.now = true
			}
			return nil
		})
	} else {
		r.now = true
	}
	for _, t := range expr.Variables() {
		root := t.RootName()
		r.roots[root] = true
		if root != "step" {
			continue
		}
		if len(t) < 2 {
			r.all = true
			continue
		}
		if a, ok := t[1].(hhcl.TraverseAttr); ok {
			if !r.steps[a.Name] {
				r.stepNames = append(r.stepNames, a.Name)
			}
			r.steps[a.Name] = true
		} else {
			r.all = true
		}
	}
	sort.Strings(r.stepNames)
	return r
}

// evalContext builds what an expression may read. Converting JSON to cty is
// most of an evaluation's cost, so only what the expression names is
// converted; the rest of the scope is left out, which it cannot see anyway.
func (s Scope) evalContext() (*hhcl.EvalContext, error) { return s.evalContextFor(nil) }

func (s Scope) evalContextFor(expr hhcl.Expression) (*hhcl.EvalContext, error) {
	want := refs{all: true}
	if expr != nil {
		want = referencesOf(expr)
	}
	input := cty.NullVal(cty.DynamicPseudoType)
	if want.all || want.roots["input"] {
		var err error
		if input, err = FromJSON(s.Input); err != nil {
			return nil, fmt.Errorf("instance input: %w", err)
		}
	}
	steps := map[string]cty.Value{}
	var stepErr error
	add := func(name string, r StepResult) {
		if stepErr != nil {
			return
		}
		out, err := FromJSON(r.Output)
		if err != nil {
			stepErr = fmt.Errorf("output of step %q: %w", name, err)
			return
		}
		errVal := cty.NullVal(stepErrType)
		if r.ErrorType != "" {
			errVal = cty.ObjectVal(map[string]cty.Value{"type": cty.StringVal(r.ErrorType), "message": cty.StringVal(r.ErrorMsg)})
		}
		steps[name] = cty.ObjectVal(map[string]cty.Value{
			"status":   cty.StringVal(r.Status),
			"output":   out,
			"error":    errVal,
			"attempts": cty.NumberIntVal(int64(r.Attempts)),
		})
	}
	switch {
	case s.Steps == nil:
	case want.all:
		s.Steps.EachStep(add)
	default:
		for _, name := range want.stepNames {
			if r, ok := s.Steps.Step(name); ok {
				add(name, r)
			}
		}
	}
	if stepErr != nil {
		return nil, stepErr
	}
	vars := map[string]cty.Value{"input": input, "step": cty.ObjectVal(steps)}
	if want.all || want.roots["instance"] {
		vars["instance"] = cty.ObjectVal(map[string]cty.Value{
			"id":         cty.StringVal(s.Instance.ID),
			"workflow":   cty.StringVal(s.Instance.Workflow),
			"version":    cty.NumberUIntVal(s.Instance.Version),
			"started_at": cty.StringVal(s.Instance.StartedAt.UTC().Format(time.RFC3339Nano)),
		})
	}
	if s.Request != nil {
		body, err := FromJSON(s.Request.Body)
		if err != nil {
			return nil, fmt.Errorf("request body: %w", err)
		}
		headers := map[string]cty.Value{}
		for k, v := range s.Request.Headers {
			headers[k] = cty.StringVal(v)
		}
		hv := cty.MapValEmpty(cty.String)
		if len(headers) > 0 {
			hv = cty.MapVal(headers)
		}
		vars["request"] = cty.ObjectVal(map[string]cty.Value{"body": body, "headers": hv})
	}
	if s.Signal != nil {
		payload, err := FromJSON(s.Signal.Payload)
		if err != nil {
			return nil, fmt.Errorf("signal payload: %w", err)
		}
		vars["signal"] = cty.ObjectVal(map[string]cty.Value{
			"name":        cty.StringVal(s.Signal.Name),
			"payload":     payload,
			"request_id":  cty.StringVal(s.Signal.RequestID),
			"received_at": cty.StringVal(s.Signal.ReceivedAt.UTC().Format(time.RFC3339Nano)),
		})
	}
	if s.Each != nil {
		val, err := FromJSON(s.Each.Value)
		if err != nil {
			return nil, fmt.Errorf("for_each element %s: %w", s.Each.Key, err)
		}
		key := cty.StringVal(s.Each.Key)
		if s.Each.Index {
			if key, err = convert.Convert(key, cty.Number); err != nil {
				return nil, err
			}
		}
		vars["each"] = cty.ObjectVal(map[string]cty.Value{"key": key, "value": val})
	}
	// The library is shared through the parent context; only now() is the
	// evaluation's own (copying the library per evaluation cost more than
	// most expressions).
	ctx := libraryContext.NewChild()
	ctx.Variables = vars
	if want.all || want.now {
		ctx.Functions = map[string]function.Function{"now": nowFunc(s.Now)}
	}
	return ctx, nil
}

// libraryContext holds the function library; evaluation contexts are its
// children.
var libraryContext = &hhcl.EvalContext{Functions: functions}

// Eval evaluates expr in scope and returns the result as JSON. A nil
// expression evaluates to JSON null.
func Eval(expr hhcl.Expression, scope Scope) (json.RawMessage, error) {
	if expr == nil {
		return json.RawMessage("null"), nil
	}
	if out, ok := directEval(expr, scope); ok {
		return out, nil
	}
	return evalCty(expr, scope)
}

// evalCty is Eval through cty, for every expression.
func evalCty(expr hhcl.Expression, scope Scope) (json.RawMessage, error) {
	ctx, err := scope.evalContextFor(expr)
	if err != nil {
		return nil, err
	}
	v, diags := expr.Value(ctx)
	if diags.HasErrors() {
		return nil, diagError(diags)
	}
	return ToJSON(v)
}

// EvalBool evaluates a condition (a when). Null is false.
func EvalBool(expr hhcl.Expression, scope Scope) (bool, error) {
	if b, ok := directBool(expr, scope); ok {
		return b, nil
	}
	return evalBoolCty(expr, scope)
}

// evalBoolCty is EvalBool through cty, for every expression.
func evalBoolCty(expr hhcl.Expression, scope Scope) (bool, error) {
	ctx, err := scope.evalContextFor(expr)
	if err != nil {
		return false, err
	}
	v, diags := expr.Value(ctx)
	if diags.HasErrors() {
		return false, diagError(diags)
	}
	if v.IsNull() {
		return false, nil
	}
	b, err := convert.Convert(v, cty.Bool)
	if err != nil || !b.IsKnown() {
		r := expr.Range()
		return false, fmt.Errorf("%s:%d,%d: the condition must be a bool, not %s", r.Filename, r.Start.Line, r.Start.Column, v.Type().FriendlyName())
	}
	return b.True(), nil
}

// EvalTime evaluates a time expression (a sleep_until): an RFC 3339
// string.
func EvalTime(expr hhcl.Expression, scope Scope) (time.Time, error) {
	raw, err := Eval(expr, scope)
	if err != nil {
		return time.Time{}, err
	}
	var s string
	r := expr.Range()
	if json.Unmarshal(raw, &s) != nil {
		return time.Time{}, fmt.Errorf("%s:%d,%d: expected an RFC 3339 time such as \"2026-12-01T09:00:00Z\", got %s", r.Filename, r.Start.Line, r.Start.Column, raw)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s:%d,%d: %q is not an RFC 3339 time such as \"2026-12-01T09:00:00Z\"", r.Filename, r.Start.Line, r.Start.Column, s)
	}
	return t.UTC(), nil
}

// EvalForEach evaluates a for_each into its elements, in a fixed order:
// list, tuple and set elements by position (sets in cty's own order), map
// and object elements by key. isMap says the step's output is a map.
func EvalForEach(expr hhcl.Expression, scope Scope) (elems []Element, isMap bool, err error) {
	ctx, err := scope.evalContextFor(expr)
	if err != nil {
		return nil, false, err
	}
	v, diags := expr.Value(ctx)
	if diags.HasErrors() {
		return nil, false, diagError(diags)
	}
	if v.IsNull() || !v.IsWhollyKnown() || !IsCollection(v.Type()) {
		r := expr.Range()
		return nil, false, fmt.Errorf("%s:%d,%d: for_each must be a list, set or map, not %s", r.Filename, r.Start.Line, r.Start.Column, v.Type().FriendlyName())
	}
	isMap = v.Type().IsMapType() || v.Type().IsObjectType()
	i := 0
	for it := v.ElementIterator(); it.Next(); i++ {
		k, ev := it.Element()
		raw, err := ToJSON(ev)
		if err != nil {
			return nil, false, err
		}
		if isMap {
			elems = append(elems, Element{Key: k.AsString(), Value: raw})
		} else {
			elems = append(elems, Element{Key: fmt.Sprint(i), Value: raw, Index: true})
		}
	}
	return elems, isMap, nil
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
