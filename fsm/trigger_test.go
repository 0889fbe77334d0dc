package fsm

import (
	"strings"
	"testing"
	"time"
)

const nightly = `workflow "nightly" {
  trigger "cron" "etl" {
    schedule = "0 2 * * *"
    timezone = "Europe/Paris"
    input    = { day = formatdate("YYYY-MM-DD", now()) }
    overlap  = "buffer_one"
  }
  trigger "cron" "quick" {
    schedule = "*/5 * * * *"
    overlap  = "skip"
  }
  step "load" {
    activity = "etl.load"
    input    = input
  }
}
`

func (h *harness) fire(id string, at time.Time) *FireTriggerResponse {
	h.t.Helper()
	r, ok := h.apply(FireTriggerType, &FireTriggerRequest{Header: Header{Time: at}, ID: id, Scheduled: at}).(*FireTriggerResponse)
	if !ok {
		h.t.Fatalf("fire %s failed", id)
	}
	return r
}

func TestTriggersFireOnceAndFollowTheirOverlapPolicy(t *testing.T) {
	h := newHarness(t)
	h.register(nightly)
	tr := h.fsm.State().Read().Trigger("nightly.etl")
	if tr == nil || !tr.Enabled || tr.Overlap != "buffer_one" || tr.Timezone != "Europe/Paris" {
		t.Fatalf("trigger = %+v", tr)
	}
	at := time.Date(2026, 11, 27, 1, 0, 0, 0, time.UTC) // 02:00 in Paris
	r := h.fire("nightly.etl", at)
	if r.Outcome != "started" || r.InstanceID != "nightly.etl.1795741200" {
		t.Fatalf("first fire = %+v", r)
	}
	if in := string(h.instance(r.InstanceID).Input); in != `{"day":"2026-11-27"}` {
		t.Fatalf("input = %s", in)
	}
	// The same scheduled time again (a new leader repeating it) changes nothing.
	if r := h.fire("nightly.etl", at); r.Outcome != "ignored" {
		t.Fatalf("repeat = %+v", r)
	}
	// The next night, while the first still runs: buffered, then started
	// when the first ends.
	next := at.Add(24 * time.Hour)
	if r := h.fire("nightly.etl", next); r.Outcome != "buffered" {
		t.Fatalf("overlap = %+v", r)
	}
	h.complete(h.leaseAll("w")[0])
	if h.instance("nightly.etl.1795827600") == nil {
		t.Fatal("the buffered fire did not start when the first instance ended")
	}
	// skip: a fire while its last instance runs is skipped and counted.
	h.fire("nightly.quick", at)
	if r := h.fire("nightly.quick", at.Add(5*time.Minute)); r.Outcome != "skipped" {
		t.Fatalf("skip = %+v", r)
	}
	if tr := h.fsm.State().Read().Trigger("nightly.quick"); tr.Skipped != 1 || tr.Fired != 1 {
		t.Fatalf("counts = %+v", tr)
	}
	// Disabled triggers do not fire; a manual fire still does.
	h.apply(SetTriggerType, &SetTriggerRequest{Header: h.hdr(), ID: "nightly.etl", Enabled: false})
	if r := h.fire("nightly.etl", next.Add(24*time.Hour)); r.Outcome != "ignored" {
		t.Fatalf("disabled = %+v", r)
	}
	manual := h.apply(FireTriggerType, &FireTriggerRequest{Header: h.hdr(), ID: "nightly.etl", Scheduled: h.now, Manual: true}).(*FireTriggerResponse)
	if manual.Outcome == "ignored" || !strings.HasSuffix(manual.InstanceID+manual.Reason, ".manual") && manual.Outcome == "started" {
		t.Fatalf("manual = %+v", manual)
	}
	// A new version without "quick" drops it; "etl" keeps its state.
	h.register(strings.Replace(nightly, `  trigger "cron" "quick" {
    schedule = "*/5 * * * *"
    overlap  = "skip"
  }
`, "", 1))
	if h.fsm.State().Read().Trigger("nightly.quick") != nil {
		t.Fatal("a removed trigger survived")
	}
	if tr := h.fsm.State().Read().Trigger("nightly.etl"); tr.Enabled || tr.Fired < 2 {
		t.Fatalf("kept trigger lost its state: %+v", tr)
	}
}
