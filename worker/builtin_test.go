package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/api"
	"github.com/lockstep-io/lockstep/internal/poll"
)

func task(activity, input string) *api.Task {
	return &api.Task{TaskID: "t1", Token: "1.0", InstanceID: "i1", Step: "s", Activity: activity, Input: json.RawMessage(input),
		IdempotencyKey: "i1/s", Deadline: time.Now().Add(time.Minute)}
}

func activityErr(t *testing.T, err error) *ActivityError {
	t.Helper()
	var ae *ActivityError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v is not an ActivityError", err)
	}
	return ae
}

func TestNoopLogDelay(t *testing.T) {
	acts, err := Builtins(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"noop", "log"} {
		out, err := acts[name](context.Background(), task(name, `{"a":1}`))
		if err != nil || string(out) != `{"a":1}` {
			t.Fatalf("%s = %s, %v", name, out, err)
		}
	}
	out, err := acts["delay"](context.Background(), task("delay", `{"ms": 5, "x": 1}`))
	if err != nil || string(out) != `{"ms": 5, "x": 1}` {
		t.Fatalf("delay = %s, %v", out, err)
	}
	if _, err := acts["delay"](context.Background(), task("delay", `{"ms": -1}`)); activityErr(t, err).Type != "invalid_input" || !activityErr(t, err).NonRetryable {
		t.Fatalf("negative delay = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := acts["delay"](ctx, task("delay", `{"ms": 60000}`)); activityErr(t, err).Type != "cancelled" {
		t.Fatalf("cancelled delay = %v", err)
	}
}

func TestHTTPActivity(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Header().Set("X-Seen-Key", r.Header.Get("Idempotency-Key"))
			w.WriteHeader(201)
			_, _ = w.Write([]byte(`{"m":"` + r.Method + `"}`))
		case "/broken":
			w.WriteHeader(503)
			_, _ = w.Write([]byte("down"))
		case "/away":
			http.Redirect(w, r, "http://10.1.2.3/steal", http.StatusFound)
		case "/home":
			http.Redirect(w, r, "/ok", http.StatusFound)
		}
	}))
	defer srv.Close()
	acts, err := Builtins(nil, DefaultHTTPAllow)
	if err != nil {
		t.Fatal(err)
	}
	run := func(input string) (map[string]any, error) {
		out, err := acts["http"](context.Background(), task("http", input))
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatal(err)
		}
		return m, nil
	}
	out, err := run(`{"method":"POST","url":"` + srv.URL + `/ok","body":"x","headers":{"A":"b"}}`)
	if err != nil || out["status"].(float64) != 201 || out["body"] != `{"m":"POST"}` {
		t.Fatalf("ok = %v, %v", out, err)
	}
	if out["headers"].(map[string]any)["x-seen-key"] != "i1/s" {
		t.Fatalf("idempotency key not passed: %v", out["headers"])
	}
	if out, err := run(`{"url":"` + srv.URL + `/home"}`); err != nil || out["status"].(float64) != 201 {
		t.Fatalf("redirect within the allow list = %v, %v", out, err)
	}
	cases := map[string]string{
		`{"url":"` + srv.URL + `/broken"}`:     "http.status",
		`{"url":"` + srv.URL + `/away"}`:       "http.forbidden", // redirect off the list
		`{"url":"http://10.1.2.3/x"}`:          "http.forbidden",
		`{"url":"http://example.internal/x"}`:  "http.forbidden",
		`{"url":"http://169.254.169.254/"}`:    "http.forbidden",
		`{"url":"file:///etc/passwd"}`:         "http.forbidden",
		`{"method":"GET"}`:                     "invalid_input",
		`[1,2]`:                                "invalid_input",
		`{"url":"http://127.0.0.1:1/refused"}`: "http.transport",
	}
	for input, want := range cases {
		if _, err := run(input); err == nil || activityErr(t, err).Type != want {
			t.Errorf("%s = %v, want %s", input, err, want)
		}
	}
}

func TestAllowListParsing(t *testing.T) {
	if _, err := parseAllow([]string{"10.0.0.0/33"}); err == nil {
		t.Fatal("bad CIDR accepted")
	}
	a, err := parseAllow([]string{"api.internal", "192.168.1.5", "10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	h := &httpActivity{allow: a}
	for raw, ok := range map[string]bool{
		"http://api.internal/x":  true,
		"http://API.internal/x":  true,
		"https://192.168.1.5/":   true,
		"http://10.9.9.9:8080/":  true,
		"http://192.168.1.6/":    false,
		"http://127.0.0.1/":      false,
		"http://other.internal/": false,
	} {
		u, _ := url.Parse(raw)
		if err := h.check(u); (err == nil) != ok {
			t.Errorf("%s: allowed=%v, want %v", raw, err == nil, ok)
		}
	}
}

// fakeClient records what a pool reports and serves tasks from a slice.
type fakeClient struct {
	mu         sync.Mutex
	tasks      []*api.Task
	completed  map[string]string
	failed     map[string]api.TaskError
	heartbeats int
	lose       bool
}

func (f *fakeClient) Poll(ctx context.Context, queue string, req api.PollRequest) (*api.Task, error) {
	f.mu.Lock()
	if len(f.tasks) > 0 {
		t := f.tasks[0]
		f.tasks = f.tasks[1:]
		f.mu.Unlock()
		return t, nil
	}
	f.mu.Unlock()
	<-ctx.Done()
	return nil, ctx.Err()
}

func (f *fakeClient) Complete(_ context.Context, id, _ string, out json.RawMessage) (*api.TaskResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.completed[id] = string(out)
	return &api.TaskResult{}, nil
}

func (f *fakeClient) Heartbeat(_ context.Context, id, _ string, _ json.RawMessage) (*api.HeartbeatResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heartbeats++
	if f.lose {
		return nil, &api.Error{StatusCode: 409, Code: "stale_token", Message: "lost"}
	}
	return &api.HeartbeatResult{}, nil
}

func (f *fakeClient) Fail(_ context.Context, id, _ string, e api.TaskError) (*api.TaskResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed[id] = e
	return &api.TaskResult{}, nil
}

func TestPoolReportsResults(t *testing.T) {
	mk := func(id, activity, input string) *api.Task {
		tk := task(activity, input)
		tk.TaskID = id
		return tk
	}
	fc := &fakeClient{completed: map[string]string{}, failed: map[string]api.TaskError{},
		tasks: []*api.Task{mk("t1", "echo", `{"x":1}`), mk("t2", "explode", `{}`), mk("t3", "mystery", `{}`), mk("t4", "typed", `{}`)}}
	pool, err := NewPool(Config{Client: fc, Concurrency: 1, Activities: map[string]Activity{
		"echo":    func(_ context.Context, t *api.Task) (json.RawMessage, error) { return t.Input, nil },
		"explode": func(context.Context, *api.Task) (json.RawMessage, error) { panic("kaboom") },
		"typed": func(context.Context, *api.Task) (json.RawMessage, error) {
			return nil, &ActivityError{Type: "payments.declined", Message: "card declined"}
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { pool.Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		fc.mu.Lock()
		n := len(fc.completed) + len(fc.failed)
		fc.mu.Unlock()
		if n == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reported %d of 4", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if fc.completed["t1"] != `{"x":1}` {
		t.Errorf("t1 = %q", fc.completed["t1"])
	}
	for id, want := range map[string]string{"t2": "panic", "t3": "unknown_activity", "t4": "payments.declined"} {
		if fc.failed[id].Type != want {
			t.Errorf("%s failed as %q, want %q", id, fc.failed[id].Type, want)
		}
	}
	if !fc.failed["t3"].NonRetryable || fc.failed["t4"].NonRetryable {
		t.Errorf("non_retryable: unknown activity %v, typed error %v", fc.failed["t3"].NonRetryable, fc.failed["t4"].NonRetryable)
	}
	if !strings.Contains(fc.failed["t3"].Message, "mystery") {
		t.Errorf("unknown activity message = %q", fc.failed["t3"].Message)
	}
}

func TestPoolAbandonsOnShutdownInsteadOfFailing(t *testing.T) {
	started := make(chan struct{})
	fc := &fakeClient{completed: map[string]string{}, failed: map[string]api.TaskError{}, tasks: []*api.Task{task("slow", `{}`)}}
	pool, _ := NewPool(Config{Client: fc, Concurrency: 1, Activities: map[string]Activity{
		"slow": func(ctx context.Context, _ *api.Task) (json.RawMessage, error) {
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		},
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { pool.Run(ctx); close(done) }()
	<-started
	cancel()
	<-done
	if len(fc.failed) != 0 || len(fc.completed) != 0 {
		t.Fatalf("a task cut short by shutdown was reported: %v %v", fc.failed, fc.completed)
	}
}

func TestPoolHeartbeatsAndStopsWhenTheLeaseIsLost(t *testing.T) {
	for _, lose := range []bool{false, true} {
		tk := task("slow", `{}`)
		tk.HeartbeatTimeoutMS = 30
		stopped := make(chan struct{})
		fc := &fakeClient{completed: map[string]string{}, failed: map[string]api.TaskError{}, tasks: []*api.Task{tk}, lose: lose}
		pool, _ := NewPool(Config{Client: fc, Concurrency: 1, Activities: map[string]Activity{
			"slow": func(ctx context.Context, _ *api.Task) (json.RawMessage, error) {
				defer close(stopped)
				select {
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-time.After(150 * time.Millisecond):
					return json.RawMessage(`"done"`), nil
				}
			},
		}})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { pool.Run(ctx); close(done) }()
		<-stopped
		deadline := time.Now().Add(5 * time.Second)
		for !lose && time.Now().Before(deadline) {
			fc.mu.Lock()
			n := len(fc.completed)
			fc.mu.Unlock()
			if n == 1 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		<-done
		fc.mu.Lock()
		if fc.heartbeats == 0 {
			t.Errorf("lose=%v: no heartbeats", lose)
		}
		if lose && (len(fc.completed) != 0 || len(fc.failed) != 0) {
			t.Errorf("a result was reported after the lease was lost: %v %v", fc.completed, fc.failed)
		}
		if !lose && fc.completed["t1"] != `"done"` {
			t.Errorf("completed = %v", fc.completed)
		}
		fc.mu.Unlock()
	}
}

func TestHTTPActivityUsesItsService(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(r.URL.Path + " " + r.Header.Get("X-Team") + " " + r.Header.Get("Accept")))
	}))
	defer srv.Close()
	acts, _ := Builtins(nil, DefaultHTTPAllow)
	tk := task("http", `{"url":"/v1/charge","headers":{"Accept":"text/plain"}}`)
	tk.Service = &api.TaskService{Name: "p", BaseURL: srv.URL + "/api/", Headers: map[string]string{"X-Team": "pay", "Accept": "json"}, TimeoutMS: 5000}
	out, err := acts["http"](context.Background(), tk)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Body string `json:"body"`
	}
	json.Unmarshal(out, &res)
	if res.Body != "/v1/charge pay text/plain" {
		t.Fatalf("body = %q", res.Body)
	}
}

// batchingClient reports through ReportResults, as *api.Client does.
type batchingClient struct {
	*fakeClient
	calls, results int
}

func (b *batchingClient) ReportResults(ctx context.Context, outs []api.TaskOutcome) ([]api.TaskOutcomeResult, error) {
	b.mu.Lock()
	b.calls++
	b.results += len(outs)
	b.mu.Unlock()
	res := make([]api.TaskOutcomeResult, len(outs))
	for _, o := range outs {
		if o.Error != nil {
			b.Fail(ctx, o.TaskID, o.Token, *o.Error)
		} else {
			b.Complete(ctx, o.TaskID, o.Token, o.Output)
		}
	}
	return res, nil
}

func TestPoolBatchesResultsWhenTheClientCan(t *testing.T) {
	fc := &fakeClient{completed: map[string]string{}, failed: map[string]api.TaskError{}}
	for i := 0; i < 40; i++ {
		tk := task("echo", fmt.Sprintf(`{"i":%d}`, i))
		tk.TaskID = fmt.Sprintf("t%d", i)
		if i%10 == 9 {
			tk.Activity = "typed"
		}
		fc.tasks = append(fc.tasks, tk)
	}
	bc := &batchingClient{fakeClient: fc}
	pool, err := NewPool(Config{Client: bc, Concurrency: 4, Activities: map[string]Activity{
		"echo": func(_ context.Context, t *api.Task) (json.RawMessage, error) { return t.Input, nil },
		"typed": func(context.Context, *api.Task) (json.RawMessage, error) {
			return nil, &ActivityError{Type: "payments.declined", Message: "card declined"}
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	runPoolUntil(t, pool, "40 results", func() error {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		if n := len(fc.completed) + len(fc.failed); n != 40 {
			return fmt.Errorf("%d reported", n)
		}
		return nil
	})
	if bc.results != 40 || bc.calls < 1 || bc.calls > 40 {
		t.Fatalf("%d results in %d calls", bc.results, bc.calls)
	}
	if len(fc.failed) != 4 || fc.failed["t9"].Type != "payments.declined" || fc.completed["t3"] != `{"i":3}` {
		t.Fatalf("completed %v failed %v", fc.completed, fc.failed)
	}
}

// batchPollingClient hands out up to max tasks per poll.
type batchPollingClient struct {
	*batchingClient
	polls, most int
}

func (b *batchPollingClient) PollTasks(ctx context.Context, queue string, req api.PollRequest, most int) ([]api.Task, error) {
	b.mu.Lock()
	if len(b.tasks) > 0 {
		n := min(most, len(b.tasks))
		out := make([]api.Task, n)
		for i := range out {
			out[i] = *b.tasks[i]
		}
		b.tasks = b.tasks[n:]
		b.polls++
		b.most = max(b.most, n)
		b.mu.Unlock()
		return out, nil
	}
	b.mu.Unlock()
	<-ctx.Done()
	return nil, ctx.Err()
}

// With Batch > 1 a poller takes several tasks per poll and runs them at
// once: eight slow tasks in one poll finish in about the time of one.
func TestPoolTakesBatchesPerPoll(t *testing.T) {
	fc := &fakeClient{completed: map[string]string{}, failed: map[string]api.TaskError{}}
	for i := 0; i < 24; i++ {
		tk := task("slow", fmt.Sprintf(`{"i":%d}`, i))
		tk.TaskID = fmt.Sprintf("t%d", i)
		fc.tasks = append(fc.tasks, tk)
	}
	bp := &batchPollingClient{batchingClient: &batchingClient{fakeClient: fc}}
	var running, peak atomic.Int32
	pool, err := NewPool(Config{Client: bp, Concurrency: 1, Batch: 8, Activities: map[string]Activity{
		"slow": func(_ context.Context, t *api.Task) (json.RawMessage, error) {
			n := running.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(20 * time.Millisecond) // the activity's work, not a wait for a condition
			running.Add(-1)
			return t.Input, nil
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	runPoolUntil(t, pool, "24 results", func() error {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		if n := len(fc.completed); n != 24 {
			return fmt.Errorf("%d completed", n)
		}
		return nil
	})
	if bp.polls != 3 || bp.most != 8 || peak.Load() < 2 {
		t.Fatalf("%d polls, at most %d tasks per poll, %d running at once", bp.polls, bp.most, peak.Load())
	}
}

// chainClient serves a two-step chain the way the API does: the result of
// t0 makes t1 ready and, when the report asks for tasks, leases t1 to the
// worker id it names in the same apply. It loses the first answer that
// carried a lease, as when the leader dies after committing it.
type chainClient struct {
	*batchPollingClient
	leasedTo map[string][]api.Task
	loseNext bool
	asks     []api.NextTasks
	ran      map[string]int
}

func (c *chainClient) ReportResultsNext(ctx context.Context, outs []api.TaskOutcome, next *api.NextTasks) ([]api.TaskOutcomeResult, []api.Task, error) {
	res, _ := c.ReportResults(ctx, outs)
	c.mu.Lock()
	defer c.mu.Unlock()
	var leased []api.Task
	if next != nil {
		c.asks = append(c.asks, *next)
		if next.Redeliver {
			leased = append(leased, c.leasedTo[next.WorkerID]...)
		}
	}
	for _, o := range outs {
		if o.TaskID != "t0" || c.ran["t0 recorded"] > 0 {
			continue // a result already recorded changes nothing
		}
		c.ran["t0 recorded"]++
		t1 := *task("count", `{}`)
		if next == nil {
			c.tasks = append(c.tasks, &t1)
			continue
		}
		c.leasedTo[next.WorkerID] = append(c.leasedTo[next.WorkerID], t1)
		leased = append(leased, t1)
		if c.loseNext {
			c.loseNext = false
			return nil, nil, errors.New("read tcp: connection reset by peer")
		}
	}
	return res, leased, nil
}

// A report whose answer was lost after it leased the next task asks again
// under the same worker id with redeliver, and runs the task once, at once,
// instead of leaving it leased to nobody until its lease expires.
func TestPoolTakesBackTheTasksOfALostAnswer(t *testing.T) {
	fc := &fakeClient{completed: map[string]string{}, failed: map[string]api.TaskError{}}
	t0 := task("count", `{}`)
	t0.TaskID = "t0"
	fc.tasks = []*api.Task{t0}
	cc := &chainClient{batchPollingClient: &batchPollingClient{batchingClient: &batchingClient{fakeClient: fc}},
		leasedTo: map[string][]api.Task{}, loseNext: true, ran: map[string]int{}}
	pool, err := NewPool(Config{Client: cc, Concurrency: 2, Batch: 4, Activities: map[string]Activity{
		"count": func(_ context.Context, tk *api.Task) (json.RawMessage, error) {
			cc.mu.Lock()
			cc.ran[tk.TaskID]++
			cc.mu.Unlock()
			return json.RawMessage(`{}`), nil
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	runPoolUntil(t, pool, "t1 to be reported", func() error {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		if _, ok := fc.completed["t1"]; !ok {
			return fmt.Errorf("completed %v", fc.completed)
		}
		return nil
	})
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.ran["t0"] != 1 || cc.ran["t1"] != 1 || fc.completed["t1"] == "" {
		t.Fatalf("ran %v", cc.ran)
	}
	if len(cc.asks) < 2 || cc.asks[0].Redeliver || !cc.asks[1].Redeliver || cc.asks[1].WorkerID != cc.asks[0].WorkerID {
		t.Fatalf("asks %+v", cc.asks)
	}
	for _, a := range cc.asks[2:] {
		if a.WorkerID == cc.asks[0].WorkerID {
			t.Fatalf("worker id %s asked again for new tasks: %+v", a.WorkerID, cc.asks)
		}
	}
}

// runPoolUntil runs pool until cond holds (polled), then stops it and
// waits for Run to return.
func runPoolUntil(t *testing.T, pool *Pool, what string, cond func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { pool.Run(ctx); close(done) }()
	poll.Until(t, 5*time.Second, what, cond)
	cancel()
	<-done
}
