package httpapi

import (
	"net/http"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/lockstep-io/lockstep/fsm"
)

// GET /v1/status/leader
func (s *Server) leader(*http.Request, httprouter.Params, []byte) (any, error) {
	l, ok := s.cfg.Cluster.Leader()
	if !ok {
		return nil, &Error{Status: http.StatusServiceUnavailable, Code: "no_leader", Message: "no cluster leader is known to this node"}
	}
	return map[string]any{"node": l.Node, "http_addr": l.HTTPAddr, "id": l.ID, "raft_addr": l.RaftAddr}, nil
}

// GET /v1/status/peers — the raft configuration.
func (s *Server) peers(*http.Request, httprouter.Params, []byte) (any, error) {
	p, err := s.cfg.Cluster.Peers()
	if err != nil {
		return nil, err
	}
	return map[string]any{"peers": p}, nil
}

// GET /v1/members — gossip members and their state.
func (s *Server) members(*http.Request, httprouter.Params, []byte) (any, error) {
	return map[string]any{"members": s.cfg.Cluster.Members()}, nil
}

// GET /v1/health — this node's view: 200 when it knows a leader, else 503.
func (s *Server) health(*http.Request, httprouter.Params, []byte) (any, error) {
	l, ok := s.cfg.Cluster.Leader()
	out := map[string]any{"node": s.cfg.NodeName, "leader": s.cfg.Cluster.IsLeader(), "known_leader": ok, "leader_node": l.Node, "index": s.index()}
	if !ok {
		return &response{http.StatusServiceUnavailable, out}, nil
	}
	return out, nil
}

// GET /v1/stats — this node's own figures: raft's statistics, the state
// store's size and the process's CPU time and memory. Numbers only; a load
// tool reads them before and after a run and reports the difference.
// POST /v1/operator/raft/noop — commit an empty command through raft: a
// probe of write availability and commit latency, and the raft ceiling of
// lockstep bench -workload raft.
func (s *Server) raftNoop(r *http.Request, _ httprouter.Params, _ []byte) (any, error) {
	return s.apply(r, fsm.NoopType, &fsm.NoopRequest{Header: s.header()})
}

func (s *Server) waitingPolls() map[string]int {
	if s.cfg.Dispatcher == nil {
		return map[string]int{}
	}
	return s.cfg.Dispatcher.WaitingPolls()
}

func (s *Server) stats(*http.Request, httprouter.Params, []byte) (any, error) {
	raftStats := map[string]any{}
	for k, v := range s.cfg.Cluster.Stats() {
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			raftStats[k] = n
		} else {
			raftStats[k] = v
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	proc := map[string]any{
		"goroutines":       runtime.NumGoroutine(),
		"heap_alloc_bytes": ms.HeapAlloc,
		"sys_bytes":        ms.Sys,
		"gc_cycles":        ms.NumGC,
	}
	// The collector's share: its CPU time (all of it, and the part that
	// allocating goroutines were made to do), and the live heap its last
	// mark found. Each mark phase takes time in proportion to that heap,
	// and a loaded node's latency tail with it (docs/performance-history.md).
	gc := []metrics.Sample{
		{Name: "/cpu/classes/gc/total:cpu-seconds"},
		{Name: "/cpu/classes/gc/mark/assist:cpu-seconds"},
		{Name: "/gc/heap/live:bytes"},
	}
	metrics.Read(gc)
	for i, k := range []string{"gc_cpu_seconds", "gc_assist_cpu_seconds", "heap_live_bytes"} {
		switch gc[i].Value.Kind() {
		case metrics.KindFloat64:
			proc[k] = gc[i].Value.Float64()
		case metrics.KindUint64:
			proc[k] = gc[i].Value.Uint64()
		}
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		proc["cpu_user_seconds"] = time.Duration(ru.Utime.Nano()).Seconds()
		proc["cpu_system_seconds"] = time.Duration(ru.Stime.Nano()).Seconds()
		proc["max_rss_bytes"] = ru.Maxrss * 1024 // kilobytes on Linux
		// Each first touch of a fresh page costs a fault; on a heap that
		// grows (a young cluster retaining instances) they are a large
		// part of the system time (docs/operations.md, huge pages).
		proc["minor_page_faults"] = ru.Minflt
	}
	if rss, ok := residentBytes(); ok {
		proc["rss_bytes"] = rss
	}
	return map[string]any{
		"node":    s.cfg.NodeName,
		"leader":  s.cfg.Cluster.IsLeader(),
		"index":   s.index(),
		"raft":    raftStats,
		"state":   s.cfg.FSM.State().Counts(),
		"process": proc,
		"host":    hostInfo(),
		// Polls waiting for tasks on this node (the leader holds them all).
		"waiting_polls": s.waitingPolls(),
		// Cumulative histograms since the node started; diff two readings
		// for a run's distribution (lockstep bench does).
		"histograms": s.cfg.Metrics.Histograms(),
	}, nil
}

// hostInfo is what of the host a node's figures depend on: its CPUs, the
// Go scheduler's processors (GOMAXPROCS) and, on Linux, the transparent
// huge pages mode (the bracketed word of
// /sys/kernel/mm/transparent_hugepage/enabled), omitted where unknown.
func hostInfo() map[string]any {
	h := map[string]any{"cpus": runtime.NumCPU(), "gomaxprocs": runtime.GOMAXPROCS(0)}
	if b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled"); err == nil {
		if mode, ok := bracketed(string(b)); ok {
			h["transparent_huge_pages"] = mode
		}
	}
	return h
}

// bracketed returns the word in brackets of a sysfs choice list such as
// "always [madvise] never".
func bracketed(s string) (string, bool) {
	i := strings.IndexByte(s, '[')
	j := strings.IndexByte(s, ']')
	if i < 0 || j < i {
		return "", false
	}
	return s[i+1 : j], true
}

// residentBytes reads the resident set size from /proc (Linux only).
func residentBytes() (uint64, bool) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, false
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0, false
	}
	return pages * uint64(os.Getpagesize()), true
}
