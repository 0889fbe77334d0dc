package cluster

import (
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
)

// nodeMeta is what each node gossips about itself.
type nodeMeta struct {
	ID              string `json:"id"`
	RaftAddr        string `json:"raft"`
	HTTPAddr        string `json:"http"`
	BootstrapExpect int    `json:"expect,omitempty"`
	// Bootstrapped is true once the node holds raft state, so a node that
	// starts later never bootstraps a second cluster beside it.
	Bootstrapped bool `json:"boot,omitempty"`
}

func decodeMeta(b []byte) (nodeMeta, error) {
	var m nodeMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return m, err
	}
	if m.ID == "" || m.RaftAddr == "" {
		return m, fmt.Errorf("incomplete node meta")
	}
	return m, nil
}

// Member is a gossip member as GET /v1/members shows it.
type Member struct {
	Name     string `json:"name"`
	ID       string `json:"id"`
	Addr     string `json:"addr"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
	Status   string `json:"status"` // alive, suspect, failed, left
}

func (c *Cluster) setupGossip() error {
	mc := memberlist.DefaultLANConfig()
	if c.cfg.GossipLocal {
		mc = memberlist.DefaultLocalConfig()
		// A full state exchange every second: small local clusters (tests,
		// bench -local) on a starved machine can lose a UDP broadcast, and
		// the default 15 s anti-entropy then delays a new member past what
		// anyone waits for.
		mc.PushPullInterval = time.Second
	}
	mc.Name = c.cfg.NodeName
	mc.BindAddr = c.cfg.BindAddr
	mc.BindPort = c.cfg.GossipPort
	mc.AdvertisePort = c.cfg.GossipPort
	mc.Delegate = &gossipDelegate{c}
	mc.Events = &gossipEvents{c}
	mc.Logger = c.cfg.Logger.Named("memberlist").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	c.meta = &nodeMeta{ID: string(c.id), RaftAddr: c.RaftAddr(), HTTPAddr: c.cfg.HTTPAddr, BootstrapExpect: c.cfg.BootstrapExpect}
	list, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("start gossip on %s:%d: %w", c.cfg.BindAddr, c.cfg.GossipPort, err)
	}
	c.list = list
	self := list.LocalNode()
	c.gossipAddr = net.JoinHostPort(self.Addr.String(), strconv.Itoa(int(self.Port)))
	if len(c.cfg.Join) > 0 {
		c.wg.Add(1)
		go c.joinLoop()
	}
	return nil
}

// joinLoop retries joining until one of the addresses answers: nodes of a
// new cluster start in any order.
func (c *Cluster) joinLoop() {
	defer c.wg.Done()
	backoff := 200 * time.Millisecond
	for {
		n, err := c.list.Join(c.cfg.Join)
		if n > 0 {
			c.logger.Info("joined cluster", "contacted", n)
			return
		}
		c.logger.Warn("join failed, retrying", "addrs", c.cfg.Join, "error", err, "in", backoff)
		select {
		case <-c.shutdownCh:
			return
		case <-time.After(backoff):
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
	}
}

// Members lists every gossip member this node knows of, alive or not.
func (c *Cluster) Members() []Member {
	out := []Member{}
	for _, n := range c.memberNodes() {
		out = append(out, memberOf(&n))
	}
	return out
}

// memberNodes returns this node's own copies of the gossip members, by
// name. memberlist's Members() hands out nodes it keeps mutating, so the
// copies are taken in the event callbacks, under memberlist's lock.
func (c *Cluster) memberNodes() []memberlist.Node {
	c.membersMu.Lock()
	defer c.membersMu.Unlock()
	out := make([]memberlist.Node, 0, len(c.members))
	for _, n := range c.members {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (c *Cluster) recordMember(n *memberlist.Node, state memberlist.NodeStateType) {
	cp := *n
	cp.Meta = append([]byte(nil), n.Meta...)
	cp.Addr = append([]byte(nil), n.Addr...)
	cp.State = state
	meta, metaErr := decodeMeta(cp.Meta)
	c.membersMu.Lock()
	if c.members == nil {
		c.members = map[string]memberlist.Node{}
		c.byID = map[string]memberAddr{}
	}
	c.members[cp.Name] = cp
	if metaErr == nil {
		if state == memberlist.StateAlive {
			c.byID[meta.ID] = memberAddr{name: cp.Name, http: meta.HTTPAddr}
		} else {
			delete(c.byID, meta.ID)
		}
	}
	c.membersMu.Unlock()
	c.leaderChanged()
}

func memberOf(n *memberlist.Node) Member {
	m := Member{Name: n.Name, Addr: n.Address(), Status: "alive"}
	switch n.State {
	case memberlist.StateSuspect:
		m.Status = "suspect"
	case memberlist.StateDead:
		m.Status = "failed"
	case memberlist.StateLeft:
		m.Status = "left"
	}
	if meta, err := decodeMeta(n.Meta); err == nil {
		m.ID, m.RaftAddr, m.HTTPAddr = meta.ID, meta.RaftAddr, meta.HTTPAddr
	}
	return m
}

// setBootstrapped marks this node as holding raft state and gossips it.
func (c *Cluster) setBootstrapped() {
	c.metaMu.Lock()
	changed := !c.meta.Bootstrapped
	c.meta.Bootstrapped = true
	c.metaMu.Unlock()
	if changed && c.list != nil {
		if err := c.list.UpdateNode(time.Second); err != nil {
			c.logger.Warn("gossip meta update failed", "error", err)
		}
	}
}

func (c *Cluster) memberEvent() {
	select {
	case c.events <- struct{}{}:
	default: // a reconcile is already pending; the periodic one covers the rest
	}
}

type gossipDelegate struct{ c *Cluster }

func (d *gossipDelegate) NodeMeta(limit int) []byte {
	d.c.metaMu.Lock()
	defer d.c.metaMu.Unlock()
	b, _ := json.Marshal(d.c.meta)
	if len(b) > limit {
		panic(fmt.Sprintf("cluster: node meta is %d bytes, limit %d", len(b), limit))
	}
	return b
}
func (d *gossipDelegate) NotifyMsg([]byte)                {}
func (d *gossipDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d *gossipDelegate) LocalState(bool) []byte          { return nil }
func (d *gossipDelegate) MergeRemoteState([]byte, bool)   {}

type gossipEvents struct{ c *Cluster }

func (e *gossipEvents) NotifyJoin(n *memberlist.Node) {
	e.c.recordMember(n, memberlist.StateAlive)
	e.c.logger.Info("member joined", "name", n.Name, "addr", n.Address())
	e.c.memberEvent()
}
func (e *gossipEvents) NotifyLeave(n *memberlist.Node) {
	state := n.State
	if state != memberlist.StateLeft {
		state = memberlist.StateDead
	}
	e.c.recordMember(n, state)
	e.c.logger.Info("member left or failed", "name", n.Name, "addr", n.Address())
	e.c.memberEvent()
}
func (e *gossipEvents) NotifyUpdate(n *memberlist.Node) {
	e.c.recordMember(n, memberlist.StateAlive)
	e.c.memberEvent()
}

type memberAddr struct{ name, http string }
