package hcl

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files of TestGoldenDiagnostics")

// TestGoldenDiagnostics pins the exact diagnostics of every file in
// testdata/invalid: each NAME.hcl is validated and its rendering compared
// with NAME.golden. Run `go test ./hcl -run Golden -update` after an
// intended change and review the diff.
func TestGoldenDiagnostics(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "invalid", "*.hcl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			name := filepath.ToSlash(filepath.Join("testdata", "invalid", filepath.Base(f)))
			wf, diags := Parse(name, src)
			if wf != nil || !diags.HasErrors() {
				t.Fatal("an invalid file validated")
			}
			got := RenderDiagnostics(diags, src)
			golden := strings.TrimSuffix(f, ".hcl") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("diagnostics changed; got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}
