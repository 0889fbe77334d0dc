package cluster

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/lockstep-io/lockstep/internal/metrics"
)

// Config configures one node's membership in the cluster. The agent fills it
// from its own configuration; tests fill it directly.
type Config struct {
	// NodeName is the human name of the node, unique in the cluster.
	NodeName string
	// DataDir holds the node id, the raft log, stable store and snapshots.
	DataDir string
	// LogStore is the raft log store: LogStoreWAL, LogStoreBolt, or ""
	// for the one DataDir already holds (a WAL when it holds none).
	LogStore string
	// WALSegmentSize is the size of the WAL's segment files (raft-wal's
	// 64 MiB when 0). Tests make it small so that segments rotate and
	// compaction deletes them.
	WALSegmentSize int
	// BindAddr is the IP the raft and gossip listeners bind to.
	BindAddr string
	// RaftPort and GossipPort may be 0 to let the OS choose (tests).
	RaftPort   int
	GossipPort int
	// HTTPAddr is this node's advertised API address (host:port), gossiped
	// so that followers can forward to the leader.
	HTTPAddr string
	// BootstrapExpect is the number of servers to wait for before
	// bootstrapping raft; 0 means never bootstrap (join an existing cluster).
	BootstrapExpect int
	// Join lists gossip addresses (host:port) of nodes to join.
	Join []string
	// Dev bootstraps a single-node cluster at once.
	Dev bool
	// RaftTimeoutScale multiplies raft's timeouts; tests use small values
	// on loopback, production keeps 1.
	RaftTimeoutScale float64
	// GossipLocal selects memberlist's loopback timings (tests).
	GossipLocal bool
	// TrailingLogs is how many log entries a snapshot leaves behind (raft's
	// default when 0). A follower further behind is sent the snapshot.
	TrailingLogs uint64

	Logger hclog.Logger
	FSM    raft.FSM
	// Metrics, if set, records proposal round trips and FSM batches;
	// CommandName labels a proposal by its command (from its first byte).
	Metrics     *metrics.Metrics
	CommandName func(cmd []byte) string
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("node name is required"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	if c.LogStore != "" && c.LogStore != LogStoreWAL && c.LogStore != LogStoreBolt {
		errs = append(errs, fmt.Errorf("raft log store must be %q or %q, got %q", LogStoreWAL, LogStoreBolt, c.LogStore))
	}
	if c.BindAddr == "" {
		errs = append(errs, errors.New("bind address is required"))
	}
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("HTTP address is required"))
	}
	if c.BootstrapExpect < 0 {
		errs = append(errs, fmt.Errorf("bootstrap-expect must not be negative, got %d", c.BootstrapExpect))
	}
	if c.Dev && c.BootstrapExpect > 1 {
		errs = append(errs, errors.New("dev mode runs one node; it cannot expect more"))
	}
	if c.FSM == nil {
		errs = append(errs, errors.New("FSM is required"))
	}
	return errors.Join(errs...)
}

func (c *Config) raftConfig(id raft.ServerID, notify chan bool) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = id
	scale := c.RaftTimeoutScale
	if scale <= 0 {
		scale = 1
	}
	// Faster than raft's defaults (1s): Lockstep runs on LANs, and a shorter
	// election timeout shortens write unavailability after leader loss.
	rc.HeartbeatTimeout = time.Duration(float64(500*time.Millisecond) * scale)
	rc.ElectionTimeout = time.Duration(float64(500*time.Millisecond) * scale)
	rc.LeaderLeaseTimeout = time.Duration(float64(250*time.Millisecond) * scale)
	rc.CommitTimeout = 5 * time.Millisecond
	// Up to 512 entries per append: under many concurrent writers the
	// leader takes every waiting proposal into one disk write and one
	// round of replication. With 1,024 writers of empty commands on three
	// local nodes this tripled the batch and nearly halved the commit
	// latency (docs/performance-history.md). BatchApplyCh stays off: a proposal
	// buffered when raft shuts down would never be answered.
	rc.MaxAppendEntries = 512
	rc.NotifyCh = notify
	if c.TrailingLogs > 0 {
		rc.TrailingLogs = c.TrailingLogs
	}
	rc.Logger = c.Logger.Named("raft")
	return rc
}
