package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/agent"
	"github.com/lockstep-io/lockstep/api"
	"github.com/lockstep-io/lockstep/worker"
)

// A construct, run on a 3-node cluster with the leader stopped while the
// instance is mid-way through it.
type construct struct {
	name, workflow, input string
	// ready, if set, is when act runs (an operator action before the
	// failover); mid is the state the leader is stopped in.
	ready func(*api.Instance) bool
	act   func(ctx context.Context, cl *api.Client, id string) error
	mid   func(*api.Instance) bool
	// after runs on a surviving node once a new leader leads.
	after func(ctx context.Context, cl *api.Client, id string) error
	// want is the status it ends in; check looks closer.
	want  string
	check func(t *testing.T, inst *api.Instance)
}

func stepIs(step, status string) func(*api.Instance) bool {
	return func(i *api.Instance) bool { return i.Steps[step].Status == status }
}

const childSleeper = `workflow "c-child" {
  step "nap" {
    sleep = "4s"
  }
  step "report" {
    activity = "noop"
    input    = { napped = true }
  }
  output = step.report.output
}
`

// childWaiter is a child that ends only when it is ended: the terminate
// case must find its parent still running after the failover, however
// long the cases before it took to get there (a child that slept 4s had
// ended, with its parent, by then on a loaded machine).
const childWaiter = `workflow "c-child-waits" {
  step "nap" {
    sleep = "1h"
  }
}
`

var gateOpen atomic.Bool

func constructs() []construct {
	return []construct{
		{name: "retry", want: "completed",
			workflow: `workflow "c-retry" {
  step "flaky" {
    activity = "flaky"
    retry {
      max_attempts     = 3
      initial_interval = "3s"
    }
  }
}`,
			mid: stepIs("flaky", "retry_wait"),
			check: func(t *testing.T, i *api.Instance) {
				if i.Steps["flaky"].Attempts != 2 {
					t.Errorf("flaky took %d attempts", i.Steps["flaky"].Attempts)
				}
			}},
		{name: "sleep", want: "completed",
			workflow: `workflow "c-sleep" {
  step "nap" {
    sleep = "4s"
  }
  step "after" {
    activity = "noop"
    input    = { woke = step.nap.output.slept_until != "" }
  }
  output = step.after.output
}`,
			mid: stepIs("nap", "sleeping"),
			check: func(t *testing.T, i *api.Instance) {
				if string(i.Output) != `{"woke":true}` {
					t.Errorf("output %s", i.Output)
				}
			}},
		{name: "signal", want: "completed",
			workflow: `workflow "c-signal" {
  step "ask" {
    wait_signal "go" {
      timeout = "1h"
      output  = { by = signal.payload.by }
    }
  }
  output = step.ask.output
}`,
			mid: stepIs("ask", "waiting_signal"),
			after: func(ctx context.Context, cl *api.Client, id string) error {
				_, err := cl.Signal(ctx, id, "go", json.RawMessage(`{"by":"ada"}`), "once")
				return err
			},
			check: func(t *testing.T, i *api.Instance) {
				if string(i.Output) != `{"by":"ada"}` {
					t.Errorf("output %s", i.Output)
				}
			}},
		{name: "signal-timeout", want: "completed",
			workflow: `workflow "c-signal-timeout" {
  step "ask" {
    wait_signal "go" {
      timeout = "4s"
    }
  }
  step "escalate" {
    depends_on   = [step.ask]
    trigger_rule = "any_failed"
    activity     = "noop"
    input        = { why = step.ask.error.type }
  }
  output = step.escalate.output
}`,
			mid: stepIs("ask", "waiting_signal"),
			check: func(t *testing.T, i *api.Instance) {
				if string(i.Output) != `{"why":"signal_timeout"}` {
					t.Errorf("output %s", i.Output)
				}
			}},
		{name: "buffered-signal", want: "completed",
			workflow: `workflow "c-buffered" {
  step "work" {
    activity = "delay"
    input    = { ms = 3000 }
  }
  step "ask" {
    depends_on = [step.work]
    wait_signal "late" {}
  }
  output = step.ask.output
}`,
			ready: stepIs("work", "running"),
			act: func(ctx context.Context, cl *api.Client, id string) error {
				res, err := cl.Signal(ctx, id, "late", json.RawMessage(`{"early":true}`), "")
				if err == nil && res.DeliveredTo != "" {
					err = fmt.Errorf("delivered at once to %s", res.DeliveredTo)
				}
				return err
			},
			mid: stepIs("work", "running"),
			check: func(t *testing.T, i *api.Instance) {
				if string(i.Output) != `{"early":true}` {
					t.Errorf("output %s", i.Output)
				}
			}},
		{name: "foreach", want: "completed", input: `{"items":[1,2,3,4,5,6]}`,
			workflow: `workflow "c-foreach" {
  input {
    items = list(number)
  }
  step "each" {
    for_each        = input.items
    max_concurrency = 2
    activity        = "delay"
    input           = { ms = 700, n = each.value }
  }
  output = [for o in step.each.output : o.n]
}`,
			mid: func(i *api.Instance) bool {
				st := i.Steps["each"]
				if st.Status != "running" {
					return false
				}
				for _, e := range st.Elements {
					if e.Status == "succeeded" {
						return true
					}
				}
				return false
			},
			check: func(t *testing.T, i *api.Instance) {
				if string(i.Output) != `[1,2,3,4,5,6]` {
					t.Errorf("output %s", i.Output)
				}
			}},
		{name: "child", want: "completed",
			workflow: `workflow "c-parent" {
  step "kid" {
    workflow = "c-child"
  }
  output = step.kid.output
}`,
			mid: stepIs("kid", "running"),
			check: func(t *testing.T, i *api.Instance) {
				if string(i.Output) != `{"napped":true}` {
					t.Errorf("output %s", i.Output)
				}
			}},
		{name: "fail-step", want: "failed",
			workflow: `workflow "c-fail" {
  step "work" {
    activity = "delay"
    input    = { ms = 3000 }
  }
  step "refuse" {
    depends_on = [step.work]
    fail {
      error   = "refused"
      message = "after ${step.work.output.ms} ms"
    }
  }
}`,
			mid: stepIs("work", "running"),
			check: func(t *testing.T, i *api.Instance) {
				if i.Error == nil || i.Error.Type != "refused" || !strings.Contains(i.Error.Message, "after 3000 ms") {
					t.Errorf("error %+v", i.Error)
				}
			}},
		{name: "timeout", want: "timed_out",
			workflow: `workflow "c-timeout" {
  timeout = "4s"
  step "nap" {
    sleep = "1h"
  }
}`,
			mid: stepIs("nap", "sleeping")},
		{name: "cancel", want: "cancelled",
			workflow: `workflow "c-cancel" {
  step "charge" {
    activity = "noop"
    compensate {
      activity = "undo"
    }
  }
  step "ship" {
    depends_on = [step.charge]
    activity   = "delay"
    input      = { ms = 2500 }
    compensate {
      activity = "undo"
    }
  }
}`,
			ready: stepIs("ship", "running"),
			act: func(ctx context.Context, cl *api.Client, id string) error {
				_, err := cl.Cancel(ctx, id, "changed my mind")
				return err
			},
			mid: func(i *api.Instance) bool { return i.Status == "cancelling" },
			check: func(t *testing.T, i *api.Instance) {
				for _, s := range []string{"charge", "ship"} {
					if i.Steps[s].Status != "compensated" {
						t.Errorf("%s is %s", s, i.Steps[s].Status)
					}
				}
			}},
		{name: "suspend", want: "completed",
			workflow: `workflow "c-suspend" {
  step "nap" {
    sleep = "2s"
  }
  step "after" {
    activity = "noop"
  }
}`,
			ready: stepIs("nap", "sleeping"),
			act: func(ctx context.Context, cl *api.Client, id string) error {
				_, err := cl.Suspend(ctx, id, "hold on")
				return err
			},
			mid: func(i *api.Instance) bool { return i.Status == "suspended" },
			after: func(ctx context.Context, cl *api.Client, id string) error {
				_, err := cl.Resume(ctx, id, "go on")
				return err
			}},
		{name: "terminate", want: "terminated",
			workflow: `workflow "c-terminate" {
  step "kid" {
    workflow = "c-child-waits"
  }
}`,
			mid: stepIs("kid", "running"),
			after: func(ctx context.Context, cl *api.Client, id string) error {
				_, err := cl.Terminate(ctx, id, "enough")
				return err
			},
			check: func(t *testing.T, i *api.Instance) {
				if i.Steps["kid"].ChildID == "" {
					t.Error("no child")
				}
			}},
		{name: "retry-op", want: "completed",
			workflow: `workflow "c-retry-op" {
  step "gate" {
    activity = "gate"
  }
}`,
			mid: func(i *api.Instance) bool { return i.Status == "failed" },
			after: func(ctx context.Context, cl *api.Client, id string) error {
				gateOpen.Store(true)
				_, err := cl.Retry(ctx, id, "", "the gate is open now")
				return err
			}},
		{name: "override", want: "completed",
			workflow: `workflow "c-override" {
  step "stuck" {
    activity = "noop"
    queue    = "nowhere"
  }
  step "after" {
    activity = "noop"
    input    = step.stuck.output
  }
  output = step.after.output
}`,
			mid: stepIs("stuck", "scheduled"),
			after: func(ctx context.Context, cl *api.Client, id string) error {
				_, err := cl.OverrideStep(ctx, id, "stuck", "complete", json.RawMessage(`{"fixed":true}`), nil, "by hand")
				return err
			},
			check: func(t *testing.T, i *api.Instance) {
				if string(i.Output) != `{"fixed":true}` {
					t.Errorf("output %s", i.Output)
				}
			}},
	}
}

func constructWorker() map[string]worker.Activity {
	echo := func(_ context.Context, task *api.Task) (json.RawMessage, error) { return task.Input, nil }
	return map[string]worker.Activity{
		"noop": echo,
		"undo": echo,
		"delay": func(ctx context.Context, task *api.Task) (json.RawMessage, error) {
			var in struct {
				MS int `json:"ms"`
			}
			json.Unmarshal(task.Input, &in)
			select {
			case <-time.After(time.Duration(in.MS) * time.Millisecond):
				return task.Input, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
		"flaky": func(_ context.Context, task *api.Task) (json.RawMessage, error) {
			if task.Attempt == 1 {
				return nil, &worker.ActivityError{Type: "flaky", Message: "first attempts fail"}
			}
			return json.RawMessage(`{"ok":true}`), nil
		},
		"gate": func(_ context.Context, task *api.Task) (json.RawMessage, error) {
			if !gateOpen.Load() {
				return nil, &worker.ActivityError{Type: "closed", Message: "the gate is closed", NonRetryable: true}
			}
			return json.RawMessage(`{"passed":true}`), nil
		},
	}
}

// TestEveryConstructThroughALeaderFailover runs each construct and each
// operator action on a 3-node cluster, stops the leader while every
// instance is mid-way, finishes them through the survivors, and then
// requires each to have ended as documented and to replay from its history
// identically on both surviving nodes.
func TestEveryConstructThroughALeaderFailover(t *testing.T) {
	gateOpen.Store(false) // a run before this one (-count) opened it
	c := startCluster(t, 3, false)
	ctx := context.Background()
	leader := c.waitLeader(c.agents)
	survivors := c.followers(leader)
	wc, oc := c.client(survivors[0]), c.client(survivors[1])

	// The worker talks to a node that survives; its polls and results are
	// forwarded to whichever node leads.
	pctx, stop := context.WithCancel(ctx)
	pool, err := worker.NewPool(worker.Config{Client: wc, Name: "constructs", Concurrency: 8, Activities: constructWorker(), PollWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { pool.Run(pctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })

	cases := constructs()
	for name, src := range map[string]string{"c-child.hcl": childSleeper, "c-child-waits.hcl": childWaiter} {
		if _, err := wc.RegisterWorkflow(ctx, name, []byte(src)); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range cases {
		if _, err := wc.RegisterWorkflow(ctx, k.name+".hcl", []byte(k.workflow)); err != nil {
			t.Fatalf("%s: %v", k.name, err)
		}
	}
	wfName := func(k construct) string {
		var head struct{ name string }
		fmt.Sscanf(k.workflow, "workflow %q", &head.name)
		return head.name
	}
	for _, k := range cases {
		input := k.input
		if input == "" {
			input = "{}"
		}
		if _, err := wc.StartInstance(ctx, wfName(k), api.StartRequest{ID: k.name, Input: json.RawMessage(input)}); err != nil {
			t.Fatalf("start %s: %v", k.name, err)
		}
	}
	// Bring each to the point where the leader will be stopped.
	for _, k := range cases {
		acted := k.act == nil
		waitFor(t, 20*time.Second, k.name+" to be mid-way", func() error {
			inst, err := wc.Instance(ctx, k.name)
			if err != nil {
				return err
			}
			if !acted && k.ready(inst) {
				if err := k.act(ctx, wc, k.name); err != nil {
					return err
				}
				acted = true
				return errors.New("acted")
			}
			if !acted || !k.mid(inst) {
				return fmt.Errorf("%s, %s", inst.Status, summarize(inst))
			}
			return nil
		})
	}

	leader.Shutdown()
	c.waitLeader(survivors)

	for _, k := range cases {
		if k.after != nil {
			waitFor(t, 20*time.Second, k.name+"'s operator action after the failover", func() error {
				return k.after(ctx, oc, k.name)
			})
		}
	}
	for _, k := range cases {
		t.Run(k.name, func(t *testing.T) {
			inst := waitEnd(t, oc, k.name, 40*time.Second)
			if inst.Status != k.want {
				t.Fatalf("%s ended %s (%+v), want %s: %s", k.name, inst.Status, inst.Error, k.want, summarize(inst))
			}
			if k.check != nil {
				k.check(t, inst)
			}
			ids := []string{k.name}
			for _, st := range inst.Steps {
				if st.ChildID != "" {
					ids = append(ids, st.ChildID)
				}
			}
			for _, id := range ids {
				for _, a := range survivors {
					requireReplayMatches(t, c, a, id)
				}
			}
		})
	}
}

// waitEnd waits, with blocking reads, until an instance has ended.
func waitEnd(t *testing.T, cl *api.Client, id string, timeout time.Duration) *api.Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	inst, err := cl.WaitInstance(ctx, id)
	if err != nil {
		last, _ := cl.Instance(context.Background(), id)
		t.Fatalf("%s did not end: %v (last seen %s)", id, err, summarize(last))
	}
	return inst
}

// requireReplayMatches replays an instance on one node, waiting until that
// node has applied the instance's end (reads there may lag).
func requireReplayMatches(t *testing.T, c *testCluster, a *agent.Agent, id string) {
	t.Helper()
	var last *api.ReplayReport
	waitFor(t, 10*time.Second, "a matching replay of "+id+" on "+a.NodeName(), func() error {
		rep, err := c.client(a).Replay(context.Background(), id, 0)
		if err != nil {
			return err
		}
		last = rep
		if !rep.Matches {
			return fmt.Errorf("diverged: %+v", rep.Divergence)
		}
		return nil
	})
	if last.Events == 0 || last.ReplayedEvents != last.Events {
		t.Fatalf("replay of %s on %s: %+v", id, a.NodeName(), last)
	}
}

func summarize(i *api.Instance) string {
	if i == nil {
		return "nothing"
	}
	s := i.Status + ":"
	for name, st := range i.Steps {
		s += " " + name + "=" + st.Status
	}
	return s
}
