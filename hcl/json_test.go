package hcl

import (
	"encoding/json"
	"fmt"
	"testing"

	ctyjson "github.com/zclconf/go-cty/cty/json"
	"pgregory.net/rapid"
)

// The fast JSON <-> cty conversion agrees with cty's own json package on
// any document: the same value, and the same bytes back.
func TestJSONConversionMatchesCty(t *testing.T) {
	var gen func(depth int) *rapid.Generator[any]
	gen = func(depth int) *rapid.Generator[any] {
		leaves := []*rapid.Generator[any]{
			rapid.Just[any](nil),
			rapid.Map(rapid.Bool(), func(b bool) any { return b }),
			rapid.Map(rapid.Int64(), func(i int64) any { return json.Number(fmt.Sprint(i)) }),
			rapid.Map(rapid.Float64Range(-1e6, 1e6), func(f float64) any { return f }),
			rapid.Map(rapid.SampledFrom([]string{"1e3", "2.5E-3", "123456789012345678901234567890", "-0.1", "0"}), func(s string) any { return json.Number(s) }),
			rapid.Map(rapid.String(), func(s string) any { return s }),
		}
		if depth > 0 {
			leaves = append(leaves,
				rapid.Map(rapid.SliceOfN(gen(depth-1), 0, 4), func(l []any) any { return l }),
				rapid.Map(rapid.MapOfN(rapid.StringMatching(`[a-z<&"]{0,6}`), gen(depth-1), 0, 4), func(m map[string]any) any { return m }),
			)
		}
		return rapid.OneOf(leaves...)
	}
	rapid.Check(t, func(rt *rapid.T) {
		doc, err := json.Marshal(gen(3).Draw(rt, "doc"))
		if err != nil {
			rt.Fatal(err)
		}
		var ref ctyjson.SimpleJSONValue
		if err := ref.UnmarshalJSON(doc); err != nil {
			rt.Fatal(err)
		}
		got, err := FromJSON(doc)
		if err != nil {
			rt.Fatalf("FromJSON(%s): %v", doc, err)
		}
		if eq := got.Equals(ref.Value); !got.Type().Equals(ref.Value.Type()) || !eq.IsKnown() || !eq.True() {
			if !(got.IsNull() && ref.Value.IsNull()) {
				rt.Fatalf("FromJSON(%s) = %#v, cty says %#v", doc, got, ref.Value)
			}
		}
		out, err := ToJSON(got)
		if err != nil {
			rt.Fatal(err)
		}
		want, err := ctyjson.SimpleJSONValue{Value: ref.Value}.MarshalJSON()
		if err != nil {
			rt.Fatal(err)
		}
		if string(out) != string(want) {
			rt.Fatalf("ToJSON(%s) = %s, cty gives %s", doc, out, want)
		}
	})
}
