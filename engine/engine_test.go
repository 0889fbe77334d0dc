package engine_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/agent"
	"github.com/lockstep-io/lockstep/agent/agenttest"
	"github.com/lockstep-io/lockstep/api"
	"github.com/lockstep-io/lockstep/engine"
	"github.com/lockstep-io/lockstep/internal/poll"
)

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	poll.Until(t, timeout, what, cond)
}

func node(t *testing.T, name, dir string, dev bool, expect int, join []string) *agent.Agent {
	t.Helper()
	return agenttest.Start(t, agenttest.Options{Name: name, DataDir: dir, Dev: dev, BootstrapExpect: expect, Join: join})
}

// leadingDev starts a dev agent without built-in workers, waits until its
// engine dispatches, and returns a client of it.
func leadingDev(t *testing.T) *api.Client {
	t.Helper()
	a := node(t, "dev", t.TempDir(), true, 0, nil)
	waitFor(t, 10*time.Second, "leadership", func() error {
		if !a.Engine.Enabled() {
			return errors.New("not enabled")
		}
		return nil
	})
	cl, err := api.New(api.Config{Address: "http://" + a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

const shortLease = `
workflow "w" {
  step "a" {
    activity = "noop"
    timeout  = "300ms"
    input    = { v = input.v }
  }
}
`

func TestExpiredLeaseIsRequeuedWithNewToken(t *testing.T) {
	cl := leadingDev(t)
	ctx := context.Background()
	if _, err := cl.RegisterWorkflow(ctx, "w.hcl", []byte(shortLease)); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.StartInstance(ctx, "w", api.StartRequest{ID: "i", Input: []byte(`{"v":1}`)}); err != nil {
		t.Fatal(err)
	}
	first, err := cl.Poll(ctx, "default", api.PollRequest{WorkerID: "zombie", WaitMS: 2000})
	if err != nil || first == nil {
		t.Fatalf("poll = %v %v", first, err)
	}
	// The zombie never answers; the leader re-queues the task after 300ms
	// and the next worker gets it with attempt 2 and a new token.
	second, err := cl.Poll(ctx, "default", api.PollRequest{WorkerID: "healthy", WaitMS: 5000})
	if err != nil || second == nil {
		t.Fatalf("second poll = %v %v", second, err)
	}
	if second.TaskID != first.TaskID || second.Attempt != 2 || second.Token == first.Token {
		t.Fatalf("first %+v second %+v", first, second)
	}
	if _, err := cl.Complete(ctx, first.TaskID, first.Token, nil); !api.IsStatus(err, 409) {
		t.Fatalf("zombie completion = %v", err)
	}
	if _, err := cl.Complete(ctx, second.TaskID, second.Token, second.Input); err != nil {
		t.Fatal(err)
	}
	inst, err := cl.Instance(ctx, "i")
	if err != nil || inst.Status != "completed" || inst.Steps["a"].Attempts != 2 {
		t.Fatalf("instance = %+v %v", inst, err)
	}
}

func TestFollowerEngineRefusesPolls(t *testing.T) {
	base := t.TempDir()
	n1 := node(t, "n1", filepath.Join(base, "1"), false, 3, nil)
	n2 := node(t, "n2", filepath.Join(base, "2"), false, 3, []string{n1.GossipAddr()})
	n3 := node(t, "n3", filepath.Join(base, "3"), false, 3, []string{n1.GossipAddr()})
	var follower *agent.Agent
	waitFor(t, 20*time.Second, "a leader with a running engine", func() error {
		follower = nil
		leaders := 0
		for _, a := range []*agent.Agent{n1, n2, n3} {
			if a.Engine.Enabled() {
				leaders++
			} else {
				follower = a
			}
		}
		if leaders != 1 {
			return errors.New("no single leader yet")
		}
		return nil
	})
	_, err := follower.Engine.Poll(context.Background(), engine.PollRequest{Queue: "default", WorkerID: "w", Wait: time.Millisecond})
	if !errors.Is(err, engine.ErrNotLeader) {
		t.Fatalf("follower poll = %v", err)
	}
}

// Tasks no poller accepts must not hide the ones behind them: a built-in
// worker (noop only) still gets its task behind a long run of tasks for an
// activity whose workers are all down.
func TestFilteredPollSeesPastUnservedTasks(t *testing.T) {
	cl := leadingDev(t)
	ctx := context.Background()
	src := "workflow \"ext\" {\n  step \"a\" {\n    activity = \"payments.charge\"\n  }\n}\n"
	if _, err := cl.RegisterWorkflow(ctx, "ext.hcl", []byte(src)); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.RegisterWorkflow(ctx, "w.hcl", []byte(shortLease)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		if _, err := cl.StartInstance(ctx, "ext", api.StartRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.StartInstance(ctx, "w", api.StartRequest{ID: "behind", Input: []byte(`{"v":1}`)}); err != nil {
		t.Fatal(err)
	}
	task, err := cl.Poll(ctx, "default", api.PollRequest{WorkerID: "builtin", WaitMS: 3000, Activities: []string{"noop"}})
	if err != nil || task == nil || task.InstanceID != "behind" {
		t.Fatalf("filtered poll = %+v %v", task, err)
	}
}

// The leader's clock drives sleeps and retry backoffs through FireTimers.
func TestLeaderFiresSleepAndRetryTimers(t *testing.T) {
	cl := leadingDev(t)
	ctx := context.Background()
	src := `workflow "timed" {
  step "nap" {
    sleep = "200ms"
  }
  step "call" {
    depends_on = [step.nap]
    activity   = "flaky"
    retry {
      max_attempts     = 2
      initial_interval = "100ms"
    }
  }
}
`
	if _, err := cl.RegisterWorkflow(ctx, "timed.hcl", []byte(src)); err != nil {
		t.Fatal(err)
	}
	s, err := cl.StartInstance(ctx, "timed", api.StartRequest{ID: "t"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := cl.Poll(ctx, "default", api.PollRequest{WorkerID: "w", WaitMS: 5000})
	if err != nil || first == nil || first.Step != "call" {
		t.Fatalf("after the nap: %+v %v", first, err)
	}
	if _, err := cl.Fail(ctx, first.TaskID, first.Token, api.TaskError{Type: "flaky", Message: "try again"}); err != nil {
		t.Fatal(err)
	}
	second, err := cl.Poll(ctx, "default", api.PollRequest{WorkerID: "w", WaitMS: 5000})
	if err != nil || second == nil || second.Attempt != 2 {
		t.Fatalf("after the backoff: %+v %v", second, err)
	}
	if _, err := cl.Complete(ctx, second.TaskID, second.Token, []byte(`{"ok":true}`)); err != nil {
		t.Fatal(err)
	}
	inst, err := cl.WaitInstanceSince(ctx, "t", s.Index)
	if err != nil || inst.Status != "completed" || inst.Steps["call"].Attempts != 2 || inst.Steps["nap"].Status != "succeeded" {
		t.Fatalf("instance = %+v %v", inst, err)
	}
}

// The leader fires cron triggers from its clock.
func TestLeaderFiresCronTriggers(t *testing.T) {
	cl := leadingDev(t)
	ctx := context.Background()
	src := "workflow \"tick\" {\n  trigger \"cron\" \"every\" {\n    schedule = \"@every 1s\"\n    overlap  = \"allow\"\n  }\n  step \"a\" {\n    activity = \"noop\"\n  }\n}\n"
	if _, err := cl.RegisterWorkflow(ctx, "tick.hcl", []byte(src)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "two fires", func() error {
		list, _, err := cl.Instances(ctx, "tick", "", 100)
		if err != nil {
			return err
		}
		if len(list) < 2 {
			return errors.New("fewer than two instances")
		}
		for _, i := range list {
			if !strings.HasPrefix(i.ID, "tick.every.") {
				return errors.New("unexpected id " + i.ID)
			}
		}
		return nil
	})
}

// briefCluster is a leading dev node with the workflow "brief": one noop
// step, ended instances kept 300 ms.
func briefCluster(t *testing.T) *api.Client {
	t.Helper()
	cl := leadingDev(t)
	src := `workflow "brief" {
  retention = "300ms"
  step "a" {
    activity = "noop"
  }
}
`
	if _, err := cl.RegisterWorkflow(context.Background(), "brief.hcl", []byte(src)); err != nil {
		t.Fatal(err)
	}
	return cl
}

// startBrief starts a "brief" instance and leases its task as a worker.
func startBrief(t *testing.T, cl *api.Client, id string) (uint64, *api.Task) {
	t.Helper()
	ctx := context.Background()
	s, err := cl.StartInstance(ctx, "brief", api.StartRequest{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	task, err := cl.Poll(ctx, "default", api.PollRequest{WorkerID: "w", WaitMS: 5000})
	if err != nil || task == nil {
		t.Fatalf("poll: %+v %v", task, err)
	}
	return s.Index, task
}

// finishBrief completes the task startBrief leased and returns when its
// instance ended.
func finishBrief(t *testing.T, cl *api.Client, id string, index uint64, task *api.Task) time.Time {
	t.Helper()
	ctx := context.Background()
	if _, err := cl.Complete(ctx, task.TaskID, task.Token, nil); err != nil {
		t.Fatal(err)
	}
	inst, err := cl.WaitInstanceSince(ctx, id, index)
	if err != nil || inst.Status != "completed" || inst.EndedAt == nil {
		t.Fatalf("instance = %+v %v", inst, err)
	}
	return *inst.EndedAt
}

// The leader deletes an instance once its workflow's retention has passed
// after it ended; reads then answer 404.
func TestLeaderPurgesExpiredInstances(t *testing.T) {
	cl := briefCluster(t)
	ctx := context.Background()
	index, task := startBrief(t, cl, "b")
	finishBrief(t, cl, "b", index, task)
	waitFor(t, 10*time.Second, "the instance to be deleted", func() error {
		_, err := cl.Instance(ctx, "b")
		if !api.IsStatus(err, 404) {
			return fmt.Errorf("still there: %v", err)
		}
		return nil
	})
	if _, err := cl.History(ctx, "b", 0); !api.IsStatus(err, 404) {
		t.Fatalf("history after purge: %v", err)
	}
}

// Instances that end a little apart are deleted by one PurgeInstances
// command: the leader waits purgeSlack past the earliest expiry, so no
// read ever sees one of them gone and the other still there.
func TestLeaderPurgesWhatCameDueTogether(t *testing.T) {
	cl := briefCluster(t)
	// Both run before either ends, so that only the pause below and one
	// request stand between their ends.
	i1, t1 := startBrief(t, cl, "first")
	i2, t2 := startBrief(t, cl, "second")
	first := finishBrief(t, cl, "first", i1, t1)
	// The second ends about 200 ms after the first: without the slack
	// each would be purged by a command of its own, 200 ms apart.
	time.Sleep(200 * time.Millisecond)
	second := finishBrief(t, cl, "second", i2, t2)
	// The leader's slack is one second (purgeSlack): only a machine so
	// loaded that one request took most of that could not show the
	// grouping, and then there is nothing to assert.
	if gap := second.Sub(first); gap > 700*time.Millisecond {
		t.Skipf("the instances ended %v apart on this loaded machine, too far apart for one purge", gap)
	}
	waitFor(t, 10*time.Second, "both instances to be deleted", func() error {
		list, _, err := cl.Instances(context.Background(), "brief", "", 10)
		if err != nil {
			return err
		}
		switch len(list) {
		case 0:
			return nil
		case 1:
			t.Fatalf("one instance deleted without the other: %+v", list)
		}
		return fmt.Errorf("%d left", len(list))
	})
}
