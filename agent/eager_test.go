package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/lockstep-io/lockstep/agent/agenttest"
	"github.com/lockstep-io/lockstep/api"
	"github.com/lockstep-io/lockstep/internal/workloads"
)

var chain = workloads.Chain3("chain")

// The built-in workers take their next tasks with their results: a step
// after the first is leased to the reporter that ended the one before it
// (worker ids ending in /r<n>), in the raft entry of those results, and
// the instance replays identically.
func TestBuiltinWorkersTakeTheNextStepWithTheirResults(t *testing.T) {
	a := agenttest.Dev(t, true)
	ctx := context.Background()
	cl, err := api.New(api.Config{Address: "http://" + a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.RegisterWorkflow(ctx, "chain.hcl", []byte(chain)); err != nil {
		t.Fatal(err)
	}
	eager := 0
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("c%d", i)
		s, err := cl.StartInstance(ctx, "chain", api.StartRequest{ID: id, Input: json.RawMessage(`{"n":1}`)})
		if err != nil {
			t.Fatal(err)
		}
		inst, err := cl.WaitInstanceSince(ctx, id, s.Index)
		if err != nil || inst.Status != "completed" || string(inst.Output) != `{"n":3}` {
			t.Fatalf("instance %s: %+v %v", id, inst, err)
		}
		events, err := cl.History(ctx, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		index := map[string]uint64{}
		for _, e := range events {
			if e.Type == "step_succeeded" {
				index[e.Step] = e.Index
			}
			if e.Type == "task_leased" && e.Step != "a" && strings.Contains(e.Worker, "/r") {
				prev := map[string]string{"b": "a", "c": "b"}[e.Step]
				if e.Index != index[prev] {
					t.Fatalf("%s: step %s leased at index %d, its predecessor ended at %d", id, e.Step, e.Index, index[prev])
				}
				eager++
			}
		}
		rep, err := cl.Replay(ctx, id, 0)
		if err != nil || !rep.Matches {
			t.Fatalf("replay of %s: %+v %v", id, rep, err)
		}
	}
	if eager == 0 {
		t.Fatal("no step was leased with its predecessor's results")
	}
}
