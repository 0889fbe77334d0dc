// Package metrics holds one node's Prometheus metrics: a registry of its
// own (several nodes may share a process in tests and in `bench -local`),
// the collectors the cluster, engine and API record into, and a JSON
// summary of the histograms for GET /v1/stats. Every method is safe on a
// nil *Metrics, which records nothing.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/lockstep-io/lockstep/api"
)

// Metrics is one node's metrics.
type Metrics struct {
	Registry *prometheus.Registry

	// DispatchLatency is from a task becoming ready in its queue to its
	// lease being committed (leader only).
	DispatchLatency prometheus.Histogram
	// RaftApply is from proposing a command on the leader to its response,
	// by command type: commit through a quorum plus the local apply.
	RaftApply *prometheus.HistogramVec
	// RaftCommit is from the leader appending an entry to its log to this
	// node beginning to apply it: the quorum's writes, the commit, and any
	// wait behind the batch before it (every node; the leader's is its
	// commit latency).
	RaftCommit prometheus.Histogram
	// FSMBatch is the number of commands the FSM applied in one batch, and
	// FSMApply the time it took (every node).
	FSMBatch prometheus.Histogram
	FSMApply prometheus.Histogram
	// Leases counts the tasks leased by this node's engine; HTTP counts
	// requests by route and status class.
	Leases prometheus.Counter
	HTTP   *prometheus.CounterVec
}

// New returns a node's metrics, with the Go runtime and process collectors
// registered beside Lockstep's own.
func New() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	latency := prometheus.ExponentialBucketsRange(0.0001, 30, 24) // 100µs .. 30s
	m.DispatchLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "lockstep_dispatch_latency_seconds", Buckets: latency,
		Help: "From a task becoming ready in its queue to its lease being committed (leader).",
	})
	m.RaftApply = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "lockstep_raft_apply_seconds", Buckets: latency,
		Help: "From proposing a command on the leader to its response: quorum commit and local apply.",
	}, []string{"command"})
	m.RaftCommit = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "lockstep_raft_commit_seconds", Buckets: latency,
		Help: "From the leader appending an entry to its log to this node beginning to apply it: quorum writes, commit, and the wait behind earlier batches.",
	})
	m.FSMBatch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "lockstep_fsm_batch_commands", Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		Help: "Commands applied by the state machine in one raft batch.",
	})
	m.FSMApply = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "lockstep_fsm_batch_apply_seconds", Buckets: latency,
		Help: "Time the state machine took to apply one raft batch.",
	})
	m.Leases = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lockstep_tasks_leased_total", Help: "Tasks leased by this node's engine while it led.",
	})
	m.HTTP = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lockstep_http_requests_total", Help: "HTTP API requests by route and status class.",
	}, []string{"route", "code"})
	m.Registry.MustRegister(m.DispatchLatency, m.RaftApply, m.RaftCommit, m.FSMBatch, m.FSMApply, m.Leases, m.HTTP,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveDispatch records one task's dispatch latency.
func (m *Metrics) ObserveDispatch(seconds float64) {
	if m != nil {
		m.DispatchLatency.Observe(seconds)
		m.Leases.Inc()
	}
}

// ObserveRaftApply records one proposal's round trip.
func (m *Metrics) ObserveRaftApply(command string, seconds float64) {
	if m != nil {
		m.RaftApply.WithLabelValues(command).Observe(seconds)
	}
}

// ObserveCommit records one entry's time from the leader's append to this
// node's apply.
func (m *Metrics) ObserveCommit(seconds float64) {
	if m != nil {
		m.RaftCommit.Observe(seconds)
	}
}

// ObserveBatch records one FSM batch.
func (m *Metrics) ObserveBatch(commands int, seconds float64) {
	if m != nil {
		m.FSMBatch.Observe(float64(commands))
		m.FSMApply.Observe(seconds)
	}
}

// CountHTTP counts one request.
func (m *Metrics) CountHTTP(route string, status int) {
	if m != nil {
		m.HTTP.WithLabelValues(route, statusClass(status)).Inc()
	}
}

func statusClass(s int) string {
	switch {
	case s >= 500:
		return "5xx"
	case s >= 400:
		return "4xx"
	case s >= 300:
		return "3xx"
	default:
		return "2xx"
	}
}

// Histograms returns Lockstep's histograms by name (the raft apply one
// summed over command types), for GET /v1/stats.
func (m *Metrics) Histograms() map[string]api.Histogram {
	out := map[string]api.Histogram{}
	if m == nil {
		return out
	}
	families, err := m.Registry.Gather()
	if err != nil {
		return out
	}
	for _, f := range families {
		if f.GetType() != dto.MetricType_HISTOGRAM {
			continue
		}
		var h api.Histogram
		for _, metric := range f.GetMetric() {
			mh := metric.GetHistogram()
			h.Count += mh.GetSampleCount()
			h.Sum += mh.GetSampleSum()
			for i, b := range mh.GetBucket() {
				if i >= len(h.Buckets) {
					h.Buckets = append(h.Buckets, api.Bucket{LE: b.GetUpperBound()})
				}
				h.Buckets[i].Count += b.GetCumulativeCount()
			}
		}
		out[f.GetName()] = h
	}
	return out
}
