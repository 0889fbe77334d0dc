package api

import (
	"context"
	"math"
	"sort"
)

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
	Host    HostStats      `json:"host"`
	// Histograms are the node's latency and batch histograms by name
	// (lockstep_dispatch_latency_seconds, ...), since it started.
	Histograms map[string]Histogram `json:"histograms"`
	// WaitingPolls counts the worker polls waiting on this node, by queue.
	WaitingPolls map[string]int `json:"waiting_polls"`
}

// RaftNoop commits an empty command through raft (POST
// /v1/operator/raft/noop) and returns its index: the cost of the write
// path itself.
func (c *Client) RaftNoop(ctx context.Context) (uint64, error) {
	var out struct {
		Index uint64 `json:"index"`
	}
	_, err := c.doJSON(ctx, "POST", "/v1/operator/raft/noop", struct{}{}, &out)
	return out.Index, err
}

// Histogram is a histogram's cumulative buckets, as GET /v1/stats gives
// them: the difference of two readings is what happened between them.
type Histogram struct {
	Count   uint64   `json:"count"`
	Sum     float64  `json:"sum"`
	Buckets []Bucket `json:"buckets"`
}

// Bucket counts the observations at most LE.
type Bucket struct {
	LE    float64 `json:"le"`
	Count uint64  `json:"count"`
}

// QuantileSince estimates the q-quantile of the observations made between
// an earlier reading and h (before may be the zero Histogram), within a
// bucket by linear interpolation as Prometheus's histogram_quantile does.
// It is NaN when nothing was observed.
func (h Histogram) QuantileSince(before Histogram, q float64) float64 {
	n := h.Count - before.Count
	if n == 0 || len(h.Buckets) == 0 {
		return math.NaN()
	}
	counts := make([]uint64, len(h.Buckets))
	for i, b := range h.Buckets {
		counts[i] = b.Count
		if i < len(before.Buckets) {
			counts[i] -= before.Buckets[i].Count
		}
	}
	rank := q * float64(n)
	i := sort.Search(len(counts), func(i int) bool { return float64(counts[i]) >= rank })
	if i == len(counts) {
		return h.Buckets[len(h.Buckets)-1].LE
	}
	lower, below := 0.0, uint64(0)
	if i > 0 {
		lower, below = h.Buckets[i-1].LE, counts[i-1]
	}
	upper := h.Buckets[i].LE
	if counts[i] == below {
		return upper
	}
	return lower + (upper-lower)*(rank-float64(below))/float64(counts[i]-below)
}

// MeanSince is the mean of the observations made since before, NaN when
// there were none.
func (h Histogram) MeanSince(before Histogram) float64 {
	if h.Count == before.Count {
		return math.NaN()
	}
	return (h.Sum - before.Sum) / float64(h.Count-before.Count)
}

// ProcessStats are the node process's CPU time and memory.
type ProcessStats struct {
	Goroutines     int    `json:"goroutines"`
	HeapAllocBytes uint64 `json:"heap_alloc_bytes"`
	SysBytes       uint64 `json:"sys_bytes"`
	// GCCycles counts the collections since the process started;
	// GCCPUSeconds is the CPU time the collector took (GCAssistCPUSeconds
	// of it taken from goroutines that allocated while it marked), and
	// HeapLiveBytes the live heap its last mark found.
	GCCycles           uint64  `json:"gc_cycles"`
	GCCPUSeconds       float64 `json:"gc_cpu_seconds"`
	GCAssistCPUSeconds float64 `json:"gc_assist_cpu_seconds"`
	HeapLiveBytes      uint64  `json:"heap_live_bytes"`
	CPUUserSeconds     float64 `json:"cpu_user_seconds"`
	CPUSystemSeconds   float64 `json:"cpu_system_seconds"`
	MaxRSSBytes        uint64  `json:"max_rss_bytes"`
	RSSBytes           uint64  `json:"rss_bytes"`
	// MinorPageFaults counts the first touches of fresh memory pages
	// since the process started.
	MinorPageFaults uint64 `json:"minor_page_faults"`
}

// HostStats describe the node's host: its CPUs, the Go scheduler's
// processors its process runs goroutines on (GOMAXPROCS) and, on Linux,
// the transparent huge pages mode ("always", "madvise", "never"; empty
// where unknown).
type HostStats struct {
	CPUs                 int    `json:"cpus"`
	GoMaxProcs           int    `json:"gomaxprocs,omitempty"`
	TransparentHugePages string `json:"transparent_huge_pages,omitempty"`
}

// Stats reads the figures of the node the client talks to.
func (c *Client) Stats(ctx context.Context) (*Stats, error) {
	var out Stats
	if _, err := c.doJSON(ctx, "GET", "/v1/stats", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
