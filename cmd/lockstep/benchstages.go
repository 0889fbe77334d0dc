package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/lockstep-io/lockstep/api"
)

// stageSample is a completed instance whose history -stages may read: its
// id, when its start was due and when the answer that showed it completed
// arrived, on the bench's clock.
type stageSample struct {
	id       string
	due, end time.Time
}

// benchStage is one part of the instances' runs, over those -stages read.
type benchStage struct {
	Name      string  `json:"name"`
	Instances int     `json:"instances"`
	P50MS     float64 `json:"p50_ms"`
	P90MS     float64 `json:"p90_ms"`
	P99MS     float64 `json:"p99_ms"`
}

// stagesOf reads the histories of up to n of the samples, spread evenly
// over the run, and splits each instance's latency at its milestones:
// "start", from the start's due time to instance_started; "step NAME", from
// the milestone before to the step's step_succeeded (for_each elements
// aside); and "answer", from instance_completed to the answer's arrival.
// Event times are on the clock of the leader that proposed them, the due
// time and the answer on the bench's: with -local one clock, against a
// remote cluster the first and last stages hold the clocks' skew too. An
// instance whose history cannot be read is left out.
func stagesOf(ctx context.Context, c *api.Client, samples []stageSample, n int) []benchStage {
	if n <= 0 || len(samples) == 0 {
		return nil
	}
	picked := samples
	if len(samples) > n {
		picked = make([]stageSample, n)
		for i := range picked {
			picked[i] = samples[i*len(samples)/n]
		}
	}
	var (
		mu    sync.Mutex
		order []string
		times = map[string][]time.Duration{}
	)
	add := func(name string, d time.Duration) {
		if _, ok := times[name]; !ok {
			order = append(order, name)
		}
		times[name] = append(times[name], d)
	}
	jobs := make(chan stageSample)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range jobs {
				events, err := c.History(ctx, s.id, 0)
				if err != nil {
					continue
				}
				type part struct {
					name string
					d    time.Duration
				}
				var parts []part
				var prev time.Time
				ended := false
				for _, e := range events {
					switch {
					case e.Type == "instance_started":
						parts = append(parts, part{"start", e.Time.Sub(s.due)})
						prev = e.Time
					case e.Type == "step_succeeded" && e.Element == "" && !prev.IsZero():
						parts = append(parts, part{"step " + e.Step, e.Time.Sub(prev)})
						prev = e.Time
					case e.Type == "instance_completed" && !prev.IsZero():
						parts = append(parts, part{"answer", s.end.Sub(e.Time)})
						ended = true
					}
				}
				if !ended {
					continue // not all of it here yet, or not completed
				}
				mu.Lock()
				for _, p := range parts {
					add(p.name, p.d)
				}
				mu.Unlock()
			}
		}()
	}
	for _, s := range picked {
		jobs <- s
	}
	close(jobs)
	wg.Wait()
	// "answer" last, whatever order the histories showed the names in.
	sort.SliceStable(order, func(i, j int) bool { return order[i] != "answer" && order[j] == "answer" })
	out := make([]benchStage, 0, len(order))
	for _, name := range order {
		d := times[name]
		out = append(out, benchStage{Name: name, Instances: len(d), P50MS: quantile(d, 0.5), P90MS: quantile(d, 0.9), P99MS: quantile(d, 0.99)})
	}
	return out
}

// printStages writes the stages block of the summary.
func printStages(w io.Writer, stages []benchStage) {
	if len(stages) == 0 {
		return
	}
	n := 0
	for _, s := range stages {
		n = max(n, s.Instances)
	}
	fmt.Fprintf(w, "  stages      from the histories of %d instances (event times on the leader's clock; start and answer on the bench's too):\n", n)
	for _, s := range stages {
		what := "from the stage before to its step_succeeded"
		switch s.Name {
		case "start":
			what = "the start due to instance_started"
		case "answer":
			what = "instance_completed to the answer"
		}
		fmt.Fprintf(w, "              %-10s p50 %.1fms  p90 %.1fms  p99 %.1fms (%s)\n", s.Name, s.P50MS, s.P90MS, s.P99MS, what)
	}
}
