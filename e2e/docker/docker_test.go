//go:build e2e_docker

// Package docker holds the container end-to-end suite: three agents in
// Docker (see docker-compose.yml), driven over HTTP on published loopback
// ports while the test kills, restarts and pauses containers. Run it with
// `make e2e`.
package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/api"
	"github.com/lockstep-io/lockstep/internal/poll"
)

var nodes = map[string]string{
	"node1": "http://127.0.0.1:17700",
	"node2": "http://127.0.0.1:17710",
	"node3": "http://127.0.0.1:17720",
}

const project = "lockstep-e2e"

func compose(t *testing.T, args ...string) string {
	t.Helper()
	file := os.Getenv("LOCKSTEP_E2E_COMPOSE")
	if file == "" {
		t.Skip("LOCKSTEP_E2E_COMPOSE is not set; run `make e2e`")
	}
	full := append([]string{"-p", project, "-f", file}, args...)
	out, err := exec.Command("docker-compose", full...).CombinedOutput()
	t.Logf("compose %s", strings.Join(args, " "))
	if err != nil {
		t.Fatalf("docker-compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func docker(t *testing.T, args ...string) {
	t.Helper()
	t.Logf("docker %s", strings.Join(args, " "))
	if out, err := exec.Command("docker", args...).CombinedOutput(); err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func container(node string) string { return project + "_" + node + "_1" }

func client(t *testing.T, node string) *api.Client {
	c, err := api.New(api.Config{Address: nodes[node]})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	poll.Until(t, timeout, what, cond)
}

// leader returns the leader every given node agrees on.
func leader(among []string) (string, error) {
	name := ""
	for _, n := range among {
		c, _ := api.New(api.Config{Address: nodes[n]})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		l, err := c.Leader(ctx)
		cancel()
		if err != nil {
			return "", fmt.Errorf("%s: %w", n, err)
		}
		if name != "" && l.Node != name {
			return "", fmt.Errorf("%s sees %s, others %s", n, l.Node, name)
		}
		name = l.Node
	}
	return name, nil
}

func others(all []string, not string) []string {
	var out []string
	for _, n := range all {
		if n != not {
			out = append(out, n)
		}
	}
	return out
}

// starter keeps starting instances against every live node and records
// each start that was acknowledged (a 2xx).
type starter struct {
	mu    sync.Mutex
	acked map[string]bool
	errs  map[string]int
	live  []string
	seq   int
}

func (s *starter) setLive(live []string) {
	s.mu.Lock()
	s.live = live
	s.mu.Unlock()
}

func (s *starter) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acked)
}

// waitProgress waits until n more starts have been acknowledged.
func (s *starter) waitProgress(t *testing.T, n int, phase string) {
	t.Helper()
	base := s.count()
	waitFor(t, 60*time.Second, fmt.Sprintf("%d acknowledged starts %s", n, phase), func() error {
		if got := s.count() - base; got < n {
			return fmt.Errorf("%d so far", got)
		}
		return nil
	})
}

func (s *starter) run(ctx context.Context, t *testing.T) {
	for ctx.Err() == nil {
		s.mu.Lock()
		s.seq++
		id := fmt.Sprintf("load-%05d", s.seq)
		node := s.live[s.seq%len(s.live)]
		s.mu.Unlock()
		c, _ := api.New(api.Config{Address: nodes[node]})
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		// Every other start has no id and relies on its Idempotency-Key:
		// retried until acknowledged, it must not create a second instance.
		byKey := s.seq%2 == 1
		req := api.StartRequest{ID: id}
		if byKey {
			rctx = api.WithIdempotencyKey(rctx, id)
			req.ID = ""
		}
		for attempt := 0; attempt < 20 && rctx.Err() == nil; attempt++ {
			if !byKey {
				req.Input = json.RawMessage(fmt.Sprintf(`{"n": %d}`, attempt))
			} else {
				req.Input = json.RawMessage(fmt.Sprintf(`{"n": 1, "key": %q}`, id))
			}
			started, err := c.StartInstance(rctx, "diamond", req)
			if err == nil {
				s.mu.Lock()
				s.acked[started.ID] = true
				s.mu.Unlock()
				break
			}
			if api.IsStatus(err, 409) {
				// An earlier attempt committed with other input: it exists.
				s.mu.Lock()
				s.acked[id] = true
				s.mu.Unlock()
				break
			}
			s.mu.Lock()
			s.errs[errKind(err)]++
			s.mu.Unlock()
			select {
			case <-rctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
		cancel()
	}
}

func errKind(err error) string {
	var e *api.Error
	if ok := asAPIError(err, &e); ok {
		return fmt.Sprintf("%d %s", e.StatusCode, e.Code)
	}
	return "transport"
}

func asAPIError(err error, out **api.Error) bool {
	e, ok := err.(*api.Error)
	if ok {
		*out = e
	}
	return ok
}

// diamond is examples/diamond.hcl with short step timeouts: a task leased
// to a worker inside a killed container is re-queued when its lease runs
// out, after the step's timeout (5m by default).
const diamond = `
workflow "diamond" {
  step "a" {
    activity = "noop"
    timeout  = "3s"
    input    = { n = input.n }
  }
  step "b" {
    activity = "noop"
    timeout  = "3s"
    input    = { from_a = step.a.output.n }
  }
  step "c" {
    activity   = "noop"
    timeout    = "3s"
    input      = { x = 1 }
    depends_on = [step.a]
  }
  step "d" {
    activity = "noop"
    timeout  = "3s"
    input    = { b = step.b.output.from_a, c = step.c.output.x }
  }
  output = { result = step.d.output }
}
`

func TestClusterSurvivesLeaderKillAndPause(t *testing.T) {
	compose(t, "down", "-v", "--remove-orphans")
	compose(t, "up", "-d")
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(compose(t, "logs", "--tail", "200"))
		}
		compose(t, "down", "-v", "--remove-orphans")
	})
	all := []string{"node1", "node2", "node3"}
	waitFor(t, 60*time.Second, "a leader", func() error { _, err := leader(all); return err })

	ctx := context.Background()
	if _, err := client(t, "node2").RegisterWorkflow(ctx, "diamond.hcl", []byte(diamond)); err != nil {
		t.Fatal(err)
	}

	s := &starter{acked: map[string]bool{}, errs: map[string]int{}, live: all}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); s.run(loadCtx, t) }()
	}

	s.waitProgress(t, 50, "before the faults")

	// Fault 1: kill -9 the leader under load, then bring it back.
	old, _ := leader(all)
	s.setLive(others(all, old))
	killedAt := time.Now()
	docker(t, "kill", "-s", "KILL", container(old))
	waitFor(t, 30*time.Second, "a new leader after kill", func() error {
		l, err := leader(others(all, old))
		if err == nil && l == old {
			err = fmt.Errorf("still %s", l)
		}
		return err
	})
	t.Logf("new leader %.2fs after kill -9", time.Since(killedAt).Seconds())
	docker(t, "start", container(old))
	waitFor(t, 60*time.Second, "the killed node to rejoin", func() error { _, err := leader(all); return err })
	s.setLive(all)
	s.waitProgress(t, 50, "after the killed leader rejoined")

	// Fault 2: pause the leader (a stalled process, not a dead one).
	paused, _ := leader(all)
	s.setLive(others(all, paused))
	docker(t, "pause", container(paused))
	waitFor(t, 30*time.Second, "a leader while one is paused", func() error {
		l, err := leader(others(all, paused))
		if err == nil && l == paused {
			err = fmt.Errorf("still %s", l)
		}
		return err
	})
	docker(t, "unpause", container(paused))
	waitFor(t, 60*time.Second, "the paused node to follow again", func() error { _, err := leader(all); return err })
	s.setLive(all)
	s.waitProgress(t, 50, "after the paused leader resumed")

	stopLoad()
	wg.Wait()
	s.mu.Lock()
	acked := make([]string, 0, len(s.acked))
	for id := range s.acked {
		acked = append(acked, id)
	}
	errs := s.errs
	s.mu.Unlock()
	sort.Strings(acked)
	t.Logf("acknowledged starts: %d; retried errors by kind: %v", len(acked), errs)

	// A fence: one more start after the load. Any node that has applied it
	// holds every start acknowledged before it, so reads wait past its index.
	var fence *api.Started
	waitFor(t, 30*time.Second, "the fence start", func() (err error) {
		fence, err = client(t, "node1").StartInstance(ctx, "diamond", api.StartRequest{ID: "fence", Input: json.RawMessage(`{"n": 0}`)})
		return err
	})

	// Every acknowledged start exists and completes, as seen from every node,
	// and the nodes agree on the set of instances. A node that has applied
	// the fence holds every start acknowledged before it.
	for _, n := range all {
		c := client(t, n)
		fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		if _, err := c.WaitInstanceSince(fctx, "fence", fence.Index); err != nil {
			t.Fatalf("%s: fence: %v", n, err)
		}
		cancel()
		for _, id := range acked {
			wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			inst, err := c.WaitInstance(wctx, id)
			cancel()
			if err != nil {
				t.Fatalf("%s: acknowledged instance %s: %v", n, id, err)
			}
			if inst.Status != "completed" {
				t.Fatalf("%s: instance %s is %s (%+v)", n, id, inst.Status, inst.Error)
			}
		}
	}
	var lists []string
	for _, n := range all {
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		if _, err := client(t, n).WaitInstanceSince(wctx, "fence", fence.Index); err != nil {
			t.Fatalf("%s: fence: %v", n, err)
		}
		cancel()
		var ids []string
		next := ""
		for {
			page, tok, err := client(t, n).Instances(ctx, "", next, 1000)
			if err != nil {
				t.Fatal(err)
			}
			for _, i := range page {
				ids = append(ids, i.ID+"="+i.Status)
			}
			if tok == "" {
				break
			}
			next = tok
		}
		lists = append(lists, strings.Join(ids, ","))
	}
	if lists[0] != lists[1] || lists[1] != lists[2] {
		t.Fatal("nodes disagree on the instances they hold")
	}
	// No duplicates: at most one instance per idempotency key. (A start
	// whose last attempt was indeterminate may have committed without being
	// acknowledged; that is allowed, a second instance for its key is not.)
	perKey := map[string][]string{}
	for _, entry := range strings.Split(lists[0], ",") {
		id := strings.SplitN(entry, "=", 2)[0]
		inst, err := client(t, "node1").Instance(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var in struct {
			Key string `json:"key"`
		}
		if json.Unmarshal(inst.Input, &in) == nil && in.Key != "" {
			perKey[in.Key] = append(perKey[in.Key], id)
		}
	}
	for key, ids := range perKey {
		if len(ids) > 1 {
			t.Fatalf("idempotency key %s started %d instances: %v", key, len(ids), ids)
		}
	}
	t.Logf("%d instances, %d started by idempotency key, none twice", len(strings.Split(lists[0], ",")), len(perKey))
}
