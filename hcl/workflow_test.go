package hcl

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, src string) *Workflow {
	t.Helper()
	wf, diags := Parse("test.hcl", []byte(src))
	if diags.HasErrors() {
		t.Fatalf("unexpected diagnostics:\n%s", RenderDiagnostics(diags, []byte(src)))
	}
	return wf
}

func TestParseDiamondGraph(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "examples", "diamond.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	wf := mustParse(t, string(src))
	if wf.Name != "diamond" {
		t.Fatalf("name = %q", wf.Name)
	}
	want := map[string]string{"a": "", "b": "a", "c": "a", "d": "b,c"}
	for name, deps := range want {
		s := wf.Step(name)
		if s == nil {
			t.Fatalf("step %q missing", name)
		}
		if got := strings.Join(s.Deps, ","); got != deps {
			t.Errorf("step %s deps = %q, want %q", name, got, deps)
		}
		if s.Queue != DefaultQueue || s.Activity != "noop" {
			t.Errorf("step %s queue=%q activity=%q", name, s.Queue, s.Activity)
		}
	}
	if roots := wf.Roots(); len(roots) != 1 || roots[0].Name != "a" {
		t.Fatalf("roots = %v", roots)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name string
		src  string
		want []string // substrings of the rendered diagnostics, all required
	}{
		{"unknown step reference", `workflow "w" {
  step "a" { activity = "noop" }
  step "b" {
    activity = "noop"
    input    = { x = step.aa.output }
  }
}`, []string{"test.hcl:5:22", "Reference to undeclared step", `Did you mean "a"?`}},
		{"unknown depends_on", `workflow "w" {
  step "a" {
    activity   = "noop"
    depends_on = [step.zz]
  }
}`, []string{"test.hcl:4:19", "undeclared step"}},
		{"cycle", `workflow "w" {
  step "a" {
    activity = "noop"
    input    = step.b.output
  }
  step "b" {
    activity = "noop"
    input    = step.a.output
  }
}`, []string{"Dependency cycle", "step.a -> step.b -> step.a"}},
		{"self reference", `workflow "w" {
  step "a" {
    activity = "noop"
    input    = step.a.output
  }
}`, []string{"test.hcl:4:16", "refers to itself"}},
		{"unknown variable", `workflow "w" {
  step "a" {
    activity = "noop"
    input    = inptu.x
  }
}`, []string{"test.hcl:4:16", "Unknown variable", `Did you mean "input"?`}},
		{"unknown function", `workflow "w" {
  step "a" {
    activity = "noop"
    input    = uper("x")
  }
}`, []string{"Call to unknown function", `Did you mean "upper"?`}},
		{"duplicate step", `workflow "w" {
  step "a" { activity = "noop" }
  step "a" { activity = "noop" }
}`, []string{"test.hcl:3:8", "Duplicate step name"}},
		{"missing activity", `workflow "w" {
  step "a" { input = 1 }
}`, []string{"test.hcl:2", "Step has no kind", "fail { error"}},
		{"bad duration", `workflow "w" {
  step "a" {
    activity = "noop"
    timeout  = "soon"
  }
}`, []string{"test.hcl:4:16", "Invalid duration"}},
		{"unknown attribute", `workflow "w" {
  step "a" {
    activity = "noop"
    colour   = "red"
  }
}`, []string{"test.hcl:4:5", "Unsupported argument"}},
		{"syntax error", `workflow "w" {
  step "a" {
    activity = 
  }
}`, []string{"test.hcl:3"}},
		{"no workflow", `# empty`, []string{"Missing workflow block"}},
		{"no steps", `workflow "w" {}`, []string{"Workflow has no steps"}},
		{"bad step attribute", `workflow "w" {
  step "a" { activity = "noop" }
  step "b" {
    activity = "noop"
    input    = step.a.outptu
  }
}`, []string{"Unsupported step attribute"}},
		{"too deep", `workflow "w" { step "a" { activity = "noop"
  input = ` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `
} }`, []string{"test.hcl:2", "Nesting too deep"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wf, diags := Parse("test.hcl", []byte(tc.src))
			if !diags.HasErrors() || wf != nil {
				t.Fatalf("expected errors, got none")
			}
			out := RenderDiagnostics(diags, []byte(tc.src))
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("diagnostics lack %q:\n%s", w, out)
				}
			}
			for _, d := range DiagnosticsJSON(diags) {
				if d.Range == nil && tc.name != "no workflow" {
					t.Errorf("diagnostic %q has no range", d.Summary)
				}
			}
		})
	}
}

func TestParseReportsAllErrorsAtOnce(t *testing.T) {
	src := `workflow "w" {
  step "a" {
    activity = "noop"
    input    = step.nope.output
  }
  step "b" {
    activity = "noop"
    input    = bogus
    timeout  = "x"
  }
}`
	_, diags := Parse("test.hcl", []byte(src))
	if n := len(diags.Errs()); n != 3 {
		t.Fatalf("got %d errors, want 3:\n%s", n, RenderDiagnostics(diags, []byte(src)))
	}
}

func TestEval(t *testing.T) {
	wf := mustParse(t, `workflow "w" {
  step "a" {
    activity = "noop"
    input    = { n = input.n * 2, name = upper(input.name), tags = [for t in input.tags : "${t}!"] }
  }
  step "b" {
    activity = "noop"
    input    = jsonencode(step.a.output)
  }
  output = { a = step.a.output.n, status = step.a.status }
}`)
	in := json.RawMessage(`{"n": 21, "name": "ada", "tags": ["x", "y"]}`)
	got, err := Eval(wf.Step("a").Input, Scope{Input: in})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != `{"n":42,"name":"ADA","tags":["x!","y!"]}` {
		t.Fatalf("a input = %s", got)
	}
	scope := Scope{Input: in, Steps: StepMap{"a": {Status: "succeeded", Output: got}}}
	out, err := Eval(wf.Output, scope)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != `{"a":42,"status":"succeeded"}` {
		t.Fatalf("output = %s", out)
	}
	// A missing attribute is an evaluation error naming the position.
	_, err = Eval(wf.Step("a").Input, Scope{Input: json.RawMessage(`{"name":"x","tags":[]}`)})
	if err == nil || !strings.Contains(err.Error(), "test.hcl:4") {
		t.Fatalf("err = %v", err)
	}
}

func TestEvalIsDeterministic(t *testing.T) {
	wf := mustParse(t, `workflow "w" {
  step "a" {
    activity = "noop"
    input    = merge(input, { z = 1, a = 2, m = { y = 1, b = 2 } })
  }
}`)
	in := json.RawMessage(`{"q": 1, "c": [1,2,3], "k": {"x": 1, "a": 2}}`)
	first, err := Eval(wf.Step("a").Input, Scope{Input: in})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		again, _ := Eval(wf.Step("a").Input, Scope{Input: in})
		if string(again) != string(first) {
			t.Fatalf("evaluation %d differs: %s vs %s", i, again, first)
		}
	}
}

func TestExamplesValidate(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "examples", "*.hcl"))
	if len(files) == 0 {
		t.Fatal("no examples")
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, diags := Parse(f, src); diags.HasErrors() {
			t.Errorf("%s:\n%s", f, RenderDiagnostics(diags, src))
		}
	}
}

func FuzzParse(f *testing.F) {
	src, _ := os.ReadFile(filepath.Join("..", "examples", "diamond.hcl"))
	f.Add(string(src))
	f.Add(`workflow "w" { step "a" { activity = "noop" } }`)
	f.Fuzz(func(t *testing.T, s string) {
		wf, diags := Parse("fuzz.hcl", []byte(s))
		if wf == nil && !diags.HasErrors() {
			t.Fatal("nil workflow without errors")
		}
		_ = RenderDiagnostics(diags, []byte(s))
	})
}

func TestControlFlowDiagnostics(t *testing.T) {
	cases := map[string][]string{
		`workflow "w" {
  step "a" {
    activity     = "noop"
    trigger_rule = "any_fail"
    depends_on   = [step.b]
  }
  step "b" {
    activity = "noop"
  }
}`: {"test.hcl:4:20", "Unknown trigger rule", `Did you mean "any_failed"?`},
		`workflow "w" {
  step "a" {
    activity     = "noop"
    trigger_rule = "any_failed"
  }
}`: {"test.hcl:2:3", "Error path without dependencies"},
		`workflow "w" {
  step "a" {
    activity = "noop"
    fail {
      error = "x"
    }
  }
}`: {"test.hcl:2:3", "Step has more than one kind", "activity and fail"},
		`workflow "w" {
  step "a" {
    activity = "noop"
    when     = "yes please"
  }
}`: {"test.hcl:4:16", "Incorrect condition type", "must be a bool"},
		`workflow "w" {
  step "a" {
    activity = "noop"
    input    = instance.name
  }
}`: {"test.hcl:4:16", "Unsupported instance attribute", "id, workflow, version and started_at"},
		`workflow "w" {
  step "a" {
    fail {
      message = "no error type"
    }
  }
}`: {"test.hcl:3:10", `"error" is required`},
		`workflow "w" {
  step "a" {
    activity = "noop"
  }
  step "b" {
    activity = "noop"
    when     = step.a.status == "succeeded"
  }
}`: nil,
	}
	cases[`workflow "w" {
  step "a" {
    activity = "noop"
    input    = each.value
  }
}`] = []string{"test.hcl:4:16", "each outside for_each"}
	cases[`workflow "w" {
  step "a" {
    for_each = [1, 2]
    activity = "noop"
    input    = each.item
    when     = each.key > 0
  }
}`] = []string{"test.hcl:5:16", "Unsupported each attribute", "test.hcl:6:16", "each outside for_each"}
	cases[`workflow "w" {
  step "a" {
    for_each        = "abc"
    max_concurrency = 0
    activity        = "noop"
  }
  step "b" {
    activity        = "noop"
    max_concurrency = 2
  }
}`] = []string{"test.hcl:3:23", "Incorrect for_each type", "test.hcl:4:23", "Invalid max_concurrency", "test.hcl:9:23", "max_concurrency without for_each"}
	for src, wants := range cases {
		wf, diags := Parse("test.hcl", []byte(src))
		out := RenderDiagnostics(diags, []byte(src))
		if wants == nil {
			if diags.HasErrors() {
				t.Errorf("unexpected errors:\n%s", out)
			} else if deps := wf.Step("b").Deps; len(deps) != 1 || deps[0] != "a" {
				t.Errorf("a reference in when did not create a dependency: %v", deps)
			}
			continue
		}
		for _, w := range wants {
			if !strings.Contains(out, w) {
				t.Errorf("diagnostics lack %q:\n%s", w, out)
			}
		}
	}
}

func TestSumAndTimeFunctions(t *testing.T) {
	wf := mustParse(t, `workflow "w" {
  step "a" {
    activity = "noop"
    input    = { total = sum([1, 2.5, "3"]), later = timeadd("2026-01-01T00:00:00Z", "90m") }
  }
}`)
	out, err := Eval(wf.Step("a").Input, Scope{})
	if err != nil || string(out) != `{"later":"2026-01-01T01:30:00Z","total":6.5}` {
		t.Fatalf("got %s %v", out, err)
	}
	bad := mustParse(t, `workflow "w" {
  step "a" {
    activity = "noop"
    input    = sum(["x"])
  }
}`)
	if _, err := Eval(bad.Step("a").Input, Scope{}); err == nil || !strings.Contains(err.Error(), "list of numbers") {
		t.Fatalf("sum of strings: %v", err)
	}
}

func TestLabels(t *testing.T) {
	wf := mustParse(t, "workflow \"w\" {\n  labels = { team = \"payments\", tier = 1 }\n  step \"a\" {\n    activity = \"noop\"\n  }\n}\n")
	if wf.Labels["team"] != "payments" || wf.Labels["tier"] != "1" {
		t.Fatalf("labels = %v", wf.Labels)
	}
	_, diags := Parse("test.hcl", []byte("workflow \"w\" {\n  labels = { team = input.team }\n  step \"a\" {\n    activity = \"noop\"\n  }\n}\n"))
	if out := RenderDiagnostics(diags, nil); !strings.Contains(out, "test.hcl:2:12: Error: Invalid labels") {
		t.Fatalf("diagnostics = %s", out)
	}
}

func TestEvalSeesWhatItNames(t *testing.T) {
	wf := mustParse(t, `workflow "w" {
  step "a" {
    activity = "noop"
  }
  step "b" {
    activity = "noop"
    input    = { named = step.a.output.x, status = step.a.status }
  }
}`)
	scope := Scope{Steps: StepMap{
		"a":     {Status: "succeeded", Output: json.RawMessage(`{"x": 1}`)},
		"other": {Status: "succeeded", Output: json.RawMessage(`{not json`)}, // never converted: b does not name it
	}}
	out, err := Eval(wf.Step("b").Input, scope)
	if err != nil || string(out) != `{"named":1,"status":"succeeded"}` {
		t.Fatalf("got %s %v", out, err)
	}
}

func TestPriority(t *testing.T) {
	wf := mustParse(t, `workflow "w" {
  defaults {
    priority = 10
  }
  step "a" {
    activity = "noop"
  }
  step "b" {
    activity = "noop"
    priority = 90
  }
}
`)
	if wf.Step("a").Priority != 10 || wf.Step("b").Priority != 90 {
		t.Fatalf("priorities a=%d b=%d", wf.Step("a").Priority, wf.Step("b").Priority)
	}
	if p := mustParse(t, "workflow \"w\" {\n  step \"a\" {\n    activity = \"noop\"\n  }\n}\n").Step("a").Priority; p != DefaultPriority {
		t.Fatalf("default priority = %d", p)
	}
	for _, bad := range []string{"101", "-1", "2.5", `"high"`} {
		_, diags := Parse("test.hcl", []byte("workflow \"w\" {\n  step \"a\" {\n    activity = \"noop\"\n    priority = "+bad+"\n  }\n}\n"))
		if out := RenderDiagnostics(diags, nil); !strings.Contains(out, "test.hcl:4:") || !strings.Contains(out, "Invalid priority") {
			t.Errorf("priority = %s: diagnostics = %s", bad, out)
		}
	}
}

func TestRetention(t *testing.T) {
	wf, diags := Parse("r.hcl", []byte("workflow \"r\" {\n  step \"a\" {\n    activity = \"noop\"\n  }\n}\n"))
	if diags.HasErrors() || wf.Retention != DefaultRetention {
		t.Fatalf("default retention = %v %v", wf.Retention, diags)
	}
	wf, diags = Parse("r.hcl", []byte("workflow \"r\" {\n  retention = \"90m\"\n  step \"a\" {\n    activity = \"noop\"\n  }\n}\n"))
	if diags.HasErrors() || wf.Retention != 90*time.Minute {
		t.Fatalf("retention = %v %v", wf.Retention, diags)
	}
	_, diags = Parse("r.hcl", []byte("workflow \"r\" {\n  retention = \"7 days\"\n  step \"a\" {\n    activity = \"noop\"\n  }\n}\n"))
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "r.hcl:2,15") || !strings.Contains(diags.Error(), "not a positive duration") {
		t.Fatalf("bad retention = %v", diags)
	}
}
