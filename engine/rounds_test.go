package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lockstep-io/lockstep/fsm"
	"github.com/lockstep-io/lockstep/internal/poll"
)

// gatedRaft applies commands to a real FSM at once, except that the first
// lease command waits until the gate opens: a lease round stuck in raft.
type gatedRaft struct {
	f      *fsm.FSM
	mu     sync.Mutex
	index  uint64
	gate   chan struct{}
	gated  bool
	leader chan bool
}

func (r *gatedRaft) Apply(ctx context.Context, cmd []byte) (any, error) {
	if fsm.MessageType(cmd[0]) == fsm.LeaseTasksType {
		r.mu.Lock()
		first := !r.gated
		r.gated = true
		r.mu.Unlock()
		if first {
			select {
			case <-r.gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.index++
	return r.f.Apply(&raft.Log{Index: r.index, Type: raft.LogCommand, Data: cmd}), nil
}

func (r *gatedRaft) Barrier(context.Context) error { return nil }
func (r *gatedRaft) Subscribe() <-chan bool        { return r.leader }

func (r *gatedRaft) must(t *testing.T, mt fsm.MessageType, msg any) {
	t.Helper()
	cmd, err := fsm.Encode(mt, msg)
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := r.Apply(context.Background(), cmd); res != nil {
		if ferr, ok := res.(*fsm.Error); ok {
			t.Fatal(ferr)
		}
	}
}

type fsmSource struct{ f *fsm.FSM }

// leadingEngine runs an engine on r, made leader, until the test ends.
func leadingEngine(t *testing.T, r *gatedRaft, now time.Time) (*Engine, context.Context) {
	t.Helper()
	e := New(Config{Raft: r, State: fsmSource{r.f}, Now: func() time.Time { return now }})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go e.Run(ctx)
	r.leader <- true
	poll.Until(t, 10*time.Second, "the engine to dispatch", func() error {
		if !e.Enabled() {
			return errors.New("not enabled")
		}
		return nil
	})
	return e, ctx
}

func (s fsmSource) State() *fsm.StateStore { return s.f.State() }

// A task that becomes ready while another round's lease command is still in
// raft is leased by a second round at once, not after the first commits.
func TestLeaseRoundsOverlap(t *testing.T) {
	r := &gatedRaft{f: fsm.New(nil), gate: make(chan struct{}), leader: make(chan bool, 1)}
	now := time.Unix(1000, 0).UTC()
	hdr := fsm.Header{Time: now}
	r.must(t, fsm.RegisterWorkflowType, &fsm.RegisterWorkflowRequest{Header: hdr, Source: "workflow \"w\" {\n  step \"a\" {\n    activity = \"noop\"\n  }\n}\n"})
	r.must(t, fsm.StartInstanceType, &fsm.StartInstanceRequest{Header: hdr, ID: "one", Workflow: "w", Input: json.RawMessage(`{}`)})

	e, ctx := leadingEngine(t, r, now)

	first := make(chan []*fsm.Task, 1)
	go func() {
		tasks, _ := e.Poll(ctx, PollRequest{Queue: "default", WorkerID: "w1", Wait: 10 * time.Second})
		first <- tasks
	}()
	poll.Until(t, 10*time.Second, "a lease round to hold instance one's task", func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if !r.gated {
			return errors.New("no lease command yet")
		}
		return nil
	})
	r.must(t, fsm.StartInstanceType, &fsm.StartInstanceRequest{Header: hdr, ID: "two", Workflow: "w", Input: json.RawMessage(`{}`)})
	tasks, err := e.Poll(ctx, PollRequest{Queue: "default", WorkerID: "w2", Wait: 5 * time.Second})
	if err != nil || len(tasks) != 1 || tasks[0].InstanceID != "two" {
		t.Fatalf("second poll, with the first round still in raft: %v %v", tasks, err)
	}
	close(r.gate)
	got := <-first
	if len(got) != 1 || got[0].InstanceID != "one" {
		t.Fatalf("first poll = %v", got)
	}
}

// claimingEngine is a leading engine over a state with workflow "w", one
// noop step on the default queue.
func claimingEngine(t *testing.T) (*gatedRaft, *Engine, context.Context, fsm.Header) {
	t.Helper()
	r := &gatedRaft{f: fsm.New(nil), gate: make(chan struct{}), leader: make(chan bool, 1)}
	close(r.gate)
	now := time.Unix(1000, 0).UTC()
	hdr := fsm.Header{Time: now}
	r.must(t, fsm.RegisterWorkflowType, &fsm.RegisterWorkflowRequest{Header: hdr, Source: "workflow \"w\" {\n  step \"a\" {\n    activity = \"noop\"\n  }\n}\n"})
	e, ctx := leadingEngine(t, r, now)
	return r, e, ctx, hdr
}

// waitingPoll starts worker w1's poll of the default queue and returns,
// once it waits, where its answer will come.
func waitingPoll(t *testing.T, e *Engine, ctx context.Context, wait time.Duration, maxTasks int) chan []*fsm.Task {
	t.Helper()
	got := make(chan []*fsm.Task, 1)
	go func() {
		tasks, _ := e.Poll(ctx, PollRequest{Queue: "default", WorkerID: "w1", Wait: wait, MaxTasks: maxTasks})
		got <- tasks
	}()
	poll.Until(t, 10*time.Second, "the poll to wait", func() error {
		if e.WaitingPolls()["default"] == 0 {
			return errors.New("not waiting")
		}
		return nil
	})
	return got
}

// A claimed poll is left alone by lease rounds: the claimer's tasks reach
// it; a claim that leased nothing puts it back to waiting, where a round
// serves it; a poll that times out while claimed waits for the claimer's
// answer; with no poll waiting there is nothing to claim.
func TestClaimPoll(t *testing.T) {
	r, e, ctx, hdr := claimingEngine(t)
	if _, _, ok := e.ClaimPoll("default"); ok {
		t.Fatal("claimed a poll nobody made")
	}
	pollAsync := func(wait time.Duration) chan []*fsm.Task { return waitingPoll(t, e, ctx, wait, 3) }
	claim := func() (*fsm.NextTasks, func([]*fsm.Task)) {
		t.Helper()
		next, done, ok := e.ClaimPoll("default")
		if !ok || next.WorkerID != "w1" || next.Queue != "default" || next.Max != 1 {
			t.Fatalf("claim = %+v %v", next, ok)
		}
		return next, done
	}

	// The claimer's start leases the task; a round does not touch it.
	got := pollAsync(10 * time.Second)
	next, done := claim()
	cmd, _ := fsm.Encode(fsm.StartInstanceType, &fsm.StartInstanceRequest{Header: hdr, ID: "one", Workflow: "w", Input: json.RawMessage(`{}`), Next: next})
	res, _ := r.Apply(ctx, cmd)
	done(res.(*fsm.StartInstanceResponse).Leased)
	if tasks := <-got; len(tasks) != 1 || tasks[0].InstanceID != "one" {
		t.Fatalf("claimed poll got %v", tasks)
	}

	// A claim that leased nothing: the poll waits on, and a round serves it.
	got = pollAsync(10 * time.Second)
	_, done = claim()
	done(nil)
	r.must(t, fsm.StartInstanceType, &fsm.StartInstanceRequest{Header: hdr, ID: "two", Workflow: "w", Input: json.RawMessage(`{}`)})
	if tasks := <-got; len(tasks) != 1 || tasks[0].InstanceID != "two" {
		t.Fatalf("released poll got %v", tasks)
	}

	// A poll that times out while claimed gets the claimer's tasks.
	got = pollAsync(200 * time.Millisecond)
	next, done = claim()
	poll.Until(t, 10*time.Second, "the claimed poll to time out", func() error {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, w := range e.waiters["default"] {
			if w.gone {
				return nil
			}
		}
		return errors.New("not yet")
	})
	cmd, _ = fsm.Encode(fsm.StartInstanceType, &fsm.StartInstanceRequest{Header: hdr, ID: "three", Workflow: "w", Input: json.RawMessage(`{}`), Next: next})
	res, _ = r.Apply(ctx, cmd)
	done(res.(*fsm.StartInstanceResponse).Leased)
	if tasks := <-got; len(tasks) != 1 || tasks[0].InstanceID != "three" {
		t.Fatalf("timed-out claimed poll got %v", tasks)
	}
}

// One poll takes the starts that come while its first claimed start is in
// raft, each with room for half of what the others left (at least one),
// until its max_tasks is reserved; it answers once every claimed start is
// back, with all they leased, and takes no claim after the first brought
// tasks. A claim that leased nothing does not cost the others' tasks.
func TestClaimPollTakesSeveralStarts(t *testing.T) {
	r, e, ctx, hdr := claimingEngine(t)
	got := waitingPoll(t, e, ctx, 10*time.Second, 4)
	type claim struct {
		next *fsm.NextTasks
		done func([]*fsm.Task)
	}
	var claims []claim
	for {
		next, done, ok := e.ClaimPoll("default")
		if !ok {
			break
		}
		claims = append(claims, claim{next, done})
	}
	var rooms []int
	for _, c := range claims {
		rooms = append(rooms, c.next.Max)
	}
	if fmt.Sprint(rooms) != "[2 1 1]" {
		t.Fatalf("rooms of the claims of a poll of 4 = %v, want [2 1 1]", rooms)
	}
	start := func(id string, c claim) {
		cmd, _ := fsm.Encode(fsm.StartInstanceType, &fsm.StartInstanceRequest{Header: hdr, ID: id, Workflow: "w", Input: json.RawMessage(`{}`), Next: c.next})
		res, _ := r.Apply(ctx, cmd)
		c.done(res.(*fsm.StartInstanceResponse).Leased)
	}
	start("one", claims[0])
	if _, _, ok := e.ClaimPoll("default"); ok {
		t.Fatal("a claim was taken after the poll's first claim brought a task")
	}
	select {
	case tasks := <-got:
		t.Fatalf("the poll answered %v with two claims still in raft", tasks)
	default:
	}
	claims[1].done(nil) // its start failed
	start("three", claims[2])
	tasks := <-got
	var ids []string
	for _, task := range tasks {
		ids = append(ids, task.InstanceID)
	}
	if fmt.Sprint(ids) != "[one three]" {
		t.Fatalf("the poll got the tasks of %v, want [one three]", ids)
	}
	if n := e.WaitingPolls()["default"]; n != 0 {
		t.Fatalf("%d polls still wait after the answer", n)
	}
}

// A poll whose claimed start is in raft when the leader steps down gets
// what that start leased, not an empty answer that would leave the task
// leased to a worker who never heard of it until the lease expired.
func TestClaimedPollAnswersAfterStepDown(t *testing.T) {
	r, e, ctx, hdr := claimingEngine(t)
	got := waitingPoll(t, e, ctx, 10*time.Second, 1)
	next, done, ok := e.ClaimPoll("default")
	if !ok {
		t.Fatal("no poll to claim")
	}
	cmd, _ := fsm.Encode(fsm.StartInstanceType, &fsm.StartInstanceRequest{Header: hdr, ID: "one", Workflow: "w", Input: json.RawMessage(`{}`), Next: next})
	res, _ := r.Apply(ctx, cmd)
	r.leader <- false
	poll.Until(t, 10*time.Second, "the engine to step down", func() error {
		if e.Enabled() {
			return errors.New("still leading")
		}
		return nil
	})
	select {
	case tasks := <-got:
		t.Fatalf("the claimed poll was answered %v at the step-down", tasks)
	default:
	}
	done(res.(*fsm.StartInstanceResponse).Leased)
	if tasks := <-got; len(tasks) != 1 || tasks[0].InstanceID != "one" {
		t.Fatalf("claimed poll got %v after the step-down", tasks)
	}
}
