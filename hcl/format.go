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
// runs, and an edge from each dependency to its dependent.
func Graph(wf *Workflow, format GraphFormat) (string, error) {
	var b strings.Builder
	edges := func(fn func(from, to string)) {
		for _, s := range wf.Steps {
			deps := append([]string(nil), s.Deps...)
			sort.Strings(deps)
			for _, d := range deps {
				fn(d, s.Name)
			}
		}
	}
	switch format {
	case GraphDOT, "":
		fmt.Fprintf(&b, "digraph %q {\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n", wf.Name)
		for _, s := range wf.Steps {
			fmt.Fprintf(&b, "  %q [label=%q];\n", s.Name, s.Name+"\n"+s.Activity)
		}
		edges(func(from, to string) { fmt.Fprintf(&b, "  %q -> %q;\n", from, to) })
		b.WriteString("}\n")
	case GraphMermaid:
		b.WriteString("flowchart LR\n")
		for _, s := range wf.Steps {
			fmt.Fprintf(&b, "  %s[\"%s<br/><small>%s</small>\"]\n", mermaidID(s.Name), s.Name, s.Activity)
		}
		edges(func(from, to string) { fmt.Fprintf(&b, "  %s --> %s\n", mermaidID(from), mermaidID(to)) })
	default:
		return "", fmt.Errorf("unknown graph format %q (use dot or mermaid)", format)
	}
	return b.String(), nil
}

// mermaidID keeps step names (letters, digits, _ and -) safe as node ids.
func mermaidID(name string) string { return "s_" + strings.ReplaceAll(name, "-", "_") }
