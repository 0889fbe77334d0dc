package cluster

import (
	"context"
	"sort"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// reconcileInterval is how often the leader compares gossip members with
// the raft configuration even without member events (events may be dropped).
const reconcileInterval = 2 * time.Second

// bootstrapLoop bootstraps raft exactly once, with exactly the servers that
// found each other through gossip, and never on a node that holds state.
func (c *Cluster) bootstrapLoop() {
	defer c.wg.Done()
	has, err := raft.HasExistingState(c.store, c.store, c.snaps)
	if err != nil {
		c.logger.Error("cannot read raft state", "error", err)
		return
	}
	if has {
		c.logger.Info("raft state found; not bootstrapping")
		c.setBootstrapped()
		return
	}
	if c.cfg.Dev {
		c.bootstrap([]raft.Server{{ID: c.id, Address: c.transport.LocalAddr()}})
		return
	}
	if c.cfg.BootstrapExpect == 0 {
		return // waits for a leader to add it
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.shutdownCh:
			return
		case <-tick.C:
		case <-c.events:
			c.memberEvent() // leave one for the leader's reconcile as well
		}
		if c.raft.State() != raft.Follower || c.raftHasState() {
			c.setBootstrapped()
			return
		}
		var servers []raft.Server
		for _, n := range c.memberNodes() {
			meta, err := decodeMeta(n.Meta)
			if err != nil {
				continue
			}
			if meta.Bootstrapped {
				c.logger.Info("a cluster already exists; waiting for its leader to add this node", "seen", n.Name)
				return
			}
			if meta.BootstrapExpect != c.cfg.BootstrapExpect {
				c.logger.Warn("member expects a different cluster size; ignoring it", "member", n.Name, "its_expect", meta.BootstrapExpect, "our_expect", c.cfg.BootstrapExpect)
				continue
			}
			servers = append(servers, raft.Server{ID: raft.ServerID(meta.ID), Address: raft.ServerAddress(meta.RaftAddr)})
		}
		if len(servers) < c.cfg.BootstrapExpect {
			continue
		}
		sort.Slice(servers, func(i, j int) bool { return servers[i].ID < servers[j].ID })
		c.bootstrap(servers)
		return
	}
}

func (c *Cluster) raftHasState() bool {
	has, _ := raft.HasExistingState(c.store, c.store, c.snaps)
	return has
}

func (c *Cluster) bootstrap(servers []raft.Server) {
	err := c.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
	switch {
	case err == nil:
		c.logger.Info("bootstrapped raft", "servers", len(servers))
	case err == raft.ErrCantBootstrap:
		c.logger.Info("raft already bootstrapped")
	default:
		c.logger.Error("bootstrap failed", "error", err)
		return
	}
	c.setBootstrapped()
}

// monitorLeadership turns raft's leadership notifications into one leader
// loop per term and tells subscribers (the engine) about every change.
func (c *Cluster) monitorLeadership() {
	defer c.wg.Done()
	var stop context.CancelFunc
	done := make(chan struct{})
	close(done)
	for {
		select {
		case <-c.shutdownCh:
			if stop != nil {
				stop()
				<-done
			}
			return
		case leader := <-c.notifyCh:
			if leader && stop == nil {
				ctx, cancel := context.WithCancel(context.Background())
				stop = cancel
				done = make(chan struct{})
				go func() {
					defer close(done)
					c.leaderLoop(ctx)
				}()
				c.logger.Info("gained leadership")
				c.setBootstrapped()
			} else if !leader && stop != nil {
				stop()
				<-done
				stop = nil
				c.logger.Info("lost leadership")
			}
			c.publish(leader)
		}
	}
}

// leaderLoop runs the leader's own cluster duties for one term: after a
// barrier, it keeps the raft configuration in line with gossip.
func (c *Cluster) leaderLoop(ctx context.Context) {
	bctx, cancel := context.WithTimeout(ctx, time.Minute)
	err := c.Barrier(bctx)
	cancel()
	if err != nil {
		c.logger.Error("barrier failed; not reconciling members this term", "error", err)
		return
	}
	c.readyForReads.Store(true)
	c.leaderChanged()
	defer c.readyForReads.Store(false)
	tick := time.NewTicker(reconcileInterval)
	defer tick.Stop()
	for {
		c.reconcile()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-c.events:
		}
	}
}

// reconcile adds every alive gossip member that is not yet a raft server.
func (c *Cluster) reconcile() {
	f := c.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	known := map[raft.ServerID]raft.ServerAddress{}
	for _, s := range f.Configuration().Servers {
		known[s.ID] = s.Address
	}
	for _, n := range c.memberNodes() {
		meta, err := decodeMeta(n.Meta)
		if err != nil || n.State != memberlist.StateAlive {
			continue
		}
		id, addr := raft.ServerID(meta.ID), raft.ServerAddress(meta.RaftAddr)
		if cur, ok := known[id]; ok && cur == addr {
			continue
		}
		c.logger.Info("adding server to raft", "name", n.Name, "id", id, "addr", addr)
		if err := c.raft.AddVoter(id, addr, 0, 10*time.Second).Error(); err != nil {
			c.logger.Warn("add server failed", "name", n.Name, "error", err)
		}
	}
}
