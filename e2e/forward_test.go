package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/agent"
	"github.com/lockstep-io/lockstep/api"
)

// Starts sent to a follower, many at once, get exactly what the leader's
// own endpoint answers: 201, then 200 for a repeat, 409 for a reused id,
// 404 for an unknown workflow, 400 for a bad id; and the index each answer
// carries lets a blocking read on the follower see the new instance.
func TestStartsThroughAFollower(t *testing.T) {
	c := startCluster(t, 3, false)
	ctx := context.Background()
	leader := c.waitLeader(c.agents)
	follower := c.followers(leader)[0]
	fc := c.client(follower)
	if _, err := c.client(leader).RegisterWorkflow(ctx, "diamond.hcl", readExample(t, "diamond.hcl")); err != nil {
		t.Fatal(err)
	}

	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := fmt.Sprintf("f%d", i)
			s, err := fc.StartInstance(ctx, "diamond", api.StartRequest{ID: id, Input: json.RawMessage(`{"n":1}`)})
			retried := false
			for try := 0; try < 5 && isIndeterminate(err); try++ {
				// The leader stepped down while committing it (a loaded
				// machine, the tests' short raft timeouts): as the API
				// says, retry with the same id; a repeat of a start that
				// had committed answers 200 rather than 201.
				retried = true
				s, err = fc.StartInstance(ctx, "diamond", api.StartRequest{ID: id, Input: json.RawMessage(`{"n":1}`)})
			}
			if err != nil {
				errs <- fmt.Errorf("start %s: %w", id, err)
				return
			}
			if (!s.Created && !retried) || s.ID != id {
				errs <- fmt.Errorf("start %s answered %+v", id, s)
				return
			}
			// The answer's index is the leader's: a blocking read of this
			// follower past it sees the instance.
			resp, err := http.Get(fmt.Sprintf("http://%s/v1/instances?workflow=diamond&page_size=1000&index=%d&wait=10s", follower.HTTPAddr(), s.Index-1))
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(b), `"id":"`+id+`"`) {
				errs <- fmt.Errorf("listing after %s's start at index %d: %d %s", id, s.Index, resp.StatusCode, b)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	post := func(addr, path, body string) (int, string) {
		t.Helper()
		resp, err := http.Post("http://"+addr+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	start := `/v1/workflows/diamond/instances`
	for _, tc := range []struct {
		path, body string
		status     int
		code       string
	}{
		{start, `{"id":"f1","input":{"n":1}}`, 200, ""},
		{start, `{"id":"f1","input":{"n":2}}`, 409, "conflict"},
		{"/v1/workflows/nope/instances", `{"id":"x1"}`, 404, "not_found"},
		{start, `{"id":"bad id"}`, 400, "bad_request"},
	} {
		status, body := post(follower.HTTPAddr(), tc.path, tc.body)
		if status != tc.status || (tc.code != "" && !strings.Contains(body, `"code":"`+tc.code+`"`)) {
			t.Fatalf("%s %s through the follower: %d %s", tc.path, tc.body, status, body)
		}
	}

}

// A start with ?wait answers with the ended instance, whichever node is
// asked: a follower forwards the start alone and waits on its own state.
// What the leader refuses comes back as it was; a bad wait changes nothing.
func TestStartAndWaitOnAnyNode(t *testing.T) {
	c := startCluster(t, 3, true)
	ctx := context.Background()
	leader := c.waitLeader(c.agents)
	if _, err := c.client(leader).RegisterWorkflow(ctx, "diamond.hcl", readExample(t, "diamond.hcl")); err != nil {
		t.Fatal(err)
	}
	for i, a := range append([]*agent.Agent{leader}, c.followers(leader)...) {
		id := fmt.Sprintf("w%d", i)
		s, err := c.client(a).StartInstanceWait(ctx, "diamond", api.StartRequest{ID: id, Input: json.RawMessage(`{"n":7}`)}, 20*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", a.NodeName(), err)
		}
		if !s.Created || s.ID != id || s.Instance == nil || s.Instance.Status != "completed" || !strings.Contains(string(s.Instance.Output), `"result":{"b":7,"c":1}`) {
			t.Fatalf("start and wait on %s = %+v, instance %+v", a.NodeName(), s, s.Instance)
		}
		// Asked for its outcome only, the answer has no input and no steps,
		// from the start's wait as from a blocking read.
		o, err := c.client(a).StartInstanceOutcome(ctx, "diamond", api.StartRequest{ID: id + "o", Input: json.RawMessage(`{"n":7}`)}, 20*time.Second)
		if err != nil || !o.Created || !outcomeOnly(o.Instance) {
			t.Fatalf("start and wait for the outcome on %s = %+v, %v", a.NodeName(), o, err)
		}
		if inst, err := c.client(a).WaitInstanceOutcome(ctx, id+"o", o.Index); err != nil || !outcomeOnly(inst) {
			t.Fatalf("blocking read of the outcome on %s = %+v, %v", a.NodeName(), inst, err)
		}
		// A repeat is answered 200 with the same ended instance.
		again, err := c.client(a).StartInstanceWait(ctx, "diamond", api.StartRequest{ID: id, Input: json.RawMessage(`{"n":7}`)}, 20*time.Second)
		if err != nil || again.Created || again.Instance == nil || again.Instance.Status != "completed" {
			t.Fatalf("repeat on %s = %+v, %v", a.NodeName(), again, err)
		}
	}
	follower := c.followers(leader)[0]
	for _, tc := range []struct {
		path   string
		status int
		code   string
	}{
		{"/v1/workflows/nope/instances?wait=5s", 404, "not_found"},
		{"/v1/workflows/diamond/instances?wait=soon", 400, "bad_request"},
		{"/v1/workflows/diamond/instances?wait=5s&view=steps", 400, "bad_request"},
	} {
		for _, a := range []*agent.Agent{leader, follower} {
			resp, err := http.Post("http://"+a.HTTPAddr()+tc.path, "application/json", strings.NewReader(`{"id":"never","input":{"n":1}}`))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(b), `"code":"`+tc.code+`"`) {
				t.Fatalf("%s on %s: %d %s", tc.path, a.NodeName(), resp.StatusCode, b)
			}
		}
	}
	if _, err := c.client(leader).Instance(ctx, "never"); err == nil {
		t.Fatal("a refused start created its instance")
	}
}

// outcomeOnly reports a completed diamond instance as ?view=outcome gives
// it: the output, and neither input nor steps.
func outcomeOnly(inst *api.Instance) bool {
	return inst != nil && inst.Status == "completed" && strings.Contains(string(inst.Output), `"result":{"b":7,"c":1}`) &&
		inst.Input == nil && inst.Steps == nil && inst.EndedAt != nil
}

// isIndeterminate reports an answer that leaves a write's outcome unknown.
func isIndeterminate(err error) bool {
	var apiErr *api.Error
	return errors.As(err, &apiErr) && apiErr.Code == "indeterminate"
}
