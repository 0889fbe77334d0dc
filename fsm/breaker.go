package fsm

import (
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/lockstep-io/lockstep/hcl"
)

// Breaker states.
const (
	BreakerClosed   = "closed"    // tasks flow
	BreakerOpen     = "open"      // tasks of the service wait in their queues
	BreakerHalfOpen = "half_open" // one probe task may go
)

// TimerBreakerReset turns an open breaker half open.
const TimerBreakerReset = "breaker_reset"

// Breaker is the replicated state of one service's circuit breaker, with
// the service's settings from the latest workflow that declares it.
type Breaker struct {
	Name       string            `json:"name"`
	BaseURL    string            `json:"base_url"`
	Headers    map[string]string `json:"headers,omitempty"`
	Timeout    time.Duration     `json:"timeout,omitempty"`
	Failures   int               `json:"failures"`
	Window     time.Duration     `json:"window"`
	ResetAfter time.Duration     `json:"reset_after"`
	State      string            `json:"state"`
	// Recent are the failed attempts within the window, oldest first.
	Recent      []time.Time `json:"recent,omitempty"`
	OpenedAt    *time.Time  `json:"opened_at,omitempty"`
	ProbeTaskID string      `json:"probe_task_id,omitempty"`
	ModifyIndex uint64      `json:"modify_index"`
}

const tableBreakers = "breakers"

func init() {
	registerTable(&memdb.TableSchema{
		Name: tableBreakers,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name"}},
		},
	})
	registerRecord(tableBreakers, func() any { return new(Breaker) })
	registerCommand(SetBreakerType, (*FSM).applySetBreaker)
}

// upsertServices records a registered workflow's services: settings from
// the newest registration, state kept.
func (tx *Txn) upsertServices(wf *hcl.Workflow) {
	for _, name := range wf.ServiceNames() {
		s := wf.Services[name]
		b := &Breaker{Name: name, State: BreakerClosed}
		if old := tx.Breaker(name); old != nil {
			c := *old
			b = &c
		}
		b.BaseURL, b.Headers, b.Timeout = s.BaseURL, s.Headers, s.Timeout
		b.Failures, b.Window, b.ResetAfter = s.Breaker.Failures, s.Breaker.Window, s.Breaker.ResetAfter
		b.ModifyIndex = tx.Index
		tx.mustInsert(tableBreakers, b)
	}
}

// Breaker returns a service's breaker, or nil.
func (tx *Txn) Breaker(name string) *Breaker {
	raw, err := tx.First(tableBreakers, "id", name)
	if err != nil || raw == nil {
		return nil
	}
	return raw.(*Breaker)
}

// Breakers lists every service's breaker, by name.
func (tx *Txn) Breakers() []*Breaker {
	out := []*Breaker{}
	it, err := tx.Get(tableBreakers, "id")
	if err != nil {
		return out
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*Breaker))
	}
	return out
}

// Dispatchable reports whether a task may be leased now: its instance
// allows it and, for a task of a service, the service's breaker does (one
// probe at a time when half open).
func (tx *Txn) Dispatchable(t *Task, inst *Instance) bool {
	if inst == nil || !inst.Dispatchable(t) {
		return false
	}
	if t.Service == "" || t.Compensation {
		return true
	}
	b := tx.Breaker(t.Service)
	switch {
	case b == nil || b.State == BreakerClosed:
		return true
	case b.State == BreakerHalfOpen:
		return b.ProbeTaskID == "" || b.ProbeTaskID == t.ID || tx.probeEnded(b)
	}
	return false
}

// probeEnded reports whether a half-open breaker's probe task ended without
// a result counted (cancelled with its instance): another may probe.
func (tx *Txn) probeEnded(b *Breaker) bool {
	p := tx.Task(b.ProbeTaskID)
	return p == nil || p.Status == TaskCancelled
}

// leasedThrough marks a half-open breaker's probe as taken.
func (tx *Txn) leasedThrough(t *Task) {
	if t.Service == "" || t.Compensation {
		return
	}
	if b := tx.Breaker(t.Service); b != nil && b.State == BreakerHalfOpen && (b.ProbeTaskID == "" || tx.probeEnded(b)) {
		c := *b
		c.ProbeTaskID, c.ModifyIndex = t.ID, tx.Index
		tx.mustInsert(tableBreakers, &c)
	}
}

// serviceResult counts an attempt's outcome against its service's breaker:
// enough failures within the window open it; the probe's outcome closes or
// reopens a half-open one.
func (tx *Txn) serviceResult(t *Task, ok bool, now time.Time) {
	if t.Service == "" || t.Compensation {
		return
	}
	b := tx.Breaker(t.Service)
	if b == nil {
		return
	}
	c := *b
	c.ModifyIndex = tx.Index
	switch c.State {
	case BreakerHalfOpen:
		if c.ProbeTaskID != t.ID {
			return
		}
		if ok {
			c.State, c.Recent, c.OpenedAt, c.ProbeTaskID = BreakerClosed, nil, nil, ""
		} else {
			tx.openBreaker(&c, now)
		}
	case BreakerClosed:
		if ok {
			return
		}
		var recent []time.Time
		for _, at := range c.Recent {
			if now.Sub(at) < c.Window {
				recent = append(recent, at)
			}
		}
		c.Recent = append(recent, now)
		if len(c.Recent) >= c.Failures {
			tx.openBreaker(&c, now)
		}
	default:
		return
	}
	tx.mustInsert(tableBreakers, &c)
}

func (tx *Txn) openBreaker(b *Breaker, now time.Time) {
	b.State, b.ProbeTaskID, b.Recent = BreakerOpen, "", nil
	b.OpenedAt = &now
	newTimer(tx, TimerBreakerReset, "", b.Name, "", now.Add(b.ResetAfter))
}

// halfOpen lets one probe through a breaker whose reset time has come.
func (tx *Txn) halfOpen(name string, now time.Time) {
	b := tx.Breaker(name)
	if b == nil || b.State != BreakerOpen || b.OpenedAt == nil || now.Sub(*b.OpenedAt) < b.ResetAfter {
		return // closed meanwhile, or re-opened later (its own timer will come)
	}
	c := *b
	c.State, c.ProbeTaskID, c.ModifyIndex = BreakerHalfOpen, "", tx.Index
	tx.mustInsert(tableBreakers, &c)
}

// SetBreakerRequest is an operator resetting (closed) or tripping (open) a
// service's breaker.
type SetBreakerRequest struct {
	Header
	Name  string `json:"name"`
	State string `json:"state"`
}

func (f *FSM) applySetBreaker(tx *Txn, body []byte) any {
	var req SetBreakerRequest
	mustDecode(SetBreakerType, body, &req)
	b := tx.Breaker(req.Name)
	if b == nil {
		return errorf(CodeNotFound, "no workflow declares a service %q", req.Name)
	}
	c := *b
	c.ModifyIndex = tx.Index
	switch req.State {
	case BreakerClosed:
		c.State, c.Recent, c.OpenedAt, c.ProbeTaskID = BreakerClosed, nil, nil, ""
	case BreakerOpen:
		tx.openBreaker(&c, req.Time)
	default:
		return errorf(CodeInvalid, "breaker state %q: use closed (reset) or open (trip)", req.State)
	}
	tx.mustInsert(tableBreakers, &c)
	return &c
}
