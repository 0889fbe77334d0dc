package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lockstep-io/lockstep/internal/workloads"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// logBuilder numbers commands like raft would, so tests can feed the same
// log to several FSMs.
type logBuilder struct {
	t    *testing.T
	logs []*raft.Log
}

func (b *logBuilder) add(mt MessageType, msg any) *raft.Log {
	b.t.Helper()
	data, err := Encode(mt, msg)
	if err != nil {
		b.t.Fatal(err)
	}
	l := &raft.Log{Index: uint64(len(b.logs) + 1), Term: 1, Type: raft.LogCommand, Data: data}
	b.logs = append(b.logs, l)
	return l
}

// harness applies commands to one FSM as they are built.
type harness struct {
	t   *testing.T
	fsm *FSM
	b   *logBuilder
	now time.Time
}

func newHarness(t *testing.T) *harness {
	return &harness{t: t, fsm: New(nil), b: &logBuilder{t: t}, now: t0}
}

func (h *harness) apply(mt MessageType, msg any) any {
	h.t.Helper()
	return h.fsm.Apply(h.b.add(mt, msg))
}

func (h *harness) hdr() Header {
	h.now = h.now.Add(time.Millisecond)
	return Header{Time: h.now}
}

func diamondSource(t *testing.T) string {
	src, err := os.ReadFile(filepath.Join("..", "examples", "diamond.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	return string(src)
}

func (h *harness) register(src string) *RegisterWorkflowResponse {
	h.t.Helper()
	res := h.apply(RegisterWorkflowType, &RegisterWorkflowRequest{Header: h.hdr(), Source: src})
	r, ok := res.(*RegisterWorkflowResponse)
	if !ok {
		h.t.Fatalf("register: %v", res)
	}
	return r
}

func (h *harness) start(id, wf, input string) any {
	return h.apply(StartInstanceType, &StartInstanceRequest{Header: h.hdr(), ID: id, Workflow: wf, Input: json.RawMessage(input)})
}

// leaseAll leases every pending task of the default queue to worker w.
func (h *harness) leaseAll(w string) []*Task {
	h.t.Helper()
	var leases []Lease
	for _, task := range h.fsm.State().Read().PendingTasks("default", 0) {
		leases = append(leases, Lease{TaskID: task.ID, WorkerID: w})
	}
	if len(leases) == 0 {
		return nil
	}
	return h.apply(LeaseTasksType, &LeaseTasksRequest{Header: h.hdr(), Leases: leases}).(*LeaseTasksResponse).Granted
}

func (h *harness) complete(task *Task) any {
	return h.apply(CompleteTaskType, &CompleteTaskRequest{Header: h.hdr(), TaskID: task.ID, Token: task.Token, Output: task.Input})
}

// fireDue fires every timer due at or before at.
func (h *harness) fireDue(at time.Time) []string {
	h.t.Helper()
	var ids []string
	for _, tm := range h.fsm.State().Read().DueTimers(0) {
		if !tm.Due.After(at) {
			ids = append(ids, tm.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	return h.apply(FireTimersType, &FireTimersRequest{Header: Header{Time: at}, Timers: ids}).(*FireTimersResponse).Fired
}

// runToEnd plays a noop worker until no task is left.
func (h *harness) runToEnd() {
	h.t.Helper()
	for i := 0; i < 100; i++ {
		tasks := h.leaseAll("w1")
		if len(tasks) == 0 {
			return
		}
		for _, task := range tasks {
			if res, ok := h.complete(task).(*Error); ok {
				h.t.Fatalf("complete %s: %v", task.ID, res)
			}
		}
	}
	h.t.Fatal("instance did not settle")
}

func TestDiamondRunsToCompletion(t *testing.T) {
	h := newHarness(t)
	r := h.register(diamondSource(t))
	if r.Name != "diamond" || r.Version != 1 || !r.Created {
		t.Fatalf("register = %+v", r)
	}
	h.start("i1", "diamond", `{"n": 7}`)

	// Only a is ready; after it, b and c run in parallel; then d.
	var rounds [][]string
	for {
		tasks := h.leaseAll("w1")
		if len(tasks) == 0 {
			break
		}
		var names []string
		for _, task := range tasks {
			names = append(names, task.Step)
			if task.Attempt != 1 || task.Token == "" || task.IdempotencyKey != "i1/"+task.Step {
				t.Fatalf("task = %+v", task)
			}
		}
		rounds = append(rounds, names)
		for _, task := range tasks {
			h.complete(task)
		}
	}
	if got := fmt.Sprint(rounds); got != "[[a] [b c] [d]]" {
		t.Fatalf("rounds = %s", got)
	}
	inst := h.fsm.State().Read().Instance("i1")
	if inst.Status != InstanceCompleted {
		t.Fatalf("status = %s (%+v)", inst.Status, inst.Error)
	}
	if string(inst.Output) != `{"result":{"b":7,"c":1}}` {
		t.Fatalf("output = %s", inst.Output)
	}
}

func TestRegisterUnchangedSourceKeepsVersion(t *testing.T) {
	h := newHarness(t)
	src := diamondSource(t)
	h.register(src)
	if r := h.register(src); r.Version != 1 || r.Created {
		t.Fatalf("re-register = %+v", r)
	}
	if r := h.register(src + "\n# changed\n"); r.Version != 2 || !r.Created {
		t.Fatalf("changed = %+v", r)
	}
	if got := len(h.fsm.State().Read().WorkflowVersions("diamond")); got != 2 {
		t.Fatalf("versions = %d", got)
	}
	if wfs := h.fsm.State().Read().Workflows(); len(wfs) != 1 || wfs[0].Version != 2 {
		t.Fatalf("workflows = %+v", wfs)
	}
}

func TestStartIsIdempotentByID(t *testing.T) {
	h := newHarness(t)
	h.register(diamondSource(t))
	if r := h.start("i1", "diamond", `{"n":1}`).(*StartInstanceResponse); !r.Created {
		t.Fatal("first start not created")
	}
	if r := h.start("i1", "diamond", `{ "n" : 1 }`).(*StartInstanceResponse); r.Created || r.ID != "i1" {
		t.Fatalf("repeat = %+v", r)
	}
	if e, ok := h.start("i1", "diamond", `{"n":2}`).(*Error); !ok || e.Code != CodeConflict {
		t.Fatalf("different input = %v", e)
	}
	if e, ok := h.start("i2", "nope", `{}`).(*Error); !ok || e.Code != CodeNotFound {
		t.Fatalf("unknown workflow = %v", e)
	}
	if n := len(h.fsm.State().Read().PendingTasks("default", 0)); n != 1 {
		t.Fatalf("pending tasks = %d, want 1", n)
	}
}

func TestStaleTokenIsRejected(t *testing.T) {
	h := newHarness(t)
	h.register(diamondSource(t))
	h.start("i1", "diamond", `{"n":1}`)
	task := h.leaseAll("w1")[0]

	forged := *task
	forged.Token = "999.0"
	if e, ok := h.complete(&forged).(*Error); !ok || e.Code != CodeStaleToken {
		t.Fatalf("forged token = %v", e)
	}
	if _, ok := h.complete(task).(*TaskResultResponse); !ok {
		t.Fatal("valid completion refused")
	}
	// A repeated completion with the (now spent) token changes nothing.
	if e, ok := h.complete(task).(*Error); !ok || e.Code != CodeStaleToken {
		t.Fatalf("duplicate completion = %v", e)
	}
	if e, ok := h.complete(&Task{ID: "t404"}).(*Error); !ok || e.Code != CodeNotFound {
		t.Fatalf("unknown task = %v", e)
	}
}

func TestLeaseExpiryRequeuesNeverEarly(t *testing.T) {
	h := newHarness(t)
	h.register(strings.Replace(diamondSource(t), `activity = "noop"
    input    = { n = input.n }`, `activity = "noop"
    timeout  = "10s"
    input    = { n = input.n }`, 1))
	h.start("i1", "diamond", `{"n":1}`)
	task := h.leaseAll("w1")[0]

	early := h.apply(ExpireLeasesType, &ExpireLeasesRequest{Header: Header{Time: task.LeaseDeadline.Add(-time.Nanosecond)},
		Leases: []ExpiredLease{{TaskID: task.ID, Token: task.Token}}}).(*ExpireLeasesResponse)
	if len(early.Expired) != 0 {
		t.Fatal("lease expired before its deadline")
	}
	res := h.apply(ExpireLeasesType, &ExpireLeasesRequest{Header: Header{Time: task.LeaseDeadline},
		Leases: []ExpiredLease{{TaskID: task.ID, Token: task.Token}}}).(*ExpireLeasesResponse)
	if len(res.Expired) != 1 {
		t.Fatal("lease not expired at its deadline")
	}
	// The zombie worker's completion is fenced off.
	if e, ok := h.complete(task).(*Error); !ok || e.Code != CodeStaleToken {
		t.Fatalf("zombie completion = %v", e)
	}
	// The timeout is a failed attempt: the step waits out its backoff (the
	// default policy: 1s plus up to 10% jitter), then the task is pending.
	st := h.fsm.State().Read().Instance("i1").Steps["a"]
	if st.Status != StepRetryWait || st.Error == nil || st.Error.Type != "timeout" {
		t.Fatalf("after expiry: %+v", st)
	}
	if len(h.leaseAll("w2")) != 0 {
		t.Fatal("a task was leased during its backoff")
	}
	if fired := h.fireDue(task.LeaseDeadline.Add(999 * time.Millisecond)); len(fired) != 0 {
		t.Fatalf("backoff timer fired early: %v", fired)
	}
	if fired := h.fireDue(task.LeaseDeadline.Add(1100 * time.Millisecond)); len(fired) != 1 {
		t.Fatal("backoff timer did not fire")
	}
	if fired := h.fireDue(task.LeaseDeadline.Add(time.Hour)); len(fired) != 0 {
		t.Fatal("a timer fired twice")
	}
	again := h.leaseAll("w2")
	if len(again) != 1 || again[0].ID != task.ID || again[0].Attempt != 2 || again[0].Token == task.Token {
		t.Fatalf("re-lease = %+v", again)
	}
	h.complete(again[0])
	h.runToEnd()
	if st := h.fsm.State().Read().Instance("i1"); st.Status != InstanceCompleted || st.Steps["a"].Attempts != 2 {
		t.Fatalf("instance = %+v", st)
	}
}

func TestFailedTaskFailsInstance(t *testing.T) {
	h := newHarness(t)
	h.register(diamondSource(t))
	h.start("i1", "diamond", `{"n":1}`)
	h.complete(h.leaseAll("w1")[0])
	tasks := h.leaseAll("w1") // b and c
	res := h.apply(FailTaskType, &FailTaskRequest{Header: h.hdr(), TaskID: tasks[0].ID, Token: tasks[0].Token,
		Error: TaskError{Type: "boom", Message: "it broke", NonRetryable: true}}).(*TaskResultResponse)
	if res.InstanceStatus != InstanceFailed {
		t.Fatalf("status = %s", res.InstanceStatus)
	}
	inst := h.fsm.State().Read().Instance("i1")
	if inst.Error == nil || inst.Error.Step != tasks[0].Step || inst.Error.Type != "boom" {
		t.Fatalf("error = %+v", inst.Error)
	}
	if inst.Steps["d"].Status != StepCancelled || inst.Steps[tasks[1].Step].Status != StepCancelled {
		t.Fatalf("steps = %+v", inst.Steps)
	}
	// The sibling's late completion is refused; nothing is left to dispatch.
	if _, ok := h.complete(tasks[1]).(*Error); !ok {
		t.Fatal("completion on failed instance accepted")
	}
	if n := len(h.fsm.State().Read().PendingTasks("default", 0)); n != 0 {
		t.Fatalf("pending = %d", n)
	}
}

func TestInputErrorFailsInstanceWithPosition(t *testing.T) {
	h := newHarness(t)
	h.register(diamondSource(t))
	h.start("i1", "diamond", `{"m": 1}`) // no n
	inst := h.fsm.State().Read().Instance("i1")
	if inst.Status != InstanceFailed || inst.Error.Type != "input_error" || !strings.Contains(inst.Error.Message, ".hcl:") {
		t.Fatalf("instance = %+v %+v", inst.Status, inst.Error)
	}
}

// fataler is what the snapshot helpers need of *testing.T and *rapid.T.
type fataler interface {
	Helper()
	Fatal(args ...any)
}

func snapshotBytes(t fataler, f *FSM) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := f.State().WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// restoreFrom returns a new FSM restored from snap.
func restoreFrom(t fataler, snap []byte) *FSM {
	t.Helper()
	f := New(nil)
	if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	return f
}

// buildBusyLog makes a log that exercises every command.
func buildBusyLog(t *testing.T) *harness {
	h := newHarness(t)
	h.register(diamondSource(t))
	h.register(fanout)
	h.register(approval)
	for i := 0; i < 20; i++ {
		h.start(fmt.Sprintf("a%02d", i), "approval", `{}`)
		if i%2 == 0 {
			h.signal(fmt.Sprintf("a%02d", i), "approve", fmt.Sprintf(`{"by": "u%d"}`, i), fmt.Sprintf("r%d", i))
		}
		h.start(fmt.Sprintf("i%02d", i), "diamond", fmt.Sprintf(`{"n": %d, "tags": {"z": 1, "a": [1, 2.5]}}`, i))
		h.start(fmt.Sprintf("f%02d", i), "fan", fmt.Sprintf(`{"items": ["x", "y", "z%d"], "tags": {"b": %d, "a": 1}}`, i, i))
	}
	tasks := h.leaseAll("w1")
	for i, task := range tasks {
		switch i % 4 {
		case 0:
			h.complete(task)
		case 1:
			h.apply(FailTaskType, &FailTaskRequest{Header: h.hdr(), TaskID: task.ID, Token: task.Token, Error: TaskError{Type: "x", Message: "y"}})
		case 2:
			h.apply(ExpireLeasesType, &ExpireLeasesRequest{Header: Header{Time: task.LeaseDeadline}, Leases: []ExpiredLease{{TaskID: task.ID, Token: task.Token}}})
		case 3:
			h.apply(FailTaskType, &FailTaskRequest{Header: h.hdr(), TaskID: task.ID, Token: task.Token, Error: TaskError{Type: "x", Message: "final", NonRetryable: true}})
		}
	}
	h.runToEnd()
	h.fireDue(h.now.Add(10 * time.Minute)) // the retries' backoffs end
	h.runToEnd()
	for i := 1; i < 20; i += 2 {
		h.signal(fmt.Sprintf("a%02d", i), "approve", `{"by": "late"}`, "")
	}
	h.register(sagaWithUndo)
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("o%02d", i)
		h.start(id, "order", `{}`)
		h.completeActivities("payments.charge")
		h.cancel(id, "changed")
		h.runToEnd()
	}
	h.fireDue(h.now.Add(48 * time.Hour)) // the signal waits that got none time out
	h.runToEnd()
	return h
}

func TestSameLogSameSnapshotBytes(t *testing.T) {
	h := buildBusyLog(t)
	other := New(nil)
	for _, l := range h.b.logs {
		other.Apply(l)
	}
	a, b := snapshotBytes(t, h.fsm), snapshotBytes(t, other)
	if !bytes.Equal(a, b) {
		t.Fatalf("snapshots differ (%d vs %d bytes)", len(a), len(b))
	}
	if len(a) < 1000 {
		t.Fatalf("snapshot suspiciously small: %d bytes", len(a))
	}
}

// Batches of any size leave exactly the state of one-by-one application.
func TestApplyBatchEqualsApply(t *testing.T) {
	h := buildBusyLog(t)
	want := snapshotBytes(t, h.fsm)
	for _, size := range []int{1, 2, 7, 64, len(h.b.logs)} {
		f := New(nil)
		for i := 0; i < len(h.b.logs); i += size {
			end := min(i+size, len(h.b.logs))
			res := f.ApplyBatch(h.b.logs[i:end])
			if len(res) != end-i {
				t.Fatalf("batch of %d gave %d results", end-i, len(res))
			}
		}
		if !bytes.Equal(want, snapshotBytes(t, f)) {
			t.Fatalf("batches of %d diverge from one-by-one application", size)
		}
	}
	// Non-command entries in a batch get nil and change nothing.
	f := New(nil)
	if res := f.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogConfiguration}}); res[0] != nil || f.State().Read().LatestIndex() != 0 {
		t.Fatal("a configuration entry changed the state")
	}
}

type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { return nil }

// A node shutting down abandons the snapshot it is writing rather than
// make raft's shutdown wait for it (minutes with a large state): Persist
// stops at its next record and cancels the sink.
func TestShutdownAbandonsASnapshot(t *testing.T) {
	h := buildBusyLog(t)
	snap, err := h.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	h.fsm.AbortSnapshots()
	sink := &memSink{}
	if err := snap.Persist(sink); !errors.Is(err, ErrSnapshotAborted) || !sink.cancelled {
		t.Fatalf("persist after AbortSnapshots = %v (cancelled %v, %d bytes)", err, sink.cancelled, sink.Len())
	}
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	h := buildBusyLog(t)
	snap, err := h.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	restored := New(nil)
	changed := restored.State().Changed()
	if err := restored.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("restore did not wake readers of the old state")
	}
	if !bytes.Equal(sink.Bytes(), snapshotBytes(t, restored)) {
		t.Fatal("snapshot -> restore -> snapshot differs")
	}
	if got, want := restored.State().Read().LatestIndex(), uint64(len(h.b.logs)); got != want {
		t.Fatalf("index = %d, want %d", got, want)
	}
	// Instances by workflow are derived on restore, not stored.
	ids := func(f *FSM, wf string) (out []string) {
		for _, inst := range f.State().Read().Instances(wf, "", 0) {
			out = append(out, inst.ID)
		}
		return out
	}
	for _, wf := range []string{"chain3", "diamond", "approval"} {
		if got, want := ids(restored, wf), ids(h.fsm, wf); !reflect.DeepEqual(got, want) || len(want) == 0 && wf == "diamond" {
			t.Fatalf("instances of %s after restore = %v, want %v", wf, got, want)
		}
	}
	// The restored FSM keeps applying where the original left off.
	next := &harness{t: t, fsm: restored, b: h.b, now: h.now}
	next.start("after", "diamond", `{"n":1}`)
	next.runToEnd()
	if st := restored.State().Read().Instance("after").Status; st != InstanceCompleted {
		t.Fatalf("after restore: %s", st)
	}
}

func TestRestoreRejectsBadSnapshots(t *testing.T) {
	h := buildBusyLog(t)
	good := snapshotBytes(t, h.fsm)
	cases := map[string][]byte{
		"empty":     nil,
		"not ours":  []byte(`{"magic":"other","format":1}` + "\n"),
		"future":    bytes.Replace(good, []byte(`"format":3`), []byte(`"format":99`), 1),
		"truncated": good[:len(good)/2],
	}
	for name, data := range cases {
		f := New(nil)
		if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err == nil {
			t.Errorf("%s: restore accepted", name)
		}
	}
}

// A format-1 snapshot (one "events" record per event) restores, its events
// gathered into history chunks.
func TestRestoreReadsFormat1(t *testing.T) {
	h := buildBusyLog(t)
	good := snapshotBytes(t, h.fsm)
	lines := bytes.Split(bytes.TrimSpace(good), []byte("\n"))
	var hdr snapshotHeader
	if err := json.Unmarshal(lines[0], &hdr); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	records := 0
	for _, l := range lines[1:] {
		var rec snapshotRecord
		if err := json.Unmarshal(l, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Table != tableHistory {
			out, records = append(out, l), records+1
			continue
		}
		var c historyChunk
		if err := json.Unmarshal(rec.Record, &c); err != nil {
			t.Fatal(err)
		}
		for _, e := range c.Events {
			raw, _ := json.Marshal(e)
			line, _ := json.Marshal(snapshotRecord{Table: "events", Record: raw})
			out, records = append(out, line), records+1
		}
	}
	hdr.Format, hdr.Records = 1, records
	head, _ := json.Marshal(hdr)
	v1 := append(append(head, '\n'), bytes.Join(out, []byte("\n"))...)
	f := New(nil)
	if err := f.Restore(io.NopCloser(bytes.NewReader(append(v1, '\n')))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snapshotBytes(t, f), good) {
		t.Fatal("a format-1 snapshot restored to a different state")
	}
}

func TestUnknownCommands(t *testing.T) {
	f := New(nil)
	if res := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: []byte{byte(100 | IgnoreUnknownTypeFlag), codecVersion}}); res != nil {
		t.Fatalf("ignorable unknown command returned %v", res)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("unknown command without the ignore flag did not panic")
		}
	}()
	f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: []byte{100, codecVersion}})
}

func TestCorruptCommandPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("corrupt command did not panic")
		}
	}()
	New(nil).Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: []byte{byte(StartInstanceType), codecVersion, '{'}})
}

func BenchmarkDiamondInstance(b *testing.B) {
	t := &testing.T{}
	h := newHarness(t)
	h.register(diamondSource(t))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.start(fmt.Sprintf("b%d", i), "diamond", `{"n":1}`)
		h.runToEnd()
	}
}

func TestStartChecksDeclaredInput(t *testing.T) {
	h := newHarness(t)
	h.register(`workflow "typed" {
  input {
    n     = number
    label = optional(string, "none")
  }
  step "a" {
    activity = "noop"
    input    = { n = input.n, label = input.label }
  }
}
`)
	if e, ok := h.start("bad", "typed", `{"n": "many"}`).(*Error); !ok || e.Code != CodeInvalidInput || !strings.Contains(e.Message, "input.n") {
		t.Fatalf("bad input = %v", e)
	}
	if h.fsm.State().Read().Instance("bad") != nil {
		t.Fatal("an instance was created from invalid input")
	}
	if r, ok := h.start("good", "typed", `{"n": "3"}`).(*StartInstanceResponse); !ok || !r.Created {
		t.Fatal("valid input refused")
	}
	if got := string(h.fsm.State().Read().Instance("good").Input); got != `{"label":"none","n":3}` {
		t.Fatalf("stored input = %s", got)
	}
	// The same request again is recognised, although the stored form differs.
	if r, ok := h.start("good", "typed", `{"n": "3"}`).(*StartInstanceResponse); !ok || r.Created {
		t.Fatal("repeated start not recognised")
	}
	if e, ok := h.start("good", "typed", `{"n": 4}`).(*Error); !ok || e.Code != CodeConflict {
		t.Fatalf("different input = %v", e)
	}
	task := h.leaseAll("w")[0]
	if string(task.Input) != `{"label":"none","n":3}` {
		t.Fatalf("task input = %s", task.Input)
	}
}

func TestIdempotentCommands(t *testing.T) {
	h := newHarness(t)
	h.register(diamondSource(t))
	wrap := func(key, fp string, mt MessageType, msg any) any {
		inner, _ := Encode(mt, msg)
		return h.apply(IdempotentType, &IdempotentRequest{Header: h.hdr(), Key: key, Fingerprint: fp, Command: inner})
	}
	start := &StartInstanceRequest{Header: h.hdr(), ID: "minted-1", Workflow: "diamond", Input: json.RawMessage(`{"n":1}`)}
	first := wrap("k", "fp", StartInstanceType, start)
	retry := &StartInstanceRequest{Header: h.hdr(), ID: "minted-2", Workflow: "diamond", Input: json.RawMessage(`{"n":1}`)}
	again := wrap("k", "fp", StartInstanceType, retry)
	if r1, r2 := first.(*StartInstanceResponse), again.(*StartInstanceResponse); r1.ID != "minted-1" || r2.ID != "minted-1" || !r2.Created {
		t.Fatalf("first %+v, again %+v", r1, r2)
	}
	if h.fsm.State().Read().Instance("minted-2") != nil {
		t.Fatal("the repeat ran")
	}
	if e, ok := wrap("k", "other", StartInstanceType, retry).(*Error); !ok || e.Code != CodeConflict {
		t.Fatalf("reused key = %v", e)
	}
	missing := &StartInstanceRequest{Header: h.hdr(), ID: "x", Workflow: "nope"}
	for i := 0; i < 2; i++ {
		if e, ok := wrap("k2", "fp2", StartInstanceType, missing).(*Error); !ok || e.Code != CodeNotFound {
			t.Fatalf("error answer %d = %v", i, e)
		}
	}
	if e, ok := wrap("k3", "fp", LeaseTasksType, &LeaseTasksRequest{Header: h.hdr()}).(*Error); !ok || e.Code != CodeInvalid {
		t.Fatalf("lease with a key = %v", e)
	}
	// Two FSMs fed this log still agree.
	other := New(nil)
	for _, l := range h.b.logs {
		other.Apply(l)
	}
	if !bytes.Equal(snapshotBytes(t, h.fsm), snapshotBytes(t, other)) {
		t.Fatal("snapshots differ")
	}
}

var chain3 = workloads.Chain3("chain3")

// BenchmarkChain3Instance is one 3-step instance's whole life in the FSM:
// start, three lease rounds, three completions (7 commands).
func BenchmarkChain3Instance(b *testing.B) {
	h := newHarness(&testing.T{})
	h.register(chain3)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.start(fmt.Sprintf("c%d", i), "chain3", `{"n":1}`)
		h.runToEnd()
	}
	b.ReportMetric(float64(b.N*7)/b.Elapsed().Seconds(), "commands/s")
}

// BenchmarkApply measures each command on its own, applied to a store that
// already holds 1000 finished instances.
func BenchmarkApply(b *testing.B) {
	setup := func() *harness {
		h := newHarness(&testing.T{})
		h.register(chain3)
		h.register(approval)
		for i := 0; i < 1000; i++ {
			h.start(fmt.Sprintf("old%d", i), "chain3", `{"n":1}`)
		}
		h.runToEnd()
		return h
	}
	b.Run("StartInstance", func(b *testing.B) {
		h := setup()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			h.start(fmt.Sprintf("s%d", i), "chain3", `{"n":1}`)
		}
	})
	b.Run("LeaseTasks", func(b *testing.B) {
		h := setup()
		for i := 0; i < b.N; i++ {
			h.start(fmt.Sprintf("s%d", i), "chain3", `{"n":1}`)
		}
		pending := h.fsm.State().Read().PendingTasks("default", 0)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			h.apply(LeaseTasksType, &LeaseTasksRequest{Header: h.hdr(), Leases: []Lease{{TaskID: pending[i].ID, WorkerID: "w"}}})
		}
	})
	b.Run("CompleteTask", func(b *testing.B) {
		h := setup()
		var tasks []*Task
		for i := 0; i < b.N; i++ {
			h.start(fmt.Sprintf("s%d", i), "chain3", `{"n":1}`)
		}
		tasks = h.leaseAll("w")
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			h.complete(tasks[i])
		}
	})
	b.Run("SignalInstance", func(b *testing.B) {
		h := setup()
		for i := 0; i < b.N; i++ {
			h.start(fmt.Sprintf("a%d", i), "approval", `{}`)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			h.signal(fmt.Sprintf("a%d", i), "approve", `{"by":"x"}`, "")
		}
	})
}

// A batch of results settles each as its own command would; a refused one
// changes nothing and does not stop the others.
func TestTaskResultsBatch(t *testing.T) {
	h := newHarness(t)
	h.register(diamondSource(t))
	for _, id := range []string{"i1", "i2", "i3"} {
		h.start(id, "diamond", `{"n":1}`)
	}
	tasks := map[string]*Task{}
	for _, task := range h.leaseAll("w1") {
		tasks[task.InstanceID] = task
	}
	res := h.apply(TaskResultsType, &TaskResultsRequest{Header: h.hdr(), Results: []TaskOutcome{
		{TaskID: tasks["i1"].ID, Token: tasks["i1"].Token, Output: json.RawMessage(`{"n":1}`)},
		{TaskID: tasks["i2"].ID, Token: "999.0", Output: json.RawMessage(`{"n":1}`)},
		{TaskID: tasks["i3"].ID, Token: tasks["i3"].Token, Error: &TaskError{Type: "boom", NonRetryable: true}},
		{TaskID: "t404", Token: "1.0"},
	}}).(*TaskResultsResponse)
	if len(res.Results) != 4 {
		t.Fatalf("results = %+v", res.Results)
	}
	if r := res.Results[0]; r.Error != nil || r.InstanceID != "i1" || r.InstanceStatus != InstanceRunning {
		t.Fatalf("completion = %+v", r)
	}
	if r := res.Results[1]; r.Error == nil || r.Error.Code != CodeStaleToken || r.TaskID != tasks["i2"].ID {
		t.Fatalf("stale = %+v", r)
	}
	if r := res.Results[2]; r.Error != nil || r.InstanceStatus != InstanceFailed {
		t.Fatalf("failure = %+v", r)
	}
	if r := res.Results[3]; r.Error == nil || r.Error.Code != CodeNotFound {
		t.Fatalf("unknown = %+v", r)
	}
	tx := h.fsm.State().Read()
	if s := tx.Instance("i1").Steps["a"].Status; s != StepSucceeded {
		t.Fatalf("i1 step a = %s", s)
	}
	if s := tx.Instance("i2").Steps["a"].Status; s == StepSucceeded {
		t.Fatal("a refused result moved i2")
	}
	// i2's lease is untouched: its real token still completes it.
	if _, ok := h.complete(tasks["i2"]).(*TaskResultResponse); !ok {
		t.Fatal("i2's valid completion refused after the batch")
	}
}

// Pending tasks of a queue are handed out by priority, then oldest first.
func TestPendingTasksByPriority(t *testing.T) {
	h := newHarness(t)
	h.register("workflow \"low\" {\n  step \"a\" {\n    activity = \"noop\"\n  }\n}\n")
	h.register("workflow \"high\" {\n  step \"a\" {\n    activity = \"noop\"\n    priority = 80\n  }\n}\n")
	h.start("l1", "low", `{}`)
	h.start("h1", "high", `{}`)
	h.start("l2", "low", `{}`)
	h.start("h2", "high", `{}`)
	var got []string
	for _, task := range h.fsm.State().Read().PendingTasks("default", 0) {
		got = append(got, fmt.Sprintf("%s:%d", task.InstanceID, task.Priority))
	}
	if want := "h1:80 h2:80 l1:0 l2:0"; strings.Join(got, " ") != want {
		t.Fatalf("pending order = %v, want %s", got, want)
	}
}

// closed reports whether ch is closed, without waiting.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A reader watching one instance wakes when a command writes it, not when
// others change; a restore wakes every watcher.
func TestWatchInstanceWakesOnItsChangesOnly(t *testing.T) {
	h := newHarness(t)
	h.register(chain3)
	h.start("a", "chain3", `{"n":1}`)
	ch, stop := h.fsm.State().WatchInstance("a")
	defer stop()
	h.start("b", "chain3", `{"n":1}`)
	if closed(ch) {
		t.Fatal("woken by another instance's start")
	}
	h.runToEnd()
	if !closed(ch) {
		t.Fatal("not woken when its instance ran")
	}
	// A watcher that stops is forgotten; one still waiting is woken by a
	// restore, which replaces the store it watched.
	ch2, stop2 := h.fsm.State().WatchInstance("a")
	stop2()
	ch3, stop3 := h.fsm.State().WatchInstance("nobody")
	defer stop3()
	if err := h.fsm.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, h.fsm)))); err != nil {
		t.Fatal(err)
	}
	if closed(ch2) {
		t.Fatal("a stopped watch was closed")
	}
	if !closed(ch3) {
		t.Fatal("restore did not wake a watcher")
	}
}

// A reader waiting for an instance's end wakes when a command ends it, not
// at its other transitions; a purge that deletes it and a restore wake it
// too.
func TestWatchInstanceEndWakesAtTheEndOnly(t *testing.T) {
	h := newHarness(t)
	h.register(chain3)
	h.start("a", "chain3", `{"n":1}`)
	end, stop := h.fsm.State().WatchInstanceEnd("a")
	defer stop()
	changes, stopChanges := h.fsm.State().WatchInstance("a")
	defer stopChanges()
	tasks := h.leaseAll("w")
	if !closed(changes) || closed(end) {
		t.Fatalf("after a lease: any change %v, end %v", closed(changes), closed(end))
	}
	h.complete(tasks[0])
	if closed(end) {
		t.Fatal("woken by a step's end")
	}
	h.runToEnd()
	if !closed(end) {
		t.Fatal("not woken when the instance ended")
	}
	// Deleting the instance wakes a reader waiting for its end.
	gone, stopGone := h.fsm.State().WatchInstanceEnd("a")
	defer stopGone()
	hdr := h.hdr()
	hdr.Time = hdr.Time.Add(30 * 24 * time.Hour)
	h.apply(PurgeInstancesType, &PurgeInstancesRequest{Header: hdr, Max: 10})
	if h.instance("a") != nil || !closed(gone) {
		t.Fatalf("purge: instance %v, watcher woken %v", h.instance("a"), closed(gone))
	}
	never, stopNever := h.fsm.State().WatchInstanceEnd("nobody")
	defer stopNever()
	if err := h.fsm.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, h.fsm)))); err != nil {
		t.Fatal(err)
	}
	if !closed(never) {
		t.Fatal("restore did not wake a watcher of an end")
	}
}

// BenchmarkRetainedHeap reports the heap a completed chain3 instance keeps
// in the state machine (its record, tasks, history and index entries),
// measured after a garbage collection, over b.N instances.
func BenchmarkRetainedHeap(b *testing.B) {
	var ms runtime.MemStats
	h := newHarness(&testing.T{})
	h.register(chain3)
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before, objects := ms.HeapAlloc, ms.HeapObjects
	scan := []metrics.Sample{{Name: "/gc/scan/heap:bytes"}}
	metrics.Read(scan)
	scanBefore := scan[0].Value.Uint64()
	for i := 0; i < b.N; i++ {
		h.start(fmt.Sprintf("r%d", i), "chain3", `{"n":1}`)
		h.runToEnd()
	}
	b.StopTimer()
	h.b.logs = nil // the harness's own copy of the log is not state
	runtime.GC()
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(int64(ms.HeapAlloc)-int64(before))/float64(b.N), "B/instance")
	b.ReportMetric(float64(int64(ms.HeapObjects)-int64(objects))/float64(b.N), "objects/instance")
	// What the collector must scan per retained instance, and how long a
	// full collection of the heap (nearly all of it the instances) takes
	// per instance: a mark phase this long, on every node, is what slows a
	// loaded cluster (docs/performance-history.md).
	metrics.Read(scan)
	b.ReportMetric(float64(int64(scan[0].Value.Uint64())-int64(scanBefore))/float64(b.N), "scan-B/instance")
	start := time.Now()
	runtime.GC()
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N), "gc-ns/instance")
	runtime.KeepAlive(h)
}

// BenchmarkChain3Batched runs chain3 instances the way a loaded cluster
// applies them: 32 starts in one raft batch, one lease round, then results
// that lease the next tasks (four commands of eight results per batch), as
// the built-in workers send them.
func BenchmarkChain3Batched(b *testing.B) { benchChain3(b, 32, 8) }

// BenchmarkChain3SmallBatches is chain3 in the batches of a cluster at
// moderate load (a few starts per entry, two results per command): what
// a batch costs whatever its size (a go-memdb transaction, and a copy of
// the path to every record it changes in every index) weighs more.
func BenchmarkChain3SmallBatches(b *testing.B) { benchChain3(b, 4, 2) }

// benchChain3 runs chain3 instances group at a time: their starts in one
// batch, a lease round, then their results perCommand to a command.
func benchChain3(b *testing.B, group, perCommand int) {
	h := newHarness(&testing.T{})
	h.register(chain3)
	batch := func(logs []*raft.Log) []any {
		for _, l := range logs {
			l.Index = uint64(len(h.b.logs) + 1)
			h.b.logs = append(h.b.logs, l)
		}
		return h.fsm.ApplyBatch(logs)
	}
	entry := func(mt MessageType, msg any) *raft.Log {
		data, err := Encode(mt, msg)
		if err != nil {
			b.Fatal(err)
		}
		return &raft.Log{Term: 1, Type: raft.LogCommand, Data: data}
	}
	next := &NextTasks{WorkerID: "w", Queue: "default", Activities: []string{"noop"}, Max: 8}
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += group {
		var starts []*raft.Log
		for i := 0; i < group; i++ {
			starts = append(starts, entry(StartInstanceType, &StartInstanceRequest{Header: h.hdr(), ID: fmt.Sprintf("c%d", done+i), Workflow: "chain3", Input: json.RawMessage(`{"n":1}`)}))
		}
		batch(starts)
		var leases []Lease
		for _, task := range h.fsm.State().Read().PendingTasks("default", 0) {
			leases = append(leases, Lease{TaskID: task.ID, WorkerID: "w"})
		}
		leased := batch([]*raft.Log{entry(LeaseTasksType, &LeaseTasksRequest{Header: h.hdr(), Leases: leases})})[0].(*LeaseTasksResponse).Granted
		for len(leased) > 0 {
			var logs []*raft.Log
			for i := 0; i < len(leased); i += perCommand {
				var outcomes []TaskOutcome
				for _, task := range leased[i:min(i+perCommand, len(leased))] {
					outcomes = append(outcomes, TaskOutcome{TaskID: task.ID, Token: task.Token, Output: task.Input})
				}
				logs = append(logs, entry(TaskResultsType, &TaskResultsRequest{Header: h.hdr(), Results: outcomes, Next: next}))
			}
			leased = nil
			for _, res := range batch(logs) {
				leased = append(leased, res.(*TaskResultsResponse).Leased...)
			}
		}
	}
	b.StopTimer()
	if inst := h.instance("c0"); inst.Status != InstanceCompleted {
		b.Fatalf("c0 is %s", inst.Status)
	}
}
