package fsm

import (
	"encoding/json"
	"testing"
	"time"
)

const watched = `workflow "watched" {
  step "a" {
    activity          = "long"
    timeout           = "1h"
    heartbeat_timeout = "30s"
    schedule_timeout  = "5m"
    retry {
      max_attempts = 2
    }
  }
}
`

func (h *harness) heartbeat(task *Task, at time.Time, details string) any {
	return h.apply(HeartbeatTaskType, &HeartbeatTaskRequest{Header: Header{Time: at}, TaskID: task.ID, Token: task.Token, Details: json.RawMessage(details)})
}

func (h *harness) expire(task *Task, at time.Time) []string {
	return h.apply(ExpireLeasesType, &ExpireLeasesRequest{Header: Header{Time: at}, Leases: []ExpiredLease{{TaskID: task.ID, Token: task.Token}}}).(*ExpireLeasesResponse).Expired
}

func TestHeartbeatsKeepAnAttemptAlive(t *testing.T) {
	h := newHarness(t)
	h.register(watched)
	h.start("i", "watched", `{}`)
	task := h.leaseAll("w")[0]
	leased := h.now
	if !task.Deadline().Equal(leased.Add(30 * time.Second)) {
		t.Fatalf("deadline = %s, want lease + 30s", task.Deadline())
	}
	// Heartbeats every 20s keep it alive past its first heartbeat deadline.
	at := leased
	for i := 0; i < 5; i++ {
		at = at.Add(20 * time.Second)
		r, ok := h.heartbeat(task, at, `{"progress": 0.5}`).(*HeartbeatResponse)
		if !ok || r.CancelRequested || !r.Deadline.Equal(at.Add(30*time.Second)) {
			t.Fatalf("heartbeat %d = %+v", i, r)
		}
		if got := h.expire(task, at.Add(29*time.Second)); len(got) != 0 {
			t.Fatalf("attempt ended though it heartbeated")
		}
	}
	if got := string(h.fsm.State().Read().Task(task.ID).Details); got != `{"progress":0.5}` {
		t.Fatalf("details = %s", got)
	}
	// Silence ends the attempt as heartbeat_timeout; the zombie learns it.
	h.expire(task, at.Add(30*time.Second))
	if st := h.instance("i").Steps["a"]; st.Status != StepRetryWait || st.Error.Type != "heartbeat_timeout" {
		t.Fatalf("after silence: %+v", st)
	}
	if e, ok := h.heartbeat(task, at.Add(31*time.Second), `{}`).(*Error); !ok || e.Code != CodeStaleToken {
		t.Fatalf("zombie heartbeat = %v", e)
	}
	// The start-to-close timeout still bounds an attempt that heartbeats.
	h.fireDue(at.Add(time.Hour))
	second := h.leaseAll("w")[0]
	for hb := second.LeaseDeadline.Add(-time.Hour); hb.Before(second.LeaseDeadline); hb = hb.Add(25 * time.Second) {
		h.heartbeat(second, hb, ``)
	}
	h.expire(second, second.LeaseDeadline)
	inst := h.instance("i")
	if inst.Status != InstanceFailed || inst.Error.Type != "timeout" {
		t.Fatalf("%s %+v", inst.Status, inst.Error)
	}
}

func TestScheduleTimeoutEndsAnUnservedStep(t *testing.T) {
	h := newHarness(t)
	h.register(watched)
	h.start("nobody", "watched", `{}`)
	created := h.instance("nobody").CreatedAt
	if fired := h.fireDue(created.Add(5*time.Minute - time.Second)); len(fired) != 0 {
		t.Fatal("schedule timeout fired early")
	}
	h.fireDue(created.Add(5 * time.Minute))
	inst := h.instance("nobody")
	if inst.Status != InstanceFailed || inst.Error.Type != "schedule_timeout" || inst.Steps["a"].Attempts != 0 {
		t.Fatalf("%s %+v", inst.Status, inst.Error)
	}
	// A task a worker took in time is not touched by its schedule timer.
	h.start("served", "watched", `{}`)
	task := h.leaseAll("w")[0]
	h.fireDue(h.now.Add(10 * time.Minute))
	if st := h.instance("served").Steps["a"].Status; st != StepRunning {
		t.Fatalf("served = %s", st)
	}
	h.heartbeat(task, h.now, ``)
}
