package fsm

import (
	"strconv"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/lockstep-io/lockstep/hcl"
)

// Trigger is the replicated state of a workflow's cron trigger: its
// settings from the latest registration, whether it is enabled, and the
// scheduled time it last fired for (the leader fires the next one after it).
type Trigger struct {
	ID       string `json:"id"` // WORKFLOW.NAME
	Workflow string `json:"workflow"`
	Name     string `json:"name"`
	Kind     string `json:"kind"` // cron or webhook
	// Secret names the secret that signs a webhook's deliveries.
	Secret   string `json:"secret,omitempty"`
	Schedule string `json:"schedule"`
	Timezone string `json:"timezone,omitempty"`
	Overlap  string `json:"overlap"`
	Catchup  bool   `json:"catchup,omitempty"`
	Enabled  bool   `json:"enabled"`
	// LastFire is the scheduled time of the last fire (or, before any, the
	// time the trigger was created: it never fires for the past).
	LastFire time.Time `json:"last_fire"`
	// RunningID is the instance the trigger started last.
	RunningID string `json:"running_id,omitempty"`
	// Buffered holds one fire that waits for RunningID to end (buffer_one).
	Buffered    *time.Time `json:"buffered,omitempty"`
	Fired       uint64     `json:"fired"`
	Skipped     uint64     `json:"skipped"`
	LastError   string     `json:"last_error,omitempty"`
	ModifyIndex uint64     `json:"modify_index"`
}

const tableTriggers = "triggers"

func init() {
	registerTable(&memdb.TableSchema{
		Name: tableTriggers,
		Indexes: map[string]*memdb.IndexSchema{
			"id":       {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
			"workflow": {Name: "workflow", Indexer: &memdb.StringFieldIndex{Field: "Workflow"}},
		},
	})
	registerRecord(tableTriggers, func() any { return new(Trigger) })
	registerCommand(FireTriggerType, (*FSM).applyFireTrigger)
	registerCommand(SetTriggerType, (*FSM).applySetTrigger)
}

// upsertTriggers makes a workflow's triggers those of its newest version:
// new ones start enabled from now, kept ones keep their state, dropped
// ones are removed.
func (tx *Txn) upsertTriggers(wf *hcl.Workflow, now time.Time) {
	keep := map[string]bool{}
	for _, t := range wf.Triggers {
		id := wf.Name + "." + t.Name
		keep[id] = true
		rec := &Trigger{ID: id, Workflow: wf.Name, Name: t.Name, Enabled: true, LastFire: now}
		if old := tx.Trigger(id); old != nil {
			c := *old
			rec = &c
		}
		rec.Kind, rec.Secret = t.Kind, t.Secret
		rec.Schedule, rec.Timezone, rec.Overlap, rec.Catchup = t.Schedule, t.Timezone, t.Overlap, t.Catchup
		rec.ModifyIndex = tx.Index
		tx.mustInsert(tableTriggers, rec)
	}
	it, err := tx.Get(tableTriggers, "workflow", wf.Name)
	if err != nil {
		return
	}
	var drop []*Trigger
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if t := raw.(*Trigger); !keep[t.ID] {
			drop = append(drop, t)
		}
	}
	for _, t := range drop {
		_ = tx.Delete(tableTriggers, t)
	}
}

// FireTriggerRequest fires a trigger for a scheduled time (the leader's
// cron), or now (Manual: an operator's "fire now", which leaves the
// schedule alone).
type FireTriggerRequest struct {
	Header
	ID        string    `json:"id"`
	Scheduled time.Time `json:"scheduled"`
	Manual    bool      `json:"manual,omitempty"`
}

// FireTriggerResponse says what a fire did.
type FireTriggerResponse struct {
	InstanceID string `json:"instance_id,omitempty"`
	Outcome    string `json:"outcome"` // started, skipped, buffered, ignored, failed
	Reason     string `json:"reason,omitempty"`
}

func (f *FSM) applyFireTrigger(tx *Txn, body []byte) any {
	var req FireTriggerRequest
	mustDecode(FireTriggerType, body, &req)
	t := tx.Trigger(req.ID)
	if t == nil {
		return errorf(CodeNotFound, "no trigger %q", req.ID)
	}
	if t.Kind == hcl.TriggerWebhook {
		return errorf(CodeConflict, "trigger %q is a webhook: deliver to POST /v1/webhooks/%s/%s", req.ID, t.Workflow, t.Name)
	}
	if !req.Manual && (!t.Enabled || !req.Scheduled.After(t.LastFire)) {
		return &FireTriggerResponse{Outcome: "ignored", Reason: "disabled, or this time already fired"}
	}
	c := *t
	c.ModifyIndex = tx.Index
	if !req.Manual {
		c.LastFire = req.Scheduled
	}
	running := false
	if c.RunningID != "" {
		inst := tx.Instance(c.RunningID)
		running = inst != nil && !inst.Terminal()
	}
	var res *FireTriggerResponse
	switch {
	case running && c.Overlap == hcl.OverlapSkip:
		c.Skipped++
		res = &FireTriggerResponse{Outcome: "skipped", Reason: "instance " + c.RunningID + " still runs (overlap = skip)"}
	case running && c.Overlap == hcl.OverlapBufferOne:
		at := req.Scheduled
		c.Buffered = &at
		res = &FireTriggerResponse{Outcome: "buffered", Reason: "starts when instance " + c.RunningID + " ends"}
	default:
		res = f.startFromTrigger(tx, &c, req.Scheduled, req.Manual, req.Time)
	}
	tx.mustInsert(tableTriggers, &c)
	return res
}

// startFromTrigger starts the trigger's instance for a scheduled time. Its
// id is derived from the trigger and that time, so no fire starts twice.
func (f *FSM) startFromTrigger(tx *Txn, t *Trigger, scheduled time.Time, manual bool, now time.Time) *FireTriggerResponse {
	id := t.ID + "." + strconv.FormatInt(scheduled.Unix(), 10)
	if manual {
		id += ".manual"
	}
	input := []byte("null")
	if wv := tx.LatestWorkflow(t.Workflow); wv != nil {
		if wf, err := f.workflow(wv); err == nil {
			for _, ct := range wf.Triggers {
				if ct.Name == t.Name && ct.Input != nil {
					raw, err := hcl.Eval(ct.Input, hcl.Scope{Now: scheduled})
					if err != nil {
						t.LastError = "input: " + err.Error()
						return &FireTriggerResponse{Outcome: "failed", Reason: t.LastError}
					}
					input = raw
				}
			}
		}
	}
	if tx.Instance(id) != nil {
		return &FireTriggerResponse{InstanceID: id, Outcome: "ignored", Reason: "already started"}
	}
	// The trigger's record is written after this returns; an instance
	// that ends as it starts finds RunningID unset then, which is right:
	// nothing waits behind it.
	inst, e := f.createInstance(tx, id, t.Workflow, 0, input, now, nil, t.ID)
	if e != nil {
		t.LastError = e.Message
		return &FireTriggerResponse{Outcome: "failed", Reason: e.Message}
	}
	t.RunningID, t.LastError = inst.ID, ""
	t.Fired++
	return &FireTriggerResponse{InstanceID: inst.ID, Outcome: "started"}
}

// triggeredInstanceEnded starts the fire a buffer_one trigger held back.
func (f *FSM) triggeredInstanceEnded(tx *Txn, inst *Instance, now time.Time) {
	t := tx.Trigger(inst.Trigger)
	if t == nil || t.RunningID != inst.ID || t.Buffered == nil {
		return
	}
	c := *t
	at := *c.Buffered
	c.Buffered = nil
	c.ModifyIndex = tx.Index
	f.startFromTrigger(tx, &c, at, false, now)
	tx.mustInsert(tableTriggers, &c)
}

// SetTriggerRequest enables or disables a trigger.
type SetTriggerRequest struct {
	Header
	ID      string `json:"id"`
	Enabled bool   `json:"enabled"`
}

func (f *FSM) applySetTrigger(tx *Txn, body []byte) any {
	var req SetTriggerRequest
	mustDecode(SetTriggerType, body, &req)
	t := tx.Trigger(req.ID)
	if t == nil {
		return errorf(CodeNotFound, "no trigger %q", req.ID)
	}
	c := *t
	if req.Enabled && !c.Enabled {
		c.LastFire = req.Time // re-enabled: no fires for the time it was off
	}
	c.Enabled, c.ModifyIndex = req.Enabled, tx.Index
	tx.mustInsert(tableTriggers, &c)
	return &c
}

// Trigger returns a trigger by id, or nil.
func (tx *Txn) Trigger(id string) *Trigger {
	raw, err := tx.First(tableTriggers, "id", id)
	if err != nil || raw == nil {
		return nil
	}
	return raw.(*Trigger)
}

// Triggers lists every trigger by id.
func (tx *Txn) Triggers() []*Trigger {
	out := []*Trigger{}
	it, err := tx.Get(tableTriggers, "id")
	if err != nil {
		return out
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*Trigger))
	}
	return out
}
