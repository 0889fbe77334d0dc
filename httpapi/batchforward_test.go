package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/cluster"
	"github.com/lockstep-io/lockstep/engine"
	"github.com/lockstep-io/lockstep/fsm"
	"github.com/lockstep-io/lockstep/internal/poll"
)

// followerCluster is a follower whose leader is at addr.
type followerCluster struct{ addr string }

func (c followerCluster) Apply(context.Context, []byte) (any, error) {
	return nil, cluster.ErrNotLeader
}
func (c followerCluster) IsLeader() bool { return false }
func (c followerCluster) Leader() (cluster.LeaderInfo, bool) {
	return cluster.LeaderInfo{Node: "leader", HTTPAddr: c.addr}, c.addr != ""
}
func (c followerCluster) LastContact() time.Duration           { return 0 }
func (c followerCluster) Members() []cluster.Member            { return nil }
func (c followerCluster) Peers() ([]cluster.Peer, error)       { return nil, nil }
func (c followerCluster) Stats() map[string]string             { return nil }
func (c followerCluster) ConsistentRead(context.Context) error { return cluster.ErrNotLeader }
func (c followerCluster) LeaderChanged() <-chan struct{}       { return nil }

// followerDispatcher is the engine of a node that does not lead.
type followerDispatcher struct{}

func (followerDispatcher) Poll(context.Context, engine.PollRequest) ([]*fsm.Task, error) {
	return nil, engine.ErrNotLeader
}
func (followerDispatcher) WaitingPolls() map[string]int { return nil }
func (followerDispatcher) ClaimPoll(string) (*fsm.NextTasks, func([]*fsm.Task), bool) {
	return nil, nil, false
}
func (followerDispatcher) AnyWaiting() bool { return false }

// electingCluster is a follower whose leader changes while it runs: none
// (or an unreachable one) until the test names another.
type electingCluster struct {
	followerCluster
	mu      sync.Mutex
	changed chan struct{}
}

func newElectingCluster(addr string) *electingCluster {
	return &electingCluster{followerCluster: followerCluster{addr}, changed: make(chan struct{})}
}

func (c *electingCluster) Leader() (cluster.LeaderInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.followerCluster.Leader()
}

func (c *electingCluster) LeaderChanged() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

func (c *electingCluster) elect(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addr = addr
	close(c.changed)
	c.changed = make(chan struct{})
}

func startRequest(t *testing.T, i int) (*http.Request, string, []byte) {
	t.Helper()
	uri := "/v1/workflows/w/instances"
	body := []byte(fmt.Sprintf(`{"id":"i%d"}`, i))
	r, err := http.NewRequest("POST", uri+"?wait=5s", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Idempotency-Key", fmt.Sprintf("k%d", i))
	return r, uri, body
}

// Starts forwarded while others are out travel together, and each gets
// the answer to its own request.
func TestForwardedStartsTravelInBatches(t *testing.T) {
	var batches, items atomic.Int64
	release := make(chan struct{})
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/internal/forward" || r.Header.Get(forwardedHeader) != "follower" {
			t.Errorf("leader got %s %s", r.Method, r.URL)
			w.WriteHeader(500)
			return
		}
		var req forwardBatchRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Error(err)
			return
		}
		batches.Add(1)
		items.Add(int64(len(req.Requests)))
		<-release
		var out forwardBatchResponse
		for _, it := range req.Requests {
			out.Answers = append(out.Answers, forwardAnswer{
				Status: 201, Header: http.Header{"X-Lockstep-Index": {"7"}},
				Body: []byte(`{"echo":` + string(it.Body) + `,"key":"` + it.Header.Get("Idempotency-Key") + `"}`),
			})
		}
		_ = json.NewEncoder(w).Encode(out)
	}))
	defer leader.Close()
	s := New(Config{NodeName: "follower", Cluster: followerCluster{strings.TrimPrefix(leader.URL, "http://")}})

	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, uri, body := startRequest(t, i)
			status, header, data, err := s.batched.forward(r, uri, body)
			want := fmt.Sprintf(`{"echo":{"id":"i%d"},"key":"k%d"}`, i, i)
			if err != nil || status != 201 || header.Get("X-Lockstep-Index") != "7" || string(data) != want {
				errs <- fmt.Errorf("start %d: %d %v %s, %v", i, status, header, data, err)
			}
		}()
	}
	// Hold the first batches until every start is either out or waiting.
	poll.Until(t, 10*time.Second, "every start out or waiting", func() error {
		s.batched.mu.Lock()
		waiting := int64(len(s.batched.pending))
		s.batched.mu.Unlock()
		if waiting+items.Load() != n {
			return fmt.Errorf("%d waiting, %d out", waiting, items.Load())
		}
		return nil
	})
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if b := batches.Load(); b > forwardSenders+1 {
		t.Fatalf("%d starts took %d batches", n, b)
	}
}

// A leader that does not know the batch endpoint gets each start alone;
// an unreachable one is no_leader, as a single forward's failure is.
func TestForwardedStartsFallBack(t *testing.T) {
	var single atomic.Int64
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/internal/forward" {
			w.WriteHeader(404)
			return
		}
		single.Add(1)
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Lockstep-Index", "3")
		w.WriteHeader(201)
		_, _ = w.Write(b)
	}))
	defer old.Close()
	s := New(Config{NodeName: "follower", Cluster: followerCluster{strings.TrimPrefix(old.URL, "http://")}})
	r, uri, body := startRequest(t, 1)
	status, header, data, err := s.batched.forward(r, uri, body)
	if err != nil || status != 201 || header.Get("X-Lockstep-Index") != "3" || string(data) != `{"id":"i1"}` || single.Load() != 1 {
		t.Fatalf("fallback: %d %v %s, %v (%d single)", status, header, data, err, single.Load())
	}

	gone := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(gone.URL, "http://")
	gone.Close()
	s = New(Config{NodeName: "follower", Cluster: followerCluster{addr}, LeaderHold: 100 * time.Millisecond})
	_, _, _, err = s.batched.forward(r, uri, body)
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Status != 503 || apiErr.Code != "no_leader" {
		t.Fatalf("unreachable leader: %v", err)
	}
}

// A request that needs the leader while there is none, or while the known
// one cannot be reached (it has gone and the election is under way), waits
// for the next leader instead of failing: the built-in workers and the
// clients on followers resume as soon as one is elected.
func TestForwardsWaitForALeader(t *testing.T) {
	var served atomic.Int64
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		w.Header().Set("X-Lockstep-Index", "7")
		w.WriteHeader(200)
		_, _ = w.Write([]byte(`{"tasks":[]}`))
	}))
	defer leader.Close()
	gone := httptest.NewServer(http.NotFoundHandler())
	goneAddr := strings.TrimPrefix(gone.URL, "http://")
	gone.Close()

	for name, first := range map[string]string{"no leader": "", "gone leader": goneAddr} {
		t.Run(name, func(t *testing.T) {
			c := newElectingCluster(first)
			s := New(Config{NodeName: "follower", Cluster: c, Dispatcher: followerDispatcher{}, FSM: fsm.New(nil), LeaderHold: time.Minute})
			before := served.Load()
			done := make(chan *httptest.ResponseRecorder, 1)
			go func() {
				rec := httptest.NewRecorder()
				r := httptest.NewRequest("POST", "/v1/queues/default/poll", strings.NewReader(`{"worker_id":"w"}`))
				s.ServeHTTP(rec, r)
				done <- rec
			}()
			select {
			case rec := <-done:
				t.Fatalf("answered before a leader was elected: %d %s", rec.Code, rec.Body)
			case <-time.After(50 * time.Millisecond): // the request holds; nothing to poll for
			}
			c.elect(strings.TrimPrefix(leader.URL, "http://"))
			rec := <-done
			if rec.Code != 200 || rec.Header().Get("X-Lockstep-Index") != "7" || served.Load() != before+1 {
				t.Fatalf("after the election: %d %v %s (%d served)", rec.Code, rec.Header(), rec.Body, served.Load()-before)
			}
		})
	}

	// With no leader until the hold runs out: 503 no_leader, Retry-After.
	s := New(Config{NodeName: "follower", Cluster: newElectingCluster(""), Dispatcher: followerDispatcher{}, FSM: fsm.New(nil), LeaderHold: 50 * time.Millisecond})
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/queues/default/poll", strings.NewReader(`{"worker_id":"w"}`)))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "no_leader") || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("no leader at all: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
}

func TestOnlyStartsAreBatched(t *testing.T) {
	for uri, want := range map[string]bool{
		"/v1/workflows/w/instances":         true,
		"/v1/workflows/w/instances?wait=1s": true,
		"/v1/workflows//instances":          false,
		"/v1/workflows/a/b/instances":       false,
		"/v1/instances/x/cancel":            false,
		"/v1/instances/x/signals/go":        true,
		"/v1/instances/x/signals/":          false,
		"/v1/instances/x/signals/go/more":   false,
		"/v1/queues/default/poll":           false,
		"/v1/internal/forward":              false,
	} {
		if got := batchableForward("POST", uri); got != want {
			t.Errorf("%s: %v", uri, got)
		}
	}
	if batchableForward("GET", "/v1/workflows/w/instances") {
		t.Error("a GET was batchable")
	}
}

// A leader that has just stepped down refuses what a follower forwards to
// it (no_leader, having done nothing): the follower sends it again to the
// next leader within its hold, batched or not. Any other 503 comes back
// as it was.
func TestForwardsGoAgainToTheNextLeader(t *testing.T) {
	var c *electingCluster
	var oldServed, newServed atomic.Int64
	refusal := `{"error":{"code":"no_leader","message":"no cluster leader is available; retry shortly"}}`
	var next string
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		oldServed.Add(1)
		c.elect(next) // the election this node lost, seen by the follower before the answer
		if r.URL.Path == "/v1/internal/forward" {
			var req forwardBatchRequest
			_ = json.NewDecoder(r.Body).Decode(&req)
			var out forwardBatchResponse
			for range req.Requests {
				out.Answers = append(out.Answers, forwardAnswer{Status: 503, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(refusal)})
			}
			_ = json.NewEncoder(w).Encode(out)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(503)
		_, _ = io.WriteString(w, refusal)
	}))
	defer old.Close()
	fresh := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		newServed.Add(1)
		if r.URL.Path == "/v1/internal/forward" {
			var req forwardBatchRequest
			_ = json.NewDecoder(r.Body).Decode(&req)
			var out forwardBatchResponse
			for range req.Requests {
				out.Answers = append(out.Answers, forwardAnswer{Status: 201, Body: []byte(`{"id":"i1"}`)})
			}
			_ = json.NewEncoder(w).Encode(out)
			return
		}
		w.Header().Set("X-Lockstep-Index", "9")
		_, _ = io.WriteString(w, `{"tasks":[]}`)
	}))
	defer fresh.Close()
	next = strings.TrimPrefix(fresh.URL, "http://")

	// A start, batched.
	c = newElectingCluster(strings.TrimPrefix(old.URL, "http://"))
	s := New(Config{NodeName: "follower", Cluster: c, Dispatcher: followerDispatcher{}, FSM: fsm.New(nil), LeaderHold: time.Minute})
	r, uri, body := startRequest(t, 1)
	status, _, data, err := s.batched.forward(r, uri, body)
	if err != nil || status != 201 || string(data) != `{"id":"i1"}` || oldServed.Load() != 1 || newServed.Load() != 1 {
		t.Fatalf("start: %d %s %v (old served %d, new %d)", status, data, err, oldServed.Load(), newServed.Load())
	}

	// A poll, forwarded alone.
	c = newElectingCluster(strings.TrimPrefix(old.URL, "http://"))
	s = New(Config{NodeName: "follower", Cluster: c, Dispatcher: followerDispatcher{}, FSM: fsm.New(nil), LeaderHold: time.Minute})
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/queues/default/poll", strings.NewReader(`{"worker_id":"w"}`)))
	if rec.Code != 200 || rec.Header().Get("X-Lockstep-Index") != "9" || oldServed.Load() != 2 || newServed.Load() != 2 {
		t.Fatalf("poll: %d %v %s (old served %d, new %d)", rec.Code, rec.Header(), rec.Body, oldServed.Load(), newServed.Load())
	}

	// With the hold spent, the refusal is the answer.
	c = newElectingCluster(strings.TrimPrefix(old.URL, "http://"))
	next = strings.TrimPrefix(old.URL, "http://") // re-elected, still refusing
	s = New(Config{NodeName: "follower", Cluster: c, Dispatcher: followerDispatcher{}, FSM: fsm.New(nil), LeaderHold: 30 * time.Millisecond})
	rec = httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/queues/default/poll", strings.NewReader(`{"worker_id":"w"}`)))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), `"no_leader"`) {
		t.Fatalf("hold spent: %d %s", rec.Code, rec.Body)
	}
}

func TestOnlyANoLeaderRefusalGoesAgain(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		want   bool
	}{
		{503, `{"error":{"code":"no_leader","message":"x"}}`, true},
		{503, `{"error":{"code":"indeterminate","message":"x"}}`, false},
		{503, `not json`, false},
		{500, `{"error":{"code":"no_leader"}}`, false},
		{200, `{}`, false},
	} {
		if got := refusedForNoLeader(tc.status, []byte(tc.body)); got != tc.want {
			t.Errorf("%d %s: %v", tc.status, tc.body, got)
		}
	}
}
