package hcl

import (
	"fmt"
	"sort"
	"strings"

	"github.com/agext/levenshtein"
	hhcl "github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// precheck rejects sources that are too large or too deeply nested before
// the recursive-descent parser sees them.
func precheck(filename string, src []byte) hhcl.Diagnostics {
	if len(src) > MaxSourceBytes {
		return hhcl.Diagnostics{{
			Severity: hhcl.DiagError,
			Summary:  "Workflow file too large",
			Detail:   fmt.Sprintf("%s is %d bytes; the limit is %d.", filename, len(src), MaxSourceBytes),
			Subject:  &hhcl.Range{Filename: filename, Start: hhcl.InitialPos, End: hhcl.InitialPos},
		}}
	}
	depth, line, col := 0, 1, 1
	var quote bool
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '\n':
			line, col = line+1, 0
			quote = false // HCL quoted strings do not span lines
		case quote && c == '\\':
			i++
			col++
		case c == '"':
			quote = !quote
		case quote:
		case c == '{' || c == '[' || c == '(':
			depth++
			if depth > MaxNesting {
				pos := hhcl.Pos{Line: line, Column: col, Byte: i}
				return hhcl.Diagnostics{{
					Severity: hhcl.DiagError,
					Summary:  "Nesting too deep",
					Detail:   fmt.Sprintf("Brackets are nested more than %d levels deep here; flatten the expression.", MaxNesting),
					Subject:  &hhcl.Range{Filename: filename, Start: pos, End: pos},
				}}
			}
		case c == '}' || c == ']' || c == ')':
			if depth > 0 {
				depth--
			}
		}
		col++
	}
	return nil
}

// decodeString evaluates an attribute that must be a constant string.
func decodeString(attr *hhcl.Attribute, out *string) hhcl.Diagnostics {
	v, diags := attr.Expr.Value(nil)
	if diags.HasErrors() {
		return hhcl.Diagnostics{attrError(attr, "Constant string required",
			fmt.Sprintf("The value of %s must be a literal string; it cannot refer to variables or call functions.", attr.Name))}
	}
	if v.IsNull() || !v.Type().Equals(cty.String) {
		return hhcl.Diagnostics{attrError(attr, "Incorrect attribute type",
			fmt.Sprintf("%s must be a string, for example %s = \"value\".", attr.Name, attr.Name))}
	}
	*out = v.AsString()
	return nil
}

func attrError(attr *hhcl.Attribute, summary, detail string) *hhcl.Diagnostic {
	return &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: summary, Detail: detail, Subject: attr.Expr.Range().Ptr(), Context: attr.Range.Ptr()}
}

// checkFunctions reports calls to functions the language does not define.
func checkFunctions(expr hhcl.Expression) hhcl.Diagnostics {
	var diags hhcl.Diagnostics
	syn, ok := expr.(hclsyntax.Expression)
	if !ok {
		return nil
	}
	hclsyntax.VisitAll(syn, func(n hclsyntax.Node) hhcl.Diagnostics {
		call, ok := n.(*hclsyntax.FunctionCallExpr)
		if !ok {
			return nil
		}
		if _, known := functions[call.Name]; !known {
			detail := fmt.Sprintf("There is no function named %q.", call.Name)
			if s := suggest(call.Name, FunctionNames()); s != "" {
				detail += fmt.Sprintf(" Did you mean %q?", s)
			}
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Call to unknown function", Detail: detail, Subject: call.NameRange.Ptr()})
		}
		return nil
	})
	return diags
}

// validName reports whether s can name a workflow, step or queue: it ends up
// in URLs and task ids, so it is kept to a conservative alphabet.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && (r >= '0' && r <= '9' || r == '_' || r == '-'):
		default:
			return false
		}
	}
	return true
}

// ValidName reports whether s is a valid workflow, step or queue name.
func ValidName(s string) bool { return validName(s) }

// suggest returns the candidate closest to given, if any is close enough to
// be a plausible typo (longer names tolerate more edits).
func suggest(given string, candidates []string) string {
	best, bestDist := "", 3+len(given)/6
	for _, c := range candidates {
		if d := levenshtein.Distance(given, c, nil); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// pos renders a range's start as file:line:col, the form every
// diagnostic uses.
func pos(r hhcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}

// sortDiagnostics orders diagnostics by where they point, so a file's
// problems read top to bottom.
func sortDiagnostics(diags hhcl.Diagnostics) {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		switch {
		case a == nil || b == nil:
			return a != nil && b == nil
		case a.Start.Line != b.Start.Line:
			return a.Start.Line < b.Start.Line
		default:
			return a.Start.Column < b.Start.Column
		}
	})
}

func joinArrow(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = "step." + n
	}
	return strings.Join(quoted, " -> ")
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// checkBool reports a when expression whose value is known at validation
// time (it uses no variable) and is not a bool.
func checkBool(attr *hhcl.Attribute) hhcl.Diagnostics {
	if len(attr.Expr.Variables()) > 0 {
		return nil
	}
	v, diags := attr.Expr.Value(&hhcl.EvalContext{Functions: functions})
	if diags.HasErrors() || !v.IsKnown() {
		return nil
	}
	if _, err := convert.Convert(v, cty.Bool); err != nil || v.IsNull() {
		return hhcl.Diagnostics{attrError(attr, "Incorrect condition type",
			fmt.Sprintf("%s must be a bool, such as input.amount > 1000; this is %s.", attr.Name, v.Type().FriendlyName()))}
	}
	return nil
}

// checkEach reports each.* references where no element is in scope, and
// attributes of each other than key and value.
func checkEach(expr hhcl.Expression, allowed bool) hhcl.Diagnostics {
	var diags hhcl.Diagnostics
	for _, t := range expr.Variables() {
		if t.RootName() != "each" {
			continue
		}
		if !allowed {
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "each outside for_each",
				Detail: "each.key and each.value exist only in the input of a step with for_each.", Subject: t.SourceRange().Ptr()})
			continue
		}
		if len(t) < 2 {
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Incomplete each reference",
				Detail: "Use each.key or each.value.", Subject: t.SourceRange().Ptr()})
		} else if a, ok := t[1].(hhcl.TraverseAttr); !ok || (a.Name != "key" && a.Name != "value") {
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Unsupported each attribute",
				Detail: "each has two attributes: key (the index or map key) and value.", Subject: t.SourceRange().Ptr()})
		}
	}
	return diags
}

// signalAttrs are what a wait_signal output reads of the signal it took.
var signalAttrs = map[string]bool{"name": true, "payload": true, "request_id": true, "received_at": true}

// checkSignal reports signal references, in a wait_signal output, to
// attributes a signal does not have.
func checkSignal(expr hhcl.Expression) hhcl.Diagnostics {
	var diags hhcl.Diagnostics
	for _, t := range expr.Variables() {
		if t.RootName() != "signal" {
			continue
		}
		if len(t) < 2 {
			continue // the whole signal object
		}
		if a, ok := t[1].(hhcl.TraverseAttr); !ok || !signalAttrs[a.Name] {
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Unsupported signal attribute",
				Detail: "A signal has name, payload, request_id and received_at.", Subject: t.SourceRange().Ptr()})
		}
	}
	return diags
}

// checkCollection reports a constant for_each that is not a list, set or map.
func checkCollection(attr *hhcl.Attribute) hhcl.Diagnostics {
	if len(attr.Expr.Variables()) > 0 {
		return nil
	}
	v, diags := attr.Expr.Value(&hhcl.EvalContext{Functions: functions})
	if diags.HasErrors() || !v.IsKnown() {
		return nil
	}
	if v.IsNull() || !IsCollection(v.Type()) {
		return hhcl.Diagnostics{attrError(attr, "Incorrect for_each type",
			fmt.Sprintf("for_each must be a list, set or map, such as input.items; this is %s.", v.Type().FriendlyName()))}
	}
	return nil
}

// IsCollection reports whether a for_each value of this type has elements.
func IsCollection(ty cty.Type) bool {
	return ty.IsListType() || ty.IsSetType() || ty.IsTupleType() || ty.IsMapType() || ty.IsObjectType()
}

// decodeLabels reads labels = { key = "value", ... }: constant strings.
func decodeLabels(attr *hhcl.Attribute) (map[string]string, hhcl.Diagnostics) {
	v, diags := attr.Expr.Value(nil)
	bad := hhcl.Diagnostics{attrError(attr, "Invalid labels",
		`labels is an object of constant strings, such as labels = { team = "payments", tier = "1" }.`)}
	if diags.HasErrors() || v.IsNull() || !(v.Type().IsObjectType() || v.Type().IsMapType()) {
		return nil, bad
	}
	out := map[string]string{}
	for it := v.ElementIterator(); it.Next(); {
		k, ev := it.Element()
		s, err := convert.Convert(ev, cty.String)
		if err != nil || s.IsNull() {
			return nil, bad
		}
		out[k.AsString()] = s.AsString()
	}
	return out, nil
}
