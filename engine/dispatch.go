package engine

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/lockstep-io/lockstep/fsm"
	"github.com/lockstep-io/lockstep/hcl"
)

// PollRequest is one worker's long poll of a queue.
type PollRequest struct {
	Queue    string
	WorkerID string
	// Activities, when set, limits the tasks this worker accepts to those
	// activities (the built-in pool only runs built-in activities).
	Activities []string
	// Wait is how long to hold the poll open when nothing is ready.
	Wait time.Duration
	// MaxTasks is how many tasks one answer may carry (at least 1).
	MaxTasks int
}

// MaxPollWait caps a long poll.
const MaxPollWait = 60 * time.Second

// purgeSlack is how long past its retention an ended instance (or an
// idempotency answer past its window) may stay before the leader deletes
// it: waiting this long lets one PurgeInstances command take everything
// that came due meanwhile.
const purgeSlack = time.Second

type waiter struct {
	req     PollRequest
	accept  map[string]bool
	result  chan []*fsm.Task // buffered 1; receives exactly once
	claimed bool             // a round is committing a lease for it
	// claims counts the commands ClaimPoll gave it that are in raft now,
	// reserved what they may lease of req.MaxTasks, got what the ones
	// that came back leased. Once one brought tasks it is closing: it
	// takes no more claims, and answers when the last is back.
	claims   int
	reserved int
	got      []*fsm.Task
	closing  bool
	gone     bool // the poll gave up while claimed
	done     bool
}

// held reports whether a round or a claimed command is leasing to it.
func (w *waiter) held() bool { return w.claimed || w.claims > 0 }

// claimable reports whether ClaimPoll may give it (another) command.
func (w *waiter) claimable() bool {
	return !w.done && !w.claimed && !w.closing && w.reserved < w.req.MaxTasks
}

func (w *waiter) finish(tasks []*fsm.Task) {
	if w.done {
		return
	}
	w.done = true
	w.result <- tasks
}

func (w *waiter) accepts(activity string) bool { return w.accept == nil || w.accept[activity] }

// Poll waits up to req.Wait for tasks of req.Queue and returns them leased
// to req.WorkerID; it returns no tasks and no error when none arrived in
// time. On a node that does not lead it returns ErrNotLeader.
func (e *Engine) Poll(ctx context.Context, req PollRequest) ([]*fsm.Task, error) {
	if req.MaxTasks < 1 {
		req.MaxTasks = 1
	}
	if req.Wait > MaxPollWait {
		req.Wait = MaxPollWait
	}
	w := &waiter{req: req, result: make(chan []*fsm.Task, 1)}
	if len(req.Activities) > 0 {
		w.accept = map[string]bool{}
		for _, a := range req.Activities {
			w.accept[a] = true
		}
	}
	e.mu.Lock()
	if !e.leader {
		e.mu.Unlock()
		return nil, ErrNotLeader
	}
	e.waiters[req.Queue] = append(e.waiters[req.Queue], w)
	e.mu.Unlock()
	e.poke()

	timer := time.NewTimer(req.Wait)
	defer timer.Stop()
	select {
	case tasks := <-w.result:
		return tasks, nil
	case <-timer.C:
	case <-ctx.Done():
	}
	e.mu.Lock()
	if w.held() {
		// A lease for this waiter is being committed: wait for it rather than
		// leave the task leased to a worker that has gone.
		w.gone = true
		e.mu.Unlock()
		return <-w.result, nil
	}
	e.removeWaiter(w)
	w.finish(nil)
	e.mu.Unlock()
	return <-w.result, nil
}

// WaitingPolls counts the polls waiting on this node, by queue: how many
// workers are ready for a task right now (none on a follower).
func (e *Engine) WaitingPolls() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int{}
	for q, ws := range e.waiters {
		for _, w := range ws {
			if !w.done {
				out[q]++
			}
		}
	}
	return out
}

// AnyWaiting reports whether a poll waits on any queue that ClaimPoll
// could take: a cheap test before working out which queue a claim would be
// for.
func (e *Engine) AnyWaiting() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ws := range e.waiters {
		for _, w := range ws {
			if w.claimable() {
				return true
			}
		}
	}
	return false
}

// ClaimPoll takes a poll waiting on queue for a command that leases tasks
// to it itself: a start on the leader that leases its instance's first
// step in its own raft entry, saving the lease round after it. It returns
// what the command should ask for, and done, to call exactly once with
// what the command leased (nothing when it failed or leased nothing). ok
// is false when no poll waits there, or on a node that does not lead.
//
// One poll takes several such commands: the starts that come while its
// first is in raft (each may lease half the room the others left, at
// least one task), and answers once they are all back, with everything
// they leased. At a thousand starts a second that is one poll answered,
// and asked again, for every raft batch of starts instead of one per
// start (docs/performance-history.md). A poll whose commands all leased nothing
// goes back to waiting.
func (e *Engine) ClaimPoll(queue string) (next *fsm.NextTasks, done func([]*fsm.Task), ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.leader {
		return nil, nil, false
	}
	for _, w := range e.waiters[queue] {
		if !w.claimable() {
			continue
		}
		room := max(1, (w.req.MaxTasks-w.reserved)/2)
		w.claims++
		w.reserved += room
		next = &fsm.NextTasks{WorkerID: w.req.WorkerID, Queue: queue, Activities: w.req.Activities, Max: room}
		done = func(tasks []*fsm.Task) {
			e.mu.Lock()
			w.claims--
			w.reserved -= room
			w.got = append(w.got, tasks...)
			if len(tasks) > 0 {
				w.closing = true
			}
			idle := false
			if w.claims == 0 && !w.done {
				if len(w.got) > 0 || w.gone {
					e.removeWaiter(w)
					w.finish(w.got)
				} else {
					w.closing, idle = false, true
				}
			}
			e.mu.Unlock()
			if idle {
				e.poke() // back to waiting: a round may have tasks for it
			}
		}
		return next, done, true
	}
	return nil, nil, false
}

func (e *Engine) removeWaiter(w *waiter) {
	ws := e.waiters[w.req.Queue]
	for i, x := range ws {
		if x == w {
			e.waiters[w.req.Queue] = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(e.waiters[w.req.Queue]) == 0 {
		delete(e.waiters, w.req.Queue)
	}
}

// dispatchLoop runs one dispatch round each time the state changes or a
// poll arrives. A round commits all its leases in one command, so dispatch
// throughput grows with load instead of paying one raft round trip per
// task. The leader runs LeaseRounds of these loops.
func (e *Engine) dispatchLoop(ctx context.Context) {
	for {
		state := e.cfg.State.State()
		changed := state.Changed()
		if e.dispatchRound(ctx, state) {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
		case <-changed:
		}
	}
}

// timeLoop proposes what comes due (lease expiries, timers, cron fires)
// each time a deadline passes or the state changes (a new deadline).
func (e *Engine) timeLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		state := e.cfg.State.State()
		changed := state.Changed()
		next, acted := e.timeRound(ctx, state)
		if acted {
			continue
		}
		if e.cfg.GoneWorkers != nil {
			// Membership is not in the state: look again within a second.
			next = min(next, time.Second)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-timer.C:
		}
	}
}

// dispatchRound matches waiting polls with pending tasks and commits the
// leases. It reports whether any lease was granted.
func (e *Engine) dispatchRound(ctx context.Context, state *fsm.StateStore) bool {
	e.mu.Lock()
	var leases []fsm.Lease
	owner := map[string]*waiter{}
	owned := map[*waiter]int{}
	tx := state.Read()
	for queue, ws := range e.waiters {
		want := 0
		for _, w := range ws {
			if !w.done && !w.held() {
				want += w.req.MaxTasks
			}
		}
		if want == 0 {
			continue // every waiter is served or held by another round
		}
		// Walk the queue in order until every waiter has what it asked
		// for: tasks no waiter accepts (their workers are elsewhere or
		// down) must not hide the ones behind them.
		tx.EachPendingTask(queue, func(task *fsm.Task) bool {
			if e.leasing[task.ID] {
				return true // another round is committing its lease
			}
			if !tx.Dispatchable(task, tx.Instance(task.InstanceID)) {
				return true // suspended, cancelling, or its service's breaker is open: not now, and not in the way
			}
			for _, w := range ws {
				if w.done || (w.held() && owned[w] == 0) || !w.accepts(task.Activity) || owned[w] >= w.req.MaxTasks {
					continue // served, held by another round, not its activity, or full
				}
				w.claimed = true
				e.leasing[task.ID] = true
				owner[task.ID] = w
				owned[w]++
				want--
				leases = append(leases, fsm.Lease{TaskID: task.ID, WorkerID: w.req.WorkerID})
				break
			}
			return want > 0 && len(leases) < e.cfg.MaxLeasesPerRound
		})
	}
	e.mu.Unlock()
	if len(leases) == 0 {
		return false
	}

	granted := map[*waiter][]*fsm.Task{}
	res, err := e.propose(ctx, fsm.LeaseTasksType, &fsm.LeaseTasksRequest{Header: fsm.Header{Time: e.cfg.Now().UTC()}, Leases: leases})
	if err != nil {
		// If the command committed after all, the leases expire and the
		// tasks are dispatched again: at least once, never lost.
		e.logger.Warn("lease round failed", "leases", len(leases), "error", err)
	} else if r, ok := res.(*fsm.LeaseTasksResponse); ok {
		committed := e.cfg.Now()
		for _, t := range r.Granted {
			e.cfg.Metrics.ObserveDispatch(committed.Sub(t.ReadyAt).Seconds())
			w := owner[t.ID]
			granted[w] = append(granted[w], t)
		}
	}

	e.mu.Lock()
	for id := range owner {
		delete(e.leasing, id)
	}
	for _, w := range owner {
		w.claimed = false
		if w.done {
			continue
		}
		if tasks := granted[w]; len(tasks) > 0 || w.gone {
			e.removeWaiter(w)
			w.finish(tasks)
		}
	}
	e.mu.Unlock()
	return len(granted) > 0
}

// releaseGone releases the leases held by workers known to be gone, one
// command per gone prefix (each with its reason).
func (e *Engine) releaseGone(ctx context.Context, tx *fsm.Txn, gone map[string]string, now time.Time) bool {
	byPrefix := map[string][]fsm.ExpiredLease{}
	for _, t := range tx.LeasedTasks(0) {
		for prefix := range gone {
			if strings.HasPrefix(t.WorkerID, prefix) {
				byPrefix[prefix] = append(byPrefix[prefix], fsm.ExpiredLease{TaskID: t.ID, Token: t.Token})
				break
			}
		}
	}
	acted := false
	prefixes := make([]string, 0, len(byPrefix))
	for p := range byPrefix {
		prefixes = append(prefixes, p)
	}
	sort.Strings(prefixes)
	for _, p := range prefixes {
		res, err := e.propose(ctx, fsm.ReleaseLeasesType, &fsm.ReleaseLeasesRequest{Header: fsm.Header{Time: now}, Leases: byPrefix[p], Reason: gone[p]})
		if err != nil {
			e.logger.Warn("releasing the leases of gone workers failed", "workers", p, "error", err)
			continue
		}
		if r, ok := res.(*fsm.ExpireLeasesResponse); ok && len(r.Expired) > 0 {
			e.logger.Info("released the leases of gone workers", "workers", p, "reason", gone[p], "tasks", r.Expired)
			acted = true
		}
	}
	return acted
}

// timeRound proposes what the leader's clock says is due: leases past
// their deadline (ExpireLeases) and timers whose time has come
// (FireTimers). It returns how long until the next deadline, and whether it
// changed anything. The FSM checks every deadline against the command's
// time, so nothing fires early, whatever this node believed.
func (e *Engine) timeRound(ctx context.Context, state *fsm.StateStore) (time.Duration, bool) {
	now := e.cfg.Now().UTC()
	next := time.Minute
	acted := false
	tx := state.Read()

	var expired []fsm.ExpiredLease
	for _, t := range tx.LeasedTasks(e.cfg.MaxLeasesPerRound) {
		if d := t.Deadline(); d.After(now) {
			next = min(next, d.Sub(now))
			break
		}
		expired = append(expired, fsm.ExpiredLease{TaskID: t.ID, Token: t.Token})
	}
	if len(expired) > 0 {
		res, err := e.propose(ctx, fsm.ExpireLeasesType, &fsm.ExpireLeasesRequest{Header: fsm.Header{Time: now}, Leases: expired})
		if err != nil {
			e.logger.Warn("lease expiry failed", "error", err)
			return 100 * time.Millisecond, false
		}
		if r, ok := res.(*fsm.ExpireLeasesResponse); ok && len(r.Expired) > 0 {
			e.logger.Info("leases ran out", "tasks", r.Expired)
			acted = true
		}
	}

	if e.cfg.GoneWorkers != nil {
		if gone := e.cfg.GoneWorkers(); len(gone) > 0 {
			acted = e.releaseGone(ctx, tx, gone, now) || acted
		}
	}

	var due []string
	for _, t := range tx.DueTimers(e.cfg.MaxLeasesPerRound) {
		if t.Deferred {
			break // parked until their instance resumes; they sort last
		}
		if t.Due.After(now) {
			next = min(next, t.Due.Sub(now))
			break
		}
		due = append(due, t.ID)
	}
	if len(due) > 0 {
		res, err := e.propose(ctx, fsm.FireTimersType, &fsm.FireTimersRequest{Header: fsm.Header{Time: now}, Timers: due})
		if err != nil {
			e.logger.Warn("firing timers failed", "error", err)
			return 100 * time.Millisecond, acted
		}
		if r, ok := res.(*fsm.FireTimersResponse); ok && len(r.Fired) > 0 {
			e.logger.Debug("timers fired", "timers", r.Fired)
			acted = true
		}
	}
	// Retention: ended instances whose time is up are deleted, a bounded
	// batch per command, once the earliest has been due for purgeSlack:
	// instances that end at a steady rate then go a second's worth at a
	// time instead of one command (and raft round) each.
	if exp := tx.NextPurge(); !exp.IsZero() {
		if due := exp.Add(purgeSlack); due.After(now) {
			next = min(next, due.Sub(now))
		} else {
			res, err := e.propose(ctx, fsm.PurgeInstancesType, &fsm.PurgeInstancesRequest{Header: fsm.Header{Time: now}, Max: fsm.MaxPurge})
			if err != nil {
				e.logger.Warn("purging expired instances failed", "error", err)
				return 100 * time.Millisecond, acted
			}
			if r, ok := res.(*fsm.PurgeInstancesResponse); ok && len(r.Purged)+r.Keys > 0 {
				e.logger.Debug("expired instances deleted", "count", len(r.Purged), "idempotency_keys", r.Keys)
				acted = true
			}
		}
	}
	// Cron triggers: the leader fires each enabled trigger's next scheduled
	// time once it has passed. Without catchup only the most recent missed
	// time fires (after downtime); with it, each in turn.
	for _, t := range tx.Triggers() {
		if !t.Enabled || t.Kind != hcl.TriggerCron {
			continue
		}
		sched, err := hcl.ParseSchedule(t.Schedule, t.Timezone)
		if err != nil {
			continue
		}
		due := sched.Next(t.LastFire)
		if due.After(now) {
			next = min(next, due.Sub(now))
			continue
		}
		if !t.Catchup {
			for i := 0; i < 100000; i++ {
				n := sched.Next(due)
				if n.After(now) {
					break
				}
				due = n
			}
		}
		res, err := e.propose(ctx, fsm.FireTriggerType, &fsm.FireTriggerRequest{Header: fsm.Header{Time: now}, ID: t.ID, Scheduled: due})
		if err != nil {
			e.logger.Warn("firing a trigger failed", "trigger", t.ID, "error", err)
			return 100 * time.Millisecond, acted
		}
		if r, ok := res.(*fsm.FireTriggerResponse); ok {
			e.logger.Info("trigger fired", "trigger", t.ID, "scheduled", due, "outcome", r.Outcome, "instance", r.InstanceID, "reason", r.Reason)
		}
		acted = true
	}
	return next, acted
}

func (e *Engine) propose(ctx context.Context, t fsm.MessageType, msg any) (any, error) {
	cmd, err := fsm.Encode(t, msg)
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := e.cfg.Raft.Apply(actx, cmd)
	if err != nil {
		return nil, err
	}
	if ferr, ok := res.(*fsm.Error); ok {
		return nil, ferr
	}
	return res, nil
}
