package hcl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/big"
	"strconv"
	"strings"

	"github.com/zclconf/go-cty/cty"
)

// FromJSON converts a JSON document to a cty value of its implied type
// (objects become object values, arrays tuples), as cty's json package
// does, but with integers converted without parsing a decimal float: step
// outputs are converted for every expression that reads them, and this is
// on the hot path of every transition. Empty input is null.
func FromJSON(raw json.RawMessage) (cty.Value, error) {
	if len(raw) == 0 {
		return cty.NullVal(cty.DynamicPseudoType), nil
	}
	// Decoding into generic values first is several times cheaper than
	// walking the document token by token.
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return cty.NilVal, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return cty.NilVal, fmt.Errorf("extra data after the JSON value")
	}
	return valueOf(doc)
}

func valueOf(doc any) (cty.Value, error) {
	switch t := doc.(type) {
	case nil:
		return cty.NullVal(cty.DynamicPseudoType), nil
	case bool:
		return cty.BoolVal(t), nil
	case string:
		return cty.StringVal(t), nil
	case json.Number:
		return numberVal(string(t))
	case []any:
		if len(t) == 0 {
			return cty.EmptyTupleVal, nil
		}
		elems := make([]cty.Value, len(t))
		for i, e := range t {
			v, err := valueOf(e)
			if err != nil {
				return cty.NilVal, err
			}
			elems[i] = v
		}
		return cty.TupleVal(elems), nil
	case map[string]any:
		if len(t) == 0 {
			return cty.EmptyObjectVal, nil
		}
		attrs := make(map[string]cty.Value, len(t))
		for k, e := range t {
			v, err := valueOf(e)
			if err != nil {
				return cty.NilVal, err
			}
			attrs[k] = v
		}
		return cty.ObjectVal(attrs), nil
	}
	return cty.NilVal, fmt.Errorf("unexpected JSON value %T", doc)
}

func numberVal(s string) (cty.Value, error) {
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil && (i != 0 || s[0] != '-') {
			return cty.NumberIntVal(i), nil
		}
	}
	return cty.ParseNumberVal(s)
}

// ToJSON converts a cty value to JSON: object and map keys sorted, numbers
// in their shortest exact form. Unknown values are an error.
func ToJSON(v cty.Value) (json.RawMessage, error) {
	if !v.IsWhollyKnown() {
		return nil, fmt.Errorf("value is not known")
	}
	b, err := appendJSON(make([]byte, 0, 64), v)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}

func appendJSON(b []byte, v cty.Value) ([]byte, error) {
	if v.IsMarked() {
		v, _ = v.Unmark()
	}
	if v.IsNull() {
		return append(b, "null"...), nil
	}
	ty := v.Type()
	switch {
	case ty == cty.String:
		return appendString(b, v.AsString()), nil
	case ty == cty.Bool:
		return strconv.AppendBool(b, v.True()), nil
	case ty == cty.Number:
		return appendNumber(b, v.AsBigFloat())
	case ty.IsListType() || ty.IsSetType() || ty.IsTupleType():
		b = append(b, '[')
		first := true
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			if !first {
				b = append(b, ',')
			}
			first = false
			var err error
			if b, err = appendJSON(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case ty.IsMapType() || ty.IsObjectType():
		// cty iterates maps and objects in key order.
		b = append(b, '{')
		first := true
		for it := v.ElementIterator(); it.Next(); {
			k, e := it.Element()
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendString(b, k.AsString())
			b = append(b, ':')
			var err error
			if b, err = appendJSON(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	}
	return nil, fmt.Errorf("a value of type %s cannot be JSON", ty.FriendlyName())
}

func appendNumber(b []byte, f *big.Float) ([]byte, error) {
	if f.IsInf() {
		return nil, fmt.Errorf("an infinite number cannot be JSON")
	}
	if f.Sign() == 0 && f.Signbit() {
		return append(b, "-0"...), nil // as cty writes it
	}
	if f.IsInt() {
		if i, acc := f.Int64(); acc == big.Exact {
			return strconv.AppendInt(b, i, 10), nil
		}
	}
	if x, acc := f.Float64(); acc == big.Exact && !math.IsInf(x, 0) {
		return strconv.AppendFloat(b, x, 'f', -1, 64), nil
	}
	return f.Append(b, 'f', -1), nil
}

func appendString(b []byte, s string) []byte {
	enc, _ := json.Marshal(s) // a string always marshals
	return append(b, enc...)
}
