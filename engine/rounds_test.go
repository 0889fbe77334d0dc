package engine

import (
	"context"
	"encoding/json"
	"errors"
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

func (s fsmSource) State() *fsm.StateStore { return s.f.State() }

// A task that becomes ready while another round's lease command is still in
// raft is leased by a second round at once, not after the first commits.
func TestLeaseRoundsOverlap(t *testing.T) {
	r := &gatedRaft{f: fsm.New(nil), gate: make(chan struct{}), leader: make(chan bool, 1)}
	now := time.Unix(1000, 0).UTC()
	hdr := fsm.Header{Time: now}
	r.must(t, fsm.RegisterWorkflowType, &fsm.RegisterWorkflowRequest{Header: hdr, Source: "workflow \"w\" {\n  step \"a\" {\n    activity = \"noop\"\n  }\n}\n"})
	r.must(t, fsm.StartInstanceType, &fsm.StartInstanceRequest{Header: hdr, ID: "one", Workflow: "w", Input: json.RawMessage(`{}`)})

	e := New(Config{Raft: r, State: fsmSource{r.f}, Now: func() time.Time { return now }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx)
	r.leader <- true
	poll.Until(t, 10*time.Second, "the engine to dispatch", func() error {
		if !e.Enabled() {
			return errors.New("not enabled")
		}
		return nil
	})

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
