package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockstep-io/lockstep/agent"
	"github.com/lockstep-io/lockstep/api"
	"github.com/lockstep-io/lockstep/internal/workloads"
)

// benchWorkloads are the workflows `lockstep bench` runs. Each is
// registered under its own name so a bench never touches user workflows.
var benchWorkloads = map[string]struct {
	about  string
	source string
	signal bool // the bench sends "go" to every instance it starts
}{
	"chain3": {"3 sequential noop steps: the engine's own overhead per transition", workloads.Chain3("bench-chain3"), false},
	"fanout": {"one step over 100 elements, then a join", `workflow "bench-fanout" {
  step "each" {
    for_each = range(100)
    activity = "noop"
    input    = { i = each.value }
  }
  step "join" {
    activity = "noop"
    input    = { n = length(step.each.output) }
  }
  output = step.join.output
}
`, false},
	"signal": {"a step that waits for a signal the bench sends right after the start", `workflow "bench-signal" {
  step "wait" {
    wait_signal "go" {
      timeout = "5m"
    }
  }
  step "after" {
    activity = "noop"
    input    = { got = step.wait.output }
  }
}
`, true},
	"timer": {"a 100ms sleep between two noop steps", `workflow "bench-timer" {
  step "a" {
    activity = "noop"
    input    = { n = input.n }
  }
  step "nap" {
    depends_on = [step.a]
    sleep      = "100ms"
  }
  step "b" {
    depends_on = [step.nap]
    activity   = "noop"
    input      = { n = input.n }
  }
}
`, false},
}

type benchConfig struct {
	addresses   []string
	local       bool
	nodes       int
	workers     int
	batch       int
	workload    string
	instances   int
	duration    time.Duration
	concurrency int
	rate        float64
	twoRequests bool
	// view is what each answer carries of the ended instance: "outcome"
	// (its status and output) or "full" (?view=, docs/api.md).
	view    string
	jsonOut bool
	csvOut  string
	// retention, when set, is the workload workflow's retention: how long
	// each ended instance stays in the state before the leader purges it.
	retention time.Duration
	// fill, when set, is how many chain3 instances run to completion
	// before the measured run, so that the state holds them (everything
	// retained) while it runs.
	fill int
	// stages, when set, is how many completed instances' histories to
	// read after the run, to split their latency by stage.
	stages int
}

// benchResult is the summary, printed as text or, with -json, as is.
type benchResult struct {
	Workload    string  `json:"workload"`
	Nodes       int     `json:"nodes"`
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate,omitempty"`
	// RetentionSeconds is the workflow's retention set by -retention.
	RetentionSeconds float64 `json:"retention_seconds,omitempty"`
	// Filled is how many chain3 instances -fill ran before the measured
	// run, and FillPerSec how fast.
	Filled          int64              `json:"filled,omitempty"`
	FillPerSec      float64            `json:"fill_instances_per_sec,omitempty"`
	Seconds         float64            `json:"seconds"`
	Started         int64              `json:"started"`
	Completed       int64              `json:"completed"`
	Failed          int64              `json:"failed"`
	InstancesPerSec float64            `json:"instances_per_sec"`
	RaftIndexPerSec float64            `json:"raft_entries_per_sec"`
	LatencyMS       map[string]float64 `json:"latency_ms"`
	Errors          map[string]int64   `json:"errors"`
	// Leader is the leader's side of the run, from GET /v1/stats before
	// and after; absent when leadership moved during the run.
	Leader *benchLeader `json:"leader,omitempty"`
	// Stages splits the latency of the instances -stages read by part of
	// their run (stagesOf).
	Stages []benchStage `json:"stages,omitempty"`
	// Workers is how many bench workers ran the tasks (0: the cluster's
	// built-in workers did), each taking up to Batch tasks per poll.
	Workers int `json:"workers,omitempty"`
	Batch   int `json:"batch,omitempty"`
	// StartThenRead is set when each instance was started, then followed
	// with a blocking read (-start-then-read), instead of started with
	// ?wait= in one request.
	StartThenRead bool `json:"start_then_read,omitempty"`
	// View is what each answer carried of the ended instance: "outcome"
	// or "full" (-view).
	View string `json:"view,omitempty"`
	// DuringGC and OutsideGC split the latencies, with -local (where the
	// cluster's collector is the bench's), between the instances during
	// whose run a collection ended and the others.
	DuringGC  *latencySplit `json:"during_gc,omitempty"`
	OutsideGC *latencySplit `json:"outside_gc,omitempty"`
}

// latencySplit is the latency of one part of a run's instances.
type latencySplit struct {
	Instances int     `json:"instances"`
	P50MS     float64 `json:"p50_ms"`
	P99MS     float64 `json:"p99_ms"`
}

func splitOf(lat []time.Duration) *latencySplit {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return &latencySplit{Instances: len(lat), P50MS: quantile(lat, 0.5), P99MS: quantile(lat, 0.99)}
}

// gcCycles is how many collections this process has finished.
func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// benchLeader is what the leader's process did during the run. With
// -local every node and the bench share one process, so CPU and memory
// are those of the whole local cluster and the load generator.
type benchLeader struct {
	Node       string  `json:"node"`
	SharedProc bool    `json:"shared_process"`
	CPUPercent float64 `json:"cpu_percent"`
	// CPUPerInstanceMS is the process's CPU time per completed instance:
	// steadier than throughput on a machine whose speed varies, and with
	// -local the whole cluster's cost of an instance.
	CPUPerInstanceMS float64 `json:"cpu_ms_per_instance,omitempty"`
	RSSBytes         uint64  `json:"rss_bytes"`
	Applied          uint64  `json:"raft_applied"`
	// Instances is how many instances the leader's state holds at the end
	// (running and ended, this run's and earlier ones): the collector's
	// work, and so the latency tail, grows with it (docs/performance-history.md).
	Instances int `json:"instances_in_state"`
	// PageFaultsPerInstance are the process's minor page faults (first
	// touches of fresh memory) per completed instance; CPUs and
	// TransparentHugePages describe the leader's host, on which they
	// depend (docs/operations.md).
	PageFaultsPerInstance float64 `json:"page_faults_per_instance,omitempty"`
	CPUs                  int     `json:"cpus,omitempty"`
	GoMaxProcs            int     `json:"gomaxprocs,omitempty"`
	TransparentHugePages  string  `json:"transparent_huge_pages,omitempty"`
	// DispatchMS is the distribution of task ready → lease committed over
	// the run; RaftApplyMS of proposal → response (commit and apply).
	DispatchMS  map[string]float64 `json:"dispatch_latency_ms,omitempty"`
	RaftApplyMS map[string]float64 `json:"raft_apply_ms,omitempty"`
	// RaftCommitMS is from the leader appending an entry to its log to its
	// beginning to apply it: the commit, and the wait behind the batch
	// before.
	RaftCommitMS map[string]float64 `json:"raft_commit_ms,omitempty"`
	// GCCycles are the collections the leader's process ran during the
	// run, GCCPUPercent the share of its CPU they took and GCCPUPerCycleMS
	// their CPU each (GCAssistPerCycleMS of it assists); HeapLiveBytes is
	// the live heap at the last one. A mark phase lasts in proportion to
	// that heap, and the seconds it runs in are the latency tail's.
	GCCycles           uint64  `json:"gc_cycles"`
	GCCPUPercent       float64 `json:"gc_cpu_percent"`
	GCCPUPerCycleMS    float64 `json:"gc_cpu_ms_per_cycle,omitempty"`
	GCAssistPerCycleMS float64 `json:"gc_assist_ms_per_cycle,omitempty"`
	HeapLiveBytes      uint64  `json:"heap_live_bytes"`
	// BatchMean is the mean number of commands per raft batch the leader's
	// FSM applied, and BatchApplyMS the mean time it took per batch.
	BatchMean    float64 `json:"fsm_batch_mean"`
	BatchApplyMS float64 `json:"fsm_batch_apply_ms"`
}

func runBench(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg benchConfig
	var addrs stringList
	fs.Var(&addrs, "address", "a node's HTTP address; repeat to spread starts over nodes (default $LOCKSTEP_ADDR)")
	fs.BoolVar(&cfg.local, "local", false, "start a cluster (-nodes) on 127.0.0.1 in a temporary dir, in this process with GOMAXPROCS -nodes times the CPUs (the processors as many agent processes would have; unless $GOMAXPROCS is set), bench it, tear it down")
	fs.IntVar(&cfg.nodes, "nodes", 3, "with -local: how many nodes")
	fs.IntVar(&cfg.workers, "workers", 0, "run this many workers in the bench (HTTP protocol, queue \"bench\") instead of the cluster's built-in ones")
	fs.IntVar(&cfg.batch, "batch", 16, "with -workers: tasks each worker takes per poll (max_tasks) and reports per request")
	fs.StringVar(&cfg.workload, "workload", "chain3", "chain3, fanout, signal, timer or raft")
	fs.IntVar(&cfg.instances, "instances", 2000, "instances to run (ignored with -duration)")
	fs.DurationVar(&cfg.duration, "duration", 0, "run for this long instead of a fixed number of instances")
	fs.IntVar(&cfg.concurrency, "concurrency", 64, "instances in flight at most")
	fs.BoolVar(&cfg.twoRequests, "start-then-read", false, "start each instance, then follow it with a blocking read (two requests) instead of one start that waits for the end (?wait=); signal always does")
	fs.StringVar(&cfg.view, "view", "outcome", "what each answer carries of the ended instance: outcome (status, output, error: a client running an instance for its result) or full (with its input and steps)")
	fs.Float64Var(&cfg.rate, "rate", 0, "open loop: start this many instances per second on a fixed schedule, latency counted from each scheduled start (0: closed loop)")
	fs.DurationVar(&cfg.retention, "retention", 0, "keep each ended instance this long (the workflow's retention) instead of the default 7 days, so the state stops growing: at a fixed rate it then holds about rate x retention ended instances, plus up to a second's worth the leader purges together")
	fs.IntVar(&cfg.stages, "stages", 0, "after the run, read the histories of this many completed instances and split their latency: start to instance_started, each step, instance_completed to the answer")
	fs.IntVar(&cfg.fill, "fill", 0, "first run this many chain3 instances (512 in flight, retained), then the measured run: how a run fares with that many ended instances in the state")
	fs.BoolVar(&cfg.jsonOut, "json", false, "print the summary as JSON")
	fs.StringVar(&cfg.csvOut, "out", "", "write per-second figures to this CSV file: counts so far, and the p50 and p99 of the instances that completed in that second")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process (with -local: the whole cluster) to this file")
	traceOut := fs.String("trace", "", "write an execution trace of this process (with -local: the whole cluster) to this file (read it with go tool trace)")
	memProfile := fs.String("memprofile", "", "write a heap profile of this process (with -local: the whole cluster, instances retained) at the end of the run to this file")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: lockstep bench [flags]\n\nRuns a workload against a cluster and reports completed instances per second\nand start-to-completion latency. Workloads:\n")
		for _, n := range []string{"chain3", "fanout", "signal", "timer"} {
			fmt.Fprintf(stderr, "  %-8s %s\n", n, benchWorkloads[n].about)
		}
		fmt.Fprintf(stderr, "  %-8s %s\n", "raft", "no workflow: empty commands through the write path (POST /v1/operator/raft/noop), the raft ceiling")
		fmt.Fprintf(stderr, "\nExamples:\n  lockstep bench -local -workload chain3 -instances 5000\n  lockstep bench -address http://10.0.0.1:7700 -address http://10.0.0.2:7700 -duration 1m -rate 200\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 1
	}
	cfg.addresses = addrs
	if _, ok := benchWorkloads[cfg.workload]; !ok && cfg.workload != "raft" {
		fmt.Fprintf(stderr, "lockstep bench: unknown workload %q (one of: chain3, fanout, signal, timer, raft)\n", cfg.workload)
		return 1
	}
	if cfg.concurrency < 1 || (cfg.duration <= 0 && cfg.instances < 1) || cfg.rate < 0 || cfg.retention < 0 || cfg.fill < 0 || cfg.stages < 0 || cfg.nodes < 1 || cfg.workers < 0 || cfg.batch < 1 || cfg.batch > 1000 {
		fmt.Fprintln(stderr, "lockstep bench: -concurrency, -instances and -nodes must be positive, -rate, -retention, -fill, -stages and -workers not negative, -batch from 1 to 1000")
		return 1
	}
	if cfg.view != "outcome" && cfg.view != "full" {
		fmt.Fprintf(stderr, "lockstep bench: -view must be outcome or full, got %q\n", cfg.view)
		return 1
	}
	if cfg.local && len(cfg.addresses) > 0 {
		fmt.Fprintln(stderr, "lockstep bench: -local and -address exclude each other")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if cfg.local {
		agent.DefaultConfig().ApplyGCPercent() // the local agents run as the agent command would
		if procs := localProcs(cfg.nodes, runtime.GOMAXPROCS(0), os.Getenv("GOMAXPROCS")); procs > 0 {
			runtime.GOMAXPROCS(procs)
		}
		addrs, shutdown, err := startLocalCluster(ctx, cfg.nodes, cfg.workers == 0, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "lockstep bench: local cluster: %v\n", err)
			return 1
		}
		defer shutdown()
		cfg.addresses = addrs
	}
	if len(cfg.addresses) == 0 {
		cfg.addresses = []string{""} // $LOCKSTEP_ADDR or the default
	}
	var filled *benchResult
	if cfg.fill > 0 {
		// Before the profiles start: they are of the measured run.
		var err error
		if filled, err = fillState(ctx, cfg, stderr); err != nil {
			fmt.Fprintf(stderr, "lockstep bench: -fill: %v\n", err)
			return 1
		}
	}
	for _, r := range []struct {
		path  string
		start func(io.Writer) error
		stop  func()
	}{{*cpuProfile, pprof.StartCPUProfile, pprof.StopCPUProfile}, {*traceOut, trace.Start, trace.Stop}} {
		if r.path == "" {
			continue
		}
		stop, err := record(r.path, r.start, r.stop)
		if err != nil {
			fmt.Fprintf(stderr, "lockstep bench: %v\n", err)
			return 1
		}
		defer stop()
	}
	res, err := bench(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "lockstep bench: %v\n", err)
		return 1
	}
	if filled != nil {
		res.Filled, res.FillPerSec = filled.Completed, filled.InstancesPerSec
	}
	if *memProfile != "" {
		if err := writeHeapProfile(*memProfile); err != nil {
			fmt.Fprintf(stderr, "lockstep bench: %v\n", err)
			return 1
		}
	}
	if cfg.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
	} else {
		printBench(stdout, res)
	}
	if res.Failed > 0 || len(res.Errors) > 0 {
		return 2
	}
	return 0
}

// fillState runs cfg.fill chain3 instances, closed loop with 512 in
// flight and everything retained, on the cluster cfg names: the state the
// measured run then starts from. Any failure or error fails the fill.
func fillState(ctx context.Context, cfg benchConfig, progress io.Writer) (*benchResult, error) {
	fc := benchConfig{
		addresses: cfg.addresses, workload: "chain3", instances: cfg.fill, concurrency: 512,
		view: "outcome", workers: cfg.workers, batch: cfg.batch,
	}
	fmt.Fprintf(progress, "filling the state with %d chain3 instances\n", cfg.fill)
	res, err := bench(ctx, fc, progress)
	if err != nil {
		return nil, err
	}
	if res.Failed > 0 || len(res.Errors) > 0 || res.Completed != int64(cfg.fill) {
		return nil, fmt.Errorf("%d of %d completed, %d failed, errors %v", res.Completed, cfg.fill, res.Failed, res.Errors)
	}
	return res, nil
}

// writeHeapProfile writes the heap as the last collection left it, after
// collecting once so that it shows what is live now.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func printBench(w io.Writer, r *benchResult) {
	fmt.Fprintf(w, "workload %s through %d address(es), %d in flight", r.Workload, r.Nodes, r.Concurrency)
	if r.Workers > 0 {
		fmt.Fprintf(w, ", %d bench workers taking %d tasks per poll", r.Workers, r.Batch)
	}
	if r.Rate > 0 {
		fmt.Fprintf(w, ", %.0f starts/s offered", r.Rate)
	}
	if r.StartThenRead {
		fmt.Fprint(w, ", start then blocking read")
	}
	if r.View == "full" {
		fmt.Fprint(w, ", answers with the full instance")
	}
	if r.RetentionSeconds > 0 {
		fmt.Fprintf(w, ", retention %s", time.Duration(r.RetentionSeconds*float64(time.Second)))
	}
	if r.Filled > 0 {
		fmt.Fprintf(w, ", after %d chain3 instances filled the state (%.0f/s)", r.Filled, r.FillPerSec)
	}
	fmt.Fprintf(w, "\n  completed   %d of %d started in %.1fs (%d failed)\n", r.Completed, r.Started, r.Seconds, r.Failed)
	fmt.Fprintf(w, "  throughput  %.1f instances/s, %.0f raft entries/s\n", r.InstancesPerSec, r.RaftIndexPerSec)
	from := "start request"
	if r.Rate > 0 {
		from = "scheduled start"
	}
	fmt.Fprintf(w, "  latency     p50 %.1fms  p90 %.1fms  p99 %.1fms  max %.1fms (%s to completion)\n",
		r.LatencyMS["p50"], r.LatencyMS["p90"], r.LatencyMS["p99"], r.LatencyMS["max"], from)
	if l := r.Leader; l != nil {
		who := "leader " + l.Node
		if l.SharedProc {
			who = "local cluster and bench (one process)"
		}
		perInstance := ""
		if l.CPUPerInstanceMS > 0 {
			perInstance = fmt.Sprintf(" (%.2fms per instance)", l.CPUPerInstanceMS)
		}
		fmt.Fprintf(w, "  server      %s: %.0f%% CPU%s, %.0f MiB resident, %d raft entries applied, %d instances in the state\n", who, l.CPUPercent, perInstance, float64(l.RSSBytes)/(1<<20), l.Applied, l.Instances)
		if l.CPUs > 0 {
			thp := l.TransparentHugePages
			if thp == "" {
				thp = "unknown"
			}
			fmt.Fprintf(w, "  host        %d CPUs (GOMAXPROCS %d), transparent huge pages %s, %.1f page faults per instance\n", l.CPUs, l.GoMaxProcs, thp, l.PageFaultsPerInstance)
		}
		if l.GCCycles > 0 {
			fmt.Fprintf(w, "  collector   %d cycles, %.0f%% of that CPU, %.0fms of CPU each (%.0fms of it assists); %.0f MiB live at the last\n",
				l.GCCycles, l.GCCPUPercent, l.GCCPUPerCycleMS, l.GCAssistPerCycleMS, float64(l.HeapLiveBytes)/(1<<20))
		}
		if d, o := r.DuringGC, r.OutsideGC; d != nil && o != nil {
			fmt.Fprintf(w, "              a collection ended during %.0f%% of the instances: p50 %.1fms  p99 %.1fms; the others p50 %.1fms  p99 %.1fms\n",
				100*float64(d.Instances)/float64(d.Instances+o.Instances), d.P50MS, d.P99MS, o.P50MS, o.P99MS)
		}
		if d := l.DispatchMS; d != nil {
			fmt.Fprintf(w, "  dispatch    p50 %.1fms  p90 %.1fms  p99 %.1fms (task ready to lease committed, leader)\n", d["p50"], d["p90"], d["p99"])
		}
		if a := l.RaftApplyMS; a != nil {
			fmt.Fprintf(w, "  raft        apply p50 %.1fms  p99 %.1fms (proposal to response)", a["p50"], a["p99"])
			if c := l.RaftCommitMS; c != nil {
				fmt.Fprintf(w, ", of which commit p50 %.1fms  p99 %.1fms (appended to applying)", c["p50"], c["p99"])
			}
			fmt.Fprintf(w, "; %.1f commands per batch, %.2fms per batch in the FSM\n", l.BatchMean, l.BatchApplyMS)
		}
	}
	printStages(w, r.Stages)
	if len(r.Errors) == 0 {
		fmt.Fprintln(w, "  errors      none")
		return
	}
	keys := make([]string, 0, len(r.Errors))
	for k := range r.Errors {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  errors      %s: %d\n", k, r.Errors[k])
	}
}

// errorKind sorts an error into the kinds the summary counts.
func errorKind(err error) string {
	var ae *api.Error
	switch {
	case errors.As(err, &ae) && ae.StatusCode >= 500:
		return "5xx"
	case errors.As(err, &ae):
		return "4xx"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "timeout"
		}
		return "transport"
	}
}

func bench(ctx context.Context, cfg benchConfig, progress io.Writer) (*benchResult, error) {
	wl := benchWorkloads[cfg.workload]
	clients := make([]*api.Client, len(cfg.addresses))
	// Every request in flight keeps its connection: with fewer idle
	// connections allowed than requests in flight, each burst of answers
	// closes connections the next burst dials again.
	perHost := cfg.concurrency + 2*cfg.workers + 16
	for i, a := range cfg.addresses {
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: perHost, IdleConnTimeout: 90 * time.Second}}
		c, err := api.New(api.Config{Address: a, HTTPClient: hc})
		if err != nil {
			return nil, err
		}
		clients[i] = c
	}
	var name string
	if cfg.workload != "raft" {
		src := wl.source
		if cfg.workers > 0 {
			src = onQueue(src, benchQueue)
		}
		if cfg.retention > 0 {
			src = withRetention(src, cfg.retention)
		}
		reg, err := clients[0].RegisterWorkflow(ctx, "bench-"+cfg.workload+".hcl", []byte(src))
		if err != nil {
			return nil, fmt.Errorf("register the %s workload: %w", cfg.workload, err)
		}
		name = reg.Name
	}
	runID := fmt.Sprintf("%x", time.Now().UnixNano())
	leaderClient, before := leaderStats(ctx, clients[0])

	var (
		started, completed, failed atomic.Int64
		mu                         sync.Mutex
		lat                        []time.Duration
		duringGC, outsideGC        []time.Duration
		errs                       = map[string]int64{}
		samples                    []stageSample
		firstIndex, lastIndex      atomic.Uint64
	)
	noteErr := func(err error) {
		mu.Lock()
		errs[errorKind(err)]++
		mu.Unlock()
	}
	noteIndex := func(i uint64) {
		firstIndex.CompareAndSwap(0, i)
		for {
			cur := lastIndex.Load()
			if i <= cur || lastIndex.CompareAndSwap(cur, i) {
				return
			}
		}
	}

	runCtx := ctx
	if cfg.duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, cfg.duration)
		defer cancel()
	}
	// jobs hands out instance numbers: at a fixed rate (open loop) or as
	// fast as the in-flight slots allow (closed loop). In the open loop
	// each start has its time on a fixed schedule, kept even when the
	// machine is late (the starts that are due go out at once), and the
	// latency counts from that time: a start that waited for a free slot
	// is not measured as if it had been sent on time.
	type job struct {
		n  int
		at time.Time
	}
	jobs := make(chan job)
	go func() {
		defer close(jobs)
		var interval time.Duration
		if cfg.rate > 0 {
			interval = time.Duration(float64(time.Second) / cfg.rate)
		}
		timer := time.NewTimer(0)
		defer timer.Stop()
		next := time.Now()
		for i := 0; cfg.duration > 0 || i < cfg.instances; i++ {
			at := time.Now()
			if interval > 0 {
				at = next
				next = next.Add(interval)
				if d := time.Until(at); d > 0 {
					timer.Reset(d)
					select {
					case <-timer.C:
					case <-runCtx.Done():
						return
					}
				}
			}
			select {
			case jobs <- job{n: i, at: at}:
			case <-runCtx.Done():
				return
			}
		}
	}()

	var csv *os.File
	if cfg.csvOut != "" {
		var err error
		if csv, err = os.Create(cfg.csvOut); err != nil {
			return nil, err
		}
		defer csv.Close()
		fmt.Fprintln(csv, "second,started,completed,failed,errors,p50_ms,p99_ms")
	}
	begin := time.Now()
	doneProgress := make(chan struct{})
	var progressWG sync.WaitGroup
	progressWG.Add(1)
	go func() {
		defer progressWG.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var prevDone int64
		var seen int // latencies already counted in an earlier second
		for sec := 1; ; sec++ {
			select {
			case <-doneProgress:
				fmt.Fprintln(progress)
				return
			case <-t.C:
			}
			d := completed.Load()
			mu.Lock()
			var ne int64
			for _, n := range errs {
				ne += n
			}
			var second []time.Duration
			if csv != nil {
				second = append(second, lat[seen:]...)
				seen = len(lat)
			}
			mu.Unlock()
			fmt.Fprintf(progress, "\r%4ds  started %d  completed %d (%d/s)  failed %d  errors %d   ",
				sec, started.Load(), d, d-prevDone, failed.Load(), ne)
			if csv != nil {
				p50, p99 := quantile(second, 0.5), quantile(second, 0.99)
				fmt.Fprintf(csv, "%d,%d,%d,%d,%d,%.1f,%.1f\n", sec, started.Load(), d, failed.Load(), ne, p50, p99)
			}
			prevDone = d
		}
	}()

	// The bench's own workers, if asked: they run every task of the
	// workload (its queue is theirs) over the HTTP protocol, in batches.
	wctx, stopWorkers := context.WithCancel(ctx)
	var workersWG sync.WaitGroup
	for i := 0; i < cfg.workers; i++ {
		workersWG.Add(1)
		go func(i int) {
			defer workersWG.Done()
			benchWorker(wctx, clients[i%len(clients)], fmt.Sprintf("bench-%s-w%d", runID, i), cfg.batch, noteErr)
		}(i)
	}

	var wg sync.WaitGroup
	for w := 0; w < cfg.concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			cl := clients[w%len(clients)]
			startWait, waitEnd := cl.StartInstanceOutcome, cl.WaitInstanceOutcome
			if cfg.view == "full" {
				startWait, waitEnd = cl.StartInstanceWait, cl.WaitInstanceSince
			}
			for j := range jobs {
				i, t0 := j.n, j.at
				if cfg.workload == "raft" {
					idx, err := cl.RaftNoop(ctx)
					if err != nil {
						noteErr(err)
						continue
					}
					started.Add(1)
					completed.Add(1)
					noteIndex(idx)
					mu.Lock()
					lat = append(lat, time.Since(t0))
					mu.Unlock()
					continue
				}
				gc0 := gcCycles()
				req := api.StartRequest{ID: fmt.Sprintf("bench-%s-%d", runID, i), Input: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}
				var s *api.Started
				var err error
				if cfg.twoRequests || wl.signal {
					s, err = cl.StartInstance(ctx, name, req)
					if err == nil {
						started.Add(1)
					}
				} else {
					// Counted as started while its request waits for the
					// end, so that the progress line shows what is in flight.
					started.Add(1)
					if s, err = startWait(ctx, name, req, 30*time.Second); err != nil {
						started.Add(-1)
					}
				}
				if err != nil {
					noteErr(err)
					continue
				}
				noteIndex(s.Index)
				if wl.signal {
					if _, err := cl.Signal(ctx, s.ID, "go", json.RawMessage(`{"ok":true}`), ""); err != nil {
						noteErr(err)
						continue
					}
				}
				inst := s.Instance
				if inst == nil || !inst.Terminal() {
					if inst, err = waitEnd(ctx, s.ID, s.Index); err != nil {
						noteErr(err)
						continue
					}
				}
				if inst.Status != "completed" {
					failed.Add(1)
					continue
				}
				completed.Add(1)
				took, gc := time.Since(t0), gcCycles() != gc0
				mu.Lock()
				lat = append(lat, took)
				if cfg.stages > 0 {
					samples = append(samples, stageSample{id: s.ID, due: t0, end: t0.Add(took)})
				}
				if gc {
					duringGC = append(duringGC, took)
				} else {
					outsideGC = append(outsideGC, took)
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(begin)
	stopWorkers()
	workersWG.Wait()
	close(doneProgress)
	progressWG.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("interrupted")
	}
	res := &benchResult{
		Workload: cfg.workload, Nodes: len(clients), Concurrency: cfg.concurrency, Rate: cfg.rate,
		RetentionSeconds: cfg.retention.Seconds(),
		Seconds:          elapsed.Seconds(), Started: started.Load(), Completed: completed.Load(), Failed: failed.Load(),
		LatencyMS: map[string]float64{}, Errors: errs, Workers: cfg.workers,
		StartThenRead: (cfg.twoRequests || cfg.workload == "signal") && cfg.workload != "raft",
	}
	if cfg.workload != "raft" {
		res.View = cfg.view
	}
	if cfg.workers > 0 {
		res.Batch = cfg.batch
	}
	if res.Seconds > 0 {
		res.InstancesPerSec = float64(res.Completed) / res.Seconds
		if f, l := firstIndex.Load(), lastIndex.Load(); l > f {
			res.RaftIndexPerSec = float64(l-f) / res.Seconds
		}
	}
	if leaderClient != nil {
		if after, err := leaderClient.Stats(ctx); err == nil && after.Leader && after.Node == before.Node {
			cpu := after.Process.CPUUserSeconds + after.Process.CPUSystemSeconds - before.Process.CPUUserSeconds - before.Process.CPUSystemSeconds
			res.Leader = &benchLeader{
				Node: after.Node, SharedProc: cfg.local, CPUPercent: 100 * cpu / res.Seconds,
				RSSBytes: after.Process.RSSBytes, Instances: after.State["instances"], Applied: statUint(after.Raft, "applied_index") - statUint(before.Raft, "applied_index"),
				CPUs: after.Host.CPUs, GoMaxProcs: after.Host.GoMaxProcs, TransparentHugePages: after.Host.TransparentHugePages,
				DispatchMS:   quantilesMS(before.Histograms["lockstep_dispatch_latency_seconds"], after.Histograms["lockstep_dispatch_latency_seconds"]),
				RaftApplyMS:  quantilesMS(before.Histograms["lockstep_raft_apply_seconds"], after.Histograms["lockstep_raft_apply_seconds"]),
				RaftCommitMS: quantilesMS(before.Histograms["lockstep_raft_commit_seconds"], after.Histograms["lockstep_raft_commit_seconds"]),
				BatchMean:    orZero(after.Histograms["lockstep_fsm_batch_commands"].MeanSince(before.Histograms["lockstep_fsm_batch_commands"])),
				BatchApplyMS: 1000 * orZero(after.Histograms["lockstep_fsm_batch_apply_seconds"].MeanSince(before.Histograms["lockstep_fsm_batch_apply_seconds"])),
			}
			bp, ap := before.Process, after.Process
			res.Leader.GCCycles, res.Leader.HeapLiveBytes = ap.GCCycles-bp.GCCycles, ap.HeapLiveBytes
			if cpu > 0 {
				res.Leader.GCCPUPercent = 100 * (ap.GCCPUSeconds - bp.GCCPUSeconds) / cpu
			}
			if n := float64(res.Leader.GCCycles); n > 0 {
				res.Leader.GCCPUPerCycleMS = 1000 * (ap.GCCPUSeconds - bp.GCCPUSeconds) / n
				res.Leader.GCAssistPerCycleMS = 1000 * (ap.GCAssistCPUSeconds - bp.GCAssistCPUSeconds) / n
			}
			res.RaftIndexPerSec = float64(res.Leader.Applied) / res.Seconds
			if res.Completed > 0 {
				res.Leader.CPUPerInstanceMS = 1000 * cpu / float64(res.Completed)
				res.Leader.PageFaultsPerInstance = float64(after.Process.MinorPageFaults-before.Process.MinorPageFaults) / float64(res.Completed)
			}
		}
	}
	if cfg.stages > 0 {
		reader := clients[0]
		if leaderClient != nil {
			reader = leaderClient
		}
		res.Stages = stagesOf(ctx, reader, samples, cfg.stages)
	}
	if cfg.local && len(duringGC) > 0 {
		res.DuringGC, res.OutsideGC = splitOf(duringGC), splitOf(outsideGC)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		res.LatencyMS["p50"], res.LatencyMS["p90"], res.LatencyMS["p99"], res.LatencyMS["max"] = quantile(lat, 0.5), quantile(lat, 0.9), quantile(lat, 0.99), quantile(lat, 1)
	}
	return res, nil
}

// quantile is the p-quantile of the latencies in milliseconds (0 for none);
// it sorts them in place.
func quantile(lat []time.Duration, p float64) float64 {
	if len(lat) == 0 {
		return 0
	}
	if !sort.SliceIsSorted(lat, func(i, j int) bool { return lat[i] < lat[j] }) {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	}
	return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
}

// benchQueue is the queue the bench's own workers serve.
const benchQueue = "bench"

// onQueue puts every step of a workload on a queue: a defaults block as
// the workflow's first statement.
func onQueue(src, queue string) string {
	return intoWorkflow(src, fmt.Sprintf("  defaults {\n    queue = %q\n  }\n", queue))
}

// intoWorkflow inserts lines at the top of the workflow block of src.
func intoWorkflow(src, lines string) string {
	i := strings.Index(src, "{\n")
	return src[:i+2] + lines + src[i+2:]
}

// withRetention sets the retention of the workflow in src, which sets
// none.
func withRetention(src string, d time.Duration) string {
	return intoWorkflow(src, fmt.Sprintf("  retention = %q\n", d.String()))
}

// benchWorker runs the workload's tasks as an external worker would:
// long-poll for up to batch tasks, run them (every bench activity is a
// noop, so the output is the input), report them in one request.
func benchWorker(ctx context.Context, cl *api.Client, id string, batch int, noteErr func(error)) {
	for ctx.Err() == nil {
		tasks, err := cl.PollTasks(ctx, benchQueue, api.PollRequest{WorkerID: id, WaitMS: 1000}, batch)
		if err != nil {
			if ctx.Err() == nil {
				noteErr(err)
			}
			continue
		}
		if len(tasks) == 0 {
			continue
		}
		out := make([]api.TaskOutcome, len(tasks))
		for i, t := range tasks {
			out[i] = api.TaskOutcome{TaskID: t.TaskID, Token: t.Token, Output: t.Input}
		}
		// Reported whatever the run's state: a result left unreported
		// would only expire later.
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if _, err := cl.ReportResults(rctx, out); err != nil {
			noteErr(err)
		}
		cancel()
	}
}

// quantilesMS is the p50, p90 and p99 of what a histogram observed between
// two readings, in milliseconds; nil when it observed nothing.
func quantilesMS(before, after api.Histogram) map[string]float64 {
	if after.Count == before.Count {
		return nil
	}
	out := map[string]float64{}
	for name, q := range map[string]float64{"p50": 0.5, "p90": 0.9, "p99": 0.99} {
		out[name] = 1000 * after.QuantileSince(before, q)
	}
	return out
}

func orZero(f float64) float64 {
	if math.IsNaN(f) {
		return 0
	}
	return f
}

// leaderStats finds the leader and reads its figures; nil when either fails
// (the run goes on without the server side).
func leaderStats(ctx context.Context, c *api.Client) (*api.Client, *api.Stats) {
	l, err := c.Leader(ctx)
	if err != nil || l.HTTPAddr == "" {
		return nil, nil
	}
	lc, err := api.New(api.Config{Address: "http://" + l.HTTPAddr})
	if err != nil {
		return nil, nil
	}
	st, err := lc.Stats(ctx)
	if err != nil || !st.Leader {
		return nil, nil
	}
	return lc, st
}

func statUint(m map[string]any, k string) uint64 {
	if f, ok := m[k].(float64); ok {
		return uint64(f)
	}
	return 0
}

// startLocalCluster runs n agents in this process on 127.0.0.1 with
// OS-assigned ports (and the built-in workers if asked), and waits until it
// is ready: one leader all agree on, dispatching, with every node's
// built-in pollers waiting on it (pollers that met the election back off
// before they poll again; measuring before they are back would count that).
// record starts writing a CPU profile or an execution trace of this
// process to path; the function it returns ends it and closes the file.
func record(path string, start func(io.Writer) error, stop func()) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := start(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		stop()
		f.Close()
	}, nil
}

// localProcs is the GOMAXPROCS a -local cluster of nodes runs with: the
// processors its nodes would have as that many agent processes, each with
// procs (0, leave it, when the GOMAXPROCS environment variable chose).
// In one process with only procs, a goroutine blocked in a system call
// (a node's WAL fsync, a socket write) holds its processor until the
// runtime takes it back, and each raft round trip's dozen wake-ups wait
// behind the other nodes' goroutines: on 2 CPUs, 6 processors instead of
// 2 halved chain3's p50 at 1,000/s and raised the raft ceiling by half
// (docs/performance-history.md, "The tenth series").
func localProcs(nodes, procs int, env string) int {
	if env != "" || nodes < 1 {
		return 0
	}
	return nodes * procs
}

func startLocalCluster(ctx context.Context, n int, builtinWorkers bool, logOut io.Writer) ([]string, func(), error) {
	dir, err := os.MkdirTemp("", "lockstep-bench-")
	if err != nil {
		return nil, nil, err
	}
	var agents []*agent.Agent
	var logger hclog.Logger
	shutdown := func() {
		logger.SetLevel(hclog.Off) // peers going away is expected now
		for _, a := range agents {
			a.Shutdown()
		}
		os.RemoveAll(dir)
	}
	logger = hclog.New(&hclog.LoggerOptions{Name: "bench", Level: hclog.Warn, Output: logOut})
	var addrs []string
	for i := 0; i < n; i++ {
		zero, expect, workers := 0, n, builtinWorkers
		c := &agent.Config{
			NodeName: fmt.Sprintf("bench%d", i+1), DataDir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			HTTPPort: &zero, RaftPort: &zero, GossipPort: &zero,
			BootstrapExpect: &expect, Worker: &workers, GossipLocal: true,
		}
		if i > 0 {
			c.Join = []string{agents[0].GossipAddr()}
		}
		a, err := agent.New(agent.DefaultConfig().Merge(c), logger.Named(c.NodeName))
		if err != nil {
			shutdown()
			return nil, nil, err
		}
		agents = append(agents, a)
		addrs = append(addrs, "http://"+a.HTTPAddr())
	}
	// Ready means every node names the same leader and that leader's
	// engine dispatches (its barrier passed): measuring from the first
	// election on would count the cluster's start-up in the latencies.
	ready := func() bool {
		var leader string
		for _, a := range addrs {
			cl, err := api.New(api.Config{Address: a})
			if err != nil {
				return false
			}
			l, err := cl.Leader(ctx)
			if err != nil || l.Node == "" || (leader != "" && l.Node != leader) {
				return false
			}
			leader = l.Node
		}
		for _, a := range agents {
			if a.NodeName() == leader {
				if !a.Engine.Enabled() {
					return false
				}
				return !builtinWorkers || a.Engine.WaitingPolls()["default"] >= n**agent.DefaultConfig().WorkerCount
			}
		}
		return false
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if ready() {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			shutdown()
			return nil, nil, errors.New("no leader within 30s")
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	fmt.Fprintf(logOut, "local cluster: %s\n", strings.Join(addrs, " "))
	return addrs, shutdown, nil
}
