package hcl

import (
	"fmt"
	"sort"
	"strings"

	hhcl "github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
)

// Format returns src in canonical HCL layout. Source that does not parse is
// returned unchanged with the syntax diagnostics, so formatting never
// rewrites a broken file.
func Format(filename string, src []byte) ([]byte, hhcl.Diagnostics) {
	if diags := precheck(filename, src); diags.HasErrors() {
		return src, diags
	}
	if _, diags := hclsyntax.ParseConfig(src, filename, hhcl.InitialPos); diags.HasErrors() {
		return src, diags
	}
	return hclwrite.Format(src), nil
}

// GraphFormat names an output of Graph.
type GraphFormat string

// Graph formats.
const (
	GraphDOT     GraphFormat = "dot"
	GraphMermaid GraphFormat = "mermaid"
)

// Graph renders the step graph: one node per step, labelled with what it
// runs, and an edge from each dependency to its dependent. Edges into an
// error path (any_failed) are dashed and red, edges into a finally
// (all_done) dotted, and other non-default rules labelled; fail steps are
// drawn as octagons.
func Graph(wf *Workflow, format GraphFormat) (string, error) {
	var b strings.Builder
	label := func(s *Step) string {
		switch {
		case s.Kind == KindFail:
			return "fail: " + s.FailError
		case s.Kind == KindChild:
			return "workflow " + s.ChildWorkflow
		case s.Kind == KindSignal:
			return "wait signal " + s.SignalName
		case s.Kind == KindSleep && s.SleepUntil != nil:
			return "sleep until"
		case s.Kind == KindSleep:
			return "sleep " + s.Sleep.String()
		case s.ForEach != nil && s.MaxConcurrency > 0:
			return fmt.Sprintf("%s (for_each, %d at a time)", s.Activity, s.MaxConcurrency)
		case s.ForEach != nil:
			return s.Activity + " (for_each)"
		}
		return s.Activity
	}
	edges := func(fn func(from string, to *Step)) {
		for _, s := range wf.Steps {
			deps := append([]string(nil), s.Deps...)
			sort.Strings(deps)
			for _, d := range deps {
				fn(d, s)
			}
		}
	}
	switch format {
	case GraphDOT, "":
		fmt.Fprintf(&b, "digraph %q {\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n", wf.Name)
		for _, s := range wf.Steps {
			attrs := fmt.Sprintf("label=%q", s.Name+"\n"+label(s))
			if s.Kind == KindFail {
				attrs += ", shape=octagon, color=red"
			}
			if s.When != nil {
				attrs += ", style=\"rounded,dashed\""
			}
			fmt.Fprintf(&b, "  %q [%s];\n", s.Name, attrs)
			if s.Compensate != nil {
				fmt.Fprintf(&b, "  %q [label=%q, shape=note, style=dashed, color=blue];\n", s.Name+".compensate", "undo "+s.Name+"\n"+s.Compensate.Activity)
				fmt.Fprintf(&b, "  %q -> %q [style=dashed, color=blue, arrowhead=none];\n", s.Name, s.Name+".compensate")
			}
		}
		edges(func(from string, to *Step) {
			switch to.TriggerRule {
			case RuleAnyFailed:
				fmt.Fprintf(&b, "  %q -> %q [label=\"any_failed\", style=dashed, color=red];\n", from, to.Name)
			case RuleAllDone:
				fmt.Fprintf(&b, "  %q -> %q [label=\"all_done\", style=dotted];\n", from, to.Name)
			case RuleAllSucceeded:
				fmt.Fprintf(&b, "  %q -> %q [label=\"all_succeeded\"];\n", from, to.Name)
			default:
				fmt.Fprintf(&b, "  %q -> %q;\n", from, to.Name)
			}
		})
		b.WriteString("}\n")
	case GraphMermaid:
		b.WriteString("flowchart LR\n")
		for _, s := range wf.Steps {
			text := fmt.Sprintf("\"%s<br/><small>%s</small>\"", s.Name, label(s))
			if s.Kind == KindFail {
				fmt.Fprintf(&b, "  %s{{%s}}\n", mermaidID(s.Name), text)
			} else {
				fmt.Fprintf(&b, "  %s[%s]\n", mermaidID(s.Name), text)
			}
			if s.Compensate != nil {
				fmt.Fprintf(&b, "  %s_undo[/\"undo %s<br/><small>%s</small>\"/]\n  %s -.- %s_undo\n", mermaidID(s.Name), s.Name, s.Compensate.Activity, mermaidID(s.Name), mermaidID(s.Name))
			}
		}
		edges(func(from string, to *Step) {
			switch to.TriggerRule {
			case RuleAnyFailed, RuleAllDone, RuleAllSucceeded:
				fmt.Fprintf(&b, "  %s -. %s .-> %s\n", mermaidID(from), to.TriggerRule, mermaidID(to.Name))
			default:
				fmt.Fprintf(&b, "  %s --> %s\n", mermaidID(from), mermaidID(to.Name))
			}
		})
	default:
		return "", fmt.Errorf("unknown graph format %q (use dot or mermaid)", format)
	}
	return b.String(), nil
}

// mermaidID keeps step names (letters, digits, _ and -) safe as node ids.
func mermaidID(name string) string { return "s_" + strings.ReplaceAll(name, "-", "_") }
