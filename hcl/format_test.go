package hcl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	messy := "workflow \"w\" {\nstep \"a\" {\nactivity=\"noop\"\n    input = {n=1, long_name=2}\n}\n}\n"
	out, diags := Format("w.hcl", []byte(messy))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	want := "workflow \"w\" {\n  step \"a\" {\n    activity = \"noop\"\n    input    = { n = 1, long_name = 2 }\n  }\n}\n"
	if string(out) != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out, want)
	}
	again, _ := Format("w.hcl", out)
	if string(again) != string(out) {
		t.Fatal("formatting is not idempotent")
	}
	broken := []byte("workflow \"w\" {\n")
	if out, diags := Format("w.hcl", broken); !diags.HasErrors() || string(out) != string(broken) {
		t.Fatal("a broken file was rewritten")
	}
	// The examples are kept formatted.
	files, _ := filepath.Glob(filepath.Join("..", "examples", "*.hcl"))
	for _, f := range files {
		src, _ := os.ReadFile(f)
		if out, _ := Format(f, src); string(out) != string(src) {
			t.Errorf("%s is not formatted; run lockstep workflow fmt %s", f, f)
		}
	}
}

func TestGraph(t *testing.T) {
	src, _ := os.ReadFile(filepath.Join("..", "examples", "diamond.hcl"))
	wf := mustParse(t, string(src))
	dot, err := Graph(wf, GraphDOT)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`digraph "diamond"`, `"a" -> "b";`, `"a" -> "c";`, `"b" -> "d";`, `"c" -> "d";`, `"a" [label="a\nnoop"];`} {
		if !strings.Contains(dot, want) {
			t.Errorf("dot lacks %s:\n%s", want, dot)
		}
	}
	mer, err := Graph(wf, GraphMermaid)
	if err != nil || !strings.Contains(mer, "flowchart LR") || !strings.Contains(mer, "s_b --> s_d") {
		t.Fatalf("mermaid = %s %v", mer, err)
	}
	if _, err := Graph(wf, "png"); err == nil {
		t.Fatal("unknown format accepted")
	}
}

func TestGraphShowsRulesAndFailSteps(t *testing.T) {
	wf := mustParse(t, `workflow "g" {
  step "charge" {
    activity = "payments.charge"
  }
  step "notify" {
    depends_on   = [step.charge]
    trigger_rule = "any_failed"
    activity     = "email.send"
  }
  step "release" {
    depends_on   = [step.charge]
    trigger_rule = "all_done"
    activity     = "locks.release"
  }
  step "stop" {
    depends_on = [step.notify]
    fail {
      error = "declined"
    }
  }
}`)
	dot, _ := Graph(wf, GraphDOT)
	for _, want := range []string{
		`"charge" -> "notify" [label="any_failed", style=dashed, color=red];`,
		`"charge" -> "release" [label="all_done", style=dotted];`,
		`"stop" [label="stop\nfail: declined", shape=octagon, color=red];`,
		`"notify" -> "stop";`,
	} {
		if !strings.Contains(dot, want) {
			t.Errorf("dot lacks %s:\n%s", want, dot)
		}
	}
	mer, _ := Graph(wf, GraphMermaid)
	if !strings.Contains(mer, "s_charge -. any_failed .-> s_notify") || !strings.Contains(mer, "s_stop{{") {
		t.Errorf("mermaid:\n%s", mer)
	}
}
