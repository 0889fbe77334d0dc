package hcl

import (
	"encoding/json"
	"fmt"
	"time"
	_ "time/tzdata" // time zones resolve in FROM-scratch images too

	hhcl "github.com/hashicorp/hcl/v2"
	"github.com/robfig/cron/v3"
	"github.com/zclconf/go-cty/cty"
)

var ctyBool = cty.Bool

// Trigger kinds.
const (
	TriggerCron    = "cron"
	TriggerWebhook = "webhook"
)

// CronTrigger starts instances of its workflow on a schedule (Kind cron) or
// for each delivery to its webhook (Kind webhook).
type CronTrigger struct {
	Kind     string
	Name     string
	Schedule string
	Timezone string
	// Input is evaluated at each fire; now() is the scheduled time.
	Input   hhcl.Expression
	Overlap string // skip, allow or buffer_one
	Catchup bool
	// Webhook: Secret names the cluster secret that signs deliveries; ID,
	// if set, names each delivery's instance (so a redelivery is
	// recognised). Input and ID read request.body and request.headers.
	Secret string
	ID     hhcl.Expression
}

// Overlap policies: what a fire does while the trigger's previous instance
// still runs.
const (
	OverlapSkip      = "skip"
	OverlapAllow     = "allow"
	OverlapBufferOne = "buffer_one"
)

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule parses a cron schedule in a time zone.
func ParseSchedule(schedule, timezone string) (cron.Schedule, error) {
	loc := time.UTC
	if timezone != "" {
		var err error
		if loc, err = time.LoadLocation(timezone); err != nil {
			return nil, fmt.Errorf("unknown time zone %q", timezone)
		}
	}
	s, err := cronParser.Parse(schedule)
	if err != nil {
		return nil, err
	}
	return inLocation{s, loc}, nil
}

type inLocation struct {
	s   cron.Schedule
	loc *time.Location
}

func (l inLocation) Next(t time.Time) time.Time { return l.s.Next(t.In(l.loc)).UTC() }

var cronSchema = &hhcl.BodySchema{
	Attributes: []hhcl.AttributeSchema{{Name: "schedule", Required: true}, {Name: "timezone"}, {Name: "input"}, {Name: "overlap"}, {Name: "catchup"}},
}

var webhookSchema = &hhcl.BodySchema{
	Attributes: []hhcl.AttributeSchema{{Name: "input"}, {Name: "secret"}, {Name: "id"}},
}

func decodeTrigger(block *hhcl.Block) (*CronTrigger, hhcl.Diagnostics) {
	kind, name := block.Labels[0], block.Labels[1]
	switch kind {
	case TriggerCron:
	case TriggerWebhook:
		return decodeWebhook(block, name)
	default:
		return nil, hhcl.Diagnostics{{Severity: hhcl.DiagError, Summary: "Unsupported trigger type",
			Detail: fmt.Sprintf("%q is not a trigger type; use trigger \"cron\" \"NAME\" { schedule = \"0 * * * *\" } or trigger \"webhook\" \"NAME\" { input = request.body }.", kind), Subject: block.LabelRanges[0].Ptr()}}
	}
	t := &CronTrigger{Kind: TriggerCron, Name: name, Overlap: OverlapSkip}
	var diags hhcl.Diagnostics
	if !validName(name) {
		diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Invalid trigger name",
			Detail: fmt.Sprintf("%q is not a valid name: use 1 to 64 letters, digits, '_' or '-', starting with a letter.", name), Subject: block.LabelRanges[1].Ptr()})
	}
	content, d := block.Body.Content(cronSchema)
	diags = append(diags, d...)
	if attr, ok := content.Attributes["timezone"]; ok {
		diags = append(diags, decodeString(attr, &t.Timezone)...)
		if _, err := time.LoadLocation(t.Timezone); err != nil && t.Timezone != "" {
			diags = append(diags, attrError(attr, "Unknown time zone", fmt.Sprintf("%q is not a time zone name; use an IANA name such as \"Europe/Paris\" or \"UTC\".", t.Timezone)))
		}
	}
	if attr, ok := content.Attributes["schedule"]; ok {
		if d := decodeString(attr, &t.Schedule); d.HasErrors() {
			diags = append(diags, d...)
		} else if _, err := cronParser.Parse(t.Schedule); err != nil {
			diags = append(diags, attrError(attr, "Invalid cron schedule",
				fmt.Sprintf("%q: %v. Write five fields (minute hour day-of-month month day-of-week), e.g. \"0 2 * * *\" for 02:00 daily, or @hourly, @daily, @every 10m.", t.Schedule, err)))
		}
	}
	if attr, ok := content.Attributes["overlap"]; ok {
		diags = append(diags, decodeString(attr, &t.Overlap)...)
		if !contains([]string{OverlapSkip, OverlapAllow, OverlapBufferOne}, t.Overlap) {
			diags = append(diags, attrError(attr, "Unknown overlap policy", "overlap is skip (default), allow or buffer_one."))
		}
	}
	if attr, ok := content.Attributes["catchup"]; ok {
		v, d := attr.Expr.Value(nil)
		if d.HasErrors() || v.IsNull() || !v.Type().Equals(ctyBool) {
			diags = append(diags, attrError(attr, "Invalid catchup", "catchup is true (start every run missed during downtime) or false (only the most recent)."))
		} else {
			t.Catchup = v.True()
		}
	}
	if attr, ok := content.Attributes["input"]; ok {
		t.Input = attr.Expr
		for _, tr := range attr.Expr.Variables() {
			diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Variable in a trigger's input",
				Detail: "A trigger's input is evaluated when it fires, before any instance exists: use constants and functions such as now() (the scheduled time).", Subject: tr.SourceRange().Ptr()})
		}
		diags = append(diags, checkFunctions(attr.Expr)...)
	}
	return t, diags
}

func decodeWebhook(block *hhcl.Block, name string) (*CronTrigger, hhcl.Diagnostics) {
	t := &CronTrigger{Kind: TriggerWebhook, Name: name, Overlap: OverlapAllow}
	var diags hhcl.Diagnostics
	if !validName(name) {
		diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Invalid trigger name",
			Detail: fmt.Sprintf("%q is not a valid name: use 1 to 64 letters, digits, '_' or '-', starting with a letter.", name), Subject: block.LabelRanges[1].Ptr()})
	}
	content, d := block.Body.Content(webhookSchema)
	diags = append(diags, d...)
	if attr, ok := content.Attributes["secret"]; ok {
		diags = append(diags, decodeString(attr, &t.Secret)...)
		if !validName(t.Secret) {
			diags = append(diags, attrError(attr, "Invalid secret name",
				"secret names a secret stored in the cluster (PUT /v1/secrets/NAME); secret values never appear in workflow files."))
		}
	}
	for _, an := range []string{"input", "id"} {
		attr, ok := content.Attributes[an]
		if !ok {
			continue
		}
		if an == "input" {
			t.Input = attr.Expr
		} else {
			t.ID = attr.Expr
		}
		for _, tr := range attr.Expr.Variables() {
			if tr.RootName() != "request" {
				diags = append(diags, &hhcl.Diagnostic{Severity: hhcl.DiagError, Summary: "Unknown variable in a webhook trigger",
					Detail: "A webhook trigger's " + an + " may read request.body (the JSON body) and request.headers (lower-case names).", Subject: tr.SourceRange().Ptr()})
			}
		}
		diags = append(diags, checkFunctions(attr.Expr)...)
	}
	return t, diags
}

// Request is what a webhook trigger's expressions see as request.
type Request struct {
	Body    json.RawMessage
	Headers map[string]string
}
