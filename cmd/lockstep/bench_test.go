package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/agent/agenttest"
	"github.com/lockstep-io/lockstep/api"
	"github.com/lockstep-io/lockstep/internal/poll"
)

// TestBenchRunsEachWorkload runs every workload for a few instances on a
// real dev agent: each must register, complete every instance it starts
// and report no errors. Timing is reported by the bench, never asserted.
func TestBenchRunsEachWorkload(t *testing.T) {
	a := agenttest.Dev(t, true)
	for name := range benchWorkloads {
		t.Run(name, func(t *testing.T) {
			var progress bytes.Buffer
			res, err := bench(context.Background(), benchConfig{
				addresses: []string{"http://" + a.HTTPAddr()}, workload: name, instances: 6, concurrency: 3,
			}, &progress)
			if err != nil {
				t.Fatal(err)
			}
			if res.Started != 6 || res.Completed != 6 || res.Failed != 0 || len(res.Errors) != 0 {
				t.Fatalf("bench %s: %+v", name, res)
			}
			if res.Leader == nil || res.Leader.Applied == 0 || res.Leader.RSSBytes == 0 || res.Leader.CPUs != runtime.NumCPU() || res.Leader.GoMaxProcs != runtime.GOMAXPROCS(0) {
				t.Fatalf("leader side: %+v", res.Leader)
			}
			if res.LatencyMS["p50"] <= 0 || res.LatencyMS["max"] < res.LatencyMS["p99"] {
				t.Fatalf("latencies: %v", res.LatencyMS)
			}
			if res.Leader.DispatchMS["p99"] <= 0 || res.Leader.RaftApplyMS["p50"] <= 0 || res.Leader.RaftCommitMS == nil || res.Leader.BatchMean < 1 || res.Leader.HeapLiveBytes == 0 {
				t.Fatalf("server side: %+v", res.Leader)
			}
			var out bytes.Buffer
			printBench(&out, res)
			if !strings.Contains(out.String(), "completed   6 of 6") || !strings.Contains(out.String(), "errors      none") ||
				!strings.Contains(out.String(), "host        ") || !strings.Contains(out.String(), ", of which commit p50 ") {
				t.Fatalf("summary:\n%s", out.String())
			}
		})
	}
}

// The bench's own workers run the tasks through the HTTP protocol, in
// batches, with the built-in workers off; the raft workload commits empty
// commands.
func TestBenchWorkersAndRaftCeiling(t *testing.T) {
	a := agenttest.Dev(t, false)
	addr := []string{"http://" + a.HTTPAddr()}
	res, err := bench(context.Background(), benchConfig{addresses: addr, workload: "chain3", instances: 20, concurrency: 5, workers: 2, batch: 4, twoRequests: true}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != 20 || len(res.Errors) != 0 || res.Workers != 2 || res.Batch != 4 || !res.StartThenRead {
		t.Fatalf("with workers: %+v", res)
	}
	res, err = bench(context.Background(), benchConfig{addresses: addr, workload: "raft", instances: 50, concurrency: 5}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != 50 || len(res.Errors) != 0 || res.RaftIndexPerSec <= 0 || res.Leader.RaftApplyMS == nil {
		t.Fatalf("raft: %+v %+v", res, res.Leader)
	}
	// Open loop: every scheduled start is made, latency counts from the
	// schedule.
	res, err = bench(context.Background(), benchConfig{addresses: addr, workload: "chain3", instances: 30, concurrency: 4, rate: 500, workers: 2, batch: 4}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	printBench(&out, res)
	if res.Started != 30 || res.Completed != 30 || len(res.Errors) != 0 || !strings.Contains(out.String(), "500 starts/s offered") || !strings.Contains(out.String(), "(scheduled start to completion)") {
		t.Fatalf("open loop: %+v\n%s", res, out.String())
	}
}

// -retention sets the workload's retention: the summary says so and counts
// the instances in the state, and the leader purges the ended ones once
// their retention has passed.
func TestBenchRetention(t *testing.T) {
	a := agenttest.Dev(t, true)
	addr := "http://" + a.HTTPAddr()
	res, err := bench(context.Background(), benchConfig{addresses: []string{addr}, workload: "chain3", instances: 8, concurrency: 4, retention: 300 * time.Millisecond}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	printBench(&out, res)
	if res.Completed != 8 || res.RetentionSeconds != 0.3 || !strings.Contains(out.String(), ", retention 300ms") || !strings.Contains(out.String(), " instances in the state") {
		t.Fatalf("%+v\n%s", res, out.String())
	}
	if res.Leader == nil || res.Leader.Instances < 1 || res.Leader.Instances > 8 {
		t.Fatalf("instances in the state: %+v", res.Leader)
	}
	cl, err := api.New(api.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 20*time.Second, "the ended instances' purge", func() error {
		st, err := cl.Stats(context.Background())
		if err != nil {
			return err
		}
		if n := st.State["instances"]; n != 0 {
			return fmt.Errorf("%d instances in the state", n)
		}
		return nil
	})
}

// -fill runs chain3 instances before the measured run and keeps them: the
// measured run starts with them in the state, and the summary says so. A
// negative fill is refused before anything runs.
func TestBenchFill(t *testing.T) {
	a := agenttest.Dev(t, true)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"bench", "-address", "http://" + a.HTTPAddr(), "-fill", "12", "-workload", "timer", "-instances", "4", "-concurrency", "2", "-json"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var res benchResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	if res.Filled != 12 || res.FillPerSec <= 0 || res.Completed != 4 || res.Workload != "timer" {
		t.Fatalf("%+v", res)
	}
	if res.Leader == nil || res.Leader.Instances != 16 {
		t.Fatalf("instances in the state after the run: %+v", res.Leader)
	}
	var out bytes.Buffer
	printBench(&out, &res)
	if !strings.Contains(out.String(), ", after 12 chain3 instances filled the state (") {
		t.Fatalf("summary:\n%s", out.String())
	}
	stderr.Reset()
	if code := run([]string{"bench", "-address", "http://" + a.HTTPAddr(), "-fill", "-1"}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "-fill") {
		t.Fatalf("negative fill: exit %d: %s", code, stderr.String())
	}
}

// -stages reads the histories of completed instances and splits their
// latency: the start, each step in order, and the answer.
func TestBenchStages(t *testing.T) {
	a := agenttest.Dev(t, true)
	res, err := bench(context.Background(), benchConfig{addresses: []string{"http://" + a.HTTPAddr()}, workload: "chain3", instances: 12, concurrency: 3, stages: 5}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range res.Stages {
		names = append(names, s.Name)
		if s.Instances != 5 || s.P50MS < 0 || s.P99MS < s.P50MS {
			t.Fatalf("stage %+v", s)
		}
	}
	if strings.Join(names, ",") != "start,step a,step b,step c,answer" {
		t.Fatalf("stages %v", names)
	}
	var out bytes.Buffer
	printBench(&out, res)
	if !strings.Contains(out.String(), "  stages      from the histories of 5 instances") || !strings.Contains(out.String(), "step b     p50 ") {
		t.Fatalf("summary:\n%s", out.String())
	}
}

// -memprofile writes the heap (gzipped pprof) once the run is over.
func TestBenchProfilesAndTrace(t *testing.T) {
	a := agenttest.Dev(t, true)
	dir := t.TempDir()
	heap, cpu, tr := filepath.Join(dir, "heap.pprof"), filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "run.trace")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"bench", "-address", "http://" + a.HTTPAddr(), "-instances", "5", "-concurrency", "2", "-memprofile", heap, "-cpuprofile", cpu, "-trace", tr}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, path := range []string{heap, cpu} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < 100 || b[0] != 0x1f || b[1] != 0x8b {
			t.Fatalf("%s is not a gzipped profile: %d bytes", filepath.Base(path), len(b))
		}
	}
	// An execution trace starts with its header, "go 1.xx trace".
	if b, err := os.ReadFile(tr); err != nil || !bytes.HasPrefix(b, []byte("go 1.")) {
		t.Fatalf("not an execution trace (%v): %.20q", err, b)
	}
}

func TestBenchFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-workload", "nope"},
		{"-concurrency", "0"},
		{"-local", "-nodes", "0"},
		{"-batch", "0"},
		{"-retention", "-1s"},
		{"-local", "-address", "http://127.0.0.1:1"},
		{"-view", "steps"},
	} {
		var stderr bytes.Buffer
		if code := run(append([]string{"bench"}, args...), &bytes.Buffer{}, &stderr); code != 1 || !strings.Contains(stderr.String(), "lockstep bench:") {
			t.Errorf("%v: exit %d, %q", args, code, stderr.String())
		}
	}
}

// With the cluster in its process (-local), the bench splits the
// latencies between the instances during which a collection ended and
// the others; here collections are forced while it runs.
func TestBenchSplitsTheTailAtCollections(t *testing.T) {
	a := agenttest.Dev(t, true)
	stop := make(chan struct{})
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for {
			select {
			case <-stop:
				return
			default:
				runtime.GC()
			}
		}
	}()
	res, err := bench(context.Background(), benchConfig{
		addresses: []string{"http://" + a.HTTPAddr()}, local: true, workload: "chain3", instances: 20, concurrency: 4, view: "outcome",
	}, io.Discard)
	close(stop)
	<-collected
	if err != nil {
		t.Fatal(err)
	}
	if res.DuringGC == nil || res.OutsideGC == nil || int64(res.DuringGC.Instances+res.OutsideGC.Instances) != res.Completed || res.DuringGC.Instances == 0 || res.DuringGC.P99MS <= 0 {
		t.Fatalf("split: %+v / %+v of %d", res.DuringGC, res.OutsideGC, res.Completed)
	}
	var out bytes.Buffer
	printBench(&out, res)
	if !strings.Contains(out.String(), "a collection ended during") {
		t.Fatalf("summary:\n%s", out.String())
	}
}

// -out writes one CSV row per second: the counts so far and the p50 and
// p99 of the instances that completed in that second.
func TestBenchCSV(t *testing.T) {
	a := agenttest.Dev(t, true)
	path := filepath.Join(t.TempDir(), "bench.csv")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"bench", "-address", "http://" + a.HTTPAddr(), "-duration", "2500ms", "-rate", "40", "-concurrency", "8", "-out", path}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if lines[0] != "second,started,completed,failed,errors,p50_ms,p99_ms" || len(lines) < 3 {
		t.Fatalf("csv:\n%s", b)
	}
	measured := 0
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if len(f) != 7 {
			t.Fatalf("row %q", l)
		}
		p50, err1 := strconv.ParseFloat(f[5], 64)
		p99, err2 := strconv.ParseFloat(f[6], 64)
		if err1 != nil || err2 != nil || p99 < p50 {
			t.Fatalf("row %q", l)
		}
		if p50 > 0 {
			measured++
		}
	}
	if measured == 0 {
		t.Fatalf("no second has a latency:\n%s", b)
	}
}

func TestQuantile(t *testing.T) {
	if q := quantile(nil, 0.99); q != 0 {
		t.Fatalf("empty: %v", q)
	}
	lat := []time.Duration{5 * time.Millisecond, time.Millisecond, 3 * time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond}
	if q := quantile(lat, 0.5); q != 3 {
		t.Fatalf("p50 %v", q)
	}
	if q := quantile(lat, 1); q != 5 {
		t.Fatalf("max %v", q)
	}
}

func TestLocalProcs(t *testing.T) {
	for _, c := range []struct {
		nodes, procs int
		env          string
		want         int
	}{
		{3, 2, "", 6},  // the processors three agent processes would have
		{1, 2, "", 2},  // one node: what one agent has
		{5, 4, "", 20}, // scales with both
		{3, 2, "2", 0}, // $GOMAXPROCS chose: leave it
		{0, 2, "", 0},  // nonsense: leave it
	} {
		if got := localProcs(c.nodes, c.procs, c.env); got != c.want {
			t.Errorf("localProcs(%d, %d, %q) = %d, want %d", c.nodes, c.procs, c.env, got, c.want)
		}
	}
}
