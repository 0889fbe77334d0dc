// Package hcl is the Lockstep workflow language: it parses a workflow file,
// validates it (reporting every problem at once with file:line:col), compiles
// it to a step graph and evaluates step expressions deterministically.
//
// It imports no other Lockstep package. The fsm package evaluates compiled
// workflows through it and never parses text itself.
package hcl

import (
	"fmt"
	"sort"
	"strings"
	"time"

	hhcl "github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// MaxSourceBytes bounds a workflow file. Larger sources are rejected before
// parsing.
const MaxSourceBytes = 1 << 20

// MaxNesting bounds bracket nesting. The HCL parser recurses per level and a
// stack overflow is fatal (recover cannot catch it), so depth is checked on
// the raw bytes before the parser sees them.
const MaxNesting = 64

// A step's priority orders the tasks waiting in one queue: higher first,
// then oldest first. Without one a step has DefaultPriority.
const (
	MinPriority     = 0
	MaxPriority     = 100
	DefaultPriority = 0
	priorityDetail  = "priority must be a whole number from 0 to 100; higher runs first among the tasks waiting in the same queue."
)

// DefaultQueue is the queue a step's tasks wait in when it names none.
const DefaultQueue = "default"

// DefaultRetention is how long an ended instance is kept (with its tasks
// and history) when its workflow sets no retention.
const DefaultRetention = 7 * 24 * time.Hour

// DefaultStepTimeout is the start-to-close timeout of an activity step that
// sets none: a lease that is not completed by then is re-queued.
const DefaultStepTimeout = 5 * time.Minute

// Workflow is a compiled workflow definition: immutable once returned by
// Parse, safe for concurrent use.
type Workflow struct {
	Name        string
	Description string
	// Timeout, if set, bounds the whole instance: one still running that
	// long after it started ends as timed_out.
	Timeout time.Duration
	// Retention is how long an instance is kept after it ended, with its
	// tasks, signals and history; then it is deleted.
	Retention time.Duration
	// Labels are free-form key/value pairs for people and tools (owner,
	// team, tier); they do not change how the workflow runs.
	Labels map[string]string
	// Input is the declared input type; nil means any JSON is accepted.
	Input *InputSpec
	// Services are the external endpoints the workflow's steps call.
	Services map[string]*Service
	// Triggers start instances of the workflow on a schedule.
	Triggers []*CronTrigger
	// Steps in declaration order.
	Steps []*Step
	// Output is evaluated once every step has ended; nil means no output.
	Output hhcl.Expression

	steps map[string]*Step
	// handled records, per step, whether a dependent is an error path
	// (any_failed) or a finally (all_done): a failure of such a step does
	// not end the instance at once.
	handled map[string]bool
}

// FailureHandled reports whether a failure of the named step is waited out
// rather than ending the instance at once: some step that depends on it has
// trigger_rule any_failed or all_done.
func (w *Workflow) FailureHandled(step string) bool { return w.handled[step] }

// Step kinds.
const (
	KindActivity = "activity"
	KindFail     = "fail"
	KindSleep    = "sleep"
	KindSignal   = "wait_signal"
	KindChild    = "workflow"
)

// Trigger rules: when a step whose dependencies are all done runs.
const (
	// RuleNoneFailed (the default) runs when no dependency failed; the step
	// is skipped when a dependency failed or every dependency was skipped.
	RuleNoneFailed = "none_failed"
	// RuleAllSucceeded runs only when every dependency succeeded.
	RuleAllSucceeded = "all_succeeded"
	// RuleAnyFailed runs only when a dependency failed: an error path, which
	// handles that failure.
	RuleAnyFailed = "any_failed"
	// RuleAllDone always runs once the dependencies are done: a finally.
	RuleAllDone = "all_done"
)

var triggerRules = []string{RuleNoneFailed, RuleAllSucceeded, RuleAnyFailed, RuleAllDone}

// Step is one node of the workflow graph.
type Step struct {
	Name string
	// Kind is what the step does: KindActivity (a task for a worker) or
	// KindFail (ends the instance as failed on purpose).
	Kind     string
	Activity string
	Queue    string
	// Priority orders the step's tasks among those pending in its queue
	// (MinPriority to MaxPriority, higher first).
	Priority int
	Timeout  time.Duration
	// When, if set, is evaluated once the trigger rule lets the step run;
	// false skips it.
	When        hhcl.Expression
	TriggerRule string
	// FailError and FailMessage are the error of a fail step.
	FailError   string
	FailMessage hhcl.Expression
	// Retry is the policy of an activity step's task.
	Retry RetryPolicy
	// Service names the workflow service the step calls (its breaker
	// holds the step's tasks back while open).
	Service string
	// Compensate, if set, undoes the step when its instance is cancelled
	// after the step succeeded.
	Compensate *Compensation
	// HeartbeatTimeout, if set, ends an attempt that has not heartbeated
	// for that long. ScheduleTimeout, if set, fails the step when no
	// worker takes its task within that long of it entering its queue.
	HeartbeatTimeout time.Duration
	ScheduleTimeout  time.Duration
	// ChildWorkflow (and ChildVersion, 0: the latest) make a workflow step:
	// it starts a child instance with Input and waits for it to end.
	ChildWorkflow string
	ChildVersion  uint64
	// SignalName and SignalTimeout make a wait_signal step: it succeeds
	// with the payload of the first signal of that name sent to the
	// instance, or fails with signal_timeout after SignalTimeout (if set).
	SignalName    string
	SignalTimeout time.Duration
	// SignalOutput, if set, shapes the step's output from the signal it
	// took: it reads signal.name, signal.payload, signal.request_id and
	// signal.received_at. Without it the output is the payload.
	SignalOutput hhcl.Expression
	// Sleep (a duration) or SleepUntil (an RFC 3339 time expression) make
	// a sleep step: it succeeds once that time has come.
	Sleep      time.Duration
	SleepUntil hhcl.Expression
	// ForEach, if set, makes the step run one task per element of the list,
	// set or map it evaluates to; Input then sees each.key and each.value.
	// MaxConcurrency bounds the elements in flight (0: no bound).
	ForEach        hhcl.Expression
	MaxConcurrency int
	// Input is the expression evaluated, when the step becomes ready, into
	// the task's input. Nil means the task has a null input.
	Input hhcl.Expression
	// Deps are the steps this one waits for: those named in depends_on plus
	// those its expressions refer to. Sorted, without duplicates.
	Deps []string

	DeclRange hhcl.Range

	serviceRange hhcl.Range
}

// Step returns the named step, or nil.
func (w *Workflow) Step(name string) *Step { return w.steps[name] }

// Roots returns the steps that depend on nothing, in declaration order.
func (w *Workflow) Roots() []*Step {
	var out []*Step
	for _, s := range w.Steps {
		if len(s.Deps) == 0 {
			out = append(out, s)
		}
	}
	return out
}

var rootSchema = &hhcl.BodySchema{
	Blocks: []hhcl.BlockHeaderSchema{{Type: "workflow", LabelNames: []string{"name"}}},
}

var workflowSchema = &hhcl.BodySchema{
	Attributes: []hhcl.AttributeSchema{
		{Name: "description"},
		{Name: "labels"},
		{Name: "timeout"},
		{Name: "retention"},
		{Name: "output"},
	},
	Blocks: []hhcl.BlockHeaderSchema{
		{Type: "input"},
		{Type: "defaults"},
		{Type: "service", LabelNames: []string{"name"}},
		{Type: "trigger", LabelNames: []string{"type", "name"}},
		{Type: "step", LabelNames: []string{"name"}},
	},
}

var stepSchema = &hhcl.BodySchema{
	Attributes: []hhcl.AttributeSchema{
		{Name: "activity"},
		{Name: "input"},
		{Name: "depends_on"},
		{Name: "queue"},
		{Name: "priority"},
		{Name: "timeout"},
		{Name: "when"},
		{Name: "trigger_rule"},
		{Name: "for_each"},
		{Name: "max_concurrency"},
		{Name: "sleep"},
		{Name: "sleep_until"},
		{Name: "heartbeat_timeout"},
		{Name: "schedule_timeout"},
		{Name: "workflow"},
		{Name: "version"},
		{Name: "service"},
	},
	Blocks: []hhcl.BlockHeaderSchema{{Type: "fail"}, {Type: "retry"}, {Type: "wait_signal", LabelNames: []string{"name"}}, {Type: "compensate"}},
}

var failSchema = &hhcl.BodySchema{
	Attributes: []hhcl.AttributeSchema{
		{Name: "error", Required: true},
		{Name: "message"},
	},
}

// Parse parses, validates and compiles one workflow file. It returns every
// problem it finds; the workflow is nil when any of them is an error.
func Parse(filename string, src []byte) (*Workflow, hhcl.Diagnostics) {
	if diags := precheck(filename, src); diags.HasErrors() {
		return nil, diags
	}
	file, diags := hclsyntax.ParseConfig(src, filename, hhcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	content, d := file.Body.Content(rootSchema)
	diags = append(diags, d...)
	var blocks []*hhcl.Block
	for _, b := range content.Blocks {
		if b.Type == "workflow" {
			blocks = append(blocks, b)
		}
	}
	switch {
	case len(blocks) == 0 && !diags.HasErrors():
		diags = append(diags, &hhcl.Diagnostic{
			Severity: hhcl.DiagError,
			Summary:  "Missing workflow block",
			Detail:   `A workflow file declares exactly one block: workflow "name" { ... }.`,
			Subject:  file.Body.MissingItemRange().Ptr(),
		})
		return nil, diags
	case len(blocks) > 1:
		diags = append(diags, &hhcl.Diagnostic{
			Severity: hhcl.DiagError,
			Summary:  "More than one workflow block",
			Detail:   fmt.Sprintf("This file already declares workflow %q at %s; put each workflow in its own file.", blocks[0].Labels[0], pos(blocks[0].DefRange)),
			Subject:  blocks[1].DefRange.Ptr(),
		})
	}
	if len(blocks) == 0 {
		return nil, diags
	}
	wf, d := decodeWorkflow(blocks[0])
	diags = append(diags, d...)
	sortDiagnostics(diags)
	if diags.HasErrors() {
		return nil, diags
	}
	return wf, diags
}

func decodeWorkflow(block *hhcl.Block) (*Workflow, hhcl.Diagnostics) {
	wf := &Workflow{Name: block.Labels[0], steps: map[string]*Step{}}
	var diags hhcl.Diagnostics
	if !validName(wf.Name) {
		diags = append(diags, &hhcl.Diagnostic{
			Severity: hhcl.DiagError,
			Summary:  "Invalid workflow name",
			Detail:   fmt.Sprintf("%q is not a valid name: use 1 to 64 letters, digits, '_' or '-', starting with a letter.", wf.Name),
			Subject:  block.LabelRanges[0].Ptr(),
		})
	}
	content, d := block.Body.Content(workflowSchema)
	diags = append(diags, d...)
	if attr, ok := content.Attributes["description"]; ok {
		var desc string
		diags = append(diags, decodeString(attr, &desc)...)
		wf.Description = desc
	}
	if attr, ok := content.Attributes["output"]; ok {
		wf.Output = attr.Expr
	}
	if attr, ok := content.Attributes["timeout"]; ok {
		diags = append(diags, decodeDuration(attr, &wf.Timeout)...)
	}
	wf.Retention = DefaultRetention
	if attr, ok := content.Attributes["retention"]; ok {
		diags = append(diags, decodeDuration(attr, &wf.Retention)...)
	}
	if attr, ok := content.Attributes["labels"]; ok {
		labels, d := decodeLabels(attr)
		diags = append(diags, d...)
		wf.Labels = labels
	}

	// defaults apply to every step, wherever the block stands in the file.
	def := stepDefaults{Queue: DefaultQueue, Timeout: DefaultStepTimeout, Retry: DefaultRetry}
	seenDefaults := false
	for _, b := range content.Blocks {
		if b.Type != "defaults" {
			continue
		}
		if seenDefaults {
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Duplicate defaults block",
				Detail: "Declare every default in one defaults block.", Subject: b.DefRange.Ptr()})
			continue
		}
		seenDefaults = true
		d, dd := decodeDefaults(b)
		diags = append(diags, dd...)
		def = d
	}
	wf.Services = map[string]*Service{}
	for _, b := range content.Blocks {
		if b.Type != "service" {
			continue
		}
		svc, d := decodeService(b)
		diags = append(diags, d...)
		if _, dup := wf.Services[svc.Name]; dup {
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Duplicate service name",
				Detail: fmt.Sprintf("A service named %q is already declared.", svc.Name), Subject: b.LabelRanges[0].Ptr()})
			continue
		}
		wf.Services[svc.Name] = svc
	}
	seenTriggers := map[string]bool{}
	for _, b := range content.Blocks {
		if b.Type != "trigger" {
			continue
		}
		tr, d := decodeTrigger(b)
		diags = append(diags, d...)
		if tr == nil {
			continue
		}
		if seenTriggers[tr.Name] {
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Duplicate trigger name", Subject: b.LabelRanges[1].Ptr()})
			continue
		}
		seenTriggers[tr.Name] = true
		wf.Triggers = append(wf.Triggers, tr)
	}
	var refs []pendingRef
	for _, b := range content.Blocks {
		if b.Type == "defaults" || b.Type == "service" || b.Type == "trigger" {
			continue
		}
		if b.Type == "input" {
			if wf.Input != nil {
				diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Duplicate input block",
					Detail: fmt.Sprintf("The input was already declared at %s; declare every input attribute in one block.", pos(wf.Input.Range)), Subject: b.DefRange.Ptr()})
				continue
			}
			spec, d := decodeInput(b)
			diags = append(diags, d...)
			if spec != nil {
				wf.Input = spec
			}
			continue
		}
		step, r, d := decodeStep(b, def)
		diags = append(diags, d...)
		if step == nil {
			continue
		}
		if prev, dup := wf.steps[step.Name]; dup {
			diags = append(diags, &hhcl.Diagnostic{
				Severity: hhcl.DiagError,
				Summary:  "Duplicate step name",
				Detail:   fmt.Sprintf("A step named %q was already declared at %s. Step names must be unique within a workflow.", step.Name, pos(prev.DeclRange)),
				Subject:  b.LabelRanges[0].Ptr(),
			})
			continue
		}
		wf.steps[step.Name] = step
		wf.Steps = append(wf.Steps, step)
		refs = append(refs, r...)
	}
	if len(wf.Steps) == 0 {
		diags = append(diags, &hhcl.Diagnostic{
			Severity: hhcl.DiagError,
			Summary:  "Workflow has no steps",
			Detail:   `Declare at least one step "name" { activity = "noop" } in the workflow block.`,
			Subject:  block.DefRange.Ptr(),
		})
	}

	// Resolve step references now that every step is known.
	for _, r := range refs {
		if _, ok := wf.steps[r.target]; !ok {
			diags = append(diags, unknownStep(r, wf))
			continue
		}
		if r.what == "compensate" {
			continue // read when compensating: no dependency, and the step itself is fine
		}
		if r.target == r.from {
			diags = append(diags, &hhcl.Diagnostic{
				Severity: hhcl.DiagError,
				Summary:  "Step refers to itself",
				Detail:   fmt.Sprintf("Step %q cannot depend on its own result.", r.from),
				Subject:  r.rng.Ptr(),
			})
			continue
		}
		s := wf.steps[r.from]
		s.Deps = appendUnique(s.Deps, r.target)
	}
	if wf.Output != nil {
		diags = append(diags, checkEach(wf.Output, false)...)
		diags = append(diags, checkExpr(wf.Output, "", wf, false)...)
	}
	// input.NAME references are checked once the input block is known,
	// wherever it stands in the file.
	if wf.Input != nil {
		exprs := []hhcl.Expression{wf.Output}
		for _, s := range wf.Steps {
			exprs = append(exprs, s.Input, s.When, s.FailMessage)
		}
		for _, e := range exprs {
			if e == nil {
				continue
			}
			for _, t := range e.Variables() {
				if t.RootName() == "input" {
					if d := checkInputRef(t, wf.Input); d != nil {
						diags = append(diags, d)
					}
				}
			}
		}
	}
	for _, s := range wf.Steps {
		if s.Service == "" {
			continue
		}
		if _, ok := wf.Services[s.Service]; !ok {
			detail := fmt.Sprintf("This workflow declares no service %q; declare it with service %q { base_url = ... }.", s.Service, s.Service)
			if sg := suggest(s.Service, wf.ServiceNames()); sg != "" {
				detail += fmt.Sprintf(" Did you mean %q?", sg)
			}
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Reference to undeclared service", Detail: detail, Subject: s.serviceRange.Ptr()})
		}
	}
	wf.handled = map[string]bool{}
	for _, s := range wf.Steps {
		sort.Strings(s.Deps)
		if s.TriggerRule == RuleAnyFailed || s.TriggerRule == RuleAllDone {
			for _, d := range s.Deps {
				wf.handled[d] = true
			}
		}
		if s.TriggerRule == RuleAnyFailed && len(s.Deps) == 0 {
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Error path without dependencies",
				Detail:  fmt.Sprintf("Step %q has trigger_rule = \"any_failed\" but depends on no step, so it could never run. Name the steps it handles in depends_on.", s.Name),
				Subject: s.DeclRange.Ptr()})
		}
	}
	if !diags.HasErrors() {
		diags = append(diags, findCycles(wf)...)
	}
	return wf, diags
}

// pendingRef is a reference from one step to another, checked once every
// step has been declared.
type pendingRef struct {
	from, target string
	rng          hhcl.Range
	what         string
}

func decodeStep(block *hhcl.Block, def stepDefaults) (*Step, []pendingRef, hhcl.Diagnostics) {
	name := block.Labels[0]
	var diags hhcl.Diagnostics
	if !validName(name) {
		diags = append(diags, &hhcl.Diagnostic{
			Severity: hhcl.DiagError,
			Summary:  "Invalid step name",
			Detail:   fmt.Sprintf("%q is not a valid name: use 1 to 64 letters, digits, '_' or '-', starting with a letter.", name),
			Subject:  block.LabelRanges[0].Ptr(),
		})
	}
	step := &Step{Name: name, Queue: def.Queue, Priority: def.Priority, Timeout: def.Timeout, Retry: def.Retry, HeartbeatTimeout: def.HeartbeatTimeout,
		ScheduleTimeout: def.ScheduleTimeout, TriggerRule: RuleNoneFailed, DeclRange: block.DefRange}
	content, d := block.Body.Content(stepSchema)
	diags = append(diags, d...)
	var kinds []string
	if attr, ok := content.Attributes["activity"]; ok {
		kinds = append(kinds, "activity")
		step.Kind = KindActivity
		diags = append(diags, decodeString(attr, &step.Activity)...)
		if step.Activity == "" && !diags.HasErrors() {
			diags = append(diags, attrError(attr, "Empty activity", "Name the activity the step runs, for example activity = \"noop\"."))
		}
	}
	var refExprs []hhcl.Expression
	if attr, ok := content.Attributes["workflow"]; ok {
		kinds = append(kinds, "workflow")
		step.Kind = KindChild
		diags = append(diags, decodeString(attr, &step.ChildWorkflow)...)
		if !diags.HasErrors() && !validName(step.ChildWorkflow) {
			diags = append(diags, attrError(attr, "Invalid workflow name", "Name a registered workflow: letters, digits, '_' or '-', starting with a letter."))
		}
	}
	if attr, ok := content.Attributes["version"]; ok {
		n, d := decodeInt(attr, 1, 1<<30, "version pins the child workflow's version: a whole number of at least 1 (leave it out for the latest).")
		diags = append(diags, d...)
		step.ChildVersion = uint64(n)
		if _, ok := content.Attributes["workflow"]; !ok {
			diags = append(diags, attrError(attr, "version without workflow", "version applies to a child workflow step (workflow = \"NAME\")."))
		}
	}
	if attr, ok := content.Attributes["sleep"]; ok {
		kinds = append(kinds, "sleep")
		step.Kind = KindSleep
		diags = append(diags, decodeDuration(attr, &step.Sleep)...)
	}
	if attr, ok := content.Attributes["sleep_until"]; ok {
		kinds = append(kinds, "sleep_until")
		step.Kind = KindSleep
		step.SleepUntil = attr.Expr
		refExprs = append(refExprs, attr.Expr)
	}
	for _, sb := range content.Blocks {
		if sb.Type != "wait_signal" {
			continue
		}
		kinds = append(kinds, "wait_signal")
		step.Kind = KindSignal
		step.SignalName = sb.Labels[0]
		if !validName(step.SignalName) {
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Invalid signal name",
				Detail: fmt.Sprintf("%q is not a valid signal name: use 1 to 64 letters, digits, '_' or '-', starting with a letter.", step.SignalName), Subject: sb.LabelRanges[0].Ptr()})
		}
		sc, d := sb.Body.Content(&hhcl.BodySchema{Attributes: []hhcl.AttributeSchema{{Name: "timeout"}, {Name: "output"}}})
		diags = append(diags, d...)
		if attr, ok := sc.Attributes["timeout"]; ok {
			diags = append(diags, decodeDuration(attr, &step.SignalTimeout)...)
		}
		if attr, ok := sc.Attributes["output"]; ok {
			step.SignalOutput = attr.Expr
			refExprs = append(refExprs, attr.Expr)
			diags = append(diags, checkSignal(attr.Expr)...)
		}
	}
	retries := 0
	for _, rb := range content.Blocks {
		if rb.Type != "retry" {
			continue
		}
		if retries++; retries > 1 {
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Duplicate retry block",
				Detail: "Declare one retry block per step.", Subject: rb.DefRange.Ptr()})
			continue
		}
		r, d := decodeRetry(rb, def.Retry)
		diags = append(diags, d...)
		step.Retry = r
		if _, ok := content.Attributes["activity"]; !ok {
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "retry on a step without an activity",
				Detail: "Only activity steps run tasks that can be retried.", Subject: rb.DefRange.Ptr()})
		}
	}
	for _, fb := range content.Blocks {
		if fb.Type != "fail" {
			continue
		}
		kinds = append(kinds, "fail")
		step.Kind = KindFail
		fc, d := fb.Body.Content(failSchema)
		diags = append(diags, d...)
		if attr, ok := fc.Attributes["error"]; ok {
			diags = append(diags, decodeString(attr, &step.FailError)...)
		}
		if attr, ok := fc.Attributes["message"]; ok {
			step.FailMessage = attr.Expr
			refExprs = append(refExprs, attr.Expr)
		}
	}
	switch {
	case len(kinds) == 0:
		diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Step has no kind",
			Detail: fmt.Sprintf("Step %q must say what it does: activity = \"NAME\", workflow = \"CHILD\", sleep = \"DURATION\", sleep_until = TIME, a wait_signal \"NAME\" {} block, or a fail { error = \"TYPE\" } block.", name), Subject: block.DefRange.Ptr()})
	case len(kinds) > 1:
		diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Step has more than one kind",
			Detail: fmt.Sprintf("Step %q declares %s; a step does exactly one thing. Split it into steps.", name, strings.Join(kinds, " and ")), Subject: block.DefRange.Ptr()})
	}
	if attr, ok := content.Attributes["queue"]; ok {
		diags = append(diags, decodeString(attr, &step.Queue)...)
		if !validName(step.Queue) {
			diags = append(diags, attrError(attr, "Invalid queue name", "Use 1 to 64 letters, digits, '_' or '-', starting with a letter."))
		}
	}
	if attr, ok := content.Attributes["priority"]; ok {
		p, d := decodeInt(attr, MinPriority, MaxPriority, priorityDetail)
		diags, step.Priority = append(diags, d...), p
	}
	if attr, ok := content.Attributes["timeout"]; ok {
		var s string
		if d := decodeString(attr, &s); d.HasErrors() {
			diags = append(diags, d...)
		} else if dur, err := time.ParseDuration(s); err != nil || dur <= 0 {
			diags = append(diags, attrError(attr, "Invalid duration", fmt.Sprintf("%q is not a positive duration; write it like \"30s\", \"5m\" or \"1h30m\".", s)))
		} else {
			step.Timeout = dur
		}
	}
	for name, out := range map[string]*time.Duration{"heartbeat_timeout": &step.HeartbeatTimeout, "schedule_timeout": &step.ScheduleTimeout} {
		if attr, ok := content.Attributes[name]; ok {
			diags = append(diags, decodeDuration(attr, out)...)
			if _, ok := content.Attributes["activity"]; !ok {
				diags = append(diags, attrError(attr, name+" on a step without an activity", "Only activity steps run tasks that workers take and heartbeat."))
			}
		}
	}
	if attr, ok := content.Attributes["service"]; ok {
		diags = append(diags, decodeString(attr, &step.Service)...)
		step.serviceRange = attr.Expr.Range()
		if _, ok := content.Attributes["activity"]; !ok {
			diags = append(diags, attrError(attr, "service on a step without an activity", "Only activity steps call services."))
		}
	}
	if attr, ok := content.Attributes["trigger_rule"]; ok {
		if d := decodeString(attr, &step.TriggerRule); d.HasErrors() {
			diags = append(diags, d...)
		} else if !contains(triggerRules, step.TriggerRule) {
			detail := fmt.Sprintf("%q is not a trigger rule; use one of %s.", step.TriggerRule, strings.Join(triggerRules, ", "))
			if s := suggest(step.TriggerRule, triggerRules); s != "" {
				detail += fmt.Sprintf(" Did you mean %q?", s)
			}
			diags = append(diags, attrError(attr, "Unknown trigger rule", detail))
		}
	}
	if attr, ok := content.Attributes["when"]; ok {
		step.When = attr.Expr
		refExprs = append(refExprs, attr.Expr)
		diags = append(diags, checkBool(attr)...)
	}
	if attr, ok := content.Attributes["for_each"]; ok {
		step.ForEach = attr.Expr
		refExprs = append(refExprs, attr.Expr)
		diags = append(diags, checkCollection(attr)...)
		if step.Kind != KindActivity {
			diags = append(diags, attrError(attr, "for_each on a step without an activity", "for_each runs one task per element; it applies only to activity steps."))
		}
	}
	if attr, ok := content.Attributes["max_concurrency"]; ok {
		v, d := attr.Expr.Value(nil)
		n, accuracy := 0, false
		if !d.HasErrors() && v.Type() == cty.Number && !v.IsNull() {
			bf := v.AsBigFloat()
			if bf.IsInt() {
				i, _ := bf.Int64()
				n, accuracy = int(i), true
			}
		}
		switch {
		case !accuracy || n < 1:
			diags = append(diags, attrError(attr, "Invalid max_concurrency", "max_concurrency is a whole number of at least 1: how many elements run at once."))
		case step.ForEach == nil:
			diags = append(diags, attrError(attr, "max_concurrency without for_each", "max_concurrency bounds the elements of a for_each; add for_each or remove it."))
		default:
			step.MaxConcurrency = n
		}
	}
	var refs []pendingRef
	for _, cb := range content.Blocks {
		if cb.Type != "compensate" {
			continue
		}
		if step.Compensate != nil {
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Duplicate compensate block",
				Detail: "Declare one compensate block per step.", Subject: cb.DefRange.Ptr()})
			continue
		}
		comp, r, d := decodeCompensate(cb, name, step, def)
		diags = append(diags, d...)
		refs = append(refs, r...)
		step.Compensate = comp
		if _, ok := content.Attributes["activity"]; !ok {
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "compensate on a step without an activity",
				Detail: "Only activity steps do work that can be undone.", Subject: cb.DefRange.Ptr()})
		}
	}
	if attr, ok := content.Attributes["input"]; ok {
		step.Input = attr.Expr
		diags = append(diags, checkEach(attr.Expr, step.ForEach != nil)...)
	}
	for _, e := range refExprs {
		diags = append(diags, checkEach(e, false)...)
	}
	if step.Input != nil {
		refExprs = append(refExprs, step.Input)
	}
	for _, e := range refExprs {
		diags = append(diags, checkExpr(e, name, nil, e == step.SignalOutput)...)
		for _, t := range e.Variables() {
			if target, rng, ok := stepRef(t); ok {
				refs = append(refs, pendingRef{from: name, target: target, rng: rng, what: "reference"})
			}
		}
	}
	if attr, ok := content.Attributes["depends_on"]; ok {
		r, d := decodeDependsOn(name, attr)
		refs = append(refs, r...)
		diags = append(diags, d...)
	}
	return step, refs, diags
}

func decodeDependsOn(from string, attr *hhcl.Attribute) ([]pendingRef, hhcl.Diagnostics) {
	exprs, diags := hhcl.ExprList(attr.Expr)
	if diags.HasErrors() {
		return nil, hhcl.Diagnostics{attrError(attr, "Invalid depends_on", "depends_on is a list of step references, for example depends_on = [step.charge].")}
	}
	var refs []pendingRef
	for _, e := range exprs {
		trav, d := hhcl.AbsTraversalForExpr(e)
		target, rng, ok := "", e.Range(), false
		if !d.HasErrors() {
			target, rng, ok = stepRef(trav)
			ok = ok && len(trav) == 2
		}
		if !ok {
			diags = append(diags, &hhcl.Diagnostic{
				Severity: hhcl.DiagError,
				Summary:  "Invalid depends_on entry",
				Detail:   "Each entry of depends_on names a step as step.NAME.",
				Subject:  e.Range().Ptr(),
			})
			continue
		}
		refs = append(refs, pendingRef{from: from, target: target, rng: rng, what: "depends_on"})
	}
	return refs, diags
}

// stepRef recognises step.NAME[...] and returns NAME.
func stepRef(t hhcl.Traversal) (string, hhcl.Range, bool) {
	if t.RootName() != "step" || len(t) < 2 {
		return "", hhcl.Range{}, false
	}
	attr, ok := t[1].(hhcl.TraverseAttr)
	if !ok {
		return "", hhcl.Range{}, false
	}
	// The range covers step.NAME only: that is the part a typo is in.
	return attr.Name, hhcl.RangeBetween(t[0].SourceRange(), t[1].SourceRange()), true
}

func unknownStep(r pendingRef, wf *Workflow) *hhcl.Diagnostic {
	names := make([]string, 0, len(wf.Steps))
	for _, s := range wf.Steps {
		names = append(names, s.Name)
	}
	detail := fmt.Sprintf("This workflow declares no step named %q.", r.target)
	if s := suggest(r.target, names); s != "" {
		detail += fmt.Sprintf(" Did you mean %q?", s)
	}
	return &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Reference to undeclared step", Detail: detail, Subject: r.rng.Ptr()}
}

// checkExpr checks the root variables an expression uses and the functions
// it calls. Step references inside steps are resolved by the caller; here
// (wf != nil) they are checked directly. signal says the expression is a
// wait_signal output, where signal is in scope (checkSignal checks it).
func checkExpr(expr hhcl.Expression, from string, wf *Workflow, signal bool) hhcl.Diagnostics {
	var diags hhcl.Diagnostics
	for _, t := range expr.Variables() {
		switch t.RootName() {
		case "input", "each": // each is checked by checkEach
		case "signal":
			if !signal {
				diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "signal outside wait_signal",
					Detail: "signal exists only in the output of a wait_signal block, where it is the signal the step took. Elsewhere, read a signal step's result as step.NAME.output.", Subject: t.SourceRange().Ptr()})
			}
		case "instance":
			if len(t) < 2 {
				diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Incomplete instance reference",
					Detail: "Refer to one of " + instanceAttrList + ", for example instance.id.", Subject: t.SourceRange().Ptr()})
			} else if a, ok := t[1].(hhcl.TraverseAttr); !ok || !instanceAttrs[a.Name] {
				diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Unsupported instance attribute",
					Detail: "An instance exposes " + instanceAttrList + ".", Subject: t.SourceRange().Ptr()})
			}
		case "step":
			if len(t) < 2 {
				diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Incomplete step reference",
					Detail: "Refer to a step's result as step.NAME.output.", Subject: t.SourceRange().Ptr()})
				continue
			}
			if _, ok := t[1].(hhcl.TraverseAttr); !ok {
				diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Invalid step reference",
					Detail: "Refer to a step's result as step.NAME.output.", Subject: t.SourceRange().Ptr()})
				continue
			}
			if len(t) >= 3 {
				if a, ok := t[2].(hhcl.TraverseAttr); ok && !stepAttrs[a.Name] {
					diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Unsupported step attribute",
						Detail: fmt.Sprintf("A step exposes %s; %q is not one of them.", stepAttrList, a.Name), Subject: t.SourceRange().Ptr()})
				}
			}
			if wf != nil {
				target, rng, _ := stepRef(t)
				if wf.steps[target] == nil {
					diags = append(diags, unknownStep(pendingRef{target: target, rng: rng}, wf))
				}
			}
		default:
			detail := fmt.Sprintf("There is no variable named %q. Expressions may use input, step and instance.", t.RootName())
			if s := suggest(t.RootName(), []string{"input", "step", "instance"}); s != "" {
				detail += fmt.Sprintf(" Did you mean %q?", s)
			}
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Unknown variable", Detail: detail, Subject: t.SourceRange().Ptr()})
		}
	}
	diags = append(diags, checkFunctions(expr)...)
	return diags
}

var stepAttrs = map[string]bool{"output": true, "status": true, "error": true, "attempts": true}

const stepAttrList = "output, status, error and attempts"

var instanceAttrs = map[string]bool{"id": true, "workflow": true, "version": true, "started_at": true}

const instanceAttrList = "id, workflow, version and started_at"

func findCycles(wf *Workflow) hhcl.Diagnostics {
	const (
		unvisited = iota
		visiting
		done
	)
	color := map[string]int{}
	var stack []string
	var diags hhcl.Diagnostics
	var visit func(name string)
	visit = func(name string) {
		color[name] = visiting
		stack = append(stack, name)
		for _, dep := range wf.steps[name].Deps {
			switch color[dep] {
			case visiting:
				i := len(stack) - 1
				for stack[i] != dep {
					i--
				}
				cycle := append(append([]string{}, stack[i:]...), dep)
				diags = append(diags, &hhcl.Diagnostic{
					Severity: hhcl.DiagError,
					Summary:  "Dependency cycle",
					Detail:   fmt.Sprintf("These steps wait for each other and can never start: %s. Remove one of the references or depends_on entries.", joinArrow(cycle)),
					Subject:  wf.steps[dep].DeclRange.Ptr(),
				})
			case unvisited:
				visit(dep)
			}
		}
		stack = stack[:len(stack)-1]
		color[name] = done
	}
	for _, s := range wf.Steps {
		if color[s.Name] == unvisited {
			visit(s.Name)
		}
	}
	return diags
}

// Compensation undoes a succeeded step when its instance is cancelled: a
// task of its own, with its own retry policy.
type Compensation struct {
	Activity string
	Input    hhcl.Expression
	Queue    string
	Timeout  time.Duration
	Retry    RetryPolicy
}

var compensateSchema = &hhcl.BodySchema{
	Attributes: []hhcl.AttributeSchema{{Name: "activity", Required: true}, {Name: "input"}, {Name: "queue"}, {Name: "timeout"}},
	Blocks:     []hhcl.BlockHeaderSchema{{Type: "retry"}},
}

// decodeCompensate reads a compensate block. Its input may read any step,
// the step itself included (step.NAME.output), without creating a
// dependency: it is evaluated when compensating.
func decodeCompensate(block *hhcl.Block, from string, step *Step, def stepDefaults) (*Compensation, []pendingRef, hhcl.Diagnostics) {
	c := &Compensation{Queue: step.Queue, Timeout: step.Timeout, Retry: def.Retry}
	content, diags := block.Body.Content(compensateSchema)
	if attr, ok := content.Attributes["activity"]; ok {
		diags = append(diags, decodeString(attr, &c.Activity)...)
	}
	if attr, ok := content.Attributes["queue"]; ok {
		diags = append(diags, decodeString(attr, &c.Queue)...)
		if !validName(c.Queue) {
			diags = append(diags, attrError(attr, "Invalid queue name", "Use 1 to 64 letters, digits, '_' or '-', starting with a letter."))
		}
	}
	if attr, ok := content.Attributes["timeout"]; ok {
		diags = append(diags, decodeDuration(attr, &c.Timeout)...)
	}
	for _, rb := range content.Blocks {
		r, d := decodeRetry(rb, def.Retry)
		diags = append(diags, d...)
		c.Retry = r
	}
	var refs []pendingRef
	if attr, ok := content.Attributes["input"]; ok {
		c.Input = attr.Expr
		diags = append(diags, checkEach(attr.Expr, false)...)
		diags = append(diags, checkExpr(attr.Expr, from, nil, false)...)
		for _, t := range attr.Expr.Variables() {
			if target, rng, ok := stepRef(t); ok {
				refs = append(refs, pendingRef{from: from, target: target, rng: rng, what: "compensate"})
			}
		}
	}
	return c, refs, diags
}
