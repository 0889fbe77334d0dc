package hcl

import (
	"fmt"
	"strings"

	hhcl "github.com/hashicorp/hcl/v2"
)

// Diagnostic is the JSON form of one problem, as the API and `-json` print it.
type Diagnostic struct {
	Severity string `json:"severity"`
	Summary  string `json:"summary"`
	Detail   string `json:"detail,omitempty"`
	Range    *Range `json:"range,omitempty"`
}

// Range is a span of a source file; lines and columns count from 1.
type Range struct {
	Filename string `json:"filename"`
	Start    Pos    `json:"start"`
	End      Pos    `json:"end"`
}

// Pos is a position in a source file.
type Pos struct {
	Line   int `json:"line"`
	Column int `json:"column"`
	Byte   int `json:"byte"`
}

// DiagnosticsJSON converts diagnostics to their JSON form. The result is
// never nil.
func DiagnosticsJSON(diags hhcl.Diagnostics) []Diagnostic {
	out := make([]Diagnostic, 0, len(diags))
	for _, d := range diags {
		j := Diagnostic{Severity: "error", Summary: d.Summary, Detail: d.Detail}
		if d.Severity == hhcl.DiagWarning {
			j.Severity = "warning"
		}
		if d.Subject != nil {
			j.Range = &Range{
				Filename: d.Subject.Filename,
				Start:    Pos{Line: d.Subject.Start.Line, Column: d.Subject.Start.Column, Byte: d.Subject.Start.Byte},
				End:      Pos{Line: d.Subject.End.Line, Column: d.Subject.End.Column, Byte: d.Subject.End.Byte},
			}
		}
		out = append(out, j)
	}
	return out
}

// RenderDiagnostics renders diagnostics the way Terraform prints them:
// severity and summary, file:line:col, the source line with the range
// underlined, then the detail that says how to fix it.
func RenderDiagnostics(diags hhcl.Diagnostics, src []byte) string {
	lines := strings.Split(string(src), "\n")
	var b strings.Builder
	for _, d := range diags {
		sev := "Error"
		if d.Severity == hhcl.DiagWarning {
			sev = "Warning"
		}
		if d.Subject != nil {
			r := d.Subject
			fmt.Fprintf(&b, "%s:%d:%d: %s: %s\n", r.Filename, r.Start.Line, r.Start.Column, sev, d.Summary)
			if r.Start.Line >= 1 && r.Start.Line <= len(lines) {
				text := strings.TrimRight(lines[r.Start.Line-1], "\r")
				fmt.Fprintf(&b, "\n  %4d | %s\n", r.Start.Line, text)
				width := 1
				if r.End.Line == r.Start.Line && r.End.Column > r.Start.Column {
					width = r.End.Column - r.Start.Column
				}
				pad := ""
				if r.Start.Column > 1 && r.Start.Column-1 <= len(text) {
					pad = strings.Map(func(c rune) rune {
						if c == '\t' {
							return '\t'
						}
						return ' '
					}, text[:r.Start.Column-1])
				}
				fmt.Fprintf(&b, "       | %s%s\n", pad, strings.Repeat("^", width))
			}
		} else {
			fmt.Fprintf(&b, "%s: %s\n", sev, d.Summary)
		}
		if d.Detail != "" {
			fmt.Fprintf(&b, "\n  %s\n", d.Detail)
		}
		b.WriteString("\n")
	}
	return b.String()
}
