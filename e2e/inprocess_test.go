package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/agent"
	"github.com/lockstep-io/lockstep/api"
	"github.com/lockstep-io/lockstep/examples/workers/agents"
	"github.com/lockstep-io/lockstep/worker"
)

const slowWorkflow = `
workflow "slow" {
  step "wait" {
    activity = "delay"
    timeout  = "3s"
    input    = { ms = 1500 }
  }
  step "done" {
    activity = "noop"
    input    = { waited = step.wait.output.ms }
  }
  output = step.done.output
}
`

func TestThreeNodeDiamondAndFailover(t *testing.T) {
	c := startCluster(t, 3, true)
	ctx := context.Background()
	leader := c.waitLeader(c.agents)
	followers := c.followers(leader)
	fc := c.client(followers[0])

	// Every node is a raft voter: bootstrap_expect found all three.
	peers, err := fc.Peers(ctx)
	if err != nil || len(peers) != 3 {
		t.Fatalf("peers = %+v, %v", peers, err)
	}
	// Gossip converges on its own schedule: a follower may have heard of
	// the third member after raft has.
	waitFor(t, 10*time.Second, "three gossip members on a follower", func() error {
		members, err := fc.Members(ctx)
		if err == nil && len(members) != 3 {
			err = fmt.Errorf("members = %+v", members)
		}
		return err
	})

	// Register through a follower: the write is forwarded to the leader.
	reg, err := fc.RegisterWorkflow(ctx, "diamond.hcl", readExample(t, "diamond.hcl"))
	if err != nil || reg.Name != "diamond" || reg.Version != 1 || !reg.Created {
		t.Fatalf("register = %+v, %v", reg, err)
	}
	if _, err := fc.RegisterWorkflow(ctx, "slow.hcl", []byte(slowWorkflow)); err != nil {
		t.Fatal(err)
	}

	// Run several diamonds, started on different nodes, read from a follower.
	var ids []string
	since := map[string]uint64{}
	for i := 0; i < 6; i++ {
		cl := c.client(c.agents[i%3])
		s, err := cl.StartInstance(ctx, "diamond", api.StartRequest{Input: json.RawMessage(fmt.Sprintf(`{"n": %d}`, i))})
		if err != nil || !s.Created {
			t.Fatalf("start %d = %+v, %v", i, s, err)
		}
		ids = append(ids, s.ID)
		since[s.ID] = s.Index
	}
	for i, id := range ids {
		inst := waitInstance(t, fc, id, since[id], 20*time.Second)
		if inst.Status != "completed" {
			t.Fatalf("instance %s: %s %+v", id, inst.Status, inst.Error)
		}
		if want := fmt.Sprintf(`{"result":{"b":%d,"c":1}}`, i); string(inst.Output) != want {
			t.Fatalf("output = %s, want %s", inst.Output, want)
		}
		for name, st := range inst.Steps {
			if st.Status != "succeeded" || st.Attempts != 1 {
				t.Fatalf("step %s = %+v", name, st)
			}
		}
	}

	// Error paths and skips run the same on the cluster: a spend within the
	// limit is charged; one over it is refused by a fail step, handled by
	// an error path, and both are audited.
	if _, err := fc.RegisterWorkflow(ctx, "spend-guard.hcl", readExample(t, "spend-guard.hcl")); err != nil {
		t.Fatal(err)
	}
	for id, amount := range map[string]int{"spend-ok": 10, "spend-refused": 5000} {
		s, err := c.client(c.agents[2]).StartInstance(ctx, "spend-guard", api.StartRequest{ID: id, Input: json.RawMessage(fmt.Sprintf(`{"account":"a","amount":%d}`, amount))})
		if err != nil {
			t.Fatal(err)
		}
		since[id] = s.Index
	}
	for id, want := range map[string]string{
		"spend-ok":      "charge=succeeded refuse=skipped report_refusal=skipped audit=succeeded",
		"spend-refused": "charge=skipped refuse=failed report_refusal=succeeded audit=succeeded",
	} {
		inst := waitInstance(t, fc, id, since[id], 20*time.Second)
		got := fmt.Sprintf("charge=%s refuse=%s report_refusal=%s audit=%s", inst.Steps["charge"].Status,
			inst.Steps["refuse"].Status, inst.Steps["report_refusal"].Status, inst.Steps["audit"].Status)
		if inst.Status != "completed" || got != want {
			t.Fatalf("%s: %s %s, want %s", id, inst.Status, got, want)
		}
	}

	// A bounded fan-out over a map, joined.
	if _, err := fc.RegisterWorkflow(ctx, "backfill.hcl", readExample(t, "backfill.hcl")); err != nil {
		t.Fatal(err)
	}
	bf, err := fc.StartInstance(ctx, "backfill", api.StartRequest{ID: "bf", Input: json.RawMessage(`{"tables":{"a":{"days":2},"b":{"days":3},"c":{"days":1,"ms_per_day":5}}}`)})
	if err != nil {
		t.Fatal(err)
	}
	if inst := waitInstance(t, fc, "bf", bf.Index, 20*time.Second); inst.Status != "completed" || string(inst.Output) != `{"days":6,"tables":["a","b","c"]}` {
		t.Fatalf("backfill: %s %s %+v", inst.Status, inst.Output, inst.Error)
	}

	// A human approval answered through a follower; the repeat is accepted once.
	if _, err := fc.RegisterWorkflow(ctx, "approval.hcl", readExample(t, "approval.hcl")); err != nil {
		t.Fatal(err)
	}
	ap, err := c.client(c.agents[0]).StartInstance(ctx, "approval", api.StartRequest{ID: "ap", Input: json.RawMessage(`{"request":"r","amount":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the approval to wait for its signal", func() error {
		inst, err := fc.Instance(ctx, "ap")
		if err != nil {
			return err
		}
		if st := inst.Steps["decision"].Status; st != "waiting_signal" {
			return fmt.Errorf("decision is %s", st)
		}
		return nil
	})
	for i := 0; i < 2; i++ {
		res, err := fc.Signal(ctx, "ap", "approve", json.RawMessage(`{"approved": true, "by": "ada"}`), "req-ap")
		if err != nil || res.DeliveredTo != "decision" || res.Duplicate != (i == 1) {
			t.Fatalf("signal %d = %+v %v", i, res, err)
		}
	}
	if inst := waitInstance(t, fc, "ap", ap.Index, 20*time.Second); inst.Status != "completed" || string(inst.Output) != `{"approved":true,"by":"ada"}` {
		t.Fatalf("approval: %s %s %+v", inst.Status, inst.Output, inst.Error)
	}

	// A parent/child pipeline: the parent waits for its child workflow.
	if _, err := fc.RegisterWorkflow(ctx, "pipeline.hcl", readExample(t, "pipeline.hcl")); err != nil {
		t.Fatal(err)
	}
	if _, err := fc.RegisterWorkflow(ctx, "parent-child.hcl", readExample(t, "parent-child.hcl")); err != nil {
		t.Fatal(err)
	}
	pc, err := fc.StartInstance(ctx, "parent-child", api.StartRequest{ID: "pc", Input: json.RawMessage(`{"source":"s","rows":10}`)})
	if err != nil {
		t.Fatal(err)
	}
	if inst := waitInstance(t, fc, "pc", pc.Index, 30*time.Second); inst.Status != "completed" || string(inst.Output) != `{"loaded":7,"table":"warehouse.s"}` {
		t.Fatalf("parent-child: %s %s %+v", inst.Status, inst.Output, inst.Error)
	}

	// Cancel with compensation, through a follower, with the built-in workers.
	if _, err := fc.RegisterWorkflow(ctx, "order-saga.hcl", readExample(t, "order-saga.hcl")); err != nil {
		t.Fatal(err)
	}
	if _, err := fc.StartInstance(ctx, "order-saga", api.StartRequest{ID: "saga", Input: json.RawMessage(`{"order_id":"1","amount":5,"ship_ms":3000}`)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the shipment to be under way", func() error {
		inst, err := fc.Instance(ctx, "saga")
		if err != nil {
			return err
		}
		if st := inst.Steps["ship"].Status; st != "running" {
			return fmt.Errorf("ship is %s", st)
		}
		return nil
	})
	if status, err := fc.Cancel(ctx, "saga", "test"); err != nil || status != "cancelling" {
		t.Fatalf("cancel = %q %v", status, err)
	}
	sagaInst, err := fc.WaitInstance(ctx, "saga")
	if err != nil || sagaInst.Status != "cancelled" {
		t.Fatalf("saga: %+v %v", sagaInst, err)
	}
	for _, s := range []string{"charge", "reserve", "ship"} {
		if st := sagaInst.Steps[s].Status; st != "compensated" {
			t.Fatalf("%s is %s", s, st)
		}
	}

	// Start one slow instance and stop the leader while it is in flight.
	inflight, err := fc.StartInstance(ctx, "slow", api.StartRequest{ID: "inflight-1"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the slow step to be leased", func() error {
		inst, err := fc.Instance(ctx, inflight.ID)
		if err != nil {
			return err
		}
		// Running is what the test wants; on a starved machine it may be
		// done already, which only makes the failover below less eventful.
		if st := inst.Steps["wait"].Status; st == "waiting" || st == "scheduled" {
			return fmt.Errorf("wait step is %s", st)
		}
		return nil
	})
	leader.Shutdown()

	// Started at once, while the followers still name the stopped leader or
	// none: the follower holds the request until the next leader is
	// elected, instead of answering 503.
	during, err := fc.StartInstance(ctx, "diamond", api.StartRequest{ID: "during-election", Input: json.RawMessage(`{"n": 98}`)})
	if err != nil || !during.Created {
		t.Fatalf("start during the election: %+v, %v", during, err)
	}

	remaining := followers
	newLeader := c.waitLeader(remaining)
	if newLeader == leader {
		t.Fatal("the stopped node is still the leader")
	}
	// Started after the failover, through the node that does not lead.
	var other *api.Client
	for _, a := range remaining {
		if a != newLeader {
			other = c.client(a)
		}
	}
	after, err := other.StartInstance(ctx, "diamond", api.StartRequest{ID: "after-failover", Input: json.RawMessage(`{"n": 99}`)})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*api.Started{inflight, during, after} {
		id := s.ID
		inst := waitInstance(t, other, id, s.Index, 30*time.Second)
		if inst.Status != "completed" {
			t.Fatalf("instance %s after failover: %s %+v", id, inst.Status, inst.Error)
		}
	}
	// The acknowledged instances from before the failover are all still there.
	for _, id := range ids {
		if inst, err := other.Instance(ctx, id); err != nil || inst.Status != "completed" {
			t.Fatalf("instance %s lost after failover: %+v %v", id, inst, err)
		}
	}
}

func TestWorkerProtocolThroughFollower(t *testing.T) {
	c := startCluster(t, 3, false) // no built-in workers: the test is the worker
	ctx := context.Background()
	leader := c.waitLeader(c.agents)
	fc := c.client(c.followers(leader)[0])
	if _, err := fc.RegisterWorkflow(ctx, "diamond.hcl", readExample(t, "diamond.hcl")); err != nil {
		t.Fatal(err)
	}

	// Nothing to do: the poll answers empty after its wait.
	if task, err := fc.Poll(ctx, "default", api.PollRequest{WorkerID: "w", WaitMS: 50}); err != nil || task != nil {
		t.Fatalf("empty poll = %+v, %v", task, err)
	}

	s, err := fc.StartInstance(ctx, "diamond", api.StartRequest{ID: "order-1", Input: json.RawMessage(`{"n": 5}`)})
	if err != nil || !s.Created {
		t.Fatalf("start = %+v %v", s, err)
	}
	// Same id, same input: 200 with the same id; different input: 409.
	if again, err := fc.StartInstance(ctx, "diamond", api.StartRequest{ID: "order-1", Input: json.RawMessage(`{"n": 5}`)}); err != nil || again.Created || again.ID != "order-1" {
		t.Fatalf("repeat start = %+v %v", again, err)
	}
	if _, err := fc.StartInstance(ctx, "diamond", api.StartRequest{ID: "order-1", Input: json.RawMessage(`{"n": 6}`)}); !api.IsStatus(err, 409) {
		t.Fatalf("conflicting start = %v", err)
	}

	task, err := fc.Poll(ctx, "default", api.PollRequest{WorkerID: "w1", WaitMS: 5000})
	if err != nil || task == nil {
		t.Fatalf("poll = %+v %v", task, err)
	}
	if task.Step != "a" || task.Activity != "noop" || task.Attempt != 1 || string(task.Input) != `{"n":5}` || task.IdempotencyKey != "order-1/a" {
		t.Fatalf("task = %+v", task)
	}
	if _, err := fc.Complete(ctx, task.TaskID, "forged", task.Input); !api.IsStatus(err, 409) {
		t.Fatalf("forged token = %v", err)
	}
	if _, err := fc.Complete(ctx, task.TaskID, task.Token, task.Input); err != nil {
		t.Fatal(err)
	}
	if _, err := fc.Complete(ctx, task.TaskID, task.Token, task.Input); !api.IsStatus(err, 409) {
		t.Fatalf("duplicate completion = %v", err)
	}

	// Run the rest as a plain worker, through the follower, reporting
	// with the batch of results (POST /v1/tasks/complete), which the
	// follower forwards to the leader as any write.
	follower := "http://" + c.followers(leader)[0].HTTPAddr()
	for {
		inst, err := fc.Instance(ctx, "order-1")
		if err != nil {
			t.Fatal(err)
		}
		if inst.Terminal() {
			if inst.Status != "completed" || string(inst.Output) != `{"result":{"b":5,"c":1}}` {
				t.Fatalf("instance = %s %s", inst.Status, inst.Output)
			}
			break
		}
		task, err := fc.Poll(ctx, "default", api.PollRequest{WorkerID: "w1", WaitMS: 2000})
		if err != nil {
			t.Fatal(err)
		}
		if task != nil {
			body := fmt.Sprintf(`{"results":[{"task_id":%q,"token":%q,"output":%s}]}`, task.TaskID, task.Token, task.Input)
			resp, err := http.Post(follower+"/v1/tasks/complete", "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(raw), `"instance_status"`) || strings.Contains(string(raw), `"error"`) {
				t.Fatalf("POST /v1/tasks/complete through a follower = %d %s", resp.StatusCode, raw)
			}
		}
	}

	// Terminate through the follower: the leased task's result is refused.
	if _, err := fc.StartInstance(ctx, "diamond", api.StartRequest{ID: "order-2", Input: json.RawMessage(`{"n": 1}`)}); err != nil {
		t.Fatal(err)
	}
	task, err = fc.Poll(ctx, "default", api.PollRequest{WorkerID: "w1", WaitMS: 5000})
	if err != nil || task == nil {
		t.Fatalf("poll = %+v %v", task, err)
	}
	if status, err := fc.Terminate(ctx, "order-2", "operator test"); err != nil || status != "terminated" {
		t.Fatalf("terminate = %q %v", status, err)
	}
	if _, err := fc.Complete(ctx, task.TaskID, task.Token, task.Input); !api.IsStatus(err, 409) {
		t.Fatalf("result after terminate = %v", err)
	}
}

// A ?consistent read through a follower sees every write acknowledged before
// it began (it is answered by the leader after it confirmed its
// leadership), where a default read may lag.
func TestConsistentReadsThroughAFollower(t *testing.T) {
	c := startCluster(t, 3, false)
	ctx := context.Background()
	leader := c.waitLeader(c.agents)
	follower := c.followers(leader)[0]
	lc := c.client(leader)
	if _, err := lc.RegisterWorkflow(ctx, "diamond.hcl", readExample(t, "diamond.hcl")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		id := fmt.Sprintf("c%d", i)
		if _, err := lc.StartInstance(ctx, "diamond", api.StartRequest{ID: id, Input: json.RawMessage(`{"n":1}`)}); err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get("http://" + follower.HTTPAddr() + "/v1/instances/" + id + "?consistent")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("consistent read %d of a just-acknowledged start: %d", i, resp.StatusCode)
		}
	}
}

// The agent-team example runs with its documented worker, and the HTTP
// integration example with its service pointed at a node of this cluster.
func TestAgentTeamAndHTTPIntegrationExamples(t *testing.T) {
	c := startCluster(t, 3, true)
	ctx := context.Background()
	leader := c.waitLeader(c.agents)
	fc := c.client(c.followers(leader)[0])

	pool, err := worker.NewPool(worker.Config{Client: fc, Name: "agents", Queues: []string{"agents"}, Concurrency: 3, Activities: agents.Activities()})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { pool.Run(wctx); close(done) }()
	defer func() { stop(); <-done }()

	for _, f := range []string{"agent-team.hcl", "diamond.hcl"} {
		if _, err := fc.RegisterWorkflow(ctx, f, readExample(t, f)); err != nil {
			t.Fatal(err)
		}
	}
	src := strings.Replace(string(readExample(t, "http-integration.hcl")), "http://127.0.0.1:7700", "http://"+leader.HTTPAddr(), 1)
	if _, err := fc.RegisterWorkflow(ctx, "http-integration.hcl", []byte(src)); err != nil {
		t.Fatal(err)
	}
	team, err := fc.StartInstance(ctx, "agent-team", api.StartRequest{ID: "team", Input: json.RawMessage(`{"goal":"compare three databases"}`)})
	if err != nil {
		t.Fatal(err)
	}
	inst := waitInstance(t, fc, "team", team.Index, 30*time.Second)
	if inst.Status != "completed" || string(inst.Output) != `{"rounds":2,"summary":"3 results accepted for \"compare three databases\" after 2 rounds"}` {
		t.Fatalf("agent team: %s %s %+v", inst.Status, inst.Output, inst.Error)
	}
	hi, err := fc.StartInstance(ctx, "http-integration", api.StartRequest{ID: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	inst = waitInstance(t, fc, "hi", hi.Index, 30*time.Second)
	if inst.Status != "completed" || !strings.Contains(string(inst.Output), `"latest":1`) || !strings.Contains(string(inst.Output), `"leader":"`+leader.NodeName()+`"`) {
		t.Fatalf("http integration: %s %s %+v", inst.Status, inst.Output, inst.Error)
	}
}

// A task leased by a built-in worker of a node that goes away is released
// as soon as gossip says the node is gone, not at its lease deadline, and
// runs again on a node that is still there.
func TestLeasesOfAGoneNodeAreReleased(t *testing.T) {
	c := startCluster(t, 3, true)
	ctx := context.Background()
	leader := c.waitLeader(c.agents)
	fc := c.client(c.followers(leader)[0])
	wf := `workflow "held" {
  step "work" {
    activity = "delay"
    timeout  = "10m"
    input    = { ms = 3000 }
  }
}
`
	if _, err := fc.RegisterWorkflow(ctx, "held.hcl", []byte(wf)); err != nil {
		t.Fatal(err)
	}
	s, err := fc.StartInstance(ctx, "held", api.StartRequest{ID: "held-1"})
	if err != nil {
		t.Fatal(err)
	}
	// Find the node whose built-in worker holds the lease, and stop it.
	var holder string
	waitFor(t, 10*time.Second, "the task to be leased", func() error {
		inst, err := fc.Instance(ctx, "held-1")
		if err != nil {
			return err
		}
		task, err := c.client(leader).Task(ctx, inst.Steps["work"].TaskID)
		if err != nil {
			return err
		}
		if task.Status != "leased" {
			return fmt.Errorf("task is %s", task.Status)
		}
		holder = strings.SplitN(task.WorkerID, "-builtin/", 2)[0]
		return nil
	})
	var rest []*agent.Agent
	for _, a := range c.agents {
		if a.NodeName() == holder {
			a.Shutdown()
		} else {
			rest = append(rest, a)
		}
	}
	if len(rest) != 2 {
		t.Fatalf("no agent named %q", holder)
	}
	c.waitLeader(rest)
	cl := c.client(rest[0])
	inst := waitInstance(t, cl, "held-1", s.Index, 60*time.Second) // far less than the 10m lease
	if inst.Status != "completed" || inst.Steps["work"].Attempts != 2 {
		t.Fatalf("instance %s, work attempts %d", inst.Status, inst.Steps["work"].Attempts)
	}
	events, err := cl.History(ctx, "held-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	lost := false
	for _, e := range events {
		lost = lost || (e.Type == "attempt_failed" && e.Error != nil && e.Error.Type == "worker_lost" && strings.Contains(e.Error.Message, holder))
	}
	if !lost {
		t.Fatalf("no worker_lost attempt in %+v", events)
	}
}
