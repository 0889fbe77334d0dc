package hcl

import (
	"fmt"
	"sort"
	"strings"

	hhcl "github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
)

// ChildLookup finds the workflow a child step starts: version 0 is the
// latest. It returns nil when the workflow is not known (not registered,
// or not among the files being checked).
type ChildLookup func(name string, version uint64) *Workflow

// CheckChildInputs checks the input of every child workflow step against
// the input the child declares, when the child is known. The input
// expression is evaluated with what is known before the instance runs: the
// parent's declared input types (values unknown), and nothing about step
// outputs. What that leaves known is checked as the child would check it at
// run time: a missing required attribute, an attribute the child does not
// declare, or a value that cannot be converted to its declared type.
func CheckChildInputs(wf *Workflow, lookup ChildLookup) hhcl.Diagnostics {
	if wf == nil || lookup == nil {
		return nil
	}
	var diags hhcl.Diagnostics
	for _, s := range wf.Steps {
		if s.Kind != KindChild {
			continue
		}
		child := lookup(s.ChildWorkflow, s.ChildVersion)
		if child == nil || child.Input == nil {
			continue
		}
		v := cty.NullVal(cty.DynamicPseudoType)
		subject := s.DeclRange
		if s.Input != nil {
			subject = s.Input.Range()
			var ok bool
			if v, ok = staticValue(s.Input, wf.Input); !ok {
				continue
			}
		}
		if msg := childInputProblem(v, child.Input); msg != "" {
			which := fmt.Sprintf("the latest version of %q", s.ChildWorkflow)
			if s.ChildVersion > 0 {
				which = fmt.Sprintf("version %d of %q", s.ChildVersion, s.ChildWorkflow)
			}
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Child workflow input does not match",
				Detail:  fmt.Sprintf("Step %q starts %s, which would reject this input: %s. It declares %s.", s.Name, which, msg, describeAttrs(child.Input.Type)),
				Subject: subject.Ptr()})
		}
	}
	return diags
}

// staticValue evaluates expr with the values known before an instance
// runs: input has the parent's declared type (or any type) and an unknown
// value; step, each and signal are unknown. ok is false when the
// expression cannot be evaluated that way (the run-time check remains).
func staticValue(expr hhcl.Expression, parent *InputSpec) (cty.Value, bool) {
	input := cty.DynamicVal
	if parent != nil {
		input = cty.UnknownVal(parent.Type.WithoutOptionalAttributesDeep())
	}
	ctx := libraryContext.NewChild()
	ctx.Functions = map[string]function.Function{"now": function.New(&function.Spec{Type: function.StaticReturnType(cty.String),
		Impl: func([]cty.Value, cty.Type) (cty.Value, error) { return cty.UnknownVal(cty.String), nil }})}
	ctx.Variables = map[string]cty.Value{
		"input": input,
		"step":  cty.DynamicVal,
		"each":  cty.DynamicVal,
		"instance": cty.ObjectVal(map[string]cty.Value{
			"id": cty.UnknownVal(cty.String), "workflow": cty.UnknownVal(cty.String),
			"version": cty.UnknownVal(cty.Number), "started_at": cty.UnknownVal(cty.String),
		}),
	}
	v, diags := expr.Value(ctx)
	if diags.HasErrors() {
		return cty.NilVal, false
	}
	return v, true
}

// childInputProblem says why the child would reject v as its input, or
// returns "" when it would not (or cannot tell).
func childInputProblem(v cty.Value, spec *InputSpec) string {
	ty := v.Type()
	switch {
	case v.IsKnown() && v.IsNull():
		v = cty.EmptyObjectVal
	case ty == cty.DynamicPseudoType:
		return ""
	case !ty.IsObjectType() && !ty.IsMapType():
		return "the input must be an object, and this is " + ty.FriendlyName()
	}
	if v.Type().IsObjectType() {
		var unknown []string
		for name := range v.Type().AttributeTypes() {
			if !spec.Type.HasAttribute(name) {
				unknown = append(unknown, name)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return "it declares no " + strings.Join(unknown, ", ")
		}
	}
	if !v.IsKnown() {
		if convert.GetConversionUnsafe(v.Type(), spec.Type) == nil {
			return fmt.Sprintf("%s cannot become %s", v.Type().FriendlyName(), spec.Type.FriendlyName())
		}
		return ""
	}
	if spec.Defaults != nil {
		v = spec.Defaults.Apply(v)
	}
	if _, err := convert.Convert(v, spec.Type); err != nil {
		return inputError(err).Error()
	}
	return ""
}
