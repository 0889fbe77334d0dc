package hcl

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	hhcl "github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"pgregory.net/rapid"
)

func parseExpr(t testing.TB, src string) hhcl.Expression {
	t.Helper()
	expr, diags := hclsyntax.ParseExpression([]byte(src), "t.hcl", hhcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("%s: %s", src, diags.Error())
	}
	return expr
}

// The expressions steps are usually made of are answered directly, with
// the bytes the cty path gives.
func TestDirectEvalAnswersCommonExpressions(t *testing.T) {
	scope := Scope{
		Input: json.RawMessage(`{"n": 1, "name": "ada", "tags": ["x", "y"], "deep": {"b": 2, "a": [1, {"z": null}]}}`),
		Steps: StepMap{
			"a":   {Status: "succeeded", Output: json.RawMessage(`{"n":2,"ok":true}`), Attempts: 1},
			"bad": {Status: "failed", ErrorType: "boom", ErrorMsg: "no", Attempts: 3},
		},
		Instance: InstanceInfo{ID: "i-1", Workflow: "w", Version: 3, StartedAt: time.Date(2026, 12, 3, 10, 0, 0, 5, time.UTC)},
	}
	for _, src := range []string{
		`{ n = input.n }`,
		`{ n = step.a.output.n + 1 }`,
		`step.a.output`,
		`input`,
		`input.deep`,
		`input.deep.a[1]`,
		`input["tags"][0]`,
		`[input.n, "two", 3, true, null]`,
		`{ "quoted key" = input.name, b = { c = step.a.attempts } }`,
		`"hello ${input.name} #${input.n}"`,
		`"${input.deep}"`,
		`step.a.status`,
		`step.bad.output`,
		`instance.id`,
		`{ id = instance.id, v = instance.version, at = instance.started_at }`,
		`(input.n * 7 - 2)`,
		`-input.n`,
		`{}`,
		`[]`,
	} {
		expr := parseExpr(t, src)
		want, err := evalCty(expr, scope)
		if err != nil {
			t.Fatalf("%s: cty path: %v", src, err)
		}
		got, ok := directEval(expr, scope)
		if !ok {
			t.Errorf("%s: not answered directly", src)
			continue
		}
		if string(got) != string(want) {
			t.Errorf("%s: direct %s, cty %s", src, got, want)
		}
	}
}

// Conditions that read a bool (or null) are answered directly too; a
// string, which cty converts, is not.
func TestDirectBool(t *testing.T) {
	scope := Scope{
		Input: json.RawMessage(`{"flag": true, "off": false, "none": null, "s": "true"}`),
		Steps: StepMap{"a": {Status: "succeeded", Output: json.RawMessage(`{"ok":true}`)}},
	}
	for src, want := range map[string]bool{
		`input.flag`: true, `input.off`: false, `input.none`: false, `step.a.output.ok`: true,
		`true`: true, `null`: false, `step.a.error`: false,
	} {
		expr := parseExpr(t, src)
		got, ok := directBool(expr, scope)
		if !ok || got != want {
			t.Errorf("%s: direct %v (answered %v), want %v", src, got, ok, want)
		}
		if cty, err := evalBoolCty(expr, scope); err != nil || cty != want {
			t.Errorf("%s: cty path %v, %v", src, cty, err)
		}
	}
	if _, ok := directBool(parseExpr(t, `input.s`), scope); ok {
		t.Error("a string condition was answered directly")
	}
}

// What the direct evaluator cannot answer exactly it leaves to the cty
// path: errors, floats, -0, escaped strings, duplicate keys, functions.
func TestDirectEvalDeclines(t *testing.T) {
	scope := Scope{
		Input: json.RawMessage(`{"f": 1.5, "e": 1e2, "z": -0, "s": "a\"b", "h": "<b>", "u": "é", "dup": {"a": 1, "a": 2}, "big": 9223372036854775807, "bad": `),
		Steps: StepMap{"a": {Status: "succeeded", Output: json.RawMessage(`{"n":1}`)}},
	}
	valid := Scope{Input: json.RawMessage(`{"f": 1.5, "e": 1e2, "z": -0, "s": "a\"b", "h": "<b>", "u": "é", "dup": {"a": 1, "a": 2}, "big": 9223372036854775807, "n": 0}`)}
	for _, c := range []struct {
		src   string
		scope Scope
	}{
		{`input.f`, valid}, {`input.e`, valid}, {`input.z`, valid}, {`input.s`, valid},
		{`input.h`, valid}, {`input.u`, valid}, {`input.dup`, valid},
		{`input.big + 1`, valid}, {`input.n * 5`, valid}, {`-input.n`, valid},
		{`input.missing`, valid}, {`input.f.x`, valid}, {`upper("a")`, valid},
		{`now()`, valid}, {`input.n == 0`, valid}, {`{ a = 1, a = 2 }`, valid},
		{`"${input.missing}"`, valid}, {`-0`, valid}, {`1.5`, valid}, {`"é"`, valid},
		// An invalid input is the cty path's error, even where the
		// expression would read only a valid part of it.
		{`input.f`, scope}, {`step.a.output.n`, Scope{Input: scope.Input, Steps: scope.Steps, Each: &Element{Key: "0", Value: json.RawMessage(`[`), Index: true}}},
	} {
		expr := parseExpr(t, c.src)
		if got, ok := directEval(expr, c.scope); ok {
			want, err := evalCty(expr, c.scope)
			t.Errorf("%s: answered %s directly; cty path: %s, %v", c.src, got, want, err)
		}
	}
}

// On generated expressions and documents, valid or not, the direct
// evaluator either declines or gives exactly what the cty path gives.
func TestDirectEvalAgreesWithCty(t *testing.T) {
	var doc func(depth int) *rapid.Generator[string]
	doc = func(depth int) *rapid.Generator[string] {
		leaves := []*rapid.Generator[string]{
			rapid.SampledFrom([]string{
				"null", "true", "false", "0", "1", "-1", "42", "-0", "9223372036854775807",
				"9223372036854775808", "-9223372036854775808", "1.5", "1e2", "1E+2", "0.0", "-12",
			}),
			rapid.SampledFrom([]string{`""`, `"a"`, `"b c"`, `"<b>"`, `"\u00e9"`, `"é"`, `"a\"b"`, `"\n"`, `"x/y"`, `"\/"`}),
		}
		if depth > 0 {
			ws := rapid.SampledFrom([]string{"", " ", "\n\t"})
			leaves = append(leaves,
				rapid.Custom(func(t *rapid.T) string {
					n := rapid.IntRange(0, 4).Draw(t, "n")
					parts := make([]string, n)
					for i := range parts {
						key := rapid.SampledFrom([]string{`"a"`, `"b"`, `"l"`, `"n"`, `"a\u0062"`, `"<"`, `"key"`}).Draw(t, "key")
						parts[i] = key + ws.Draw(t, "ws") + ":" + doc(depth-1).Draw(t, "v")
					}
					return "{" + ws.Draw(t, "ws") + strings.Join(parts, ","+ws.Draw(t, "ws")) + "}"
				}),
				rapid.Custom(func(t *rapid.T) string {
					n := rapid.IntRange(0, 4).Draw(t, "n")
					parts := make([]string, n)
					for i := range parts {
						parts[i] = doc(depth-1).Draw(t, "e")
					}
					return "[" + strings.Join(parts, ", ") + "]"
				}),
			)
		}
		return rapid.OneOf(leaves...)
	}
	// A document is sometimes broken, sometimes missing.
	scopeDoc := rapid.Custom(func(t *rapid.T) string {
		d := doc(3).Draw(t, "doc")
		switch rapid.IntRange(0, 9).Draw(t, "mangle") {
		case 0:
			return d[:rapid.IntRange(0, len(d)).Draw(t, "cut")]
		case 1:
			return d + rapid.SampledFrom([]string{" x", ",", " ", "}"}).Draw(t, "tail")
		}
		return d
	})
	var expr func(depth int) *rapid.Generator[string]
	expr = func(depth int) *rapid.Generator[string] {
		leaves := []*rapid.Generator[string]{
			rapid.SampledFrom([]string{
				"input", "input.a", "input.b", "input.n", "input.a.b", "input.l[0]", "input.l[1]", `input["a"]`, "input.a.n",
				"step.s.output", "step.s.output.a", "step.s.output.n", "step.s.output.l[0]", "step.s.status", "step.s.attempts",
				"step.s.error", "step.s", "step.t.output", "each.key", "each.value", "each.value.a", "instance.id",
				"instance.version", "instance.started_at", "instance.nope", "nope.x",
			}),
			rapid.SampledFrom([]string{"1", "0", "-1", "-0", "1.5", "9223372036854775807", `"s"`, `"<b>"`, `"é"`, "true", "null", `""`, "3000000000"}),
		}
		if depth > 0 {
			sub := expr(depth - 1)
			leaves = append(leaves, rapid.Custom(func(t *rapid.T) string {
				a, b := sub.Draw(t, "a"), sub.Draw(t, "b")
				return rapid.SampledFrom([]string{
					"(" + a + ")", a + " + " + b, a + " - " + b, a + " * " + b, "-" + a, a + " / " + b,
					"{ a = " + a + ", b = " + b + " }", "{ a = " + a + ", a = " + b + " }", `{ "k" = ` + a + " }",
					"[" + a + ", " + b + "]", "[]", "{}", `"x${` + a + `}y"`, `"${` + a + `}"`, "upper(" + a + ")",
					a + " == " + b, "true ? " + a + " : " + b, "[" + a + "][0]",
				}).Draw(t, "form")
			}))
		}
		return rapid.OneOf(leaves...)
	}
	answered := 0
	rapid.Check(t, func(rt *rapid.T) {
		src := expr(2).Draw(rt, "expr")
		e, diags := hclsyntax.ParseExpression([]byte(src), "t.hcl", hhcl.InitialPos)
		if diags.HasErrors() {
			return // a generated form that is not HCL: nothing to compare
		}
		scope := Scope{
			Input:    json.RawMessage(scopeDoc.Draw(rt, "input")),
			Instance: InstanceInfo{ID: "i-1", Workflow: "w", Version: 2, StartedAt: time.Unix(1, 5).UTC()},
		}
		steps := StepMap{}
		switch rapid.IntRange(0, 3).Draw(rt, "step") {
		case 0:
			steps["s"] = StepResult{Status: "succeeded", Output: json.RawMessage(scopeDoc.Draw(rt, "output")), Attempts: 1}
		case 1:
			steps["s"] = StepResult{Status: "failed", ErrorType: "boom", ErrorMsg: "<no>", Attempts: 2}
		case 2:
			steps["s"] = StepResult{Status: "running"}
		}
		scope.Steps = steps
		switch rapid.IntRange(0, 2).Draw(rt, "each") {
		case 0:
			scope.Each = &Element{Key: "1", Value: json.RawMessage(scopeDoc.Draw(rt, "each")), Index: true}
		case 1:
			scope.Each = &Element{Key: rapid.SampledFrom([]string{"k", "<", "é"}).Draw(rt, "key"), Value: json.RawMessage(scopeDoc.Draw(rt, "each"))}
		}
		if b, ok := directBool(e, scope); ok {
			want, err := evalBoolCty(e, scope)
			if err != nil || b != want {
				rt.Fatalf("%s as a condition: direct %v, cty %v, %v", src, b, want, err)
			}
		}
		got, ok := directEval(e, scope)
		want, err := evalCty(e, scope)
		if !ok {
			return
		}
		answered++
		if err != nil {
			rt.Fatalf("%s: direct %s, cty path failed: %v", src, got, err)
		}
		if string(got) != string(want) {
			rt.Fatalf("%s: direct %s, cty %s", src, got, want)
		}
	})
	if answered == 0 {
		t.Fatal("no generated expression was answered directly")
	}
	t.Logf("%d answered directly", answered)
}

func BenchmarkEvalChain3Input(b *testing.B) {
	expr := parseExpr(b, `{ n = step.a.output.n + 1 }`)
	scope := Scope{Input: json.RawMessage(`{"n":1}`), Steps: StepMap{"a": {Status: "succeeded", Output: json.RawMessage(`{"n":1}`), Attempts: 1}}}
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Eval(expr, scope); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cty", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := evalCty(expr, scope); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// On any expression and any documents, the direct evaluator declines or
// agrees with the cty path, for values and for conditions.
func FuzzDirectEval(f *testing.F) {
	f.Add(`{ n = step.a.output.n + 1 }`, `{"n":1}`, `{"n":2}`)
	f.Add(`"x${input.s}y"`, `{"s":"<a>"}`, `null`)
	f.Add(`[input.l[1], step.a.output]`, `{"l":[1,2.5]}`, `{"a":{"b":"c"}}`)
	f.Add(`input.flag`, `{"flag":true}`, ``)
	f.Fuzz(func(t *testing.T, src, input, output string) {
		e, diags := hclsyntax.ParseExpression([]byte(src), "f.hcl", hhcl.InitialPos)
		if diags.HasErrors() {
			return
		}
		scope := Scope{
			Input: json.RawMessage(input),
			Steps: StepMap{"a": {Status: "succeeded", Output: json.RawMessage(output), Attempts: 1}},
		}
		if got, ok := directEval(e, scope); ok {
			want, err := evalCty(e, scope)
			if err != nil || string(got) != string(want) {
				t.Fatalf("%s: direct %s, cty %s, %v", src, got, want, err)
			}
		}
		if b, ok := directBool(e, scope); ok {
			if want, err := evalBoolCty(e, scope); err != nil || b != want {
				t.Fatalf("%s as a condition: direct %v, cty %v, %v", src, b, want, err)
			}
		}
	})
}
