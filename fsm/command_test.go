package fsm

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// encodeJSON frames a command in the JSON codec, as logs were written
// before the compact one.
func encodeJSON(t interface{ Fatal(...any) }, mt MessageType, msg any) []byte {
	body, err := json.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{byte(mt), codecJSON}, body...)
}

// commandSamples has one value of every command body, every field set, so
// that a field one codec drops and the other keeps shows up.
func commandSamples() map[MessageType]any {
	at := time.Date(2026, 12, 4, 5, 6, 7, 890123456, time.FixedZone("", 3600))
	hdr := Header{Time: at}
	raw := json.RawMessage(`{"n":1,"s":"x\u00e9"}`)
	next := &NextTasks{WorkerID: "w/default/r1", Queue: "default", Activities: []string{"noop", "http"}, Max: 16}
	inner, _ := Encode(StartInstanceType, &StartInstanceRequest{Header: hdr, ID: "i1", Workflow: "wf", Input: raw})
	return map[MessageType]any{
		RegisterWorkflowType:  &RegisterWorkflowRequest{Header: hdr, Source: "workflow \"a\" {}\n"},
		StartInstanceNextType: &StartInstanceRequest{Header: hdr, ID: "i1", Workflow: "wf", Version: 3, Input: raw, Next: next},
		LeaseTasksType:        &LeaseTasksRequest{Header: hdr, Leases: []Lease{{TaskID: "t1", WorkerID: "w"}}},
		CompleteTaskType:      &CompleteTaskRequest{Header: hdr, TaskID: "t1", Token: "4.1", Output: raw},
		FailTaskType:          &FailTaskRequest{Header: hdr, TaskID: "t1", Token: "4.1", Error: TaskError{Type: "boom", Message: "m", NonRetryable: true}},
		ExpireLeasesType:      &ExpireLeasesRequest{Header: hdr, Leases: []ExpiredLease{{TaskID: "t1", Token: "4.1"}}},
		SignalInstanceType:    &SignalInstanceRequest{Header: hdr, ID: "i1", Name: "go", Payload: raw, RequestID: "r"},
		IdempotentType:        &IdempotentRequest{Header: hdr, Key: "k", Fingerprint: "fp", Command: inner},
		TaskResultsNextType: &TaskResultsRequest{Header: hdr, Next: next, Results: []TaskOutcome{
			{TaskID: "t1", Token: "4.1", Output: raw},
			{TaskID: "t2", Token: "4.2", Error: &TaskError{Type: "boom", Message: "m"}},
			{TaskID: "t3", Token: "4.3", Output: raw},
		}},
		PurgeInstancesType: &PurgeInstancesRequest{Header: hdr, Max: 7},
		StepOverrideType:   &StepOverrideRequest{Header: hdr, ID: "i1", Step: "a", Action: "fail", Output: raw, Error: &TaskError{Type: "manual", Message: "m"}, Reason: "r"},
	}
}

func TestCodecsReadCommandsAlike(t *testing.T) {
	for mt, msg := range commandSamples() {
		data, err := Encode(mt, msg)
		if err != nil {
			t.Fatalf("%s: %v", mt, err)
		}
		if MessageType(data[0]) != mt || data[1] != codecMsgpack {
			t.Fatalf("%s: framed as %v", mt, data[:2])
		}
		typ := reflect.TypeOf(msg).Elem()
		fromMsgpack := reflect.New(typ).Interface()
		if err := Decode(data[1:], fromMsgpack); err != nil {
			t.Fatalf("%s: %v", mt, err)
		}
		fromJSON := reflect.New(typ).Interface()
		if err := Decode(encodeJSON(t, mt, msg)[1:], fromJSON); err != nil {
			t.Fatalf("%s: %v", mt, err)
		}
		if !reflect.DeepEqual(fromMsgpack, fromJSON) {
			t.Errorf("%s reads differently:\nmsgpack %+v\njson    %+v", mt, fromMsgpack, fromJSON)
		}
		// Times keep their instant and their offset, as the JSON text did.
		want := reflect.ValueOf(msg).Elem().FieldByName("Header").Interface().(Header).Time
		if got := reflect.ValueOf(fromMsgpack).Elem().FieldByName("Header").Interface().(Header).Time; got.String() != want.String() {
			t.Errorf("%s: time %v", mt, got)
		}
		if len(data) >= len(encodeJSON(t, mt, msg)) {
			t.Errorf("%s: %d bytes in msgpack, %d in JSON", mt, len(data), len(encodeJSON(t, mt, msg)))
		}
	}
}

func TestEqualCommandsEncodeAlike(t *testing.T) {
	for mt, msg := range commandSamples() {
		a, _ := Encode(mt, msg)
		b, _ := Encode(mt, msg)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two encodings differ", mt)
		}
	}
}

func TestUnknownCodecIsRefused(t *testing.T) {
	for _, body := range [][]byte{nil, {3, 0x80}, {0}} {
		var req StartInstanceRequest
		if err := Decode(body, &req); err == nil {
			t.Errorf("Decode(%v) accepted", body)
		}
	}
}

// A start without an input reads as one with null input in either codec
// (JSON wrote a nil body as null; msgpack keeps it nil).
func TestStartWithoutInputInEitherCodec(t *testing.T) {
	src := `workflow "typed" {
  input {
    name = optional(string, "anon")
  }
  step "a" {
    activity = "noop"
    input    = { name = input.name }
  }
}
`
	var snaps [][]byte
	for _, codec := range []byte{codecMsgpack, codecJSON} {
		f := New(nil)
		cmds := []struct {
			mt  MessageType
			msg any
		}{
			{RegisterWorkflowType, &RegisterWorkflowRequest{Header: Header{Time: t0}, Source: src}},
			{StartInstanceType, &StartInstanceRequest{Header: Header{Time: t0.Add(time.Second)}, ID: "i1", Workflow: "typed"}},
			{StartInstanceType, &StartInstanceRequest{Header: Header{Time: t0.Add(2 * time.Second)}, ID: "i1", Workflow: "typed"}},
		}
		for i, c := range cmds {
			data, _ := Encode(c.mt, c.msg)
			if codec == codecJSON {
				data = encodeJSON(t, c.mt, c.msg)
			}
			res := f.Apply(&raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: data})
			if err, ok := res.(*Error); ok {
				t.Fatalf("codec %d, command %d: %v", codec, i+1, err)
			}
		}
		inst := f.State().Read().Instance("i1")
		if inst == nil || string(inst.Input) != `{"name":"anon"}` {
			t.Fatalf("codec %d: instance %+v", codec, inst)
		}
		snaps = append(snaps, snapshotBytes(t, f))
	}
	if !bytes.Equal(snaps[0], snaps[1]) {
		t.Fatal("the two codecs left other state")
	}
}

// A decoded command owns its bytes: state keeps the json.RawMessage bodies
// (normalizeJSON returns a compact body as it is), so they must not be
// views into the raft log entry they came from.
func TestDecodedBodiesDoNotAliasTheEntry(t *testing.T) {
	msg := &TaskResultsRequest{Results: []TaskOutcome{{TaskID: "t1", Token: "1.1", Output: json.RawMessage(`{"n":12345}`)}}}
	data, err := Encode(TaskResultsType, msg)
	if err != nil {
		t.Fatal(err)
	}
	var out TaskResultsRequest
	if err := Decode(data[1:], &out); err != nil {
		t.Fatal(err)
	}
	for i := range data {
		data[i] = 'x'
	}
	if got := string(out.Results[0].Output); got != `{"n":12345}` || out.Results[0].TaskID != "t1" {
		t.Fatalf("the decoded command changed with its entry: %q %q", got, out.Results[0].TaskID)
	}
}

func TestNormalizeJSON(t *testing.T) {
	compact := json.RawMessage(`{"a":[1,2],"b":"xy"}`)
	if got := normalizeJSON(compact); &got[0] != &compact[0] {
		t.Error("a compact body was copied")
	}
	for in, want := range map[string]string{
		``: `null`, `{ "a" : 1 }`: `{"a":1}`, "[1,\n2]": `[1,2]`, `{"a":`: `null`, `nope`: `null`, `"x y"`: `"x y"`,
	} {
		if got := string(normalizeJSON(json.RawMessage(in))); got != want {
			t.Errorf("normalizeJSON(%q) = %q, want %q", in, got, want)
		}
	}
}
