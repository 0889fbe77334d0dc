package fsm

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/lockstep-io/lockstep/hcl"
)

// Event is one entry of an instance's history: what changed, when (the
// command's time), at which raft index, and why.
type Event struct {
	InstanceID string          `json:"instance_id"`
	Seq        uint64          `json:"seq"`
	Time       time.Time       `json:"time"`
	Index      uint64          `json:"index"`
	Type       string          `json:"type"`
	Step       string          `json:"step,omitempty"`
	Element    string          `json:"element,omitempty"`
	TaskID     string          `json:"task_id,omitempty"`
	Attempt    int             `json:"attempt,omitempty"`
	Worker     string          `json:"worker,omitempty"`
	Error      *TaskError      `json:"error,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
	Detail     string          `json:"detail,omitempty"`
}

// historyChunk is one record of an instance's history: up to
// eventsPerChunk consecutive events, the first with sequence number First.
// One record (and one index entry) per 32 events rather than one per event
// makes the history a few state-store writes per command instead of one
// per event, and a fraction of the memory.
type historyChunk struct {
	InstanceID string   `json:"instance_id"`
	First      uint64   `json:"first"`
	Events     []*Event `json:"events"`
}

const (
	tableHistory   = "history"
	eventsPerChunk = 32
)

// chunkFirst is the first sequence number of the chunk holding seq (>= 1).
func chunkFirst(seq uint64) uint64 { return (seq-1)/eventsPerChunk*eventsPerChunk + 1 }

func init() {
	registerTable(&memdb.TableSchema{
		Name: tableHistory,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: newCompound(
				strIndex{func(o any) string { return o.(*historyChunk).InstanceID }},
				uintIndex{func(o any) uint64 { return o.(*historyChunk).First }},
			)},
		},
	})
	registerRecord(tableHistory, func() any { return new(historyChunk) })
}

// appendHistory adds events (sequence numbers set) to the instance's
// history. They go to the instance's tail, which travels with the instance
// record; a chunk is written to the history table once it is complete, so
// a command that adds a few events writes no history record of its own.
// The tail is copied on append (no spare capacity), so the versions of the
// instance already stored never change.
func (t *Txn) appendHistory(inst *Instance, events []Event) {
	if len(events) == 0 {
		return
	}
	tail := inst.tail()
	tail = tail[:len(tail):len(tail)]
	stored := append([]Event(nil), events...) // one allocation for the events
	for i := range stored {
		tail = append(tail, &stored[i])
	}
	for len(tail) > 0 {
		first := chunkFirst(tail[0].Seq)
		n := 0
		for n < len(tail) && chunkFirst(tail[n].Seq) == first {
			n++
		}
		if tail[n-1].Seq != first+eventsPerChunk-1 {
			break // the chunk is not complete yet
		}
		t.putChunk(inst.ID, first, tail[:n:n])
		tail = tail[n:]
	}
	if len(tail) == 0 {
		tail = nil
	}
	inst.historyTail, inst.sealedTail = tail, nil
}

// tail returns the instance's events after its last complete chunk.
func (i *Instance) tail() []*Event {
	if i.sealedTail != nil {
		return decodeEvents(i.sealedTail, i.ID)
	}
	return i.historyTail
}

// sealHistory keeps an ended instance's tail as one encoded, pointer-free
// value instead of its events: the collector has nothing in it to scan,
// and a retained chain3 instance keeps a fifth less memory. Ended
// instances' histories are read seldom (the API, snapshots, replay, a
// retry), and each read decodes it afresh. appendHistory unseals.
func (i *Instance) sealHistory() {
	if len(i.historyTail) == 0 {
		return
	}
	i.sealedTail, i.historyTail = encodeEvents(i.historyTail), nil
}

// A sealed tail is the events one after another, each field in a fixed
// order: numbers as varints, strings and bytes length-first, the time as
// seconds, nanoseconds and zone offset (so a decoded event writes the same
// JSON), the error flagged when present, the data as its length plus one
// (0 for none). The instance id
// is left out: the instance has it. The form never leaves the process, so
// it needs no version; TestSealedEventsReadBackExactly holds it to the
// events' JSON.
const (
	sealedNoError   = 0
	sealedError     = 1
	sealedNoRetry   = 2  // an error that is not retryable
	sealedEventSize = 64 // a first guess at an event's sealed size, to size the buffer
)

// encodeEvents returns the sealed form of events.
func encodeEvents(events []*Event) []byte {
	w := sealWriter{buf: make([]byte, 0, len(events)*sealedEventSize)}
	for _, e := range events {
		w.uvarint(e.Seq)
		w.uvarint(e.Index)
		w.time(e.Time)
		w.str(e.Type)
		w.str(e.Step)
		w.str(e.Element)
		w.str(e.TaskID)
		w.varint(int64(e.Attempt))
		w.str(e.Worker)
		switch {
		case e.Error == nil:
			w.buf = append(w.buf, sealedNoError)
		case e.Error.NonRetryable:
			w.buf = append(w.buf, sealedNoRetry)
		default:
			w.buf = append(w.buf, sealedError)
		}
		if e.Error != nil {
			w.str(e.Error.Type)
			w.str(e.Error.Message)
		}
		w.bytes(e.Data)
		w.str(e.Detail)
	}
	return append([]byte(nil), w.buf...)
}

// decodeEvents reads a sealed tail back into events of instance id. The
// form is only ever what encodeEvents wrote in this process: anything else
// is a bug, and panics. The events copy what they hold out of buf: an
// unsealed tail's events go on in the history without it.
func decodeEvents(buf []byte, id string) []*Event {
	r := sealReader{buf: buf, what: "a sealed history tail"}
	str := func() string { return strings.Clone(r.str()) }
	var events []Event
	for len(r.buf) > 0 {
		e := Event{InstanceID: id, Seq: r.uvarint(), Index: r.uvarint(), Time: r.time()}
		e.Type, e.Step, e.Element, e.TaskID = str(), str(), str(), str()
		e.Attempt = int(r.varint())
		e.Worker = str()
		flag := r.take(1)[0]
		if flag != sealedNoError {
			e.Error = &TaskError{Type: str(), Message: str(), NonRetryable: flag == sealedNoRetry}
		}
		if data := r.bytes(); data != nil {
			e.Data = make(json.RawMessage, len(data)) // empty stays empty, not nil
			copy(e.Data, data)
		}
		e.Detail = str()
		events = append(events, e)
	}
	out := make([]*Event, len(events))
	for i := range events {
		out[i] = &events[i]
	}
	return out
}

// putChunk writes events as (the end of) the chunk starting at first. A
// chunk may already hold the chunk's first events: a restored snapshot
// stores partial chunks.
func (t *Txn) putChunk(instance string, first uint64, events []*Event) {
	chunk := &historyChunk{InstanceID: instance, First: first, Events: events}
	if raw, err := t.First(tableHistory, "id", instance, first); err == nil && raw != nil {
		chunk = raw.(*historyChunk).extended(events)
	}
	t.mustInsert(tableHistory, chunk)
}

// extended returns a copy of the chunk with events after its own; the
// stored chunk is left as it is.
func (c *historyChunk) extended(events []*Event) *historyChunk {
	old := c.Events
	return &historyChunk{InstanceID: c.InstanceID, First: c.First, Events: append(old[:len(old):len(old)], events...)}
}

// storeHistory writes events straight into chunks, partial ones included
// (restoring a format-1 snapshot, which has no instance tails).
func (t *Txn) storeHistory(instance string, events []Event) {
	for len(events) > 0 {
		first := chunkFirst(events[0].Seq)
		var batch []*Event
		for len(events) > 0 && chunkFirst(events[0].Seq) == first {
			e := events[0]
			batch = append(batch, &e)
			events = events[1:]
		}
		t.putChunk(instance, first, batch)
	}
}

// historyRecords yields an instance's history as snapshots hold it:
// chunks of up to 32 events in order, the instance's tail merged into the
// chunk it belongs to. Two nodes with the same history yield the same
// chunks however their tails were flushed.
func (t *Txn) historyRecords(inst *Instance, fn func(*historyChunk) error) error {
	chunks := t.historyChunks(inst.ID, 1)
	tail := inst.tail()
	if len(tail) > 0 {
		first := chunkFirst(tail[0].Seq)
		if n := len(chunks); n > 0 && chunks[n-1].First == first {
			chunks[n-1] = chunks[n-1].extended(tail)
		} else {
			chunks = append(chunks, &historyChunk{InstanceID: inst.ID, First: first, Events: tail})
		}
	}
	for _, c := range chunks {
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}

// note queues an event that the state alone does not show (a signal, a
// timer, an operator's reason); saveInstance writes it first.
func (i *Instance) note(e Event) { i.pending = append(i.pending, e) }

// saveInstance stores an instance and appends to its history every change
// from the version stored before: the noted events, then, in declaration
// order, each step's and element's change of status, then the instance's.
// History is derived from state changes in this one place, so it cannot
// disagree with the state.
func (f *FSM) saveInstance(tx *Txn, inst *Instance, now time.Time) {
	old := tx.Instance(inst.ID)
	events := inst.pending
	inst.pending = nil
	if old == nil {
		events = append([]Event{{Type: "instance_started", Data: inst.Input,
			Detail: inst.Workflow + " version " + strconv.FormatUint(inst.Version, 10)}}, events...)
	}
	// The workflow, once: its steps' order is the events' order, its
	// retention the ended instance's expiry.
	var wf *hcl.Workflow
	if wv := tx.WorkflowVersion(inst.Workflow, inst.Version); wv != nil {
		if w, err := f.workflow(wv); err == nil {
			wf = w
		}
	}
	var steps []*hcl.Step
	if wf != nil {
		steps = wf.Steps
	}
	for _, step := range steps {
		name := step.Name
		n := inst.Steps[name]
		var o *StepState
		if old != nil {
			o = old.Steps[name]
		}
		if n == nil {
			continue
		}
		// Stamp the completion order, which a compensation reverses.
		if n.Status == StepSucceeded && (o == nil || o.Status != StepSucceeded) && n.CompletedSeq == 0 {
			inst.CompletionSeq++
			n.CompletedSeq = inst.CompletionSeq
		}
		prev := StepWaiting
		if o != nil {
			prev = o.Status
		}
		// A step's start comes before its elements' events, its end after;
		// a for_each step's moves in between are its elements'.
		var end *Event
		if n.Status != prev && (len(n.Elements) == 0 || stepEnded(n.Status) || prev == StepWaiting) {
			e := tx.stepEvent(name, "", prev, n.Status, n.TaskID, n.Attempts, n.Error, n.Output)
			if n.ChildID != "" && n.Status == StepRunning {
				e = Event{Type: "child_started", Step: name, Detail: n.ChildID}
			}
			if prev == StepWaiting && !stepEnded(n.Status) {
				events = append(events, e)
			} else {
				end = &e
			}
		}
		for i, e := range n.Elements {
			prevEl := StepWaiting
			if o != nil && i < len(o.Elements) {
				prevEl = o.Elements[i].Status
			}
			if e.Status != prevEl {
				events = append(events, tx.stepEvent(name, e.Key, prevEl, e.Status, e.TaskID, e.Attempts, e.Error, e.Output))
			}
		}
		if end != nil {
			events = append(events, *end)
		}
	}
	if old == nil || old.Status != inst.Status {
		if inst.Status != InstanceRunning {
			e := Event{Type: "instance_" + inst.Status, Data: inst.Output}
			if inst.Error != nil {
				e.Step = inst.Error.Step
				e.Error = &TaskError{Type: inst.Error.Type, Message: inst.Error.Message}
			}
			events = append(events, e)
		}
	}
	for i := range events {
		inst.EventSeq++
		e := &events[i]
		e.InstanceID, e.Seq, e.Time, e.Index = inst.ID, inst.EventSeq, now, tx.Index
	}
	tx.appendHistory(inst, events)
	if inst.Terminal() {
		inst.sealHistory()
	}
	quiet := inst.quiet
	inst.quiet = false
	inst.ExpiresKey = 0
	if inst.Terminal() && !inst.EndedAt.IsZero() {
		retention := hcl.DefaultRetention
		if wf != nil {
			retention = wf.Retention
		}
		inst.ExpiresKey = uint64(inst.EndedAt.Add(retention).UnixNano())
	}
	tx.mustInsert(tableInstances, inst)
	tx.touch(inst.ID, inst.Terminal())
	if old == nil {
		tx.addInstanceRef(inst)
	}
	// A child that just ended moves its parent on; a triggered instance
	// that ended lets a buffered fire start.
	if inst.Terminal() && (old == nil || !old.Terminal()) {
		if inst.Parent != nil && !quiet {
			f.childEnded(tx, inst, now)
		}
		if inst.Trigger != "" {
			f.triggeredInstanceEnded(tx, inst, now)
		}
	}
}

// stepEvent names a step's (or element's) change of status.
func (tx *Txn) stepEvent(step, element, from, to, taskID string, attempts int, err *TaskError, output json.RawMessage) Event {
	e := Event{Step: step, Element: element, TaskID: taskID, Attempt: attempts}
	switch to {
	case StepScheduled:
		e.Type = "step_scheduled"
		if from == StepRetryWait || from == StepRunning {
			e.Type = "task_requeued"
		}
		if t := tx.Task(taskID); t != nil {
			e.Data = t.Input
		}
	case StepRunning:
		e.Type = "task_leased"
		if t := tx.Task(taskID); t != nil {
			e.Worker = t.WorkerID
		}
	case StepRetryWait:
		e.Type, e.Error = "attempt_failed", err
		e.Detail = "retrying after a backoff"
	case StepSucceeded:
		e.Type, e.Data = "step_succeeded", output
	case StepFailed:
		e.Type, e.Error = "step_failed", err
	case StepSkipped:
		e.Type = "step_skipped"
	case StepCancelled:
		// An attempt whose lease ran out while cancelling ends its step
		// cancelled; the error says so.
		e.Type, e.Error = "step_cancelled", err
	case StepSleeping:
		e.Type = "sleep_started"
	case StepWaitingSignal:
		e.Type = "signal_awaited"
	case StepWaiting:
		e.Type = "step_reset" // an operator's retry or rerun
	case StepCompensating:
		e.Type, e.TaskID = "compensation_scheduled", ""
	case StepCompensated:
		e.Type = "step_compensated"
	default:
		e.Type = "step_" + to
	}
	if element != "" && strings.HasPrefix(e.Type, "step_") {
		e.Type = "element_" + strings.TrimPrefix(e.Type, "step_")
	}
	return e
}

// History returns an instance's events after seq, in order, at most limit:
// those of its stored chunks, then its tail.
func (t *Txn) History(instance string, after uint64, limit int) []*Event {
	out := []*Event{}
	add := func(events []*Event) bool {
		for _, e := range events {
			if e.Seq <= after {
				continue
			}
			if limit > 0 && len(out) >= limit {
				return false
			}
			out = append(out, e)
		}
		return true
	}
	for _, c := range t.historyChunks(instance, chunkFirst(after+1)) {
		if !add(c.Events) {
			return out
		}
	}
	if inst := t.Instance(instance); inst != nil {
		add(inst.tail())
	}
	return out
}

// historyChunks lists an instance's history records from the one starting
// at first.
func (t *Txn) historyChunks(instance string, first uint64) []*historyChunk {
	var out []*historyChunk
	it, err := t.LowerBound(tableHistory, "id", instance, first)
	if err != nil {
		return out
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		c := raw.(*historyChunk)
		if c.InstanceID != instance {
			break
		}
		out = append(out, c)
	}
	return out
}
