package api

import "context"

// Leader is the current leader.
type Leader struct {
	Node     string `json:"node"`
	HTTPAddr string `json:"http_addr"`
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
}

// Leader asks a node which node leads.
func (c *Client) Leader(ctx context.Context) (*Leader, error) {
	var out Leader
	if _, err := c.doJSON(ctx, "GET", "/v1/status/leader", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Member is a gossip member.
type Member struct {
	Name     string `json:"name"`
	ID       string `json:"id"`
	Addr     string `json:"addr"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
	Status   string `json:"status"`
}

// Members lists gossip members as the node sees them.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	var out struct {
		Members []Member `json:"members"`
	}
	_, err := c.doJSON(ctx, "GET", "/v1/members", nil, &out)
	return out.Members, err
}

// Peer is a raft server.
type Peer struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
}

// Peers lists the raft configuration.
func (c *Client) Peers(ctx context.Context) ([]Peer, error) {
	var out struct {
		Peers []Peer `json:"peers"`
	}
	_, err := c.doJSON(ctx, "GET", "/v1/status/peers", nil, &out)
	return out.Peers, err
}

// Stats are one node's figures from GET /v1/stats.
type Stats struct {
	Node    string         `json:"node"`
	Leader  bool           `json:"leader"`
	Index   uint64         `json:"index"`
	Raft    map[string]any `json:"raft"`
	State   map[string]int `json:"state"`
	Process ProcessStats   `json:"process"`
}

// ProcessStats are the node process's CPU time and memory.
type ProcessStats struct {
	Goroutines       int     `json:"goroutines"`
	HeapAllocBytes   uint64  `json:"heap_alloc_bytes"`
	SysBytes         uint64  `json:"sys_bytes"`
	CPUUserSeconds   float64 `json:"cpu_user_seconds"`
	CPUSystemSeconds float64 `json:"cpu_system_seconds"`
	MaxRSSBytes      uint64  `json:"max_rss_bytes"`
	RSSBytes         uint64  `json:"rss_bytes"`
}

// Stats reads the figures of the node the client talks to.
func (c *Client) Stats(ctx context.Context) (*Stats, error) {
	var out Stats
	if _, err := c.doJSON(ctx, "GET", "/v1/stats", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
