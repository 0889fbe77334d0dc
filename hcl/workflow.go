// Package hcl is the Lockstep workflow language: it parses a workflow file,
// validates it (reporting every problem at once with file:line:col), compiles
// it to a step graph and evaluates step expressions deterministically.
//
// It imports no other Lockstep package. The fsm package evaluates compiled
// workflows through it and never parses text itself.
package hcl

import (
	"fmt"
	"sort"
	"time"

	hhcl "github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// MaxSourceBytes bounds a workflow file. Larger sources are rejected before
// parsing.
const MaxSourceBytes = 1 << 20

// MaxNesting bounds bracket nesting. The HCL parser recurses per level and a
// stack overflow is fatal (recover cannot catch it), so depth is checked on
// the raw bytes before the parser sees them.
const MaxNesting = 64

// DefaultQueue is the queue a step's tasks wait in when it names none.
const DefaultQueue = "default"

// DefaultStepTimeout is the start-to-close timeout of an activity step that
// sets none: a lease that is not completed by then is re-queued.
const DefaultStepTimeout = 5 * time.Minute

// Workflow is a compiled workflow definition: immutable once returned by
// Parse, safe for concurrent use.
type Workflow struct {
	Name        string
	Description string
	// Input is the declared input type; nil means any JSON is accepted.
	Input *InputSpec
	// Steps in declaration order.
	Steps []*Step
	// Output is evaluated once every step has ended; nil means no output.
	Output hhcl.Expression

	steps map[string]*Step
}

// Step is one node of the workflow graph.
type Step struct {
	Name     string
	Activity string
	Queue    string
	Timeout  time.Duration
	// Input is the expression evaluated, when the step becomes ready, into
	// the task's input. Nil means the task has a null input.
	Input hhcl.Expression
	// Deps are the steps this one waits for: those named in depends_on plus
	// those its expressions refer to. Sorted, without duplicates.
	Deps []string

	DeclRange hhcl.Range
}

// Step returns the named step, or nil.
func (w *Workflow) Step(name string) *Step { return w.steps[name] }

// Roots returns the steps that depend on nothing, in declaration order.
func (w *Workflow) Roots() []*Step {
	var out []*Step
	for _, s := range w.Steps {
		if len(s.Deps) == 0 {
			out = append(out, s)
		}
	}
	return out
}

var rootSchema = &hhcl.BodySchema{
	Blocks: []hhcl.BlockHeaderSchema{{Type: "workflow", LabelNames: []string{"name"}}},
}

var workflowSchema = &hhcl.BodySchema{
	Attributes: []hhcl.AttributeSchema{
		{Name: "description"},
		{Name: "output"},
	},
	Blocks: []hhcl.BlockHeaderSchema{
		{Type: "input"},
		{Type: "step", LabelNames: []string{"name"}},
	},
}

var stepSchema = &hhcl.BodySchema{
	Attributes: []hhcl.AttributeSchema{
		{Name: "activity", Required: true},
		{Name: "input"},
		{Name: "depends_on"},
		{Name: "queue"},
		{Name: "timeout"},
	},
}

// Parse parses, validates and compiles one workflow file. It returns every
// problem it finds; the workflow is nil when any of them is an error.
func Parse(filename string, src []byte) (*Workflow, hhcl.Diagnostics) {
	if diags := precheck(filename, src); diags.HasErrors() {
		return nil, diags
	}
	file, diags := hclsyntax.ParseConfig(src, filename, hhcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	content, d := file.Body.Content(rootSchema)
	diags = append(diags, d...)
	var blocks []*hhcl.Block
	for _, b := range content.Blocks {
		if b.Type == "workflow" {
			blocks = append(blocks, b)
		}
	}
	switch {
	case len(blocks) == 0 && !diags.HasErrors():
		diags = append(diags, &hhcl.Diagnostic{
			Severity: hhcl.DiagError,
			Summary:  "Missing workflow block",
			Detail:   `A workflow file declares exactly one block: workflow "name" { ... }.`,
			Subject:  file.Body.MissingItemRange().Ptr(),
		})
		return nil, diags
	case len(blocks) > 1:
		diags = append(diags, &hhcl.Diagnostic{
			Severity: hhcl.DiagError,
			Summary:  "More than one workflow block",
			Detail:   fmt.Sprintf("This file already declares workflow %q at %s; put each workflow in its own file.", blocks[0].Labels[0], blocks[0].DefRange),
			Subject:  blocks[1].DefRange.Ptr(),
		})
	}
	if len(blocks) == 0 {
		return nil, diags
	}
	wf, d := decodeWorkflow(blocks[0])
	diags = append(diags, d...)
	if diags.HasErrors() {
		return nil, diags
	}
	return wf, diags
}

func decodeWorkflow(block *hhcl.Block) (*Workflow, hhcl.Diagnostics) {
	wf := &Workflow{Name: block.Labels[0], steps: map[string]*Step{}}
	var diags hhcl.Diagnostics
	if !validName(wf.Name) {
		diags = append(diags, &hhcl.Diagnostic{
			Severity: hhcl.DiagError,
			Summary:  "Invalid workflow name",
			Detail:   fmt.Sprintf("%q is not a valid name: use 1 to 64 letters, digits, '_' or '-', starting with a letter.", wf.Name),
			Subject:  block.LabelRanges[0].Ptr(),
		})
	}
	content, d := block.Body.Content(workflowSchema)
	diags = append(diags, d...)
	if attr, ok := content.Attributes["description"]; ok {
		var desc string
		diags = append(diags, decodeString(attr, &desc)...)
		wf.Description = desc
	}
	if attr, ok := content.Attributes["output"]; ok {
		wf.Output = attr.Expr
	}

	var refs []pendingRef
	for _, b := range content.Blocks {
		if b.Type == "input" {
			if wf.Input != nil {
				diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Duplicate input block",
					Detail: fmt.Sprintf("The input was already declared at %s; declare every input attribute in one block.", wf.Input.Range), Subject: b.DefRange.Ptr()})
				continue
			}
			spec, d := decodeInput(b)
			diags = append(diags, d...)
			if spec != nil {
				wf.Input = spec
			}
			continue
		}
		step, r, d := decodeStep(b)
		diags = append(diags, d...)
		if step == nil {
			continue
		}
		if prev, dup := wf.steps[step.Name]; dup {
			diags = append(diags, &hhcl.Diagnostic{
				Severity: hhcl.DiagError,
				Summary:  "Duplicate step name",
				Detail:   fmt.Sprintf("A step named %q was already declared at %s. Step names must be unique within a workflow.", step.Name, prev.DeclRange),
				Subject:  b.LabelRanges[0].Ptr(),
			})
			continue
		}
		wf.steps[step.Name] = step
		wf.Steps = append(wf.Steps, step)
		refs = append(refs, r...)
	}
	if len(wf.Steps) == 0 {
		diags = append(diags, &hhcl.Diagnostic{
			Severity: hhcl.DiagError,
			Summary:  "Workflow has no steps",
			Detail:   `Declare at least one step "name" { activity = "noop" } in the workflow block.`,
			Subject:  block.DefRange.Ptr(),
		})
	}

	// Resolve step references now that every step is known.
	for _, r := range refs {
		if _, ok := wf.steps[r.target]; !ok {
			diags = append(diags, unknownStep(r, wf))
			continue
		}
		if r.target == r.from {
			diags = append(diags, &hhcl.Diagnostic{
				Severity: hhcl.DiagError,
				Summary:  "Step refers to itself",
				Detail:   fmt.Sprintf("Step %q cannot depend on its own result.", r.from),
				Subject:  r.rng.Ptr(),
			})
			continue
		}
		s := wf.steps[r.from]
		s.Deps = appendUnique(s.Deps, r.target)
	}
	if wf.Output != nil {
		diags = append(diags, checkExpr(wf.Output, "", wf, false)...)
	}
	// input.NAME references are checked once the input block is known,
	// wherever it stands in the file.
	if wf.Input != nil {
		exprs := []hhcl.Expression{wf.Output}
		for _, s := range wf.Steps {
			exprs = append(exprs, s.Input)
		}
		for _, e := range exprs {
			if e == nil {
				continue
			}
			for _, t := range e.Variables() {
				if t.RootName() == "input" {
					if d := checkInputRef(t, wf.Input); d != nil {
						diags = append(diags, d)
					}
				}
			}
		}
	}
	for _, s := range wf.Steps {
		sort.Strings(s.Deps)
	}
	if !diags.HasErrors() {
		diags = append(diags, findCycles(wf)...)
	}
	return wf, diags
}

// pendingRef is a reference from one step to another, checked once every
// step has been declared.
type pendingRef struct {
	from, target string
	rng          hhcl.Range
	what         string
}

func decodeStep(block *hhcl.Block) (*Step, []pendingRef, hhcl.Diagnostics) {
	name := block.Labels[0]
	var diags hhcl.Diagnostics
	if !validName(name) {
		diags = append(diags, &hhcl.Diagnostic{
			Severity: hhcl.DiagError,
			Summary:  "Invalid step name",
			Detail:   fmt.Sprintf("%q is not a valid name: use 1 to 64 letters, digits, '_' or '-', starting with a letter.", name),
			Subject:  block.LabelRanges[0].Ptr(),
		})
	}
	step := &Step{Name: name, Queue: DefaultQueue, Timeout: DefaultStepTimeout, DeclRange: block.DefRange}
	content, d := block.Body.Content(stepSchema)
	diags = append(diags, d...)
	if attr, ok := content.Attributes["activity"]; ok {
		diags = append(diags, decodeString(attr, &step.Activity)...)
		if step.Activity == "" && !diags.HasErrors() {
			diags = append(diags, attrError(attr, "Empty activity", "Name the activity the step runs, for example activity = \"noop\"."))
		}
	}
	if attr, ok := content.Attributes["queue"]; ok {
		diags = append(diags, decodeString(attr, &step.Queue)...)
		if !validName(step.Queue) {
			diags = append(diags, attrError(attr, "Invalid queue name", "Use 1 to 64 letters, digits, '_' or '-', starting with a letter."))
		}
	}
	if attr, ok := content.Attributes["timeout"]; ok {
		var s string
		if d := decodeString(attr, &s); d.HasErrors() {
			diags = append(diags, d...)
		} else if dur, err := time.ParseDuration(s); err != nil || dur <= 0 {
			diags = append(diags, attrError(attr, "Invalid duration", fmt.Sprintf("%q is not a positive duration; write it like \"30s\", \"5m\" or \"1h30m\".", s)))
		} else {
			step.Timeout = dur
		}
	}
	var refs []pendingRef
	if attr, ok := content.Attributes["input"]; ok {
		step.Input = attr.Expr
		diags = append(diags, checkExpr(attr.Expr, name, nil, true)...)
		for _, t := range attr.Expr.Variables() {
			if target, rng, ok := stepRef(t); ok {
				refs = append(refs, pendingRef{from: name, target: target, rng: rng, what: "reference"})
			}
		}
	}
	if attr, ok := content.Attributes["depends_on"]; ok {
		r, d := decodeDependsOn(name, attr)
		refs = append(refs, r...)
		diags = append(diags, d...)
	}
	return step, refs, diags
}

func decodeDependsOn(from string, attr *hhcl.Attribute) ([]pendingRef, hhcl.Diagnostics) {
	exprs, diags := hhcl.ExprList(attr.Expr)
	if diags.HasErrors() {
		return nil, hhcl.Diagnostics{attrError(attr, "Invalid depends_on", "depends_on is a list of step references, for example depends_on = [step.charge].")}
	}
	var refs []pendingRef
	for _, e := range exprs {
		trav, d := hhcl.AbsTraversalForExpr(e)
		target, rng, ok := "", e.Range(), false
		if !d.HasErrors() {
			target, rng, ok = stepRef(trav)
			ok = ok && len(trav) == 2
		}
		if !ok {
			diags = append(diags, &hhcl.Diagnostic{
				Severity: hhcl.DiagError,
				Summary:  "Invalid depends_on entry",
				Detail:   "Each entry of depends_on names a step as step.NAME.",
				Subject:  e.Range().Ptr(),
			})
			continue
		}
		refs = append(refs, pendingRef{from: from, target: target, rng: rng, what: "depends_on"})
	}
	return refs, diags
}

// stepRef recognises step.NAME[...] and returns NAME.
func stepRef(t hhcl.Traversal) (string, hhcl.Range, bool) {
	if t.RootName() != "step" || len(t) < 2 {
		return "", hhcl.Range{}, false
	}
	attr, ok := t[1].(hhcl.TraverseAttr)
	if !ok {
		return "", hhcl.Range{}, false
	}
	return attr.Name, t.SourceRange(), true
}

func unknownStep(r pendingRef, wf *Workflow) *hhcl.Diagnostic {
	names := make([]string, 0, len(wf.Steps))
	for _, s := range wf.Steps {
		names = append(names, s.Name)
	}
	detail := fmt.Sprintf("This workflow declares no step named %q.", r.target)
	if s := suggest(r.target, names); s != "" {
		detail += fmt.Sprintf(" Did you mean %q?", s)
	}
	return &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Reference to undeclared step", Detail: detail, Subject: r.rng.Ptr()}
}

// checkExpr checks the root variables an expression uses and the functions
// it calls. Step references inside steps are resolved by the caller; here
// (wf != nil) they are checked directly.
func checkExpr(expr hhcl.Expression, from string, wf *Workflow, inStep bool) hhcl.Diagnostics {
	var diags hhcl.Diagnostics
	for _, t := range expr.Variables() {
		switch t.RootName() {
		case "input":
		case "step":
			if len(t) < 2 {
				diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Incomplete step reference",
					Detail: "Refer to a step's result as step.NAME.output.", Subject: t.SourceRange().Ptr()})
				continue
			}
			if _, ok := t[1].(hhcl.TraverseAttr); !ok {
				diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Invalid step reference",
					Detail: "Refer to a step's result as step.NAME.output.", Subject: t.SourceRange().Ptr()})
				continue
			}
			if len(t) >= 3 {
				if a, ok := t[2].(hhcl.TraverseAttr); ok && !stepAttrs[a.Name] {
					diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Unsupported step attribute",
						Detail: fmt.Sprintf("A step exposes %s; %q is not one of them.", stepAttrList, a.Name), Subject: t.SourceRange().Ptr()})
				}
			}
			if wf != nil {
				target, rng, _ := stepRef(t)
				if wf.steps[target] == nil {
					diags = append(diags, unknownStep(pendingRef{target: target, rng: rng}, wf))
				}
			}
		default:
			detail := fmt.Sprintf("There is no variable named %q. Expressions may use input and step.", t.RootName())
			if s := suggest(t.RootName(), []string{"input", "step"}); s != "" {
				detail += fmt.Sprintf(" Did you mean %q?", s)
			}
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Unknown variable", Detail: detail, Subject: t.SourceRange().Ptr()})
		}
	}
	diags = append(diags, checkFunctions(expr)...)
	return diags
}

var stepAttrs = map[string]bool{"output": true, "status": true}

const stepAttrList = "output and status"

func findCycles(wf *Workflow) hhcl.Diagnostics {
	const (
		unvisited = iota
		visiting
		done
	)
	color := map[string]int{}
	var stack []string
	var diags hhcl.Diagnostics
	var visit func(name string)
	visit = func(name string) {
		color[name] = visiting
		stack = append(stack, name)
		for _, dep := range wf.steps[name].Deps {
			switch color[dep] {
			case visiting:
				i := len(stack) - 1
				for stack[i] != dep {
					i--
				}
				cycle := append(append([]string{}, stack[i:]...), dep)
				diags = append(diags, &hhcl.Diagnostic{
					Severity: hhcl.DiagError,
					Summary:  "Dependency cycle",
					Detail:   fmt.Sprintf("These steps wait for each other and can never start: %s. Remove one of the references or depends_on entries.", joinArrow(cycle)),
					Subject:  wf.steps[dep].DeclRange.Ptr(),
				})
			case unvisited:
				visit(dep)
			}
		}
		stack = stack[:len(stack)-1]
		color[name] = done
	}
	for _, s := range wf.Steps {
		if color[s.Name] == unvisited {
			visit(s.Name)
		}
	}
	return diags
}
