package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/lockstep-io/lockstep/cluster"
	"github.com/lockstep-io/lockstep/fsm"
	"github.com/lockstep-io/lockstep/internal/metrics"
	"github.com/lockstep-io/lockstep/internal/poll"
)

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	poll.Until(t, timeout, what, cond)
}

type node struct {
	c   *cluster.Cluster
	fsm *fsm.FSM
	dir string
}

func start(t *testing.T, name, dir string, expect int, join []string, opts ...func(*cluster.Config)) *node {
	t.Helper()
	return startOn(t, name, dir, expect, join, 0, opts...)
}

// startOn starts a node whose raft listens on raftPort (0: the OS picks);
// opts change its configuration.
func startOn(t *testing.T, name, dir string, expect int, join []string, raftPort int, opts ...func(*cluster.Config)) *node {
	t.Helper()
	f := fsm.New(nil)
	cfg := cluster.Config{
		NodeName: name, DataDir: dir, BindAddr: "127.0.0.1", HTTPAddr: "127.0.0.1:1", RaftPort: raftPort,
		BootstrapExpect: expect, Join: join, RaftTimeoutScale: 0.2, GossipLocal: true, TrailingLogs: 5,
		Logger: hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Warn}), FSM: f,
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := cluster.New(cfg)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { c.Shutdown() })
	return &node{c: c, fsm: f, dir: dir}
}

func leaderOf(nodes []*node) (*node, error) {
	var found *node
	for _, n := range nodes {
		if n.c.IsLeader() {
			if found != nil {
				return nil, fmt.Errorf("two leaders")
			}
			found = n
		}
	}
	if found == nil {
		return nil, fmt.Errorf("no leader")
	}
	for _, n := range nodes {
		if l, ok := n.c.Leader(); !ok || l.ID != found.c.ID() {
			return nil, fmt.Errorf("%s does not know the leader yet", n.c.ID())
		}
	}
	return found, nil
}

func voters(t *testing.T, n *node) []string {
	t.Helper()
	peers, err := n.c.Peers()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range peers {
		out = append(out, p.ID+"/"+p.Suffrage)
	}
	return out
}

func register(t *testing.T, leader *node) uint64 {
	t.Helper()
	return registerNamed(t, leader, "w")
}

func registerNamed(t *testing.T, leader *node, name string) uint64 {
	t.Helper()
	cmd, _ := fsm.Encode(fsm.RegisterWorkflowType, &fsm.RegisterWorkflowRequest{
		Header: fsm.Header{Time: time.Unix(1, 0).UTC()},
		Source: "workflow \"" + name + "\" {\n  step \"a\" {\n    activity = \"noop\"\n  }\n}\n",
	})
	res, err := leader.c.Apply(context.Background(), cmd)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := res.(*fsm.RegisterWorkflowResponse)
	if !ok {
		t.Fatalf("register: %v", res)
	}
	return r.Version
}

func TestBootstrapExpectThenLateJoinerAndRestart(t *testing.T) {
	base := t.TempDir()
	n1 := start(t, "n1", filepath.Join(base, "n1"), 3, nil)
	n2 := start(t, "n2", filepath.Join(base, "n2"), 3, []string{n1.c.GossipAddr()})
	// With two of three found, nothing bootstraps.
	waitFor(t, 10*time.Second, "n1 and n2 to see each other", func() error {
		if len(n1.c.Members()) != 2 {
			return fmt.Errorf("members %v", n1.c.Members())
		}
		return nil
	})
	if v := voters(t, n1); len(v) != 0 {
		t.Fatalf("bootstrapped with two of three: %v", v)
	}
	n3 := start(t, "n3", filepath.Join(base, "n3"), 3, []string{n1.c.GossipAddr()})
	nodes := []*node{n1, n2, n3}
	var leader *node
	waitFor(t, 20*time.Second, "a leader", func() (err error) { leader, err = leaderOf(nodes); return })
	waitFor(t, 10*time.Second, "n2 to hold the 3-voter configuration", func() error {
		if v := voters(t, n2); len(v) != 3 {
			return fmt.Errorf("voters = %v", v)
		}
		return nil
	})
	if v := register(t, leader); v != 1 {
		t.Fatalf("version = %d", v)
	}

	// A node that starts later without bootstrap-expect is added by the leader.
	n4 := start(t, "n4", filepath.Join(base, "n4"), 0, []string{n2.c.GossipAddr()})
	waitFor(t, 60*time.Second, "n4 to become a voter", func() error {
		for _, v := range voters(t, leader) {
			if strings.HasPrefix(v, n4.c.ID()+"/Voter") {
				return nil
			}
		}
		l, _ := leaderOf(nodes)
		var members []cluster.Member
		if l != nil {
			members = l.c.Members()
		}
		return fmt.Errorf("voters %v; current leader's members %+v", voters(t, leader), members)
	})
	waitFor(t, 10*time.Second, "n4 to catch up", func() error {
		if n4.fsm.State().Read().LatestWorkflow("w") == nil {
			return fmt.Errorf("workflow not replicated")
		}
		return nil
	})

	// A follower that restarts keeps its id and does not bootstrap again.
	var f *node
	for _, n := range nodes {
		if n != leader {
			f = n
		}
	}
	// It comes back on its raft address, as a configured node does (a new
	// address would make the leader update the peer, which trips a data
	// race inside hashicorp/raft v1.7.3's replication under -race).
	id := f.c.ID()
	_, port, err := net.SplitHostPort(f.c.RaftAddr())
	if err != nil {
		t.Fatal(err)
	}
	raftPort, _ := strconv.Atoi(port)
	if err := f.c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	again := startOn(t, "again", f.dir, 3, []string{leader.c.GossipAddr()}, raftPort)
	if again.c.ID() != id {
		t.Fatalf("id changed across restart: %s -> %s", id, again.c.ID())
	}
	waitFor(t, 10*time.Second, "the restarted node to catch up", func() error {
		if again.fsm.State().Read().LatestWorkflow("w") == nil {
			return fmt.Errorf("state not restored")
		}
		return nil
	})
	if v := voters(t, leader); len(v) != 4 {
		t.Fatalf("restart changed the configuration: %v", v)
	}
}

func TestDevBootstrapsAloneAndApplyErrors(t *testing.T) {
	f := fsm.New(nil)
	c, err := cluster.New(cluster.Config{NodeName: "dev", DataDir: t.TempDir(), BindAddr: "127.0.0.1", HTTPAddr: "127.0.0.1:1",
		Dev: true, RaftTimeoutScale: 0.2, GossipLocal: true, FSM: f})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	sub := c.Subscribe()
	waitFor(t, 10*time.Second, "leadership", func() error {
		select {
		case l := <-sub:
			if l {
				return nil
			}
		default:
		}
		return fmt.Errorf("not leader")
	})
	n := &node{c: c, fsm: f}
	register(t, n)
	if err := c.Barrier(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ms := c.Members(); len(ms) != 1 || ms[0].Status != "alive" || ms[0].ID != c.ID() {
		t.Fatalf("members = %+v", ms)
	}
	c.Shutdown()
	if _, err := c.Apply(context.Background(), []byte{1}); err == nil {
		t.Fatal("apply after shutdown succeeded")
	}
}

func TestConfigValidate(t *testing.T) {
	err := (&cluster.Config{BootstrapExpect: -1}).Validate()
	for _, want := range []string{"node name", "data dir", "bind address", "HTTP address", "bootstrap-expect", "FSM"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want mention of %q", err, want)
		}
	}
	_ = raft.ErrNotLeader
}

// A follower that was down while the leader compacted its log catches up by
// installing the leader's snapshot, and ends with the same state bytes. The
// WAL runs with small segments: it only deletes whole segments, so with its
// 64 MiB ones the compacted entries would still be there to send.
func TestLaggingFollowerInstallsSnapshot(t *testing.T) {
	t.Run("wal", func(t *testing.T) {
		laggingFollowerInstallsSnapshot(t, func(c *cluster.Config) { c.LogStore, c.WALSegmentSize = cluster.LogStoreWAL, 4096 })
	})
	t.Run("boltdb", func(t *testing.T) {
		laggingFollowerInstallsSnapshot(t, func(c *cluster.Config) { c.LogStore = cluster.LogStoreBolt })
	})
}

func laggingFollowerInstallsSnapshot(t *testing.T, store func(*cluster.Config)) {
	base := t.TempDir()
	n1 := start(t, "n1", filepath.Join(base, "n1"), 3, nil, store)
	n2 := start(t, "n2", filepath.Join(base, "n2"), 3, []string{n1.c.GossipAddr()}, store)
	n3 := start(t, "n3", filepath.Join(base, "n3"), 3, []string{n1.c.GossipAddr()}, store)
	nodes := []*node{n1, n2, n3}
	var leader *node
	waitFor(t, 20*time.Second, "a leader", func() (err error) { leader, err = leaderOf(nodes); return })
	var lagging *node
	for _, n := range nodes {
		if n != leader {
			lagging = n
		}
	}
	laggingDir := lagging.dir
	if err := lagging.c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		registerNamed(t, leader, fmt.Sprintf("w%02d", i))
	}
	if err := leader.c.SnapshotNow(); err != nil {
		t.Fatal(err)
	}
	back := start(t, "back", laggingDir, 3, []string{leader.c.GossipAddr()}, store)
	var want bytes.Buffer
	if err := leader.fsm.State().WriteSnapshot(&want); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the lagging follower to converge", func() error {
		var got bytes.Buffer
		if err := back.fsm.State().WriteSnapshot(&got); err != nil {
			return err
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			return fmt.Errorf("state differs (%d vs %d bytes)", got.Len(), want.Len())
		}
		return nil
	})
	snaps, _ := os.ReadDir(filepath.Join(laggingDir, "raft", "snapshots"))
	if len(snaps) == 0 {
		t.Fatal("the follower caught up without installing a snapshot")
	}
}

// blockingFSM's snapshots write nothing until AbortSnapshots, as a
// snapshot of a very large state is still being written when the node
// is stopped.
type blockingFSM struct {
	*fsm.FSM
	persisting chan struct{}
	abort      chan struct{}
	once       sync.Once
}

func (b *blockingFSM) Snapshot() (raft.FSMSnapshot, error) { return b, nil }
func (b *blockingFSM) Release()                            {}
func (b *blockingFSM) AbortSnapshots()                     { b.once.Do(func() { close(b.abort) }) }
func (b *blockingFSM) Persist(sink raft.SnapshotSink) error {
	close(b.persisting)
	<-b.abort
	sink.Cancel()
	return fsm.ErrSnapshotAborted
}

// Stopping a node does not wait for the snapshot it is writing: raft's
// shutdown would (minutes with a million instances retained).
func TestShutdownDoesNotWaitForASnapshot(t *testing.T) {
	var b *blockingFSM
	n := start(t, "snap", t.TempDir(), 1, nil, func(c *cluster.Config) {
		b = &blockingFSM{FSM: c.FSM.(*fsm.FSM), persisting: make(chan struct{}), abort: make(chan struct{})}
		c.FSM = b
	})
	t.Cleanup(b.AbortSnapshots) // runs first: a failed test does not hang in the node's cleanup
	waitFor(t, 10*time.Second, "leadership", func() error {
		if !n.c.IsLeader() {
			return fmt.Errorf("not leader yet")
		}
		return nil
	})
	register(t, n)
	go func() { _ = n.c.SnapshotNow() }()
	select {
	case <-b.persisting:
	case <-time.After(30 * time.Second):
		t.Fatal("no snapshot began")
	}
	done := make(chan error, 1)
	go func() { done <- n.c.Shutdown() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("shutdown is waiting for the snapshot")
	}
}

// Every node's metrics time each entry from the leader's append to the
// node's apply, and count the state machine's batches: on the leader that
// is its commit latency.
func TestMetricsTimeEachEntryFromAppendToApply(t *testing.T) {
	base := t.TempDir()
	var nodes []*node
	var ms []*metrics.Metrics
	for i, name := range []string{"m1", "m2", "m3"} {
		m := metrics.New()
		ms = append(ms, m)
		var join []string
		if i > 0 {
			join = []string{nodes[0].c.GossipAddr()}
		}
		nodes = append(nodes, start(t, name, filepath.Join(base, name), 3, join, func(c *cluster.Config) { c.Metrics = m }))
	}
	var leader *node
	waitFor(t, 20*time.Second, "a leader", func() (err error) { leader, err = leaderOf(nodes); return })
	for i := 0; i < 3; i++ {
		registerNamed(t, leader, fmt.Sprintf("w%d", i))
	}
	waitFor(t, 10*time.Second, "every node to time the entries", func() error {
		for i, m := range ms {
			commit, batch := m.Histograms()["lockstep_raft_commit_seconds"], m.Histograms()["lockstep_fsm_batch_commands"]
			// The three registrations at least, and the entries before them.
			if commit.Count < 3 || batch.Count < 1 || commit.Sum < 0 {
				return fmt.Errorf("node %d: commit %+v, batches %+v", i, commit, batch)
			}
		}
		return nil
	})
}
