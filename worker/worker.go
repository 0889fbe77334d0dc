// Package worker runs activities for Lockstep: a pool of goroutines that
// long-poll queues over the HTTP worker protocol, run the activity a task
// names, and report its output or error with the lease's token. Every agent
// runs one with the built-in activities; programs can run their own.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockstep-io/lockstep/api"
)

// Activity runs one task. It returns the task's output (JSON) or an error;
// an *ActivityError sets the error type the workflow sees.
type Activity func(ctx context.Context, task *api.Task) (json.RawMessage, error)

// ActivityError is an activity failure with a type, e.g. "http.status".
// NonRetryable failures are not tried again.
type ActivityError struct {
	Type         string
	Message      string
	NonRetryable bool
}

func (e *ActivityError) Error() string { return e.Type + ": " + e.Message }

// Client is what the pool needs of the API (satisfied by *api.Client).
type Client interface {
	Poll(ctx context.Context, queue string, req api.PollRequest) (*api.Task, error)
	Complete(ctx context.Context, taskID, token string, output json.RawMessage) (*api.TaskResult, error)
	Fail(ctx context.Context, taskID, token string, taskErr api.TaskError) (*api.TaskResult, error)
	Heartbeat(ctx context.Context, taskID, token string, details json.RawMessage) (*api.HeartbeatResult, error)
}

// BatchReporter is implemented by clients that can report many results in
// one request (*api.Client does). A pool whose client has it sends results
// through one reporter that batches whatever is waiting.
type BatchReporter interface {
	ReportResults(ctx context.Context, outcomes []api.TaskOutcome) ([]api.TaskOutcomeResult, error)
}

// NextReporter is implemented by clients that can take the worker's next
// tasks with a batch of results (*api.Client does). A batching pool on one
// queue asks for them when it has room, so a task its results made ready
// comes straight back: no poll, and no lease command of its own.
type NextReporter interface {
	ReportResultsNext(ctx context.Context, outcomes []api.TaskOutcome, next *api.NextTasks) ([]api.TaskOutcomeResult, []api.Task, error)
}

// BatchPoller is implemented by clients that can take many tasks in one
// poll (*api.Client does). A pool with Batch > 1 whose client has it asks
// for up to Batch tasks per poll and runs them at once.
type BatchPoller interface {
	PollTasks(ctx context.Context, queue string, req api.PollRequest, max int) ([]api.Task, error)
}

// Config configures a Pool.
type Config struct {
	Client Client
	Logger hclog.Logger
	// Name prefixes each goroutine's worker id.
	Name string
	// Queues to poll; each gets Concurrency pollers.
	Queues      []string
	Concurrency int
	Activities  map[string]Activity
	// PollWait is how long one poll is held open.
	PollWait time.Duration
	// Batch is how many tasks one poller takes per poll (max_tasks) and
	// runs concurrently; 1 (the default) runs one task at a time.
	Batch int
}

// Pool polls queues and runs activities until its context ends.
type Pool struct {
	cfg    Config
	logger hclog.Logger
	names  []string
	// results carries finished attempts to the batching reporter; nil when
	// the client reports one result per request.
	results chan api.TaskOutcome
	batch   BatchReporter
	poller  BatchPoller
	// next, when set, lets reporters take the pool's next tasks with its
	// results (one queue, batch mode). inflight counts the tasks the pool
	// holds; capacity bounds it for those taken that way. eager tracks
	// reports that may bring tasks and the tasks they brought, so Run
	// closes results only after them.
	next     NextReporter
	inflight atomic.Int64
	capacity int64
	eager    sync.WaitGroup
	eagerMu  sync.Mutex
	closing  bool // Run is waiting on eager: no new reports may ask
	runCtx   context.Context
}

// NewPool returns a pool; Run starts it.
func NewPool(cfg Config) (*Pool, error) {
	if cfg.Client == nil {
		return nil, errors.New("worker: client is required")
	}
	if len(cfg.Activities) == 0 {
		return nil, errors.New("worker: no activities")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if len(cfg.Queues) == 0 {
		cfg.Queues = []string{"default"}
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.PollWait <= 0 {
		cfg.PollWait = 20 * time.Second
	}
	if cfg.Name == "" {
		cfg.Name = "worker"
	}
	names := make([]string, 0, len(cfg.Activities))
	for n := range cfg.Activities {
		names = append(names, n)
	}
	sort.Strings(names)
	p := &Pool{cfg: cfg, logger: cfg.Logger.Named("worker"), names: names}
	if br, ok := cfg.Client.(BatchReporter); ok {
		p.batch = br
	}
	if bp, ok := cfg.Client.(BatchPoller); ok && cfg.Batch > 1 {
		p.poller = bp
		if nr, ok := cfg.Client.(NextReporter); ok && p.batch != nil && len(cfg.Queues) == 1 {
			p.next = nr
			p.capacity = int64(cfg.Concurrency * cfg.Batch)
		}
	}
	return p, nil
}

// Run blocks until ctx ends and every in-flight activity has been reported.
func (p *Pool) Run(ctx context.Context) {
	p.runCtx = ctx
	var reporterDone chan struct{}
	if p.batch != nil {
		p.results = make(chan api.TaskOutcome, len(p.cfg.Queues)*p.cfg.Concurrency*max(1, p.cfg.Batch))
		reporterDone = make(chan struct{})
		var rwg sync.WaitGroup
		for i := 0; i < reporters; i++ {
			rwg.Add(1)
			id := fmt.Sprintf("%s/%s/r%d", p.cfg.Name, p.cfg.Queues[0], i)
			go func() {
				defer rwg.Done()
				p.report(id)
			}()
		}
		go func() {
			rwg.Wait()
			close(reporterDone)
		}()
	}
	var wg sync.WaitGroup
	for _, q := range p.cfg.Queues {
		for i := 0; i < p.cfg.Concurrency; i++ {
			wg.Add(1)
			id := fmt.Sprintf("%s/%s/%d", p.cfg.Name, q, i)
			go func() {
				defer wg.Done()
				p.loop(ctx, q, id)
			}()
		}
	}
	wg.Wait()
	// Reports in flight may still bring tasks, and tasks taken that way may
	// still finish; their results go out before the reporters stop.
	p.eagerMu.Lock()
	p.closing = true
	p.eagerMu.Unlock()
	p.eager.Wait()
	if p.results != nil {
		close(p.results)
		<-reporterDone
	}
}

// reporters is how many result requests a pool keeps in flight: enough
// that a result does not wait behind a whole raft commit of the previous
// batch, few enough that a busy pool's results pile up into batches.
const reporters = 4

// reportGap and reportLinger bound how long a reporter holding a result
// waits for more: while each comes within reportGap of the one before, for
// reportLinger in all. A report's answer brings the pool its next tasks,
// whose results then come back within microseconds of each other for fast
// activities; without the wait the first went alone, and the rest waited
// for a reporter, a whole round trip when all were out (docs/performance.md).
const (
	reportGap    = 250 * time.Microsecond
	reportLinger = 2 * time.Millisecond
)

// maxBatch and maxBatchBytes bound one request (the API takes up to 1000
// results and a 4 MiB body).
const (
	maxBatch      = 256
	maxBatchBytes = 1 << 20
)

// report sends finished attempts in batches: it takes whatever is waiting
// when the previous request returns and what follows closely (collect), so
// an idle pool reports each result within reportGap and a busy one
// amortises the round trip. A batch whose request fails
// is sent again (a result already recorded is answered stale_token, which
// changes nothing); after a few tries it is dropped and the leases expire,
// so the tasks run again (at least once). With room in the pool, the first
// try also asks for the pool's next tasks (as worker id), which it runs.
func (p *Pool) report(id string) {
	var asks uint64
	for first := range p.results {
		batch := collect(first, p.results, reportGap, reportLinger)
		backoff := 100 * time.Millisecond
		var next *api.NextTasks
		for try := 1; ; try++ {
			// The first try may ask for tasks, under a worker id used by
			// this request alone. A retry after a lost answer asks again
			// under that id with redeliver, so the tasks the lost answer
			// held (if it was applied) come back rather than wait, leased
			// to nobody, for their leases to expire.
			if try == 1 {
				asks++
				next = p.nextRequest(fmt.Sprintf("%s.%d", id, asks))
			} else if next != nil {
				next = p.redeliverRequest(next)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			var res []api.TaskOutcomeResult
			var tasks []api.Task
			var err error
			if next != nil {
				res, tasks, err = p.next.ReportResultsNext(ctx, batch, next)
				p.runTaken(tasks)
				p.eager.Done()
			} else {
				res, err = p.batch.ReportResults(ctx, batch)
			}
			cancel()
			if err == nil {
				for i, r := range res {
					if r.Error != nil && i < len(batch) {
						p.logger.Warn("result refused", "task", batch[i].TaskID, "error", r.Error.Message)
					}
				}
				break
			}
			if try == 5 {
				p.logger.Warn("reporting results failed; their leases will expire", "results", len(batch), "error", err)
				break
			}
			time.Sleep(backoff) // a pause between retries, not a wait for a condition
			backoff *= 2
		}
	}
}

// collect makes a batch of first and the results that follow it closely:
// it takes each that comes within gap of the one before, for at most
// linger in all, up to maxBatch results and maxBatchBytes of outputs, and
// stops when results closes.
func collect(first api.TaskOutcome, results <-chan api.TaskOutcome, gap, linger time.Duration) []api.TaskOutcome {
	batch, size := []api.TaskOutcome{first}, len(first.Output)
	timer := time.NewTimer(min(gap, linger))
	defer timer.Stop()
	until := time.Now().Add(linger)
	for len(batch) < maxBatch && size < maxBatchBytes {
		select {
		case o, ok := <-results:
			if !ok {
				return batch
			}
			batch, size = append(batch, o), size+len(o.Output)
			if d := time.Until(until); d > 0 {
				timer.Reset(min(gap, d))
			}
		case <-timer.C:
			return batch
		}
	}
	return batch
}

// nextRequest asks for up to a batch of tasks as worker id when the pool
// has room, while the pool runs. The report it goes with is counted in
// p.eager until runTaken has started what came back.
func (p *Pool) nextRequest(id string) *api.NextTasks {
	if p.next == nil || p.runCtx.Err() != nil {
		return nil
	}
	room := min(p.capacity-p.inflight.Load(), int64(p.cfg.Batch))
	if room <= 0 {
		return nil
	}
	p.eagerMu.Lock()
	defer p.eagerMu.Unlock()
	if p.closing {
		return nil
	}
	p.eager.Add(1)
	return &api.NextTasks{WorkerID: id, Queue: p.cfg.Queues[0], Activities: p.names, MaxTasks: int(room)}
}

// redeliverRequest asks again, after a lost answer, for what was asked
// and for the tasks that answer held; nil once the pool is stopping (the
// tasks then wait for their leases to expire).
func (p *Pool) redeliverRequest(asked *api.NextTasks) *api.NextTasks {
	p.eagerMu.Lock()
	defer p.eagerMu.Unlock()
	if p.closing || p.runCtx.Err() != nil {
		return nil
	}
	p.eager.Add(1)
	again := *asked
	again.Redeliver = true
	return &again
}

// runTaken runs the tasks a report brought back, each on its own.
func (p *Pool) runTaken(tasks []api.Task) {
	for i := range tasks {
		p.inflight.Add(1)
		p.eager.Add(1)
		go func() {
			defer p.eager.Done()
			p.run(p.runCtx, &tasks[i])
		}()
	}
}

func (p *Pool) loop(ctx context.Context, queue, id string) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		tasks, err := p.poll(ctx, queue, id)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.logger.Debug("poll failed; retrying", "queue", queue, "error", err, "in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			if backoff < 2*time.Second {
				backoff *= 2
			}
			continue
		}
		backoff = 100 * time.Millisecond
		p.inflight.Add(int64(len(tasks)))
		if len(tasks) == 1 {
			p.run(ctx, &tasks[0])
			continue
		}
		var wg sync.WaitGroup
		for i := range tasks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.run(ctx, &tasks[i])
			}()
		}
		wg.Wait()
	}
}

// poll takes the next tasks: up to Batch with a batch poller, else one.
func (p *Pool) poll(ctx context.Context, queue, id string) ([]api.Task, error) {
	req := api.PollRequest{WorkerID: id, WaitMS: p.cfg.PollWait.Milliseconds(), Activities: p.names}
	if p.poller != nil {
		return p.poller.PollTasks(ctx, queue, req, p.cfg.Batch)
	}
	task, err := p.cfg.Client.Poll(ctx, queue, req)
	if err != nil || task == nil {
		return nil, err
	}
	return []api.Task{*task}, nil
}

// run executes one task and reports it. The report uses a context of its
// own so a task finished during shutdown is still recorded.
func (p *Pool) run(ctx context.Context, task *api.Task) {
	defer p.inflight.Add(-1)
	act := p.cfg.Activities[task.Activity]
	var out json.RawMessage
	var err error
	if act == nil {
		err = &ActivityError{Type: "unknown_activity", Message: fmt.Sprintf("this worker does not run activity %q", task.Activity), NonRetryable: true}
	} else {
		actx, cancel := context.WithDeadline(ctx, task.Deadline)
		var lost atomic.Bool
		stop := p.heartbeat(actx, cancel, task, &lost)
		out, err = safeRun(actx, act, task)
		stop()
		cancel()
		if lost.Load() {
			// The engine gave the task to another worker: this result would
			// be refused, and the activity was told to stop.
			p.logger.Info("lease lost; result dropped", "task", task.TaskID)
			return
		}
	}
	if err != nil && ctx.Err() != nil {
		// The pool is stopping and cut the activity short: that is not the
		// activity's failure. Leave the lease to expire so the task runs
		// again elsewhere (at least once), rather than fail the step.
		p.logger.Info("abandoning task on shutdown", "task", task.TaskID, "activity", task.Activity)
		return
	}
	var te *api.TaskError
	if err != nil {
		te = &api.TaskError{Type: "error", Message: err.Error()}
		var ae *ActivityError
		if errors.As(err, &ae) {
			te = &api.TaskError{Type: ae.Type, Message: ae.Message, NonRetryable: ae.NonRetryable}
		}
	}
	if p.results != nil {
		o := api.TaskOutcome{TaskID: task.TaskID, Token: task.Token, Error: te}
		if te == nil {
			o.Output = out
			if len(o.Output) == 0 {
				o.Output = json.RawMessage("null")
			}
		}
		p.results <- o
		return
	}
	rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if te != nil {
		_, err = p.cfg.Client.Fail(rctx, task.TaskID, task.Token, *te)
	} else {
		_, err = p.cfg.Client.Complete(rctx, task.TaskID, task.Token, out)
	}
	if err != nil {
		// A 409 means the lease was lost (expired and re-queued): the result
		// is dropped and the task runs again elsewhere.
		p.logger.Warn("reporting task failed", "task", task.TaskID, "activity", task.Activity, "error", err)
	}
}

// heartbeat keeps an attempt with a heartbeat timeout alive, heartbeating
// at a third of the timeout, and cancels the activity (setting lost) when
// the engine says the lease is gone or asks for cancellation. It returns a
// stop function.
func (p *Pool) heartbeat(ctx context.Context, cancel context.CancelFunc, task *api.Task, lost *atomic.Bool) func() {
	if task.HeartbeatTimeoutMS <= 0 {
		return func() {}
	}
	hctx, stop := context.WithCancel(ctx)
	interval := time.Duration(task.HeartbeatTimeoutMS) * time.Millisecond / 3
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-tick.C:
			}
			res, err := p.cfg.Client.Heartbeat(hctx, task.TaskID, task.Token, nil)
			if api.IsStatus(err, 409) || (err == nil && res.CancelRequested) {
				lost.Store(true)
				cancel()
				return
			}
		}
	}()
	return func() {
		stop()
		<-done
	}
}

func safeRun(ctx context.Context, act Activity, task *api.Task) (out json.RawMessage, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &ActivityError{Type: "panic", Message: fmt.Sprint(r)}
		}
	}()
	return act(ctx, task)
}
