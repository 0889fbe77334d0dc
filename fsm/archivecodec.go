package fsm

import (
	"sync"
	"time"
)

// An archived instance's blob is the instance, its sealed history tail and
// its tasks in the process's own binary form (sealed.go), every exported
// field in declaration order. Written by hand rather than by msgpack's
// reflection, it costs a chain3 instance about a quarter of the time to
// write and two fifths to read, and reads back with its strings sharing
// the blob. Only exported
// fields are kept, as msgpack kept them: the caller restores the rest.
// TestArchiveCodecKeepsEveryField fills every exported field of the types
// (and of any field added later) and reads them back.

// archiveBuffers hold the buffers blobs are written in before they are
// copied out at their size.
var archiveBuffers = sync.Pool{New: func() any { return &sealWriter{buf: make([]byte, 0, 2048)} }}

// encodeArchiveIn encodes a blob into a chunk of the given retention
// (archivechunks.go), or, with no chunks, into an allocation of its own.
func encodeArchiveIn(chunks *blobChunks, retention uint64, b *archiveBlob) []byte {
	w := archiveBuffers.Get().(*sealWriter)
	defer archiveBuffers.Put(w)
	w.buf = w.buf[:0]
	w.instance(b.Instance)
	w.bytes(b.Tail)
	w.uvarint(uint64(len(b.Tasks)))
	for _, t := range b.Tasks {
		w.task(t)
	}
	return chunks.place(retention, w.buf) // exactly its size
}

// decodeArchive reads a blob; without tasks it stops after the tail.
func decodeArchive(blob []byte, id string, tasks bool) (*Instance, []byte, []*Task) {
	r := sealReader{buf: blob, what: "archived instance " + id}
	inst := r.instance()
	tail := r.bytes()
	if !tasks {
		return inst, tail, nil
	}
	var out []*Task
	if n := r.uvarint(); n > 0 {
		if n > uint64(len(r.buf)) {
			r.fail()
		}
		out = make([]*Task, n)
		for i := range out {
			out[i] = r.task()
		}
	}
	if len(r.buf) != 0 {
		r.fail()
	}
	return inst, tail, out
}

func (w *sealWriter) instance(i *Instance) {
	w.str(i.ID)
	w.str(i.Workflow)
	w.uvarint(i.Version)
	w.str(i.Status)
	w.bytes(i.Input)
	w.bytes(i.Output)
	w.bool(i.Error != nil)
	if e := i.Error; e != nil {
		w.str(e.Step)
		w.str(e.Type)
		w.str(e.Message)
	}
	w.bool(i.Steps != nil)
	w.uvarint(uint64(len(i.Steps)))
	for name, s := range i.Steps {
		w.str(name)
		w.bool(s != nil)
		if s != nil {
			w.step(s)
		}
	}
	w.time(i.CreatedAt)
	w.time(i.UpdatedAt)
	w.time(i.EndedAt)
	w.uvarint(i.CreateIndex)
	w.uvarint(i.ModifyIndex)
	w.uvarint(i.EventSeq)
	w.uvarint(i.CompletionSeq)
	w.uvarint(i.ChildSeq)
	w.str(i.CancelReason)
	w.bool(i.Parent != nil)
	if p := i.Parent; p != nil {
		w.str(p.InstanceID)
		w.str(p.Step)
	}
	w.str(i.Trigger)
	w.strs(i.TaskIDs)
	w.uvarint(i.ExpiresKey)
}

func (r *sealReader) instance() *Instance {
	i := &Instance{}
	i.ID = r.str()
	i.Workflow = r.str()
	i.Version = r.uvarint()
	i.Status = r.str()
	i.Input = r.bytes()
	i.Output = r.bytes()
	if r.bool() {
		i.Error = &InstanceError{Step: r.str(), Type: r.str(), Message: r.str()}
	}
	hasSteps, n := r.bool(), r.uvarint()
	if n > uint64(len(r.buf)) {
		r.fail()
	}
	if hasSteps {
		i.Steps = make(map[string]*StepState, n)
		// One allocation for the steps, as a clone makes them.
		states := make([]StepState, n)
		for k := range states {
			name := r.str()
			if r.bool() {
				r.step(&states[k])
				i.Steps[name] = &states[k]
			} else {
				i.Steps[name] = nil
			}
		}
	}
	i.CreatedAt = r.time()
	i.UpdatedAt = r.time()
	i.EndedAt = r.time()
	i.CreateIndex = r.uvarint()
	i.ModifyIndex = r.uvarint()
	i.EventSeq = r.uvarint()
	i.CompletionSeq = r.uvarint()
	i.ChildSeq = r.uvarint()
	i.CancelReason = r.str()
	if r.bool() {
		i.Parent = &ParentRef{InstanceID: r.str(), Step: r.str()}
	}
	i.Trigger = r.str()
	i.TaskIDs = r.strs()
	i.ExpiresKey = r.uvarint()
	return i
}

func (w *sealWriter) step(s *StepState) {
	w.str(s.Status)
	w.bytes(s.Output)
	w.taskError(s.Error)
	w.varint(int64(s.Attempts))
	w.str(s.TaskID)
	w.time(s.ScheduledAt)
	w.time(s.StartedAt)
	w.time(s.EndedAt)
	w.bool(s.Elements != nil)
	w.uvarint(uint64(len(s.Elements)))
	for _, e := range s.Elements {
		w.bool(e != nil)
		if e != nil {
			w.element(e)
		}
	}
	w.bool(s.ForEachMap)
	w.uvarint(s.CompletedSeq)
	w.str(s.CompensationTaskID)
	w.str(s.ChildID)
}

func (r *sealReader) step(s *StepState) {
	s.Status = r.str()
	s.Output = r.bytes()
	s.Error = r.taskError()
	s.Attempts = int(r.varint())
	s.TaskID = r.str()
	s.ScheduledAt = r.time()
	s.StartedAt = r.time()
	s.EndedAt = r.time()
	hasElements, n := r.bool(), r.uvarint()
	if n > uint64(len(r.buf)) {
		r.fail()
	}
	if hasElements {
		s.Elements = make([]*ElementState, n)
		elems := make([]ElementState, n)
		for k := range elems {
			if r.bool() {
				r.element(&elems[k])
				s.Elements[k] = &elems[k]
			}
		}
	}
	s.ForEachMap = r.bool()
	s.CompletedSeq = r.uvarint()
	s.CompensationTaskID = r.str()
	s.ChildID = r.str()
}

func (w *sealWriter) element(e *ElementState) {
	w.str(e.Key)
	w.bool(e.Index)
	w.bytes(e.Value)
	w.str(e.Status)
	w.bytes(e.Output)
	w.taskError(e.Error)
	w.varint(int64(e.Attempts))
	w.str(e.TaskID)
}

func (r *sealReader) element(e *ElementState) {
	e.Key = r.str()
	e.Index = r.bool()
	e.Value = r.bytes()
	e.Status = r.str()
	e.Output = r.bytes()
	e.Error = r.taskError()
	e.Attempts = int(r.varint())
	e.TaskID = r.str()
}

func (w *sealWriter) task(t *Task) {
	w.str(t.ID)
	w.uvarint(t.Seq)
	w.str(t.InstanceID)
	w.str(t.Step)
	w.str(t.Activity)
	w.str(t.Queue)
	w.varint(int64(t.Priority))
	w.bool(t.Element != nil)
	if t.Element != nil {
		w.varint(int64(*t.Element))
	}
	w.bool(t.Compensation)
	w.str(t.Service)
	w.str(t.IdempotencyKey)
	w.bytes(t.Input)
	w.str(t.Status)
	w.varint(int64(t.Attempt))
	w.varint(int64(t.Timeout))
	w.varint(int64(t.HeartbeatTimeout))
	w.varint(int64(t.ScheduleTimeout))
	w.str(t.Token)
	w.str(t.WorkerID)
	w.time(t.LeaseDeadline)
	w.time(t.HeartbeatDeadline)
	w.bytes(t.Details)
	w.uvarint(t.DeadlineKey)
	w.time(t.ReadyAt)
	w.time(t.CreatedAt)
	w.uvarint(t.CreateIndex)
	w.uvarint(t.ModifyIndex)
}

func (r *sealReader) task() *Task {
	t := &Task{}
	t.ID = r.str()
	t.Seq = r.uvarint()
	t.InstanceID = r.str()
	t.Step = r.str()
	t.Activity = r.str()
	t.Queue = r.str()
	t.Priority = int(r.varint())
	if r.bool() {
		e := int(r.varint())
		t.Element = &e
	}
	t.Compensation = r.bool()
	t.Service = r.str()
	t.IdempotencyKey = r.str()
	t.Input = r.bytes()
	t.Status = r.str()
	t.Attempt = int(r.varint())
	t.Timeout = time.Duration(r.varint())
	t.HeartbeatTimeout = time.Duration(r.varint())
	t.ScheduleTimeout = time.Duration(r.varint())
	t.Token = r.str()
	t.WorkerID = r.str()
	t.LeaseDeadline = r.time()
	t.HeartbeatDeadline = r.time()
	t.Details = r.bytes()
	t.DeadlineKey = r.uvarint()
	t.ReadyAt = r.time()
	t.CreatedAt = r.time()
	t.CreateIndex = r.uvarint()
	t.ModifyIndex = r.uvarint()
	return t
}

func (w *sealWriter) taskError(e *TaskError) {
	w.bool(e != nil)
	if e != nil {
		w.str(e.Type)
		w.str(e.Message)
		w.bool(e.NonRetryable)
	}
}

func (r *sealReader) taskError() *TaskError {
	if !r.bool() {
		return nil
	}
	return &TaskError{Type: r.str(), Message: r.str(), NonRetryable: r.bool()}
}

// strs writes a list of strings, nil and empty apart.
func (w *sealWriter) strs(v []string) {
	if v == nil {
		w.uvarint(0)
		return
	}
	w.uvarint(uint64(len(v)) + 1)
	for _, s := range v {
		w.str(s)
	}
}

func (r *sealReader) strs() []string {
	n := r.uvarint()
	if n == 0 {
		return nil
	}
	if n-1 > uint64(len(r.buf)) {
		r.fail()
	}
	out := make([]string, n-1)
	for k := range out {
		out[k] = r.str()
	}
	return out
}
