package hcl

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	hhcl "github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// InputSpec is a workflow's declared input: an object type whose attributes
// come from the input block, each a type constraint such as string,
// list(object({ sku = string, qty = number })) or optional(number, 1).
type InputSpec struct {
	Type     cty.Type
	Defaults *typeexpr.Defaults
	Range    hhcl.Range
}

// decodeInput reads `input { name = TYPE ... }`. A top-level
// optional(TYPE, DEFAULT) makes the attribute optional with that default
// (typeexpr itself only allows optional inside object types).
func decodeInput(block *hhcl.Block) (*InputSpec, hhcl.Diagnostics) {
	attrs, diags := block.Body.JustAttributes()
	if diags.HasErrors() {
		return nil, diags
	}
	names := make([]string, 0, len(attrs))
	for n := range attrs {
		names = append(names, n)
	}
	sort.Strings(names)
	fields := map[string]cty.Type{}
	defaults := map[string]cty.Value{}
	children := map[string]*typeexpr.Defaults{}
	var optional []string
	for _, n := range names {
		attr := attrs[n]
		expr := attr.Expr
		var defExpr hhcl.Expression
		if call, d := hhcl.ExprCall(expr); !d.HasErrors() && call.Name == "optional" {
			if len(call.Arguments) < 1 || len(call.Arguments) > 2 {
				diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Invalid optional",
					Detail: "Write optional(TYPE) or optional(TYPE, DEFAULT).", Subject: expr.Range().Ptr()})
				continue
			}
			optional = append(optional, n)
			expr = call.Arguments[0]
			if len(call.Arguments) == 2 {
				defExpr = call.Arguments[1]
			}
		}
		ty, def, d := typeexpr.TypeConstraintWithDefaults(expr)
		if d.HasErrors() {
			for _, x := range d {
				x.Detail = strings.TrimSpace(x.Detail + " Declare each input as NAME = TYPE: string, number, bool, any, list(T), set(T), map(T), object({ name = T, ... }), tuple([T, ...]), or optional(T, DEFAULT).")
			}
			diags = append(diags, d...)
			continue
		}
		fields[n] = ty
		if def != nil {
			children[n] = def
		}
		if defExpr != nil {
			v, d := defExpr.Value(nil)
			if d.HasErrors() {
				diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Invalid default",
					Detail: "A default must be a constant value.", Subject: defExpr.Range().Ptr()})
				continue
			}
			cv, err := convert.Convert(v, ty)
			if err != nil {
				diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Default does not match its type",
					Detail: fmt.Sprintf("The default of %s must be %s: %v.", n, typeexpr.TypeString(ty), err), Subject: defExpr.Range().Ptr()})
				continue
			}
			defaults[n] = cv
		}
	}
	if diags.HasErrors() {
		return nil, diags
	}
	ty := cty.ObjectWithOptionalAttrs(fields, optional)
	spec := &InputSpec{Type: ty, Range: block.DefRange}
	if len(defaults) > 0 || len(children) > 0 {
		spec.Defaults = &typeexpr.Defaults{Type: ty, DefaultValues: defaults, Children: children}
	}
	return spec, nil
}

// CheckInput converts an instance's input to the declared type, fills in
// declared defaults, and returns it as JSON. Without an input block any JSON
// is accepted. The error names the path of every mismatch.
func (w *Workflow) CheckInput(raw json.RawMessage) (json.RawMessage, error) {
	if w.Input == nil {
		if len(raw) == 0 {
			return json.RawMessage("null"), nil
		}
		return raw, nil
	}
	val, err := FromJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("input is not valid JSON: %v", err)
	}
	if val.IsNull() {
		val = cty.EmptyObjectVal
	}
	if !val.Type().IsObjectType() && !val.Type().IsMapType() {
		return nil, fmt.Errorf("input must be an object with %s", describeAttrs(w.Input.Type))
	}
	if w.Input.Defaults != nil {
		val = w.Input.Defaults.Apply(val)
	}
	if unknown := unknownAttrs(val, w.Input.Type); len(unknown) > 0 {
		return nil, fmt.Errorf("input has attributes the workflow does not declare: %s (declared: %s)", strings.Join(unknown, ", "), describeAttrs(w.Input.Type))
	}
	out, err := convert.Convert(val, w.Input.Type)
	if err != nil {
		return nil, inputError(err)
	}
	return ToJSON(out)
}

func unknownAttrs(val cty.Value, ty cty.Type) []string {
	var out []string
	for it := val.ElementIterator(); it.Next(); {
		k, _ := it.Element()
		if !ty.HasAttribute(k.AsString()) {
			out = append(out, k.AsString())
		}
	}
	sort.Strings(out)
	return out
}

func describeAttrs(ty cty.Type) string {
	names := make([]string, 0, len(ty.AttributeTypes()))
	for n, t := range ty.AttributeTypes() {
		s := n + " (" + typeexpr.TypeString(t)
		if ty.AttributeOptional(n) {
			s += ", optional"
		}
		names = append(names, s+")")
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// inputError names the path of a conversion error: input.items[0].qty: ...
func inputError(err error) error {
	var pe cty.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("input%s: %s", formatPath(pe.Path), pe.Error())
	}
	return fmt.Errorf("input: %v", err)
}

func formatPath(p cty.Path) string {
	var b strings.Builder
	for _, step := range p {
		switch s := step.(type) {
		case cty.GetAttrStep:
			b.WriteString("." + s.Name)
		case cty.IndexStep:
			if s.Key.Type() == cty.String {
				fmt.Fprintf(&b, "[%q]", s.Key.AsString())
			} else if s.Key.Type() == cty.Number {
				fmt.Fprintf(&b, "[%s]", s.Key.AsBigFloat().Text('f', -1))
			}
		}
	}
	return b.String()
}

// checkInputRef reports input.NAME references to attributes the input
// block does not declare.
func checkInputRef(t hhcl.Traversal, spec *InputSpec) *hhcl.Diagnostic {
	if spec == nil || len(t) < 2 {
		return nil
	}
	attr, ok := t[1].(hhcl.TraverseAttr)
	if !ok || spec.Type.HasAttribute(attr.Name) {
		return nil
	}
	names := make([]string, 0, len(spec.Type.AttributeTypes()))
	for n := range spec.Type.AttributeTypes() {
		names = append(names, n)
	}
	sort.Strings(names)
	detail := fmt.Sprintf("The input block declares no %q (it declares %s).", attr.Name, strings.Join(names, ", "))
	if s := suggest(attr.Name, names); s != "" {
		detail += fmt.Sprintf(" Did you mean %q?", s)
	}
	return &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Reference to undeclared input", Detail: detail, Subject: t.SourceRange().Ptr()}
}
