package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/agent"
	"github.com/lockstep-io/lockstep/agent/agenttest"
	"github.com/lockstep-io/lockstep/api"
	"github.com/lockstep-io/lockstep/internal/poll"
)

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	poll.Until(t, timeout, what, cond)
}

func startAgent(t testing.TB, name, dataDir string, expect int, join []string, workers bool) *agent.Agent {
	t.Helper()
	return agenttest.Start(t, agenttest.Options{Name: name, DataDir: dataDir, BootstrapExpect: expect, Join: join, Workers: workers})
}

type testCluster struct {
	t      testing.TB
	agents []*agent.Agent
}

// startCluster boots n nodes that find each other by gossip and bootstrap
// raft with bootstrap_expect = n, then waits for a leader all agree on.
func startCluster(t testing.TB, n int, workers bool) *testCluster {
	t.Helper()
	c := &testCluster{t: t}
	base := t.TempDir()
	first := startAgent(t, "node1", filepath.Join(base, "node1"), n, nil, workers)
	c.agents = append(c.agents, first)
	for i := 2; i <= n; i++ {
		name := fmt.Sprintf("node%d", i)
		c.agents = append(c.agents, startAgent(t, name, filepath.Join(base, name), n, []string{first.GossipAddr()}, workers))
	}
	t.Cleanup(c.shutdown)
	c.waitLeader(c.agents)
	return c
}

func (c *testCluster) shutdown() {
	for _, a := range c.agents {
		a.Shutdown()
	}
}

func (c *testCluster) client(a *agent.Agent) *api.Client {
	cl, err := api.New(api.Config{Address: "http://" + a.HTTPAddr()})
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// waitLeader waits until every given agent names the same leader, one of
// them, with its engine running, and returns it.
func (c *testCluster) waitLeader(among []*agent.Agent) *agent.Agent {
	c.t.Helper()
	var leader *agent.Agent
	waitFor(c.t, 20*time.Second, "a leader", func() error {
		leader = nil
		var name string
		for _, a := range among {
			l, err := c.client(a).Leader(context.Background())
			if err != nil {
				return fmt.Errorf("%s: %w", a.NodeName(), err)
			}
			if name != "" && l.Node != name {
				return fmt.Errorf("%s sees leader %s, others %s", a.NodeName(), l.Node, name)
			}
			name = l.Node
		}
		for _, a := range among {
			if a.NodeName() == name && a.Engine.Enabled() {
				leader = a
			}
		}
		if leader == nil {
			return fmt.Errorf("leader %s not among the live nodes or not dispatching yet", name)
		}
		return nil
	})
	return leader
}

func (c *testCluster) followers(leader *agent.Agent) []*agent.Agent {
	var out []*agent.Agent
	for _, a := range c.agents {
		if a != leader {
			out = append(out, a)
		}
	}
	return out
}

func readExample(t testing.TB, name string) []byte {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// waitInstance waits for an instance started at raft index since (the
// start's Started.Index) to end, reading from the given node, which may be
// another than the one that took the start.
func waitInstance(t *testing.T, cl *api.Client, id string, since uint64, timeout time.Duration) *api.Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	inst, err := cl.WaitInstanceSince(ctx, id, since)
	if err != nil {
		last, _ := cl.Instance(context.Background(), id)
		t.Fatalf("instance %s did not end: %v (last seen: %+v)", id, err, last)
	}
	return inst
}
