// Package httpapi is Lockstep's HTTP API. Every node serves it: reads are
// answered from the node's own state store, writes and worker polls that
// reach a follower are forwarded to the leader, and the caller cannot tell
// the difference.
package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/julienschmidt/httprouter"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lockstep-io/lockstep/cluster"
	"github.com/lockstep-io/lockstep/engine"
	"github.com/lockstep-io/lockstep/fsm"
	"github.com/lockstep-io/lockstep/internal/metrics"
)

// Cluster is what the API needs of the node's cluster membership.
type Cluster interface {
	Apply(ctx context.Context, cmd []byte) (any, error)
	IsLeader() bool
	Leader() (cluster.LeaderInfo, bool)
	LastContact() time.Duration
	Members() []cluster.Member
	Peers() ([]cluster.Peer, error)
	Stats() map[string]string
	ConsistentRead(ctx context.Context) error
	// LeaderChanged returns a channel closed at the next change of the
	// leader this node knows (cluster.Cluster.LeaderChanged).
	LeaderChanged() <-chan struct{}
}

// Dispatcher hands tasks to polling workers (the leader's engine).
type Dispatcher interface {
	Poll(ctx context.Context, req engine.PollRequest) ([]*fsm.Task, error)
	// WaitingPolls counts the polls waiting for tasks, by queue.
	WaitingPolls() map[string]int
	// ClaimPoll takes a waiting poll of a queue for a command that leases
	// to it itself (engine.Engine.ClaimPoll); AnyWaiting says whether one
	// might be there.
	ClaimPoll(queue string) (next *fsm.NextTasks, done func([]*fsm.Task), ok bool)
	AnyWaiting() bool
}

// Config configures a Server.
type Config struct {
	Logger     hclog.Logger
	NodeName   string
	Cluster    Cluster
	Dispatcher Dispatcher
	FSM        *fsm.FSM
	// Metrics, if set, is served at /v1/metrics (Prometheus) and its
	// histograms in /v1/stats; requests are counted by route.
	Metrics *metrics.Metrics
	// Now is the proposer's clock, stamped into commands.
	Now func() time.Time
	// LeaderHold is how long a request that needs the leader waits for
	// one when none is known or the known one cannot be reached (an
	// election under way) before it is answered 503 no_leader
	// (DefaultLeaderHold when 0).
	LeaderHold time.Duration
}

// DefaultLeaderHold is how long a request waits for a leader by default:
// a few election rounds (Consul holds RPCs 7 s, Nomad 5 s).
const DefaultLeaderHold = 7 * time.Second

// Limits on request bodies.
const (
	maxWorkflowBody = 1 << 20
	maxJSONBody     = 4 << 20
)

// Server serves the v1 API.
type Server struct {
	cfg     Config
	logger  hclog.Logger
	router  *httprouter.Router
	forward *http.Client
	// batched sends the starts and signals this node forwards in batches.
	batched *forwarder
}

// New builds the API's routes.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.LeaderHold == 0 {
		cfg.LeaderHold = DefaultLeaderHold
	}
	s := &Server{
		cfg:    cfg,
		logger: cfg.Logger.Named("http"),
		router: httprouter.New(),
		// Forwarded requests to the leader are as many as this node's
		// clients have in flight; closing idle connections beyond a small
		// pool would dial again at the next burst.
		forward: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, IdleConnTimeout: 90 * time.Second}},
	}
	s.batched = &forwarder{s: s}
	s.routes()
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// route kinds: reads are answered locally; writes and polls run on the
// leader and are forwarded there from followers.
const (
	read = iota
	write
	// instanceRead is a read of one instance: a blocking query on it waits
	// for that instance to change, not for any change.
	instanceRead
)

type handlerFunc func(r *http.Request, ps httprouter.Params, body []byte) (any, error)

// response lets a handler choose a status other than 200.
type response struct {
	status int
	body   any
}

func (s *Server) routes() {
	r := s.router
	r.NotFound = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		s.writeError(w, req, &Error{Status: 404, Code: "not_found", Message: "no such endpoint: " + req.Method + " " + req.URL.Path})
	})
	r.MethodNotAllowed = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		s.writeError(w, req, &Error{Status: 405, Code: "method_not_allowed", Message: req.Method + " is not allowed on " + req.URL.Path})
	})
	r.PanicHandler = func(w http.ResponseWriter, req *http.Request, v any) {
		s.logger.Error("handler panic", "path", req.URL.Path, "panic", v)
		s.writeError(w, req, &Error{Status: 500, Code: "internal", Message: "internal error"})
	}

	for _, rt := range s.table() {
		r.Handle(rt.Method, rt.Path, s.count(rt.Method+" "+rt.Path, s.wrap(rt.kind, rt.limit, rt.handler)))
	}
	if s.cfg.Metrics != nil {
		// Prometheus text, not the JSON envelope: outside the route table.
		r.Handler("GET", "/v1/metrics", promhttp.HandlerFor(s.cfg.Metrics.Registry, promhttp.HandlerOpts{}))
	}
}

// count counts each request by route and status class.
func (s *Server) count(route string, h httprouter.Handle) httprouter.Handle {
	if s.cfg.Metrics == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h(sw, r, ps)
		s.cfg.Metrics.CountHTTP(route, sw.status)
	}
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Flush passes through, for forwarded long polls that stream.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Route is one endpoint of the API.
type Route struct {
	Method, Path string
	kind         int
	limit        int64
	handler      handlerFunc
}

// Routes lists every endpoint, for the OpenAPI document's test: the
// table, and /v1/metrics (served when Config.Metrics is set, as the agent
// always sets it).
func (s *Server) Routes() []Route {
	return append(s.table(), Route{Method: "GET", Path: "/v1/metrics"})
}

func (s *Server) table() []Route {
	return []Route{
		{"POST", "/v1/workflows", write, maxWorkflowBody, s.registerWorkflow},
		{"GET", "/v1/workflows", read, 0, s.listWorkflows},
		{"GET", "/v1/workflows/:name", read, 0, s.getWorkflow},
		// httprouter cannot hold /v1/workflows/validate beside
		// /v1/workflows/:name, so "validate" is a name the handler reserves
		// (it is never a workflow's: names are checked at registration).
		{"POST", "/v1/workflows/:name", read, maxWorkflowBody, s.postWorkflowAction},
		{"POST", "/v1/workflows/:name/instances", write, maxJSONBody, s.startInstance},

		{"GET", "/v1/instances", read, 0, s.listInstances},
		{"GET", "/v1/instances/:id", instanceRead, 0, s.getInstance},
		{"GET", "/v1/instances/:id/history", read, 0, s.instanceHistory},
		{"GET", "/v1/instances/:id/steps/:step", read, 0, s.instanceStep},
		{"GET", "/v1/instances/:id/variables", read, 0, s.instanceVariables},
		{"GET", "/v1/instances/:id/replay", read, 0, s.replayInstance},
		{"POST", "/v1/instances/:id/terminate", write, maxJSONBody, s.terminateInstance},
		{"POST", "/v1/instances/:id/cancel", write, maxJSONBody, s.cancelInstance},
		{"POST", "/v1/instances/:id/suspend", write, maxJSONBody, s.suspendInstance},
		{"POST", "/v1/instances/:id/resume", write, maxJSONBody, s.resumeInstance},
		{"POST", "/v1/instances/:id/retry", write, maxJSONBody, s.retryInstance},
		{"POST", "/v1/instances/:id/steps/:step/:action", write, maxJSONBody, s.overrideStep},
		{"POST", "/v1/instances/:id/signals/:name", write, maxJSONBody, s.signalInstance},

		{"POST", "/v1/queues/:queue/poll", write, maxJSONBody, s.poll},
		{"GET", "/v1/queues", read, 0, s.listQueues},
		{"POST", "/v1/tasks/:id/complete", write, maxJSONBody, s.completeTask},
		{"POST", "/v1/tasks/:id/fail", write, maxJSONBody, s.failTask},
		{"POST", "/v1/tasks/:id/heartbeat", write, maxJSONBody, s.heartbeatTask},
		{"GET", "/v1/tasks/:id", read, 0, s.getTask},
		// httprouter cannot hold /v1/tasks/complete beside
		// /v1/tasks/:id/complete, so "complete" is an id the handler
		// reserves (task ids are "t" and a number): the batch of results
		// under the name it is looked for by, and as /v1/task-results.
		{"POST", "/v1/tasks/:id", write, maxJSONBody, s.postTaskAction},
		{"POST", "/v1/task-results", write, maxJSONBody, s.taskResults},

		{"GET", "/v1/triggers", read, 0, s.listTriggers},
		{"POST", "/v1/triggers/:id/:action", write, maxJSONBody, s.triggerAction},
		{"POST", "/v1/webhooks/:workflow/:trigger", write, maxWorkflowBody, s.webhook},
		{"GET", "/v1/secrets", read, 0, s.listSecrets},
		{"PUT", "/v1/secrets/:name", write, maxJSONBody, s.putSecret},
		{"DELETE", "/v1/secrets/:name", write, 0, s.deleteSecret},

		{"GET", "/v1/services", read, 0, s.listServices},
		{"GET", "/v1/services/:name", read, 0, s.getService},
		{"POST", "/v1/services/:name/breaker", write, maxJSONBody, s.setBreaker},

		{"POST", "/v1/operator/raft/noop", write, maxJSONBody, s.raftNoop},
		{"POST", "/v1/internal/forward", write, maxForwardBatchBody, s.internalForward},
		{"GET", "/v1/status/leader", read, 0, s.leader},
		{"GET", "/v1/status/peers", read, 0, s.peers},
		{"GET", "/v1/stats", read, 0, s.stats},
		{"GET", "/v1/members", read, 0, s.members},
		{"GET", "/v1/health", read, 0, s.health},
		{"GET", "/v1/openapi.yaml", read, 0, s.openAPI},
	}
}

// wrap is the one place requests become responses: it bounds and buffers
// the body, runs the handler, forwards to the leader when this node cannot
// serve a write, and writes JSON or the error envelope with meta headers.
func (s *Server) wrap(kind int, limit int64, h handlerFunc) httprouter.Handle {
	return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		var body []byte
		if limit > 0 {
			b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
			if err != nil {
				var tooBig *http.MaxBytesError
				if errors.As(err, &tooBig) {
					s.writeError(w, r, &Error{Status: 413, Code: "too_large", Message: "request body exceeds " + strconv.FormatInt(limit, 10) + " bytes"})
					return
				}
				s.writeError(w, r, &Error{Status: 400, Code: "bad_request", Message: "reading body: " + err.Error()})
				return
			}
			body = b
		}
		switch kind {
		case read:
			if err := s.blockIfAsked(r); err != nil {
				s.writeError(w, r, err)
				return
			}
		case instanceRead:
			// A bad view is refused before the read blocks, not after.
			if _, err := viewParam(r); err != nil {
				s.writeError(w, r, err)
				return
			}
			id := ps.ByName("id")
			// ?until=ended waits for the instance's end rather than any
			// change: one request instead of one per transition.
			untilEnded := r.URL.Query().Get("until") == "ended"
			if err := s.blockUntil(r, id, untilEnded, func(tx *fsm.Txn, min uint64) bool {
				if found, ended, modified := tx.InstanceVersion(id); found {
					if untilEnded {
						return ended
					}
					return modified > min
				}
				return false // not here yet (a follower catching up): wait
			}); err != nil {
				s.writeError(w, r, err)
				return
			}
		}
		if kind == write {
			if key := r.Header.Get(idempotencyHeader); key != "" {
				if len(key) > 128 || strings.ContainsFunc(key, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
					s.writeError(w, r, &Error{Status: 400, Code: "bad_request", Message: idempotencyHeader + " must be 1 to 128 printable ASCII characters"})
					return
				}
				r = r.WithContext(context.WithValue(r.Context(), idempotencyCtxKey{}, idempotency{key: key, fingerprint: fingerprint(r, body)}))
			}
		}
		serve := func() (any, error) { return h(r, ps, body) }
		if kind != write && consistent(r) {
			// A linearizable read: the leader answers it after confirming
			// its leadership; a follower forwards it there.
			serve = func() (any, error) {
				if err := s.cfg.Cluster.ConsistentRead(r.Context()); err != nil {
					return nil, err
				}
				return h(r, ps, body)
			}
		}
		out, err := serve()
		if err != nil && (kind == write || consistent(r)) && elsewhere(err) {
			s.serveOnLeader(w, r, body, serve)
			return
		}
		s.answer(w, r, out, err)
	}
}

// answer writes a handler's result: its error, or out as JSON.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, out any, err error) {
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, r, out)
}

func (s *Server) setMeta(w http.ResponseWriter) {
	h := w.Header()
	h.Set("X-Lockstep-Index", strconv.FormatUint(s.index(), 10))
	_, known := s.cfg.Cluster.Leader()
	h.Set("X-Lockstep-KnownLeader", strconv.FormatBool(known))
	lc := s.cfg.Cluster.LastContact()
	if lc >= 0 {
		h.Set("X-Lockstep-LastContact", strconv.FormatInt(lc.Milliseconds(), 10))
	}
}

// index is the raft index of the node's state; never 0, so a blocking
// query built on it always has something to wait past.
func (s *Server) index() uint64 {
	if i := s.cfg.FSM.State().Read().LatestIndex(); i > 0 {
		return i
	}
	return 1
}

func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, out any) {
	status := http.StatusOK
	if resp, ok := out.(*response); ok {
		status, out = resp.status, resp.body
	}
	s.setMeta(w)
	if raw, ok := out.(*rawBody); ok {
		w.Header().Set("Content-Type", raw.contentType)
		w.WriteHeader(status)
		_, _ = w.Write(raw.data)
		return
	}
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(out)
}

// blockIfAsked implements blocking queries: with ?index=N a read waits
// until the state passes N or ?wait (default 30s, at most 5m) elapses.
func (s *Server) blockIfAsked(r *http.Request) error {
	return s.blockUntil(r, "", false, func(tx *fsm.Txn, min uint64) bool { return tx.LatestIndex() > min })
}

// blockUntil waits, for a read with ?index=N, until ready says the state it
// reads has moved past N (or ?wait elapses). A reader of one instance names
// it, and wakes only when a command writes that instance (or a restore
// replaces the state), not at every command; with untilEnded, only when a
// command ends or deletes it.
func (s *Server) blockUntil(r *http.Request, instance string, untilEnded bool, ready func(tx *fsm.Txn, min uint64) bool) error {
	q := r.URL.Query()
	raw := q.Get("index")
	if raw == "" {
		return nil
	}
	min, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return &Error{Status: 400, Code: "bad_request", Message: "index must be a non-negative integer"}
	}
	wait, err := waitParam(r, 30*time.Second)
	if err != nil {
		return err
	}
	s.waitFor(r.Context(), instance, untilEnded, wait, func(tx *fsm.Txn) bool { return ready(tx, min) })
	return nil
}

// maxWait bounds every ?wait: a request held longer would outlive most
// clients' and proxies' timeouts.
const maxWait = 5 * time.Minute

// waitParam reads ?wait (a duration such as 10s; def when absent), at most
// maxWait.
func waitParam(r *http.Request, def time.Duration) (time.Duration, error) {
	wait := def
	if ws := r.URL.Query().Get("wait"); ws != "" {
		var err error
		if wait, err = time.ParseDuration(ws); err != nil || wait < 0 {
			return 0, &Error{Status: 400, Code: "bad_request", Message: "wait must be a duration such as 10s"}
		}
	}
	return min(wait, maxWait), nil
}

// waitFor returns once ready holds for this node's state, wait elapses or
// ctx ends. With an instance it wakes only when a command writes that
// instance (with untilEnded, ends or deletes it) or a restore replaces the
// state; without, at every applied batch.
func (s *Server) waitFor(ctx context.Context, instance string, untilEnded bool, wait time.Duration, ready func(tx *fsm.Txn) bool) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		state := s.cfg.FSM.State()
		var changed <-chan struct{}
		stop := func() {}
		switch {
		case instance != "" && untilEnded:
			changed, stop = state.WatchInstanceEnd(instance)
		case instance != "":
			changed, stop = state.WatchInstance(instance)
		default:
			changed = state.Changed()
		}
		if ready(state.Read()) {
			stop()
			return
		}
		select {
		case <-changed:
			stop()
		case <-timer.C:
			stop()
			return
		case <-ctx.Done():
			stop()
			return
		}
	}
}

// apply stamps nothing itself: handlers build commands with the time and
// ids settled. It proposes and unwraps business errors.
func (s *Server) apply(r *http.Request, t fsm.MessageType, msg any) (any, error) {
	cmd, err := fsm.Encode(t, msg)
	if err != nil {
		return nil, err
	}
	if idem, ok := r.Context().Value(idempotencyCtxKey{}).(idempotency); ok {
		if cmd, err = fsm.Encode(fsm.IdempotentType, &fsm.IdempotentRequest{Header: s.header(), Key: idem.key, Fingerprint: idem.fingerprint, Command: cmd}); err != nil {
			return nil, err
		}
	}
	res, err := s.cfg.Cluster.Apply(r.Context(), cmd)
	if err != nil {
		return nil, err
	}
	if ferr, ok := res.(*fsm.Error); ok {
		return nil, ferr
	}
	return res, nil
}

func (s *Server) header() fsm.Header { return fsm.Header{Time: s.cfg.Now().UTC()} }

func decodeJSON(body []byte, out any) error {
	if len(body) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytesReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		return &Error{Status: 400, Code: "bad_request", Message: "invalid JSON body: " + err.Error()}
	}
	if dec.More() {
		return &Error{Status: 400, Code: "bad_request", Message: "invalid JSON body: trailing data after the object"}
	}
	return nil
}

// idempotencyHeader names the header that makes any write safe to retry:
// the first answer to a key is stored and returned to every repeat.
const idempotencyHeader = "Idempotency-Key"

type idempotencyCtxKey struct{}

type idempotency struct{ key, fingerprint string }

// fingerprint identifies the request a key was first used for: method,
// path and body, before any id is minted or time stamped.
func fingerprint(r *http.Request, body []byte) string {
	h := sha256.New()
	h.Write([]byte(r.Method + " " + r.URL.Path + "\n"))
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// consistent reports whether a read asks to be linearizable (?consistent).
func consistent(r *http.Request) bool {
	_, ok := r.URL.Query()["consistent"]
	return ok
}
