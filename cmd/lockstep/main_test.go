package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockstep-io/lockstep/agent/agenttest"
	"github.com/lockstep-io/lockstep/internal/workloads"
)

func runCLI(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestUsageAndUnknownCommand(t *testing.T) {
	code, out, _ := runCLI()
	if code != 0 || !strings.Contains(out, "agent") || !strings.Contains(out, "workflow") {
		t.Fatalf("usage = %d %q", code, out)
	}
	if code, _, errOut := runCLI("frobnicate"); code != 1 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Fatalf("unknown = %d %q", code, errOut)
	}
	if code, _, errOut := runCLI("instance", "explode"); code != 1 || !strings.Contains(errOut, "start") {
		t.Fatalf("unknown sub = %d %q", code, errOut)
	}
}

func TestWorkflowValidate(t *testing.T) {
	code, out, errOut := runCLI("workflow", "validate", "../../examples/diamond.hcl")
	if code != 0 || !strings.Contains(out, `"diamond" is valid`) {
		t.Fatalf("valid = %d %q %q", code, out, errOut)
	}
	bad := filepath.Join(t.TempDir(), "bad.hcl")
	os.WriteFile(bad, []byte("workflow \"x\" {\n  step \"a\" {\n    activity = \"noop\"\n    input    = step.nope.output\n  }\n}\n"), 0o600)
	code, _, errOut = runCLI("workflow", "validate", bad)
	if code != 1 || !strings.Contains(errOut, "bad.hcl:4:16") || !strings.Contains(errOut, "^^^") {
		t.Fatalf("invalid = %d %q", code, errOut)
	}
	code, out, _ = runCLI("workflow", "validate", "-json", bad)
	var res struct {
		Valid       bool `json:"valid"`
		Diagnostics []struct {
			Summary string `json:"summary"`
		} `json:"diagnostics"`
	}
	if code != 1 || json.Unmarshal([]byte(out), &res) != nil || res.Valid || len(res.Diagnostics) != 1 {
		t.Fatalf("json = %d %q", code, out)
	}
	if code, _, errOut := runCLI("workflow", "validate", "/no/such/file.hcl"); code != 1 || !strings.Contains(errOut, "no such file") {
		t.Fatalf("missing file = %d %q", code, errOut)
	}
}

func TestFlagsAfterPositionals(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	input := fs.String("input", "", "")
	wait := fs.Bool("wait", false, "")
	if _, ok := parse(fs, []string{"order", "-input", `{"a":1}`, "-wait"}); !ok {
		t.Fatal("parse failed")
	}
	if fs.NArg() != 1 || fs.Arg(0) != "order" || *input != `{"a":1}` || !*wait {
		t.Fatalf("args=%v input=%q wait=%v", fs.Args(), *input, *wait)
	}
}

func TestReadInput(t *testing.T) {
	if _, err := readInput("{nope"); err == nil {
		t.Fatal("invalid JSON accepted")
	}
	f := filepath.Join(t.TempDir(), "in.json")
	os.WriteFile(f, []byte(`{"n": 1}`), 0o600)
	if in, err := readInput("@" + f); err != nil || string(in) != `{"n": 1}` {
		t.Fatalf("file input = %s %v", in, err)
	}
}

func TestAgentConfigErrors(t *testing.T) {
	code, _, errOut := runCLI("agent", "-bind", "nowhere", "-data-dir", t.TempDir())
	if code != 1 || !strings.Contains(errOut, `bind "nowhere" is not an IP address`) {
		t.Fatalf("bad bind = %d %q", code, errOut)
	}
	cfg := filepath.Join(t.TempDir(), "agent.hcl")
	os.WriteFile(cfg, []byte("node = \n"), 0o600)
	code, _, errOut = runCLI("agent", "-config", cfg)
	if code != 1 || !strings.Contains(errOut, "agent.hcl:1") {
		t.Fatalf("bad config = %d %q", code, errOut)
	}
}

func TestWorkflowFmtAndGraph(t *testing.T) {
	f := filepath.Join(t.TempDir(), "w.hcl")
	messy := "workflow \"w\" {\nstep \"a\" {\nactivity=\"noop\"\n}\n}\n"
	os.WriteFile(f, []byte(messy), 0o600)
	if code, out, _ := runCLI("workflow", "fmt", "-check", f); code != 1 || !strings.Contains(out, f) {
		t.Fatalf("fmt -check = %d %q", code, out)
	}
	if code, out, _ := runCLI("workflow", "fmt", "-check", "-diff", f); code != 1 || !strings.Contains(out, "+  step \"a\" {") {
		t.Fatalf("fmt -diff = %d %q", code, out)
	}
	if b, _ := os.ReadFile(f); string(b) != messy {
		t.Fatal("fmt -check wrote the file")
	}
	if code, _, errOut := runCLI("workflow", "fmt", f); code != 0 {
		t.Fatalf("fmt = %d %q", code, errOut)
	}
	if code, out, _ := runCLI("workflow", "fmt", "-check", f); code != 0 || out != "" {
		t.Fatalf("fmt -check after fmt = %d %q", code, out)
	}
	code, out, _ := runCLI("workflow", "graph", "../../examples/diamond.hcl")
	if code != 0 || !strings.Contains(out, `"a" -> "b";`) {
		t.Fatalf("graph = %d %q", code, out)
	}
	if code, out, _ := runCLI("workflow", "graph", "-format", "mermaid", "../../examples/diamond.hcl"); code != 0 || !strings.Contains(out, "flowchart") {
		t.Fatalf("graph mermaid = %d %q", code, out)
	}
}

// Files validated together check a child workflow step against the child
// among them.
func TestWorkflowValidateChildInput(t *testing.T) {
	dir := t.TempDir()
	child := filepath.Join(dir, "child.hcl")
	parent := filepath.Join(dir, "parent.hcl")
	os.WriteFile(child, []byte("workflow \"charge\" {\n  input {\n    amount = number\n  }\n  step \"a\" {\n    activity = \"noop\"\n  }\n}\n"), 0o600)
	os.WriteFile(parent, []byte("workflow \"parent\" {\n  step \"pay\" {\n    workflow = \"charge\"\n    input    = { amount = \"lots\", colour = \"red\" }\n  }\n}\n"), 0o600)
	if code, _, errOut := runCLI("workflow", "validate", parent); code != 0 {
		t.Fatalf("alone, the child is unknown: %d %q", code, errOut)
	}
	code, out, errOut := runCLI("workflow", "validate", child, parent)
	if code != 1 || !strings.Contains(errOut, "parent.hcl:4:16") || !strings.Contains(errOut, "declares no colour") || !strings.Contains(out, `"charge" is valid`) {
		t.Fatalf("together = %d %q %q", code, out, errOut)
	}
}

// `instance start -wait` runs an instance to its end and prints it (one
// start that waits, on a real dev agent); exit code 2 when it failed.
func TestInstanceStartWait(t *testing.T) {
	a := agenttest.Dev(t, true)
	addr := "http://" + a.HTTPAddr()
	dir := t.TempDir()
	for name, src := range map[string]string{
		"w.hcl": workloads.Chain3("w"),
		// 192.0.2.0/24 is not on the http activity's allow list.
		"bad.hcl": `workflow "bad" {
  step "a" {
    activity = "http"
    input    = { url = "http://192.0.2.1/", method = "GET" }
    retry { max_attempts = 1 }
  }
}
`,
	} {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		if code, _, errOut := runCLI("workflow", "register", "-address", addr, f); code != 0 {
			t.Fatalf("register %s = %d %s", name, code, errOut)
		}
	}
	code, out, errOut := runCLI("instance", "start", "-address", addr, "-input", `{"n":1}`, "-json", "-wait", "w")
	if code != 0 || !strings.Contains(out, `"status": "completed"`) || !strings.Contains(out, `"n": 3`) {
		t.Fatalf("start -wait = %d %s %s", code, out, errOut)
	}
	if code, out, errOut := runCLI("instance", "start", "-address", addr, "-wait", "bad"); code != 2 || !strings.Contains(out, "failed") {
		t.Fatalf("start -wait of a failing workflow = %d %s %s", code, out, errOut)
	}
}
