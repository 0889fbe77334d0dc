package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func historyOf(h *harness, id string) string {
	var out []string
	for _, e := range h.fsm.State().Read().History(id, 0, 0) {
		s := e.Type
		if e.Step != "" {
			s += ":" + e.Step
		}
		if e.Element != "" {
			s += "[" + e.Element + "]"
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

func TestHistoryOfADiamond(t *testing.T) {
	h := newHarness(t)
	h.register(diamondSource(t))
	h.start("i", "diamond", `{"n": 1}`)
	h.runToEnd()
	want := "instance_started step_scheduled:a task_leased:a step_succeeded:a step_scheduled:b step_scheduled:c " +
		"task_leased:b task_leased:c step_succeeded:b step_succeeded:c step_scheduled:d task_leased:d step_succeeded:d instance_completed"
	if got := historyOf(h, "i"); got != want {
		t.Fatalf("history:\n got %s\nwant %s", got, want)
	}
	events := h.fsm.State().Read().History("i", 0, 0)
	for i, e := range events {
		if e.Seq != uint64(i+1) || e.Index == 0 || e.Time.IsZero() {
			t.Fatalf("event %d = %+v", i, e)
		}
	}
	if events[2].Worker != "w1" || events[2].Attempt != 1 || string(events[1].Data) != `{"n":1}` {
		t.Fatalf("lease event = %+v, schedule = %s", events[2], events[1].Data)
	}
	// Paging: after a sequence number, at most a limit.
	if page := h.fsm.State().Read().History("i", 12, 10); len(page) != 2 || page[0].Seq != 13 {
		t.Fatalf("page = %d events from %d", len(page), page[0].Seq)
	}
}

func TestHistoryOfRetriesSignalsAndOperators(t *testing.T) {
	h := newHarness(t)
	h.register(retrying)
	h.start("r", "retrying", `{}`)
	h.failTask(h.leaseAll("w")[0], "network")
	h.fireDue(h.now.Add(time.Minute))
	h.complete(h.leaseAll("w")[0])
	if got := historyOf(h, "r"); !strings.HasPrefix(got, "instance_started step_scheduled:a task_leased:a attempt_failed:a timer_fired:a task_requeued:a task_leased:a step_succeeded:a step_scheduled:b") {
		t.Fatalf("retry history: %s", got)
	}

	h.register(approval)
	h.start("s", "approval", `{}`)
	h.signal("s", "approve", `{"by": "ada"}`, "")
	h.apply(TerminateInstanceType, &TerminateInstanceRequest{Header: h.hdr(), ID: "s", Reason: "enough"})
	got := historyOf(h, "s")
	want := "instance_started step_scheduled:prepare signal_received operator_terminate step_cancelled:prepare step_cancelled:approve step_cancelled:act step_cancelled:escalate instance_terminated"
	if got != want {
		t.Fatalf("history:\n got %s\nwant %s", got, want)
	}

	h.register(fanout)
	h.start("f", "fan", `{"items": ["x"]}`)
	h.runToEnd()
	if got := historyOf(h, "f"); got != "instance_started step_scheduled:each_item element_scheduled:each_item[0] step_succeeded:each_tag "+
		"task_leased:each_item[0] element_succeeded:each_item[0] step_succeeded:each_item step_scheduled:join task_leased:join step_succeeded:join instance_completed" {
		t.Fatalf("for_each history: %s", got)
	}
}

// An instance's newest events live in its tail until their chunk of 32 is
// complete. A replica restored from a snapshot taken at any point (partial
// chunks stored, no tails) and fed the rest of the log ends with the same
// history and the same snapshot bytes.
func TestHistoryTailAcrossSnapshotsAtEveryPoint(t *testing.T) {
	h := newHarness(t)
	h.register(fanout)
	items := make([]string, 40)
	for i := range items {
		items[i] = fmt.Sprintf("%q", fmt.Sprint("x", i))
	}
	h.start("big", "fan", `{"items": [`+strings.Join(items, ",")+`]}`)
	h.runToEnd()
	want := h.fsm.State().Read().History("big", 0, 0)
	if len(want) <= 2*eventsPerChunk {
		t.Fatalf("only %d events: the test needs more than two chunks", len(want))
	}
	full := snapshotBytes(t, h.fsm)
	if chunks := h.fsm.State().Read().historyChunks("big", 1); len(chunks) != len(want)/eventsPerChunk {
		t.Fatalf("%d chunks stored for %d events: only complete chunks are written", len(chunks), len(want))
	}
	for cut := 0; cut <= len(h.b.logs); cut++ {
		early := New(nil)
		for _, l := range h.b.logs[:cut] {
			early.Apply(l)
		}
		mid := snapshotBytes(t, early)
		late := restoreFrom(t, mid)
		for _, l := range h.b.logs[cut:] {
			late.Apply(l)
		}
		got := late.State().Read().History("big", 0, 0)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("cut at %d: history of %d events, want %d", cut, len(got), len(want))
		}
		for _, after := range []uint64{0, 5, 31, 32, 33, 64, uint64(len(want) - 1)} {
			g, w := late.State().Read().History("big", after, 7), h.fsm.State().Read().History("big", after, 7)
			if !reflect.DeepEqual(g, w) {
				t.Fatalf("cut at %d: history after %d differs", cut, after)
			}
		}
		again := snapshotBytes(t, late)
		if !bytes.Equal(again, full) {
			t.Fatalf("cut at %d: snapshot differs", cut)
		}
	}
}

// TestStepTimesJSON pins the JSON of the step and instance times, which
// are values rather than pointers: a zero time is left out, as a nil
// pointer was, so snapshots and API answers keep their bytes, and a
// record written with the times present reads back the same.
func TestStepTimesJSON(t *testing.T) {
	b, err := json.Marshal(&StepState{Status: StepWaiting})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"status":"waiting","attempts":0}`; got != want {
		t.Fatalf("unset times: got %s, want %s", got, want)
	}
	at := time.Unix(1764756000, 5).UTC()
	st := StepState{Status: StepSucceeded, ScheduledAt: at, StartedAt: at, EndedAt: at}
	if b, err = json.Marshal(&st); err != nil {
		t.Fatal(err)
	}
	want := `{"status":"succeeded","attempts":0,"scheduled_at":"2025-12-03T10:00:00.000000005Z","started_at":"2025-12-03T10:00:00.000000005Z","ended_at":"2025-12-03T10:00:00.000000005Z"}`
	if string(b) != want {
		t.Fatalf("set times: got %s, want %s", b, want)
	}
	var back StepState
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !back.EndedAt.Equal(at) || !back.ScheduledAt.Equal(at) || !back.StartedAt.Equal(at) {
		t.Fatalf("read back %+v", back)
	}
	ib, err := json.Marshal(&Instance{ID: "i", Status: InstanceRunning})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(ib), "ended_at") {
		t.Fatalf("a running instance's JSON has ended_at: %s", ib)
	}
}

// An ended instance keeps its history tail encoded, as one pointer-free
// value; its history reads the same, and a retry carries it on.
func TestEndedInstanceSealsItsHistoryTail(t *testing.T) {
	h := newHarness(t)
	h.register(diamondSource(t))
	h.start("i", "diamond", `{"n": 1}`)
	if inst := h.instance("i"); inst.sealedTail != nil || len(inst.historyTail) == 0 {
		t.Fatalf("a running instance's tail: %d events, %d sealed bytes", len(inst.historyTail), len(inst.sealedTail))
	}
	a := h.leaseAll("w")[0]
	h.apply(FailTaskType, &FailTaskRequest{Header: h.hdr(), TaskID: a.ID, Token: a.Token, Error: TaskError{Type: "bad", Message: "no", NonRetryable: true}})
	inst := h.instance("i")
	if inst.Status != InstanceFailed || inst.historyTail != nil || len(inst.sealedTail) == 0 {
		t.Fatalf("an ended instance (%s): %d events in its tail, %d sealed bytes", inst.Status, len(inst.historyTail), len(inst.sealedTail))
	}
	ended := h.fsm.State().Read().History("i", 0, 0)
	if got := historyOf(h, "i"); !strings.HasPrefix(got, "instance_started step_scheduled:a task_leased:a step_failed:a") || !strings.HasSuffix(got, "instance_failed:a") {
		t.Fatalf("history of the ended instance: %s", got)
	}
	if ended[3].Error == nil || ended[3].Error.Type != "bad" || ended[2].Worker != "w" || string(ended[1].Data) != `{"n":1}` {
		t.Fatalf("events read back: %+v %+v %+v", ended[1], ended[2], ended[3])
	}
	h.retry("i", "")
	inst = h.instance("i")
	if inst.sealedTail != nil || inst.Status != InstanceRunning {
		t.Fatalf("after a retry: status %s, %d sealed bytes", inst.Status, len(inst.sealedTail))
	}
	h.runToEnd()
	again := h.fsm.State().Read().History("i", 0, 0)
	if got := historyOf(h, "i"); !strings.HasSuffix(got, "instance_completed") || len(again) <= len(ended) {
		t.Fatalf("history after the retry: %s", got)
	}
	for i, e := range again {
		if e.Seq != uint64(i+1) || e.InstanceID != "i" || e.Time.IsZero() {
			t.Fatalf("event %d = %+v", i, e)
		}
	}
	before, _ := json.Marshal(ended)
	after, _ := json.Marshal(again[:len(ended)])
	if !bytes.Equal(before, after) {
		t.Fatalf("the retry rewrote the history before it:\n%s\n%s", before, after)
	}
}

func TestSealedEventsReadBackExactly(t *testing.T) {
	at := time.Date(2026, 12, 4, 5, 6, 7, 890123456, time.FixedZone("", -7200))
	events := []*Event{
		{InstanceID: "i", Seq: 1, Time: at, Index: 7, Type: "instance_started", Data: json.RawMessage(`{"n":1}`), Detail: "wf version 2"},
		{InstanceID: "i", Seq: 2, Time: at.UTC(), Index: 8, Type: "attempt_failed", Step: "a", Element: "k", TaskID: "t1", Attempt: 3, Worker: "w", Error: &TaskError{Type: "boom", Message: "m", NonRetryable: true}},
		{InstanceID: "i", Seq: 3, Time: time.Time{}, Index: 9, Type: "step_succeeded", Data: json.RawMessage(`null`)},
	}
	got := decodeEvents(encodeEvents(events), "i")
	want, _ := json.Marshal(events)
	back, _ := json.Marshal(got)
	if !bytes.Equal(want, back) {
		t.Fatalf("read back:\n%s\nwant\n%s", back, want)
	}
	if !reflect.DeepEqual(got[1].Error, events[1].Error) || got[0].Time.String() != at.String() {
		t.Fatalf("read back %+v", got)
	}
}

// FuzzSealedEvents: any event reads back from its sealed form as it was.
func FuzzSealedEvents(f *testing.F) {
	f.Add(uint64(1), uint64(7), int64(1764824767890123456), -7200, "step_failed", "a", "k", "t1", 3, "w", "boom", "m", true, []byte(`{"n":1}`), "d")
	f.Add(uint64(0), uint64(0), int64(0), 0, "", "", "", "", 0, "", "", "", false, []byte(nil), "")
	f.Fuzz(func(t *testing.T, seq, index uint64, nanos int64, offset int, typ, step, element, task string, attempt int, worker, errType, errMsg string, noRetry bool, data []byte, detail string) {
		offset = offset % (18 * 3600) / 60 * 60 // whole minutes, as Go's binary time form needs
		e := &Event{InstanceID: "i", Seq: seq, Index: index, Time: time.Unix(0, nanos).In(time.FixedZone("", offset)), Type: typ, Step: step,
			Element: element, TaskID: task, Attempt: attempt, Worker: worker, Data: data, Detail: detail}
		if errType != "" || noRetry {
			e.Error = &TaskError{Type: errType, Message: errMsg, NonRetryable: noRetry}
		}
		events := []*Event{e, {InstanceID: "i", Seq: seq + 1, Type: "x"}}
		got := decodeEvents(encodeEvents(events), "i")
		if len(got) != 2 || !reflect.DeepEqual(got[0].Error, e.Error) || !bytes.Equal(got[0].Data, e.Data) || (got[0].Data == nil) != (e.Data == nil) ||
			!got[0].Time.Equal(e.Time) || !bytes.Equal(jsonOf(got[0].Time), jsonOf(e.Time)) {
			t.Fatalf("read back %+v, want %+v", got[0], e)
		}
		g, w := *got[0], *e
		g.Time, w.Time, g.Error, w.Error, g.Data, w.Data = time.Time{}, time.Time{}, nil, nil, nil, nil
		if !reflect.DeepEqual(g, w) || got[1].Seq != seq+1 || got[1].Type != "x" {
			t.Fatalf("read back %+v, want %+v", got[0], e)
		}
	})
}

func jsonOf(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
