package hcl

import (
	"fmt"
	"net/url"
	"sort"
	"time"

	hhcl "github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// Service is an external endpoint a workflow calls, with its own circuit
// breaker. Steps name it with service = "name"; the http activity then
// resolves relative URLs against BaseURL and adds Headers.
type Service struct {
	Name    string
	BaseURL string
	Headers map[string]string
	Timeout time.Duration
	Breaker BreakerPolicy
}

// BreakerPolicy opens a service's breaker after Failures failed attempts
// within Window, and lets one probe through after ResetAfter.
type BreakerPolicy struct {
	Failures   int
	Window     time.Duration
	ResetAfter time.Duration
}

// DefaultBreaker applies to a service without a circuit_breaker block.
var DefaultBreaker = BreakerPolicy{Failures: 5, Window: time.Minute, ResetAfter: 30 * time.Second}

var serviceSchema = &hhcl.BodySchema{
	Attributes: []hhcl.AttributeSchema{{Name: "base_url", Required: true}, {Name: "headers"}, {Name: "timeout"}},
	Blocks:     []hhcl.BlockHeaderSchema{{Type: "circuit_breaker"}},
}

var breakerSchema = &hhcl.BodySchema{
	Attributes: []hhcl.AttributeSchema{{Name: "failures"}, {Name: "window"}, {Name: "reset_after"}},
}

func decodeService(block *hhcl.Block) (*Service, hhcl.Diagnostics) {
	s := &Service{Name: block.Labels[0], Breaker: DefaultBreaker}
	var diags hhcl.Diagnostics
	if !validName(s.Name) {
		diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Invalid service name",
			Detail: fmt.Sprintf("%q is not a valid name: use 1 to 64 letters, digits, '_' or '-', starting with a letter.", s.Name), Subject: block.LabelRanges[0].Ptr()})
	}
	content, d := block.Body.Content(serviceSchema)
	diags = append(diags, d...)
	if attr, ok := content.Attributes["base_url"]; ok {
		if d := decodeString(attr, &s.BaseURL); d.HasErrors() {
			diags = append(diags, d...)
		} else if u, err := url.Parse(s.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			diags = append(diags, attrError(attr, "Invalid base_url", "base_url is an absolute http or https URL, such as \"https://payments.internal\"."))
		}
	}
	if attr, ok := content.Attributes["headers"]; ok {
		v, d := attr.Expr.Value(nil)
		m, err := convert.Convert(v, cty.Map(cty.String))
		if d.HasErrors() || err != nil || m.IsNull() {
			diags = append(diags, attrError(attr, "Invalid headers", `headers is an object of constant strings, such as { Accept = "application/json" }.`))
		} else {
			s.Headers = map[string]string{}
			for k, v := range m.AsValueMap() {
				s.Headers[k] = v.AsString()
			}
		}
	}
	if attr, ok := content.Attributes["timeout"]; ok {
		diags = append(diags, decodeDuration(attr, &s.Timeout)...)
	}
	for i, b := range content.Blocks {
		if i > 0 {
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Duplicate circuit_breaker block", Subject: b.DefRange.Ptr()})
			continue
		}
		bc, d := b.Body.Content(breakerSchema)
		diags = append(diags, d...)
		if attr, ok := bc.Attributes["failures"]; ok {
			n, d := decodeInt(attr, 1, 10000, "failures is how many failed attempts within the window open the breaker: a whole number of at least 1.")
			diags = append(diags, d...)
			if !d.HasErrors() {
				s.Breaker.Failures = n
			}
		}
		if attr, ok := bc.Attributes["window"]; ok {
			diags = append(diags, decodeDuration(attr, &s.Breaker.Window)...)
		}
		if attr, ok := bc.Attributes["reset_after"]; ok {
			diags = append(diags, decodeDuration(attr, &s.Breaker.ResetAfter)...)
		}
	}
	return s, diags
}

// ServiceNames lists a workflow's services, sorted.
func (w *Workflow) ServiceNames() []string {
	names := make([]string, 0, len(w.Services))
	for n := range w.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
