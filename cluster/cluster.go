// Package cluster runs one node's part of the Lockstep cluster: raft (with
// raft-wal, or raft-boltdb in older data dirs, for the log and stable
// store, file snapshots and the TCP transport), memberlist discovery,
// bootstrap, the leadership monitor, and the leader's reconciliation of
// gossip members into raft voters.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/lockstep-io/lockstep/internal/metrics"
)

// Errors a proposer must tell apart (RELIABILITY.md, promise 2).
var (
	// ErrNotLeader: this node is not the leader; nothing was committed, so
	// the request can be forwarded or retried.
	ErrNotLeader = errors.New("not the leader")
	// ErrNoLeader: no leader is known right now; retry later.
	ErrNoLeader = errors.New("no cluster leader")
	// ErrIndeterminate: the command may or may not have committed (leadership
	// was lost or the apply timed out). Retry with the same idempotency key.
	ErrIndeterminate = errors.New("outcome unknown: the command may or may not have committed")
)

// Cluster is one node's handle on raft and gossip.
type Cluster struct {
	cfg    Config
	logger hclog.Logger
	id     raft.ServerID

	raft      *raft.Raft
	store     logStore
	snaps     raft.SnapshotStore
	transport *raft.NetworkTransport
	list      *memberlist.Memberlist
	meta      *nodeMeta
	// gossipAddr is read once at start: memberlist's LocalNode() returns a
	// node it keeps mutating.
	gossipAddr string
	metaMu     sync.Mutex

	membersMu sync.Mutex
	members   map[string]memberlist.Node
	// byID maps the raft id of every alive member to its name and HTTP
	// address, so finding the leader's address is one lookup.
	byID map[string]memberAddr

	notifyCh chan bool
	events   chan struct{} // member changes; bounded, never blocks memberlist

	mu          sync.Mutex
	subscribers []chan bool
	isLeader    bool
	// readyForReads is set once this leader's first barrier has passed, so
	// its state holds everything earlier leaders committed.
	readyForReads atomic.Bool

	// changeMu guards changeCh, closed (and replaced) whenever the leader
	// this node knows, its address or its readiness may have changed.
	changeMu sync.Mutex
	changeCh chan struct{}

	shutdownOnce sync.Once
	shutdownCh   chan struct{}
	wg           sync.WaitGroup
}

// New opens the node's raft state under the data dir, starts gossip, joins
// the given addresses and, when configured, bootstraps the cluster.
func New(cfg Config) (*Cluster, error) {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "raft"), 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	id, err := loadNodeID(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		cfg:        cfg,
		logger:     cfg.Logger.Named("cluster"),
		id:         raft.ServerID(id),
		notifyCh:   make(chan bool, 1),
		events:     make(chan struct{}, 1),
		shutdownCh: make(chan struct{}),
		changeCh:   make(chan struct{}),
	}
	if err := c.setupRaft(); err != nil {
		c.closeRaftFiles()
		return nil, err
	}
	if err := c.setupGossip(); err != nil {
		c.raft.Shutdown().Error()
		c.closeRaftFiles()
		return nil, err
	}
	c.wg.Add(3)
	go c.monitorLeadership()
	go c.bootstrapLoop()
	go c.observeLeaders()
	return c, nil
}

// LeaderChanged returns a channel that is closed at the next change of
// the leader this node knows: raft naming another (or none), a member's
// gossip record (with its HTTP address) arriving, this node's first
// barrier as leader passing. A request waiting for a leader waits on it
// instead of polling.
func (c *Cluster) LeaderChanged() <-chan struct{} {
	c.changeMu.Lock()
	defer c.changeMu.Unlock()
	return c.changeCh
}

func (c *Cluster) leaderChanged() {
	c.changeMu.Lock()
	close(c.changeCh)
	c.changeCh = make(chan struct{})
	c.changeMu.Unlock()
}

// observeLeaders turns raft's leader observations into leaderChanged.
func (c *Cluster) observeLeaders() {
	defer c.wg.Done()
	obs := make(chan raft.Observation, 8)
	o := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	c.raft.RegisterObserver(o)
	defer c.raft.DeregisterObserver(o)
	for {
		select {
		case <-obs:
			c.leaderChanged()
		case <-c.shutdownCh:
			return
		}
	}
}

// loadNodeID reads the node id from the data dir, minting and persisting
// one on first start, so a restarted node keeps its raft identity.
func loadNodeID(dir string) (string, error) {
	path := filepath.Join(dir, "node-id")
	if b, err := os.ReadFile(path); err == nil {
		id := strings.TrimSpace(string(b))
		if id == "" {
			return "", fmt.Errorf("%s is empty", path)
		}
		return id, nil
	} else if !os.IsNotExist(err) {
		return "", err
	}
	buf := make([]byte, 16)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	id := hex.EncodeToString(buf)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return "", err
	}
	return id, os.Rename(tmp, path)
}

// raftLogCacheSize is how many of the newest log entries are kept in
// memory in front of the log store.
const raftLogCacheSize = 512

func (c *Cluster) setupRaft() error {
	dir := filepath.Join(c.cfg.DataDir, "raft")
	store, kind, err := openLogStore(dir, c.cfg.LogStore, c.cfg.WALSegmentSize, c.cfg.Logger)
	if err != nil {
		return err
	}
	c.store = store
	c.logger.Info("raft log store", "kind", kind, "dir", dir)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, c.cfg.Logger.Named("snapshot"))
	if err != nil {
		return fmt.Errorf("open snapshot store: %w", err)
	}
	c.snaps = snaps
	bind := net.JoinHostPort(c.cfg.BindAddr, strconv.Itoa(c.cfg.RaftPort))
	trans, err := raft.NewTCPTransportWithLogger(bind, nil, 3, 10*time.Second, c.cfg.Logger.Named("raft-net"))
	if err != nil {
		return fmt.Errorf("raft transport on %s: %w", bind, err)
	}
	c.transport = trans
	var machine raft.FSM = c.cfg.FSM
	if bf, ok := machine.(raft.BatchingFSM); ok && c.cfg.Metrics != nil {
		machine = &timedFSM{BatchingFSM: bf, m: c.cfg.Metrics}
	}
	// The newest entries stay in memory as they are stored: replication
	// and every node's apply read them back, which otherwise costs a read
	// and a decode per entry.
	logs, err := raft.NewLogCache(raftLogCacheSize, store)
	if err != nil {
		trans.Close()
		return fmt.Errorf("raft log cache: %w", err)
	}
	r, err := raft.NewRaft(c.cfg.raftConfig(c.id, c.notifyCh), machine, logs, store, snaps, trans)
	if err != nil {
		trans.Close()
		return fmt.Errorf("start raft: %w", err)
	}
	c.raft = r
	return nil
}

func (c *Cluster) closeRaftFiles() {
	if c.transport != nil {
		c.transport.Close()
	}
	if c.store != nil {
		c.store.Close()
	}
}

// ID is this node's persistent raft server id.
func (c *Cluster) ID() string { return string(c.id) }

// RaftAddr is the address raft peers reach this node at.
func (c *Cluster) RaftAddr() string { return string(c.transport.LocalAddr()) }

// GossipAddr is the address other nodes join this node at.
func (c *Cluster) GossipAddr() string { return c.gossipAddr }

// Apply proposes a command (framed by fsm.Encode) and waits until it is
// committed and applied here, returning the FSM's response. It only works
// on the leader: elsewhere it returns ErrNotLeader and nothing is proposed.
func (c *Cluster) Apply(ctx context.Context, cmd []byte) (any, error) {
	if c.raft.State() != raft.Leader {
		return nil, ErrNotLeader
	}
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	start := time.Now()
	f := c.raft.Apply(cmd, timeout)
	err := f.Error()
	if c.cfg.Metrics != nil && c.cfg.CommandName != nil {
		c.cfg.Metrics.ObserveRaftApply(c.cfg.CommandName(cmd), time.Since(start).Seconds())
	}
	if err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader):
			return nil, ErrNotLeader
		case errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrRaftShutdown):
			// Never reached the log.
			return nil, fmt.Errorf("%w: %v", ErrNoLeader, err)
		default:
			return nil, fmt.Errorf("%w (%v)", ErrIndeterminate, err)
		}
	}
	return f.Response(), nil
}

// ConsistentRead makes a read linearizable: on the leader, once its first
// barrier has passed, it confirms leadership with a quorum and waits until
// the state has applied everything committed when the read began. Elsewhere
// it returns ErrNotLeader (the caller forwards the read).
func (c *Cluster) ConsistentRead(ctx context.Context) error {
	if c.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	if !c.readyForReads.Load() {
		return fmt.Errorf("%w: the new leader is still catching up", ErrNoLeader)
	}
	commit := c.raft.CommitIndex()
	if err := c.raft.VerifyLeader().Error(); err != nil {
		return ErrNotLeader
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for c.raft.AppliedIndex() < commit {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// Barrier waits until every command committed before it has been applied
// here. A new leader calls it before trusting its state.
func (c *Cluster) Barrier(ctx context.Context) error {
	timeout := time.Minute
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	return c.raft.Barrier(timeout).Error()
}

// IsLeader reports whether this node is the raft leader right now.
func (c *Cluster) IsLeader() bool { return c.raft.State() == raft.Leader }

// LeaderInfo describes the current leader.
type LeaderInfo struct {
	ID       string `json:"id"`
	Node     string `json:"node"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
}

// Leader returns the current leader as this node knows it, with its HTTP
// address from gossip. ok is false when no leader is known or its gossip
// record has not arrived yet.
func (c *Cluster) Leader() (LeaderInfo, bool) {
	addr, id := c.raft.LeaderWithID()
	if id == "" {
		return LeaderInfo{}, false
	}
	info := LeaderInfo{ID: string(id), RaftAddr: string(addr)}
	if id == c.id {
		info.Node, info.HTTPAddr = c.cfg.NodeName, c.cfg.HTTPAddr
		return info, true
	}
	c.membersMu.Lock()
	a, ok := c.byID[info.ID]
	c.membersMu.Unlock()
	if !ok {
		return info, false
	}
	info.Node, info.HTTPAddr = a.name, a.http
	return info, true
}

// LastContact is how long ago this node last heard from the leader (zero on
// the leader itself).
func (c *Cluster) LastContact() time.Duration {
	if c.IsLeader() {
		return 0
	}
	lc := c.raft.LastContact()
	if lc.IsZero() {
		return -1
	}
	return time.Since(lc)
}

// SnapshotNow takes a raft snapshot at once and compacts the log behind it.
func (c *Cluster) SnapshotNow() error {
	return c.raft.Snapshot().Error()
}

// Stats returns raft's own statistics.
func (c *Cluster) Stats() map[string]string { return c.raft.Stats() }

// Peer is one server in the raft configuration.
type Peer struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
}

// Peers lists the raft configuration.
func (c *Cluster) Peers() ([]Peer, error) {
	f := c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	_, leader := c.raft.LeaderWithID()
	out := []Peer{}
	for _, s := range f.Configuration().Servers {
		out = append(out, Peer{ID: string(s.ID), Address: string(s.Address), Suffrage: s.Suffrage.String(), Leader: s.ID == leader})
	}
	return out, nil
}

// Subscribe returns a channel that receives this node's leadership state
// (true on gaining it, false on losing it), starting with the current one.
// Only the latest state is kept for a slow reader.
func (c *Cluster) Subscribe() <-chan bool {
	ch := make(chan bool, 1)
	c.mu.Lock()
	c.subscribers = append(c.subscribers, ch)
	ch <- c.isLeader
	c.mu.Unlock()
	return ch
}

func (c *Cluster) publish(leader bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.isLeader = leader
	for _, ch := range c.subscribers {
		select {
		case <-ch:
		default:
		}
		ch <- leader
	}
}

// Shutdown leaves gossip and stops raft. It does not remove the node from
// the raft configuration: a restarted node rejoins as itself.
func (c *Cluster) Shutdown() error {
	var err error
	c.shutdownOnce.Do(func() {
		close(c.shutdownCh)
		if c.list != nil {
			_ = c.list.Leave(time.Second)
			_ = c.list.Shutdown()
		}
		// raft waits for a snapshot being written; one that can stop
		// early does (minutes, with a large state).
		if a, ok := c.cfg.FSM.(interface{ AbortSnapshots() }); ok {
			a.AbortSnapshots()
		}
		err = c.raft.Shutdown().Error()
		c.wg.Wait()
		c.closeRaftFiles()
		c.publish(false)
	})
	return err
}

// timedFSM measures the state machine's batches for the metrics, outside
// the state machine, which never reads the clock.
type timedFSM struct {
	raft.BatchingFSM
	m *metrics.Metrics
}

func (t *timedFSM) ApplyBatch(logs []*raft.Log) []any {
	start := time.Now()
	for _, l := range logs {
		// The leader's clock when it appended the entry (raft sets it, and
		// it travels with the entry); zero for entries from before it did.
		// On a follower the leader's clock against this one's: a skew
		// below zero counts as zero.
		if !l.AppendedAt.IsZero() {
			t.m.ObserveCommit(max(0, start.Sub(l.AppendedAt).Seconds()))
		}
	}
	out := t.BatchingFSM.ApplyBatch(logs)
	t.m.ObserveBatch(len(logs), time.Since(start).Seconds())
	return out
}
