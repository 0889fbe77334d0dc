package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/pmezard/go-difflib/difflib"

	"github.com/lockstep-io/lockstep/hcl"
)

// workflowFmt rewrites files in canonical layout; -check only reports which
// would change (exit 1), -diff prints what would change.
func workflowFmt(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("workflow fmt", flag.ContinueOnError)
	fs.SetOutput(stderr)
	check := fs.Bool("check", false, "do not write; exit 1 when a file is not formatted")
	diff := fs.Bool("diff", false, "print the changes as a unified diff (implies not writing with -check)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: lockstep workflow fmt [-check] [-diff] FILE...\n\nRewrites workflow files in canonical HCL layout.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 1
	}
	code := 0
	for _, path := range fs.Args() {
		src, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			code = 1
			continue
		}
		out, diags := hcl.Format(path, src)
		if diags.HasErrors() {
			fmt.Fprint(stderr, hcl.RenderDiagnostics(diags, src))
			code = 1
			continue
		}
		if string(out) == string(src) {
			continue
		}
		if *diff {
			ud := difflib.UnifiedDiff{A: difflib.SplitLines(string(src)), B: difflib.SplitLines(string(out)),
				FromFile: path, ToFile: path + " (formatted)", Context: 3}
			text, _ := difflib.GetUnifiedDiffString(ud)
			fmt.Fprint(stdout, text)
		}
		if *check {
			if !*diff {
				fmt.Fprintln(stdout, path)
			}
			code = 1
			continue
		}
		if err := os.WriteFile(path, out, 0o644); err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			code = 1
			continue
		}
		fmt.Fprintln(stdout, path)
	}
	return code
}

// workflowGraph prints a workflow's step graph as Graphviz DOT or Mermaid.
func workflowGraph(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("workflow graph", flag.ContinueOnError)
	fs.SetOutput(stderr)
	format := fs.String("format", "dot", "dot (Graphviz) or mermaid")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: lockstep workflow graph [-format dot|mermaid] FILE\n\nPrints the step graph, e.g. lockstep workflow graph order.hcl | dot -Tsvg > order.svg\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 1
	}
	src, ok := checkFile(fs.Arg(0), stderr)
	if !ok {
		return 1
	}
	wf, _ := hcl.Parse(fs.Arg(0), src)
	out, err := hcl.Graph(wf, hcl.GraphFormat(*format))
	if err != nil {
		fmt.Fprintf(stderr, "lockstep workflow graph: %v\n", err)
		return 1
	}
	fmt.Fprint(stdout, out)
	return 0
}
