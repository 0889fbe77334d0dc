// Package agenttest starts real Lockstep agents inside a test: raft, gossip,
// the engine and the HTTP API on loopback ports the OS chooses, with fast
// raft and gossip timings. Every agent is shut down when the test ends.
package agenttest

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockstep-io/lockstep/agent"
	"github.com/lockstep-io/lockstep/internal/poll"
)

// Options describe one agent; the zero value is a server that neither
// bootstraps nor runs the built-in workers.
type Options struct {
	Name            string
	DataDir         string // a new temporary dir when empty
	Dev             bool
	BootstrapExpect int
	Join            []string
	Workers         bool
}

// Start starts one agent.
func Start(t testing.TB, o Options) *agent.Agent {
	t.Helper()
	if o.Name == "" {
		o.Name = "node"
	}
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	zero := 0
	cfg := agent.DefaultConfig().Merge(&agent.Config{
		NodeName: o.Name, DataDir: o.DataDir,
		HTTPPort: &zero, RaftPort: &zero, GossipPort: &zero,
		Dev: &o.Dev, BootstrapExpect: &o.BootstrapExpect, Join: o.Join, Worker: &o.Workers,
		RaftTimeoutScale: 0.2, GossipLocal: true,
	})
	a, err := agent.New(cfg, Logger(t, o.Name))
	if err != nil {
		t.Fatalf("start %s: %v", o.Name, err)
	}
	t.Cleanup(a.Shutdown)
	return a
}

// Dev starts a single-node cluster and waits until it leads and dispatches.
func Dev(t testing.TB, workers bool) *agent.Agent {
	t.Helper()
	a := Start(t, Options{Name: "dev", Dev: true, Workers: workers})
	poll.Until(t, 10*time.Second, "the dev agent to lead", func() error {
		if !a.Engine.Enabled() {
			return errors.New("engine not enabled")
		}
		return nil
	})
	return a
}

// Logger writes agent logs at warn level to the test log, or at debug level
// when LOCKSTEP_TEST_LOG is set.
func Logger(t testing.TB, name string) hclog.Logger {
	level := hclog.Warn
	if os.Getenv("LOCKSTEP_TEST_LOG") != "" {
		level = hclog.Debug
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: level, Output: testWriter{t}})
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}
