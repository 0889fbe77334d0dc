package fsm

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"pgregory.net/rapid"
)

// TestRandomLogsConverge is the determinism property: any sequence of
// commands (starts, leases, results with good and stale tokens, expiries,
// timers, signals, operator actions, idempotent wrappers) applied to two
// FSMs leaves byte-identical state, and snapshot -> restore -> snapshot is
// the identity. The sequences are random; rapid shrinks any failure.
func TestRandomLogsConverge(t *testing.T) {
	sources := []string{sagaWithUndo, approval, fanout, retrying, pausable, watched, childWF, parentWF, withService, nightly}
	rapid.Check(t, func(rt *rapid.T) {
		f := New(nil)
		var logs, jsonLogs []*raft.Log
		var answers []any
		now := t0
		apply := func(mt MessageType, msg any) any {
			data, err := Encode(mt, msg)
			if err != nil {
				rt.Fatal(err)
			}
			l := &raft.Log{Index: uint64(len(logs) + 1), Term: 1, Type: raft.LogCommand, Data: data}
			logs = append(logs, l)
			jsonLogs = append(jsonLogs, &raft.Log{Index: l.Index, Term: 1, Type: raft.LogCommand, Data: encodeJSON(rt, mt, msg)})
			res := f.Apply(l)
			answers = append(answers, res)
			return res
		}
		hdr := func() Header {
			now = now.Add(time.Duration(rapid.IntRange(1, 120_000).Draw(rt, "ms")) * time.Millisecond)
			return Header{Time: now}
		}
		for _, src := range sources {
			apply(RegisterWorkflowType, &RegisterWorkflowRequest{Header: hdr(), Source: src})
		}
		apply(RegisterWorkflowType, &RegisterWorkflowRequest{Header: hdr(), Source: webhookWF})
		apply(PutSecretType, &PutSecretRequest{Header: hdr(), Name: "alerts", Value: "k"})
		names := []string{"order", "approval", "fan", "retrying", "pausable", "watched", "parent", "calls"}
		ids := []string{"i0", "i1", "i2", "i3", "i4"}
		steps := []string{"charge", "reserve", "ship", "approve", "a", "b", "nap", "each_item"}
		n := rapid.IntRange(10, 120).Draw(rt, "commands")
		for i := 0; i < n; i++ {
			id := rapid.SampledFrom(ids).Draw(rt, "id")
			state := f.State().Read()
			switch rapid.IntRange(0, 16).Draw(rt, "kind") {
			case 0, 1:
				input := `{"n": 3}`
				if rapid.Bool().Draw(rt, "items") {
					input = `{"items":["x","y","z"],"tags":{"a":1},"n":70}`
				}
				var next *NextTasks
				if rapid.Bool().Draw(rt, "eager") {
					// A start on the leader may lease to a waiting poll.
					next = &NextTasks{WorkerID: "w", Queue: "default", Max: rapid.IntRange(1, 3).Draw(rt, "eager_max")}
				}
				start := &StartInstanceRequest{Header: hdr(), ID: id, Workflow: rapid.SampledFrom(names).Draw(rt, "wf"), Input: json.RawMessage(input), Next: next}
				apply(start.Type(), start)
			case 2, 3:
				var leases []Lease
				for _, q := range []string{"default"} {
					for _, task := range state.PendingTasks(q, rapid.IntRange(1, 5).Draw(rt, "lease")) {
						leases = append(leases, Lease{TaskID: task.ID, WorkerID: "w"})
					}
				}
				apply(LeaseTasksType, &LeaseTasksRequest{Header: hdr(), Leases: leases})
			case 4, 5, 6:
				leased := state.LeasedTasks(0)
				if len(leased) == 0 {
					continue
				}
				task := rapid.SampledFrom(leased).Draw(rt, "task")
				token := task.Token
				if rapid.IntRange(0, 5).Draw(rt, "stale") == 0 {
					token = "1.0" // a stale or forged token
				}
				switch rapid.IntRange(0, 2).Draw(rt, "result") {
				case 0:
					apply(CompleteTaskType, &CompleteTaskRequest{Header: hdr(), TaskID: task.ID, Token: token, Output: json.RawMessage(`{"id":"x","by":"w","approved":true}`)})
				case 1:
					apply(FailTaskType, &FailTaskRequest{Header: hdr(), TaskID: task.ID, Token: token,
						Error: TaskError{Type: "boom", Message: "m", NonRetryable: rapid.Bool().Draw(rt, "final")}})
				default:
					apply(HeartbeatTaskType, &HeartbeatTaskRequest{Header: hdr(), TaskID: task.ID, Token: token, Details: json.RawMessage(`{"p":1}`)})
				}
			case 7:
				var expired []ExpiredLease
				for _, task := range state.LeasedTasks(0) {
					expired = append(expired, ExpiredLease{TaskID: task.ID, Token: task.Token})
				}
				apply(ExpireLeasesType, &ExpireLeasesRequest{Header: hdr(), Leases: expired})
			case 8:
				var due []string
				for _, tm := range state.DueTimers(0) {
					due = append(due, tm.ID)
				}
				h := hdr()
				h.Time = h.Time.Add(time.Duration(rapid.IntRange(0, 48).Draw(rt, "hours")) * time.Hour)
				now = h.Time
				apply(FireTimersType, &FireTimersRequest{Header: h, Timers: due})
			case 9:
				apply(SignalInstanceType, &SignalInstanceRequest{Header: hdr(), ID: id, Name: "approve",
					Payload: json.RawMessage(`{"approved":true,"by":"x"}`), RequestID: rapid.SampledFrom([]string{"", "r1", "r2"}).Draw(rt, "req")})
			case 10:
				switch rapid.IntRange(0, 7).Draw(rt, "op") {
				case 7:
					body := []byte(`{"alert_id":"` + rapid.SampledFrom([]string{"a1", "a2"}).Draw(rt, "alert") + `","service":"s"}`)
					sig := "sha256=bad"
					if rapid.Bool().Draw(rt, "signed") {
						sig = sign("k", body)
					}
					apply(WebhookDeliveryType, &WebhookDeliveryRequest{Header: hdr(), ID: "hooked.alert", Body: body, Headers: map[string]string{"x": "y"}, Signature: sig})
				case 6:
					apply(FireTriggerType, &FireTriggerRequest{Header: hdr(), ID: "nightly.etl", Scheduled: now, Manual: rapid.Bool().Draw(rt, "manual")})
				case 5:
					apply(SetBreakerType, &SetBreakerRequest{Header: hdr(), Name: "payments", State: rapid.SampledFrom([]string{BreakerOpen, BreakerClosed}).Draw(rt, "breaker")})
				case 0:
					apply(CancelInstanceType, &CancelInstanceRequest{Header: hdr(), ID: id})
				case 1:
					apply(TerminateInstanceType, &TerminateInstanceRequest{Header: hdr(), ID: id})
				case 2:
					apply(SuspendInstanceType, &SuspendInstanceRequest{Header: hdr(), ID: id})
				case 3:
					apply(ResumeInstanceType, &SuspendInstanceRequest{Header: hdr(), ID: id})
				default:
					apply(RetryInstanceType, &RetryInstanceRequest{Header: hdr(), ID: id})
				}
			case 11:
				apply(StepOverrideType, &StepOverrideRequest{Header: hdr(), ID: id, Step: rapid.SampledFrom(steps).Draw(rt, "step"),
					Action: rapid.SampledFrom([]string{OverrideComplete, OverrideSkip, OverrideFail, OverrideRerun}).Draw(rt, "action"), Output: json.RawMessage(`{"id":"o"}`)})
			case 16:
				// A batch of results that asks for the worker's next tasks.
				var outcomes []TaskOutcome
				for _, task := range state.LeasedTasks(0) {
					if rapid.Bool().Draw(rt, "report") {
						outcomes = append(outcomes, TaskOutcome{TaskID: task.ID, Token: task.Token, Output: json.RawMessage(`{"id":"x","by":"w","approved":true}`)})
					}
				}
				var next *NextTasks
				if rapid.Bool().Draw(rt, "next") {
					next = &NextTasks{WorkerID: "w", Queue: "default", Max: rapid.IntRange(0, 4).Draw(rt, "next_max")}
				}
				results := &TaskResultsRequest{Header: hdr(), Results: outcomes, Next: next}
				// Logs from before the Next types carry Next in the plain
				// type; both must apply alike.
				typ := results.Type()
				if rapid.Bool().Draw(rt, "old_type") {
					typ = TaskResultsType
				}
				apply(typ, results)
			case 15:
				// A node's workers are gone: release what they hold.
				var gone []ExpiredLease
				for _, task := range state.LeasedTasks(0) {
					if rapid.Bool().Draw(rt, "gone") {
						token := task.Token
						if rapid.IntRange(0, 4).Draw(rt, "stale_release") == 0 {
							token = "1.0"
						}
						gone = append(gone, ExpiredLease{TaskID: task.ID, Token: token})
					}
				}
				apply(ReleaseLeasesType, &ReleaseLeasesRequest{Header: hdr(), Leases: gone, Reason: "node n2 failed"})
			case 14:
				// Retention: purge what expired by a time up to 8 days on.
				h := hdr()
				h.Time = h.Time.Add(time.Duration(rapid.IntRange(0, 8*24).Draw(rt, "purge_hours")) * time.Hour)
				apply(PurgeInstancesType, &PurgeInstancesRequest{Header: h, Max: rapid.IntRange(0, 3).Draw(rt, "purge_max")})
			case 12:
				inner, _ := Encode(StartInstanceType, &StartInstanceRequest{Header: hdr(), ID: id + "-k", Workflow: "order", Input: json.RawMessage(`{}`)})
				apply(IdempotentType, &IdempotentRequest{Header: hdr(), Key: rapid.SampledFrom([]string{"k1", "k2"}).Draw(rt, "key"), Fingerprint: "fp", Command: inner})
			default:
				apply(RegisterWorkflowType, &RegisterWorkflowRequest{Header: hdr(), Source: rapid.SampledFrom(sources).Draw(rt, "src") + "\n# v" + fmt.Sprint(i)})
			}
		}
		// Replicas converge: a second FSM fed the same log in random raft
		// batches (one transaction each, records held across commands)
		// answers every command alike and holds the same bytes.
		other := New(nil)
		for i := 0; i < len(logs); {
			end := min(len(logs), i+rapid.IntRange(1, 24).Draw(rt, "batch"))
			for j, res := range other.ApplyBatch(logs[i:end]) {
				want, _ := json.Marshal(answers[i+j])
				got, _ := json.Marshal(res)
				if !bytes.Equal(want, got) {
					rt.Fatalf("command %d answered %s in a batch, %s alone", i+j+1, got, want)
				}
			}
			i = end
		}
		a := snapshotBytes(rt, f)
		b := snapshotBytes(rt, other)
		if !bytes.Equal(a, b) {
			rt.Fatalf("replicas diverged after %d commands", len(logs))
		}
		// A replica that keeps ended instances live (no archive) answers
		// the same and reads the same.
		plain := New(nil)
		plain.State().noArchive = true
		for i, l := range logs {
			want, _ := json.Marshal(answers[i])
			got, _ := json.Marshal(plain.Apply(l))
			if !bytes.Equal(want, got) {
				rt.Fatalf("command %d answered %s without the archive, %s with it", i+1, got, want)
			}
		}
		sameReads(rt, f.State().Read(), plain.State().Read())
		// The same commands framed in the JSON codec that logs were written
		// in before the compact one read the same: same answers, same bytes.
		fromJSON := New(nil)
		for i, l := range jsonLogs {
			want, _ := json.Marshal(answers[i])
			got, _ := json.Marshal(fromJSON.Apply(l))
			if !bytes.Equal(want, got) {
				rt.Fatalf("command %d answered %s from JSON, %s from msgpack", i+1, got, want)
			}
		}
		j := snapshotBytes(rt, fromJSON)
		if !bytes.Equal(a, j) {
			rt.Fatalf("the log in the JSON codec left other state after %d commands", len(logs))
		}
		// A replica restored from a snapshot taken part-way (its partial
		// history chunks stored, no instance tails) and fed the rest of the
		// log converges too, histories included.
		cut := rapid.IntRange(0, len(logs)).Draw(rt, "cut")
		early := New(nil)
		for _, l := range logs[:cut] {
			early.Apply(l)
		}
		mid := snapshotBytes(rt, early)
		late := restoreFrom(rt, mid)
		for _, l := range logs[cut:] {
			late.Apply(l)
		}
		d := snapshotBytes(rt, late)
		if !bytes.Equal(a, d) {
			rt.Fatalf("a replica restored after %d of %d commands diverged", cut, len(logs))
		}
		for _, inst := range f.State().Read().Instances("", "", 0) {
			want, _ := json.Marshal(f.State().Read().History(inst.ID, 0, 0))
			got, _ := json.Marshal(late.State().Read().History(inst.ID, 0, 0))
			if !bytes.Equal(want, got) {
				rt.Fatalf("history of %s differs on the restored replica:\n%s\n%s", inst.ID, want, got)
			}
		}
		// Every instance replays from its history to the state it is in.
		for _, inst := range f.State().Read().Instances("", "", 0) {
			rep, err := f.Replay(f.State().Read(), inst.ID, 0)
			if err != nil {
				rt.Fatalf("replay %s: %v", inst.ID, err)
			}
			if !rep.Matches {
				for _, e := range f.State().Read().History(inst.ID, 0, 0) {
					rt.Logf("%d @%d %s step=%s el=%s task=%s att=%d err=%v data=%s detail=%s", e.Seq, e.Index, e.Type, e.Step, e.Element, e.TaskID, e.Attempt, e.Error, e.Data, e.Detail)
				}
				rt.Fatalf("replay of %s (%s) diverged: %+v\noriginal %+v\nreplayed %+v", inst.ID, inst.Workflow, rep.Divergence, rep.Divergence.Original, rep.Divergence.Replayed)
			}
		}
		// Snapshot -> restore -> snapshot is the identity.
		restored := restoreFrom(rt, a)
		c := snapshotBytes(rt, restored)
		if !bytes.Equal(a, c) {
			rt.Fatal("snapshot -> restore -> snapshot differs")
		}
		// The expiry buckets, kept change by change, rebuilt by a restore
		// or kept without the archive, list every ended instance by when
		// it expires.
		for name, g := range map[string]*FSM{"applied": f, "batched": other, "unarchived": plain, "restored mid-way": late, "restored": restored} {
			expiryMatchesInstances(rt, name, g.State().Read())
			workflowListsMatchInstances(rt, name, g.State().Read())
			archivePagesHold(rt, name, g.State().Read())
		}
	})
}

// expiryMatchesInstances fails unless the expiry table lists exactly the
// instances with an expiry, in (expiry, id) order.
func expiryMatchesInstances(rt *rapid.T, name string, tx *Txn) {
	var want []expiryEntry
	for _, inst := range tx.Instances("", "", 0) {
		if inst.ExpiresKey != 0 {
			want = append(want, expiryEntry{Key: inst.ExpiresKey, ID: inst.ID})
		}
	}
	sort.Slice(want, func(i, j int) bool { return want[i].less(want[j]) })
	var got []expiryEntry
	tx.eachExpiry(func(e expiryEntry) bool {
		got = append(got, e)
		return true
	})
	if fmt.Sprint(got) != fmt.Sprint(want) {
		rt.Fatalf("%s: expiry lists %v, the instances %v", name, got, want)
	}
}

// workflowListsMatchInstances fails unless each workflow's list holds
// exactly the ids of its instances, in order.
func workflowListsMatchInstances(rt *rapid.T, name string, tx *Txn) {
	want := map[string][]string{}
	for _, inst := range tx.Instances("", "", 0) {
		want[inst.Workflow] = append(want[inst.Workflow], inst.ID)
	}
	it, err := tx.Txn.Get(tableWorkflows, "id")
	if err != nil {
		rt.Fatal(err)
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		wf := raw.(*WorkflowVersion).Name
		var got []string
		tx.eachOfWorkflow(wf, "", func(id string) bool {
			got = append(got, id)
			return true
		})
		if fmt.Sprint(got) != fmt.Sprint(want[wf]) {
			rt.Fatalf("%s: workflow %s lists %v, its instances are %v", name, wf, got, want[wf])
		}
	}
}

// archivePagesHold fails unless every archive page holds, in id order,
// only ids from its Lo up to the next page's, none of them empty, and no
// instance is both archived and live.
func archivePagesHold(rt *rapid.T, name string, tx *Txn) {
	it, err := tx.Txn.Get(tableArchive, "id")
	if err != nil {
		rt.Fatal(err)
	}
	var pages []*archivePage
	for raw := it.Next(); raw != nil; raw = it.Next() {
		pages = append(pages, raw.(*archivePage))
	}
	for i, p := range pages {
		if len(p.Recs) == 0 || len(p.Recs) > archivePageMax {
			rt.Fatalf("%s: archive page %q holds %d instances", name, p.Lo, len(p.Recs))
		}
		for j, rec := range p.Recs {
			id := rec.ID()
			if id < p.Lo || (i+1 < len(pages) && id >= pages[i+1].Lo) || (j > 0 && id <= p.Recs[j-1].ID()) {
				rt.Fatalf("%s: archive page %q holds %q out of order", name, p.Lo, id)
			}
			if live, _ := tx.Txn.First(tableInstances, "id", id); live != nil {
				rt.Fatalf("%s: instance %s is both archived and live", name, id)
			}
		}
	}
}

// sameReads fails unless two states read the same: every instance, its
// tasks and its history.
func sameReads(rt *rapid.T, a, b *Txn) {
	ia, ib := a.Instances("", "", 0), b.Instances("", "", 0)
	ja, _ := json.Marshal(ia)
	jb, _ := json.Marshal(ib)
	if !bytes.Equal(ja, jb) {
		rt.Fatalf("instances differ:\n%s\n%s", ja, jb)
	}
	for _, inst := range ia {
		for _, id := range inst.TaskIDs {
			ta, _ := json.Marshal(a.Task(id))
			tb, _ := json.Marshal(b.Task(id))
			if !bytes.Equal(ta, tb) {
				rt.Fatalf("task %s of %s differs:\n%s\n%s", id, inst.ID, ta, tb)
			}
		}
		ha, _ := json.Marshal(a.History(inst.ID, 0, 0))
		hb, _ := json.Marshal(b.History(inst.ID, 0, 0))
		if !bytes.Equal(ha, hb) {
			rt.Fatalf("history of %s differs:\n%s\n%s", inst.ID, ha, hb)
		}
	}
	if ca, cb := a.countsOf(), b.countsOf(); ca[tableInstances] != cb[tableInstances] || ca[tableTasks] != cb[tableTasks] {
		rt.Fatalf("counts differ: %v, %v", ca, cb)
	}
}

const webhookWF = `workflow "hooked" {
  trigger "webhook" "alert" {
    secret = "alerts"
    id     = request.body.alert_id
    input  = { service = request.body.service }
  }
  step "a" {
    activity = "noop"
    input    = input
  }
}
`

func sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}
