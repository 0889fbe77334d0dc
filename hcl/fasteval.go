package hcl

import (
	"encoding/json"
	"math"
	"math/big"
	"sort"
	"strconv"
	"time"

	hhcl "github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// The direct evaluator answers the expressions most steps are made of
// (references into the input and step outputs, object and tuple
// constructors, literals, integer arithmetic, plain string templates)
// straight from the JSON of the scope, without converting it to cty and
// back, which is most of what an evaluation costs and runs at every
// transition of every instance on every node.
//
// It never decides anything the cty path would decide differently: it
// answers only when it can produce exactly the bytes Eval's cty path
// produces, and declines (ok false) in every other case, which then takes
// the cty path: any error, any value it does not hold exactly (numbers
// other than int64 integers, strings other than printable ASCII without
// characters JSON escapes, duplicate keys), any construct it does not know.
// It validates every JSON document the cty path would convert, so an
// invalid document is the cty path's error, not a partial answer. A
// property test checks it against the cty path on generated expressions
// and documents.

// fkind is the kind of a directly evaluated value.
type fkind uint8

const (
	fNull fkind = iota
	fBool
	fInt
	fStr  // s is a Go string of printable ASCII
	fRaw  // raw is one valid JSON value from the scope
	fJSON // raw is a value this evaluator built, already in ToJSON's form
)

type fval struct {
	k   fkind
	b   bool
	i   int64
	s   string
	raw []byte
}

// maxDirectDepth bounds the nesting the direct scanner follows; deeper
// documents take the cty path.
const maxDirectDepth = 256

// directEval is Eval without cty, when it can be. ok false means: use the
// cty path.
func directEval(expr hhcl.Expression, scope Scope) (json.RawMessage, bool) {
	v, ok := directValue(expr, scope)
	if !ok {
		return nil, false
	}
	out, ok := appendFval(make([]byte, 0, 64), v)
	if !ok {
		return nil, false
	}
	return json.RawMessage(out), true
}

// directBool is EvalBool without cty: a bool, or null (false). Strings,
// which cty would convert, are left to it.
func directBool(expr hhcl.Expression, scope Scope) (bool, bool) {
	v, ok := directValue(expr, scope)
	if !ok {
		return false, false
	}
	switch v.k {
	case fBool:
		return v.b, true
	case fNull:
		return false, true
	case fRaw:
		switch string(trimSpace(v.raw)) {
		case "true":
			return true, true
		case "false", "null":
			return false, true
		}
	}
	return false, false
}

// directValue evaluates expr in scope without cty, or declines.
func directValue(expr hhcl.Expression, scope Scope) (fval, bool) {
	if scope.Request != nil || scope.Signal != nil {
		return fval{}, false
	}
	node, isNode := expr.(hclsyntax.Expression)
	if !isNode {
		return fval{}, false
	}
	want := referencesOf(expr)
	if want.all || want.now {
		return fval{}, false
	}
	for root := range want.roots {
		switch root {
		case "input", "step", "instance", "each":
		default:
			return fval{}, false
		}
	}
	// What the cty path converts, it validates: check the same documents.
	if want.roots["input"] && !validJSONOrEmpty(scope.Input) {
		return fval{}, false
	}
	d := directEvaluator{scope: scope}
	if want.roots["step"] {
		if scope.Steps == nil {
			return fval{}, false
		}
		d.steps = make([]namedStep, 0, len(want.stepNames))
		for _, name := range want.stepNames {
			r, ok := scope.Steps.Step(name)
			if !ok || !validJSONOrEmpty(r.Output) {
				return fval{}, false
			}
			d.steps = append(d.steps, namedStep{name, r})
		}
	}
	if scope.Each != nil {
		if !validJSONOrEmpty(scope.Each.Value) {
			return fval{}, false
		}
		if scope.Each.Index {
			if _, ok := canonicalInt([]byte(scope.Each.Key)); !ok {
				return fval{}, false
			}
		}
	}
	return d.eval(node)
}

type directEvaluator struct {
	scope Scope
	// steps are the steps the expression names, asked of the scope once.
	steps []namedStep
}

type namedStep struct {
	name string
	r    StepResult
}

func (d *directEvaluator) step(name string) (StepResult, bool) {
	for _, s := range d.steps {
		if s.name == name {
			return s.r, true
		}
	}
	return StepResult{}, false
}

func (d *directEvaluator) eval(e hclsyntax.Expression) (fval, bool) {
	switch e := e.(type) {
	case *hclsyntax.LiteralValueExpr:
		return literalFval(e.Val)
	case *hclsyntax.ParenthesesExpr:
		return d.eval(e.Expression)
	case *hclsyntax.ScopeTraversalExpr:
		return d.traversal(e.Traversal)
	case *hclsyntax.TemplateWrapExpr:
		return d.eval(e.Wrapped)
	case *hclsyntax.TemplateExpr:
		return d.template(e)
	case *hclsyntax.ObjectConsExpr:
		return d.object(e)
	case *hclsyntax.TupleConsExpr:
		buf := []byte{'['}
		for i, x := range e.Exprs {
			v, ok := d.eval(x)
			if !ok {
				return fval{}, false
			}
			if i > 0 {
				buf = append(buf, ',')
			}
			if buf, ok = appendFval(buf, v); !ok {
				return fval{}, false
			}
		}
		return fval{k: fJSON, raw: append(buf, ']')}, true
	case *hclsyntax.BinaryOpExpr:
		return d.binary(e)
	case *hclsyntax.UnaryOpExpr:
		if e.Op != hclsyntax.OpNegate {
			return fval{}, false
		}
		v, ok := d.eval(e.Val)
		if !ok {
			return fval{}, false
		}
		i, ok := fvalInt(v)
		// cty negates zero to -0, which only the cty path writes.
		if !ok || i == 0 || i == math.MinInt64 {
			return fval{}, false
		}
		return fval{k: fInt, i: -i}, true
	}
	return fval{}, false
}

func literalFval(v cty.Value) (fval, bool) {
	if v.IsNull() {
		return fval{k: fNull}, true
	}
	if !v.IsKnown() || v.IsMarked() {
		return fval{}, false
	}
	switch v.Type() {
	case cty.Bool:
		return fval{k: fBool, b: v.True()}, true
	case cty.String:
		s := v.AsString()
		if !plainASCII(s) {
			return fval{}, false
		}
		return fval{k: fStr, s: s}, true
	case cty.Number:
		f := v.AsBigFloat()
		if f.Sign() == 0 && f.Signbit() {
			return fval{}, false
		}
		if !f.IsInt() {
			return fval{}, false
		}
		i, acc := f.Int64()
		if acc != big.Exact {
			return fval{}, false
		}
		return fval{k: fInt, i: i}, true
	}
	return fval{}, false
}

func (d *directEvaluator) traversal(t hhcl.Traversal) (fval, bool) {
	if len(t) < 2 {
		// A bare root (input alone is a document; the others are
		// objects the cty path builds).
		if len(t) == 1 && t.RootName() == "input" {
			return rawFval(d.scope.Input), true
		}
		return fval{}, false
	}
	attr := func(i int) (string, bool) {
		a, ok := t[i].(hhcl.TraverseAttr)
		return a.Name, ok
	}
	var v fval
	rest := t[1:]
	switch t.RootName() {
	case "input":
		v = rawFval(d.scope.Input)
	case "step":
		name, ok := attr(1)
		if !ok || len(t) < 3 {
			return fval{}, false
		}
		r, ok := d.step(name)
		if !ok {
			return fval{}, false
		}
		field, ok := attr(2)
		if !ok {
			return fval{}, false
		}
		switch field {
		case "output":
			v = rawFval(r.Output)
		case "status":
			if !plainASCII(r.Status) {
				return fval{}, false
			}
			v = fval{k: fStr, s: r.Status}
		case "attempts":
			v = fval{k: fInt, i: int64(r.Attempts)}
		case "error":
			if r.ErrorType != "" {
				return fval{}, false
			}
			v = fval{k: fNull}
		default:
			return fval{}, false
		}
		rest = t[3:]
	case "instance":
		field, ok := attr(1)
		if !ok {
			return fval{}, false
		}
		switch field {
		case "id":
			v = fval{k: fStr, s: d.scope.Instance.ID}
		case "workflow":
			v = fval{k: fStr, s: d.scope.Instance.Workflow}
		case "version":
			if d.scope.Instance.Version > math.MaxInt64 {
				return fval{}, false
			}
			v = fval{k: fInt, i: int64(d.scope.Instance.Version)}
		case "started_at":
			v = fval{k: fStr, s: d.scope.Instance.StartedAt.UTC().Format(time.RFC3339Nano)}
		default:
			return fval{}, false
		}
		if !plainASCII(v.s) {
			return fval{}, false
		}
		rest = t[2:]
	case "each":
		e := d.scope.Each
		field, ok := attr(1)
		if e == nil || !ok {
			return fval{}, false
		}
		switch field {
		case "key":
			if e.Index {
				i, _ := canonicalInt([]byte(e.Key)) // checked by directEval
				v = fval{k: fInt, i: i}
			} else {
				if !plainASCII(e.Key) {
					return fval{}, false
				}
				v = fval{k: fStr, s: e.Key}
			}
		case "value":
			v = rawFval(e.Value)
		default:
			return fval{}, false
		}
		rest = t[2:]
	default:
		return fval{}, false
	}
	for _, step := range rest {
		if v.k != fRaw {
			return fval{}, false
		}
		var sub []byte
		var ok bool
		switch s := step.(type) {
		case hhcl.TraverseAttr:
			sub, ok = jsonMember(v.raw, s.Name)
		case hhcl.TraverseIndex:
			switch {
			case s.Key.IsNull() || !s.Key.IsKnown() || s.Key.IsMarked():
				return fval{}, false
			case s.Key.Type() == cty.String:
				sub, ok = jsonMember(v.raw, s.Key.AsString())
			case s.Key.Type() == cty.Number:
				i, ok2 := literalFval(s.Key)
				if !ok2 || i.k != fInt {
					return fval{}, false
				}
				sub, ok = jsonElement(v.raw, i.i)
			}
		}
		if !ok {
			return fval{}, false
		}
		v = rawFval(sub)
	}
	return v, true
}

// rawFval is a scope document: empty is null, as FromJSON has it.
func rawFval(raw []byte) fval {
	if len(raw) == 0 {
		return fval{k: fNull}
	}
	return fval{k: fRaw, raw: raw}
}

func (d *directEvaluator) template(e *hclsyntax.TemplateExpr) (fval, bool) {
	if len(e.Parts) == 1 {
		if lit, ok := e.Parts[0].(*hclsyntax.LiteralValueExpr); ok && lit.Val.Type() == cty.String {
			return literalFval(lit.Val)
		}
	}
	var s []byte
	for _, part := range e.Parts {
		v, ok := d.eval(part)
		if !ok {
			return fval{}, false
		}
		switch v.k {
		case fStr:
			s = append(s, v.s...)
		case fInt:
			s = strconv.AppendInt(s, v.i, 10)
		case fBool:
			s = strconv.AppendBool(s, v.b)
		case fRaw:
			switch {
			case len(v.raw) > 0 && v.raw[0] == '"':
				str, ok := plainJSONString(v.raw)
				if !ok {
					return fval{}, false
				}
				s = append(s, str...)
			case string(v.raw) == "true" || string(v.raw) == "false":
				s = append(s, v.raw...)
			default:
				i, ok := canonicalInt(v.raw)
				if !ok {
					return fval{}, false
				}
				s = strconv.AppendInt(s, i, 10)
			}
		default:
			return fval{}, false
		}
	}
	return fval{k: fStr, s: string(s)}, true
}

func (d *directEvaluator) object(e *hclsyntax.ObjectConsExpr) (fval, bool) {
	type item struct {
		key string
		val fval
	}
	items := make([]item, 0, len(e.Items))
	for _, it := range e.Items {
		key, ok := literalKey(it.KeyExpr)
		if !ok || !plainASCII(key) {
			return fval{}, false
		}
		v, ok := d.eval(it.ValueExpr)
		if !ok {
			return fval{}, false
		}
		items = append(items, item{key, v})
	}
	sort.Slice(items, func(i, j int) bool { return items[i].key < items[j].key })
	buf := []byte{'{'}
	for i, it := range items {
		if i > 0 {
			if items[i-1].key == it.key {
				return fval{}, false
			}
			buf = append(buf, ',')
		}
		buf = append(buf, '"')
		buf = append(buf, it.key...)
		buf = append(buf, '"', ':')
		var ok bool
		if buf, ok = appendFval(buf, it.val); !ok {
			return fval{}, false
		}
	}
	return fval{k: fJSON, raw: append(buf, '}')}, true
}

// literalKey is an object constructor's key when it is a bare name or a
// plain string, the only keys the direct evaluator takes.
func literalKey(e hclsyntax.Expression) (string, bool) {
	k, ok := e.(*hclsyntax.ObjectConsKeyExpr)
	if !ok {
		return "", false
	}
	if !k.ForceNonLiteral {
		if tr, ok := k.Wrapped.(*hclsyntax.ScopeTraversalExpr); ok {
			if len(tr.Traversal) != 1 {
				return "", false
			}
			return tr.Traversal.RootName(), true
		}
	}
	if tmpl, ok := k.Wrapped.(*hclsyntax.TemplateExpr); ok && len(tmpl.Parts) == 1 {
		if lit, ok := tmpl.Parts[0].(*hclsyntax.LiteralValueExpr); ok && lit.Val.Type() == cty.String && lit.Val.IsKnown() && !lit.Val.IsNull() {
			return lit.Val.AsString(), true
		}
	}
	return "", false
}

func (d *directEvaluator) binary(e *hclsyntax.BinaryOpExpr) (fval, bool) {
	var op func(a, b int64) (int64, bool)
	switch e.Op {
	case hclsyntax.OpAdd:
		op = func(a, b int64) (int64, bool) {
			c := a + b
			return c, (c > a) == (b > 0)
		}
	case hclsyntax.OpSubtract:
		op = func(a, b int64) (int64, bool) {
			c := a - b
			return c, (c < a) == (b > 0)
		}
	case hclsyntax.OpMultiply:
		op = func(a, b int64) (int64, bool) {
			// A zero product may be -0 in cty; leave it to the cty path.
			if a == 0 || b == 0 {
				return 0, false
			}
			c := a * b
			return c, c/b == a && !(a == -1 && b == math.MinInt64) && !(b == -1 && a == math.MinInt64)
		}
	default:
		return fval{}, false
	}
	l, ok := d.eval(e.LHS)
	if !ok {
		return fval{}, false
	}
	r, ok := d.eval(e.RHS)
	if !ok {
		return fval{}, false
	}
	a, ok := fvalInt(l)
	if !ok {
		return fval{}, false
	}
	b, ok := fvalInt(r)
	if !ok {
		return fval{}, false
	}
	c, ok := op(a, b)
	if !ok {
		return fval{}, false
	}
	return fval{k: fInt, i: c}, true
}

// fvalInt is v as an integer, when it is one exactly (a number, not a
// string cty would convert).
func fvalInt(v fval) (int64, bool) {
	switch v.k {
	case fInt:
		return v.i, true
	case fRaw:
		return canonicalInt(v.raw)
	}
	return 0, false
}

// appendFval writes v as ToJSON writes the cty value the cty path holds.
func appendFval(b []byte, v fval) ([]byte, bool) {
	switch v.k {
	case fNull:
		return append(b, "null"...), true
	case fBool:
		return strconv.AppendBool(b, v.b), true
	case fInt:
		return strconv.AppendInt(b, v.i, 10), true
	case fStr:
		return appendString(b, v.s), true
	case fRaw:
		return appendCanonical(b, v.raw)
	case fJSON:
		return append(b, v.raw...), true
	}
	return b, false
}

// plainASCII says s is printable ASCII that JSON writes as it is: cty's
// NFC normalisation and json.Marshal's escaping leave it unchanged.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if !plainByte(s[i]) {
			return false
		}
	}
	return true
}

func plainByte(c byte) bool {
	return c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
}

// canonicalInt is a JSON number that is an integer written the way ToJSON
// writes it (no fraction, no exponent, no -0) and fits int64.
func canonicalInt(raw []byte) (int64, bool) {
	raw = trimSpace(raw)
	if len(raw) == 0 || len(raw) > 20 {
		return 0, false
	}
	digits := raw
	if digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || (digits[0] == '0' && len(raw) > 1) {
		return 0, false // "-0", "-", leading zeros
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	i, err := strconv.ParseInt(string(raw), 10, 64)
	return i, err == nil
}

// plainJSONString is a JSON string's content when every byte of it is
// plain (no escapes).
func plainJSONString(raw []byte) (string, bool) {
	raw = trimSpace(raw)
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	for _, c := range raw[1 : len(raw)-1] {
		if !plainByte(c) {
			return "", false
		}
	}
	return string(raw[1 : len(raw)-1]), true
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && isJSONSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isJSONSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// appendCanonical writes a valid JSON value as ToJSON(FromJSON(raw))
// writes it: object keys sorted, no whitespace. It declines what it cannot
// write exactly: numbers other than canonical integers, strings that are
// not plain, keys with escapes, duplicate keys.
func appendCanonical(b []byte, raw []byte) ([]byte, bool) {
	s := jsonScanner{buf: raw}
	s.space()
	out, ok := s.canonical(b, 0)
	s.space()
	return out, ok && s.pos == len(raw)
}

// jsonMember is the value of key in a JSON object (the last one, as
// encoding/json decodes a repeated key), false when raw is not an object,
// lacks the key, or has a key with escapes.
func jsonMember(raw []byte, key string) ([]byte, bool) {
	s := jsonScanner{buf: raw}
	s.space()
	var found []byte
	ok := s.object(func(tok []byte) bool {
		k, ok := plainKey(tok)
		start := s.pos
		if !ok || !s.skip(0) {
			return false
		}
		if k == key {
			found = raw[start:s.pos]
		}
		return true
	})
	return found, ok && found != nil
}

// jsonElement is element i of a JSON array.
func jsonElement(raw []byte, i int64) ([]byte, bool) {
	s := jsonScanner{buf: raw}
	s.space()
	var found []byte
	s.array(func(n int) bool {
		start := s.pos
		if !s.skip(0) {
			return false
		}
		if int64(n) == i {
			found = raw[start:s.pos]
			return false // found: stop
		}
		return true
	})
	return found, found != nil
}

// validJSONOrEmpty says raw is what FromJSON converts without an error:
// empty, or exactly one JSON value with optional whitespace around it.
func validJSONOrEmpty(raw []byte) bool {
	if len(raw) == 0 {
		return true
	}
	s := jsonScanner{buf: raw}
	s.space()
	if !s.skip(0) {
		return false
	}
	s.space()
	return s.pos == len(raw)
}

// jsonScanner reads RFC 8259 JSON, as strictly as encoding/json does.
type jsonScanner struct {
	buf []byte
	pos int
}

func (s *jsonScanner) space() {
	for s.pos < len(s.buf) && isJSONSpace(s.buf[s.pos]) {
		s.pos++
	}
}

func (s *jsonScanner) take(c byte) bool {
	if s.pos < len(s.buf) && s.buf[s.pos] == c {
		s.pos++
		return true
	}
	return false
}

func (s *jsonScanner) literal(word string) bool {
	if len(s.buf)-s.pos >= len(word) && string(s.buf[s.pos:s.pos+len(word)]) == word {
		s.pos += len(word)
		return true
	}
	return false
}

// object reads an object from its '{': for each member, value calls
// with the key's string token (quotes included) and the scanner at the
// value, which it must pass over. value false stops the walk, false.
func (s *jsonScanner) object(value func(key []byte) bool) bool {
	if !s.take('{') {
		return false
	}
	s.space()
	if s.take('}') {
		return true
	}
	for {
		s.space()
		start := s.pos
		if !s.str() {
			return false
		}
		key := s.buf[start:s.pos]
		s.space()
		if !s.take(':') {
			return false
		}
		s.space()
		if !value(key) {
			return false
		}
		s.space()
		if s.take('}') {
			return true
		}
		if !s.take(',') {
			return false
		}
	}
}

// array reads an array from its '[': elem is called with each element's
// position and the scanner at it, which it must pass over. elem false
// stops the walk, false.
func (s *jsonScanner) array(elem func(i int) bool) bool {
	if !s.take('[') {
		return false
	}
	s.space()
	if s.take(']') {
		return true
	}
	for i := 0; ; i++ {
		s.space()
		if !elem(i) {
			return false
		}
		s.space()
		if s.take(']') {
			return true
		}
		if !s.take(',') {
			return false
		}
	}
}

// skip passes over one value, checking it.
func (s *jsonScanner) skip(depth int) bool {
	if depth > maxDirectDepth || s.pos >= len(s.buf) {
		return false
	}
	switch s.buf[s.pos] {
	case '{':
		return s.object(func([]byte) bool { return s.skip(depth + 1) })
	case '[':
		return s.array(func(int) bool { return s.skip(depth + 1) })
	case '"':
		return s.str()
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	default:
		return s.number()
	}
}

// str passes over a string, checking its escapes; any other byte from
// 0x20 up is accepted, as encoding/json accepts invalid UTF-8.
func (s *jsonScanner) str() bool {
	if !s.take('"') {
		return false
	}
	for s.pos < len(s.buf) {
		c := s.buf[s.pos]
		switch {
		case c == '"':
			s.pos++
			return true
		case c < 0x20:
			return false
		case c == '\\':
			s.pos++
			if s.pos >= len(s.buf) {
				return false
			}
			switch s.buf[s.pos] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.pos++
			case 'u':
				if len(s.buf)-s.pos < 5 {
					return false
				}
				for _, h := range s.buf[s.pos+1 : s.pos+5] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return false
					}
				}
				s.pos += 5
			default:
				return false
			}
		default:
			s.pos++
		}
	}
	return false
}

func (s *jsonScanner) digits() int {
	n := 0
	for s.pos < len(s.buf) && s.buf[s.pos] >= '0' && s.buf[s.pos] <= '9' {
		s.pos++
		n++
	}
	return n
}

func (s *jsonScanner) number() bool {
	s.take('-')
	switch {
	case s.take('0'):
	case s.pos < len(s.buf) && s.buf[s.pos] >= '1' && s.buf[s.pos] <= '9':
		s.digits()
	default:
		return false
	}
	if s.take('.') && s.digits() == 0 {
		return false
	}
	if s.take('e') || s.take('E') {
		if !s.take('+') {
			s.take('-')
		}
		if s.digits() == 0 {
			return false
		}
	}
	return true
}

// plainKey is an object key's string token without its quotes, when it
// has no escapes.
func plainKey(tok []byte) (string, bool) {
	k := tok[1 : len(tok)-1]
	for _, c := range k {
		if c == '\\' {
			return "", false
		}
	}
	return string(k), true
}

// canonical writes one value in ToJSON's form, or declines.
func (s *jsonScanner) canonical(b []byte, depth int) ([]byte, bool) {
	if depth > maxDirectDepth || s.pos >= len(s.buf) {
		return b, false
	}
	switch c := s.buf[s.pos]; {
	case c == '{':
		type member struct {
			key string
			raw []byte
		}
		var members []member
		ok := s.object(func(tok []byte) bool {
			k, ok := plainKey(tok)
			start := s.pos
			if !ok || !plainASCII(k) || !s.skip(depth+1) {
				return false
			}
			members = append(members, member{k, s.buf[start:s.pos]})
			return true
		})
		if !ok {
			return b, false
		}
		sort.Slice(members, func(i, j int) bool { return members[i].key < members[j].key })
		b = append(b, '{')
		for i, m := range members {
			if i > 0 {
				if members[i-1].key == m.key {
					return b, false
				}
				b = append(b, ',')
			}
			b = append(b, '"')
			b = append(b, m.key...)
			b = append(b, '"', ':')
			sub := jsonScanner{buf: m.raw}
			if b, ok = sub.canonical(b, depth+1); !ok {
				return b, false
			}
		}
		return append(b, '}'), true
	case c == '[':
		b = append(b, '[')
		ok := s.array(func(i int) bool {
			if i > 0 {
				b = append(b, ',')
			}
			var ok bool
			b, ok = s.canonical(b, depth+1)
			return ok
		})
		return append(b, ']'), ok
	case c == '"':
		start := s.pos
		if !s.str() {
			return b, false
		}
		str, ok := plainJSONString(s.buf[start:s.pos])
		if !ok {
			return b, false
		}
		b = append(b, '"')
		b = append(b, str...)
		return append(b, '"'), true
	case c == 't' || c == 'f' || c == 'n':
		start := s.pos
		if !s.skip(depth) {
			return b, false
		}
		return append(b, s.buf[start:s.pos]...), true
	default:
		start := s.pos
		if !s.number() {
			return b, false
		}
		i, ok := canonicalInt(s.buf[start:s.pos])
		if !ok {
			return b, false
		}
		return strconv.AppendInt(b, i, 10), true
	}
}
