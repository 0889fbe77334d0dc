package hcl

import (
	"fmt"
	"hash/fnv"
	"math"
	"strings"
	"time"

	hhcl "github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// RetryPolicy says how often an activity step's task is tried and how long
// to wait between tries. It applies to failures the worker reports and to
// leases that run out (timeouts).
type RetryPolicy struct {
	MaxAttempts     int
	InitialInterval time.Duration
	Backoff         float64
	MaxInterval     time.Duration
	// NonRetryable error types fail the step at the first attempt.
	NonRetryable []string
}

// DefaultRetry is the policy of an activity step that declares none, in
// the step or in defaults: three attempts, 1s, 2s apart (plus jitter).
var DefaultRetry = RetryPolicy{MaxAttempts: 3, InitialInterval: time.Second, Backoff: 2, MaxInterval: time.Minute}

// Retryable reports whether an attempt that failed with errType may be
// followed by another.
func (p RetryPolicy) Retryable(attempt int, errType string) bool {
	if attempt >= p.MaxAttempts {
		return false
	}
	for _, t := range p.NonRetryable {
		if t == errType {
			return false
		}
	}
	return true
}

// Delay is how long to wait after failed attempt n (1-based) before the
// next: InitialInterval × Backoff^(n-1), capped at MaxInterval, plus up to
// 10% jitter derived from seed (the task's idempotency key), so every node computes the
// same delay and retries of many tasks do not land together.
func (p RetryPolicy) Delay(attempt int, seed string) time.Duration {
	d := float64(p.InitialInterval) * math.Pow(p.Backoff, float64(attempt-1))
	if max := float64(p.MaxInterval); d > max {
		d = max
	}
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%d", seed, attempt)
	jitter := d * float64(h.Sum32()%1000) / 10000
	return time.Duration(d + jitter)
}

var retrySchema = &hhcl.BodySchema{
	Attributes: []hhcl.AttributeSchema{
		{Name: "max_attempts"},
		{Name: "initial_interval"},
		{Name: "backoff"},
		{Name: "max_interval"},
		{Name: "non_retryable"},
	},
}

// decodeRetry reads a retry block over base (the defaults it refines).
func decodeRetry(block *hhcl.Block, base RetryPolicy) (RetryPolicy, hhcl.Diagnostics) {
	p := base
	p.NonRetryable = append([]string(nil), base.NonRetryable...)
	content, diags := block.Body.Content(retrySchema)
	if attr, ok := content.Attributes["max_attempts"]; ok {
		n, d := decodeInt(attr, 1, 1000, "max_attempts is how many times the task is tried in all: a whole number from 1 to 1000 (1 means no retries).")
		diags = append(diags, d...)
		if !d.HasErrors() {
			p.MaxAttempts = n
		}
	}
	// The intervals are compared only where this block sets one: an
	// inherited mismatch is reported once, at the block that made it.
	initial, hasInitial := content.Attributes["initial_interval"]
	maxAttr, hasMax := content.Attributes["max_interval"]
	intervalsOK := true
	if hasInitial {
		d := decodeDuration(initial, &p.InitialInterval)
		intervalsOK = intervalsOK && !d.HasErrors()
		diags = append(diags, d...)
	}
	if hasMax {
		d := decodeDuration(maxAttr, &p.MaxInterval)
		intervalsOK = intervalsOK && !d.HasErrors()
		diags = append(diags, d...)
	}
	if attr, ok := content.Attributes["backoff"]; ok {
		v, d := attr.Expr.Value(nil)
		f := 0.0
		if !d.HasErrors() && v.Type() == cty.Number && !v.IsNull() {
			f, _ = v.AsBigFloat().Float64()
		}
		if f < 1 || f > 100 {
			diags = append(diags, attrError(attr, "Invalid backoff", "backoff multiplies the interval after each attempt: a number from 1.0 (constant) to 100."))
		} else {
			p.Backoff = f
		}
	}
	if attr, ok := content.Attributes["non_retryable"]; ok {
		v, d := attr.Expr.Value(nil)
		list, err := convert.Convert(v, cty.List(cty.String))
		if d.HasErrors() || err != nil || list.IsNull() {
			diags = append(diags, attrError(attr, "Invalid non_retryable", `non_retryable is a list of error types, such as ["card_declined", "invalid_input"].`))
		} else {
			p.NonRetryable = nil
			for it := list.ElementIterator(); it.Next(); {
				_, s := it.Element()
				p.NonRetryable = append(p.NonRetryable, s.AsString())
			}
		}
	}
	if (hasInitial || hasMax) && intervalsOK && p.MaxInterval < p.InitialInterval {
		diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "max_interval below initial_interval",
			Detail:  fmt.Sprintf("The wait between attempts starts at %s and is capped at %s; the cap must be at least the start.", p.InitialInterval, p.MaxInterval),
			Subject: block.DefRange.Ptr()})
	}
	return p, diags
}

func decodeInt(attr *hhcl.Attribute, min, max int, detail string) (int, hhcl.Diagnostics) {
	v, d := attr.Expr.Value(nil)
	if !d.HasErrors() && v.Type() == cty.Number && !v.IsNull() {
		if bf := v.AsBigFloat(); bf.IsInt() {
			if i, _ := bf.Int64(); i >= int64(min) && i <= int64(max) {
				return int(i), nil
			}
		}
	}
	return 0, hhcl.Diagnostics{attrError(attr, "Invalid "+strings.ReplaceAll(attr.Name, "_", " "), detail)}
}

func decodeDuration(attr *hhcl.Attribute, out *time.Duration) hhcl.Diagnostics {
	var s string
	if d := decodeString(attr, &s); d.HasErrors() {
		return d
	}
	dur, err := time.ParseDuration(s)
	if err != nil || dur <= 0 {
		return hhcl.Diagnostics{attrError(attr, "Invalid duration", fmt.Sprintf("%q is not a positive duration; write it like \"30s\", \"5m\" or \"1h30m\".", s))}
	}
	*out = dur
	return nil
}

// stepDefaults are what a defaults block gives every activity step.
type stepDefaults struct {
	Queue            string
	Priority         int
	Timeout          time.Duration
	HeartbeatTimeout time.Duration
	ScheduleTimeout  time.Duration
	Retry            RetryPolicy
}

var defaultsSchema = &hhcl.BodySchema{
	Attributes: []hhcl.AttributeSchema{{Name: "queue"}, {Name: "priority"}, {Name: "timeout"}, {Name: "heartbeat_timeout"}, {Name: "schedule_timeout"}},
	Blocks:     []hhcl.BlockHeaderSchema{{Type: "retry"}},
}

func decodeDefaults(block *hhcl.Block) (stepDefaults, hhcl.Diagnostics) {
	def := stepDefaults{Queue: DefaultQueue, Timeout: DefaultStepTimeout, Retry: DefaultRetry}
	content, diags := block.Body.Content(defaultsSchema)
	if attr, ok := content.Attributes["queue"]; ok {
		diags = append(diags, decodeString(attr, &def.Queue)...)
		if !validName(def.Queue) {
			diags = append(diags, attrError(attr, "Invalid queue name", "Use 1 to 64 letters, digits, '_' or '-', starting with a letter."))
		}
	}
	if attr, ok := content.Attributes["priority"]; ok {
		p, d := decodeInt(attr, MinPriority, MaxPriority, priorityDetail)
		diags, def.Priority = append(diags, d...), p
	}
	if attr, ok := content.Attributes["timeout"]; ok {
		diags = append(diags, decodeDuration(attr, &def.Timeout)...)
	}
	if attr, ok := content.Attributes["heartbeat_timeout"]; ok {
		diags = append(diags, decodeDuration(attr, &def.HeartbeatTimeout)...)
	}
	if attr, ok := content.Attributes["schedule_timeout"]; ok {
		diags = append(diags, decodeDuration(attr, &def.ScheduleTimeout)...)
	}
	for i, b := range content.Blocks {
		if i > 0 {
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Duplicate retry block",
				Detail: "Declare one retry block in defaults.", Subject: b.DefRange.Ptr()})
			continue
		}
		r, d := decodeRetry(b, DefaultRetry)
		diags = append(diags, d...)
		def.Retry = r
	}
	return def, diags
}
