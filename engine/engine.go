// Package engine holds the leader-only drivers of Lockstep. Today that is
// the dispatcher: it matches ready tasks with workers long-polling their
// queues, commits the leases a batch per round, and re-queues tasks whose
// leases ran out. It reads replicated state from fsm and changes it only by
// proposing commands through raft; only the leader's engine reads the clock.
package engine

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockstep-io/lockstep/fsm"
	"github.com/lockstep-io/lockstep/internal/metrics"
)

// ErrNotLeader is returned by Poll on a node whose engine is not running:
// the caller forwards the poll to the leader.
var ErrNotLeader = errors.New("engine: not the leader")

// Raft is what the engine needs of the cluster: propose, fence, and learn
// about leadership.
type Raft interface {
	Apply(ctx context.Context, cmd []byte) (any, error)
	Barrier(ctx context.Context) error
	Subscribe() <-chan bool
}

// StateSource gives the current state store (a restore replaces it).
type StateSource interface {
	State() *fsm.StateStore
}

// Config configures an Engine.
type Config struct {
	Logger hclog.Logger
	Raft   Raft
	State  StateSource
	// Now is the leader's clock; tests may replace it.
	Now func() time.Time
	// MaxLeasesPerRound bounds one LeaseTasks command.
	MaxLeasesPerRound int
	// LeaseRounds is how many lease rounds may be committing at once
	// (default 4): tasks that become ready while one round's command is in
	// raft go out in the next round instead of waiting for it.
	LeaseRounds int
	// Metrics, if set, records dispatch latency.
	Metrics *metrics.Metrics
	// GoneWorkers, if set, names the worker id prefixes whose workers are
	// known to be gone (the built-in pools of nodes that left or failed),
	// with why; their leases are released at once rather than at their
	// deadline.
	GoneWorkers func() map[string]string
}

// Engine runs the leader-only components while this node leads.
type Engine struct {
	cfg    Config
	logger hclog.Logger

	mu      sync.Mutex
	leader  bool // this node leads; polls are accepted
	enabled bool // the barrier passed; the dispatcher runs
	waiters map[string][]*waiter
	// leasing holds the ids of the tasks whose lease a round is
	// committing, so a concurrent round leaves them alone.
	leasing map[string]bool
	wake    chan struct{}
}

// New returns an engine; Run drives it.
func New(cfg Config) *Engine {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxLeasesPerRound <= 0 {
		cfg.MaxLeasesPerRound = 512
	}
	if cfg.LeaseRounds <= 0 {
		cfg.LeaseRounds = 4
	}
	return &Engine{
		cfg:     cfg,
		logger:  cfg.Logger.Named("engine"),
		waiters: map[string][]*waiter{},
		leasing: map[string]bool{},
		wake:    make(chan struct{}, 1),
	}
}

// Run follows this node's leadership until ctx ends: each time the node
// gains leadership it establishes it (barrier, then the dispatcher); each
// time it loses it, it revokes it.
func (e *Engine) Run(ctx context.Context) {
	leaderCh := e.cfg.Raft.Subscribe()
	var stop context.CancelFunc
	var done chan struct{}
	revoke := func() {
		if stop != nil {
			stop()
			<-done
			stop = nil
		}
	}
	defer revoke()
	for {
		select {
		case <-ctx.Done():
			return
		case leader := <-leaderCh:
			if leader && stop == nil {
				tctx, cancel := context.WithCancel(ctx)
				stop = cancel
				done = make(chan struct{})
				e.setLeader(true)
				go func() {
					defer close(done)
					e.leaderTerm(tctx)
				}()
			} else if !leader {
				revoke()
			}
		}
	}
}

// leaderTerm runs for one term: fence with a barrier so the state includes
// every earlier commit, then dispatch until the term ends.
func (e *Engine) leaderTerm(ctx context.Context) {
	defer e.setLeader(false)
	for {
		bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := e.cfg.Raft.Barrier(bctx)
		cancel()
		if err == nil {
			break
		}
		e.logger.Warn("barrier failed; retrying before dispatching", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	e.mu.Lock()
	e.enabled = true
	e.mu.Unlock()
	e.logger.Info("leadership established; dispatching")
	// Dispatch and time run side by side, so that a lease round is never
	// queued behind a timer or expiry proposal (and the other way round):
	// raft commits their proposals together. LeaseRounds dispatch loops
	// share the waiters, each round taking tasks and waiters no other
	// round holds, so tasks that become ready while a lease command is in
	// raft go out in another round at once.
	var wg sync.WaitGroup
	wg.Add(1 + e.cfg.LeaseRounds)
	go func() {
		defer wg.Done()
		e.timeLoop(ctx)
	}()
	for i := 0; i < e.cfg.LeaseRounds; i++ {
		go func() {
			defer wg.Done()
			e.dispatchLoop(ctx)
		}()
	}
	wg.Wait()
	e.logger.Info("leadership revoked; dispatcher stopped")
}

func (e *Engine) setLeader(leader bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.leader = leader
	if leader {
		return
	}
	e.enabled = false
	// Answer every waiting poll with nothing: the worker polls again and is
	// forwarded to the new leader. A poll a lease command is in raft for
	// (a round's or a claimed start's) answers when that command is back,
	// with what it leased if it was applied here: answered empty now, its
	// tasks would stay leased to a worker that never got them until the
	// leases expired.
	for q, ws := range e.waiters {
		for _, w := range ws {
			if w.held() {
				w.gone = true
				continue
			}
			w.finish(nil)
		}
		delete(e.waiters, q)
	}
}

// Enabled reports whether the dispatcher is running on this node.
func (e *Engine) Enabled() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.enabled
}

func (e *Engine) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}
