package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/julienschmidt/httprouter"

	"github.com/lockstep-io/lockstep/cluster"
	"github.com/lockstep-io/lockstep/engine"
	"github.com/lockstep-io/lockstep/fsm"
	"github.com/lockstep-io/lockstep/hcl"
)

// StartRequest is the body of POST /v1/workflows/:name/instances.
type StartRequest struct {
	Input   json.RawMessage `json:"input"`
	ID      string          `json:"id"`
	Version uint64          `json:"version"`
}

// validInstanceID keeps client-chosen ids safe in URLs, logs and task keys.
func validInstanceID(id string) bool {
	if id == "" || len(id) > 128 || !utf8.ValidString(id) {
		return false
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '-' || r == '_' || r == '.' || r == ':':
		default:
			return false
		}
	}
	return true
}

func newInstanceID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// POST /v1/workflows/:name/instances
func (s *Server) startInstance(r *http.Request, ps httprouter.Params, body []byte) (any, error) {
	var req StartRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	if req.ID == "" {
		// Minted here, before raft: Apply never invents ids.
		req.ID = newInstanceID()
	} else if !validInstanceID(req.ID) {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "id must be 1 to 128 characters of letters, digits, '-', '_', '.' or ':'"}
	}
	if len(req.Input) > 0 && !json.Valid(req.Input) {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "input is not valid JSON"}
	}
	// ?wait=D answers when the instance has ended (or D has passed), with
	// the instance: one request to run a workflow to its end.
	_, waitAsked := r.URL.Query()["wait"]
	wait, err := waitParam(r, 30*time.Second)
	if err != nil {
		return nil, err
	}
	view, err := viewParam(r)
	if err != nil {
		return nil, err
	}
	name := ps.ByName("name")
	// Whether the workflow exists is decided by the FSM at apply time, never
	// from this node's state: a new leader may not have applied every
	// committed entry yet, and would answer a false 404.
	msg := &fsm.StartInstanceRequest{Header: s.header(), ID: req.ID, Workflow: name, Version: req.Version, Input: req.Input}
	// On the leader, a start whose first step is a task for a worker
	// already waiting leases it in the start's own raft entry.
	var claimed func([]*fsm.Task)
	if queue, ok := s.firstQueue(r, name, req.Version); ok {
		if next, done, ok := s.cfg.Dispatcher.ClaimPoll(queue); ok {
			msg.Next, claimed = next, done
		}
	}
	res, err := s.apply(r, msg.Type(), msg)
	if claimed != nil {
		var leased []*fsm.Task
		if sr, ok := res.(*fsm.StartInstanceResponse); ok && err == nil {
			leased = sr.Leased
			committed := s.cfg.Now()
			for _, t := range leased {
				s.cfg.Metrics.ObserveDispatch(committed.Sub(t.ReadyAt).Seconds())
			}
		}
		claimed(leased)
	}
	if waitAsked && err != nil && r.Header.Get(forwardedHeader) == "" && (errors.Is(err, cluster.ErrNotLeader) || errors.Is(err, engine.ErrNotLeader)) {
		return s.forwardStartThenWait(r, body, wait, view)
	}
	if err != nil {
		return nil, err
	}
	sr := res.(*fsm.StartInstanceResponse)
	status := http.StatusOK
	if sr.Created {
		status = http.StatusCreated
	}
	out := map[string]any{"id": sr.ID, "version": sr.Version, "created": sr.Created}
	if waitAsked {
		out["instance"] = view(s.waitEnded(r.Context(), sr.ID, 0, wait))
	}
	return &response{status, out}, nil
}

// waitEnded waits, up to wait, until this node holds the instance as of
// raft index min and it has ended, and returns it as it is then (nil if
// it is not here yet).
func (s *Server) waitEnded(ctx context.Context, id string, min uint64, wait time.Duration) *fsm.Instance {
	deadline := time.Now().Add(wait)
	// First this node's state up to min (any applied batch may bring it),
	// then the instance's end (only a command ending it wakes the wait).
	s.waitFor(ctx, "", false, wait, func(tx *fsm.Txn) bool { return tx.LatestIndex() >= min })
	s.waitFor(ctx, id, true, time.Until(deadline), func(tx *fsm.Txn) bool {
		_, ended, _ := tx.InstanceVersion(id)
		return ended
	})
	tx := s.cfg.FSM.State().Read()
	if tx.LatestIndex() < min {
		return nil
	}
	return tx.Instance(id)
}

// forwardStartThenWait serves a start with ?wait on a follower: the start
// goes to the leader without the wait, and this node waits for the end on
// its own state, so that the waiting (and the answer with the whole
// instance) is spread over the nodes the clients ask rather than all held
// by the leader. An answer other than a success is passed back as it came.
func (s *Server) forwardStartThenWait(r *http.Request, body []byte, wait time.Duration, view instanceView) (any, error) {
	u := *r.URL
	q := u.Query()
	q.Del("wait")
	u.RawQuery = q.Encode()
	status, header, data, err := s.batched.forward(r, u.RequestURI(), body)
	if err != nil {
		return nil, err
	}
	if status/100 != 2 {
		return &response{status, &rawBody{contentType: header.Get("Content-Type"), data: data}}, nil
	}
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, &Error{Status: http.StatusBadGateway, Code: "bad_gateway", Message: "the leader's answer to a forwarded start: " + err.Error()}
	}
	id, _ := out["id"].(string)
	// The leader's index when it answered: at or past the start's entry.
	index, _ := strconv.ParseUint(header.Get("X-Lockstep-Index"), 10, 64)
	out["instance"] = view(s.waitEnded(r.Context(), id, index, wait))
	return &response{status, out}, nil
}

// firstQueue is the queue of the first task a start of the workflow
// schedules, read from this node's state, when this node leads, a poll is
// waiting, and the start may lease it at once: not for idempotent
// requests, whose stored answer a repeat would get again.
func (s *Server) firstQueue(r *http.Request, name string, version uint64) (string, bool) {
	if s.cfg.Dispatcher == nil || !s.cfg.Cluster.IsLeader() || !s.cfg.Dispatcher.AnyWaiting() {
		return "", false
	}
	if _, idem := r.Context().Value(idempotencyCtxKey{}).(idempotency); idem {
		return "", false
	}
	tx := s.cfg.FSM.State().Read()
	wv := tx.LatestWorkflow(name)
	if version != 0 {
		wv = tx.WorkflowVersion(name, version)
	}
	if wv == nil {
		return "", false
	}
	wf, err := s.cfg.FSM.Workflow(wv)
	if err != nil {
		return "", false
	}
	for _, st := range wf.Steps {
		if len(st.Deps) == 0 && st.Activity != "" && st.When == nil {
			return st.Queue, true
		}
	}
	return "", false
}

// GET /v1/instances/:id
func (s *Server) getInstance(r *http.Request, ps httprouter.Params, _ []byte) (any, error) {
	view, err := viewParam(r)
	if err != nil {
		return nil, err
	}
	inst := s.cfg.FSM.State().Read().Instance(ps.ByName("id"))
	if inst == nil {
		return nil, &Error{Status: 404, Code: "not_found", Message: "instance " + strconv.Quote(ps.ByName("id")) + " not found"}
	}
	return view(inst), nil
}

// instanceView renders an instance as ?view= asks; nil stays null.
type instanceView func(*fsm.Instance) any

// instanceOutcome is an instance under ?view=outcome: how it ended (or
// where it is), without its input, steps and task ids. A client that
// waits for the end of what it started wants this much, as Temporal's
// result of a workflow run; for chain3 it is a quarter of the whole.
type instanceOutcome struct {
	ID          string             `json:"id"`
	Workflow    string             `json:"workflow"`
	Version     uint64             `json:"version"`
	Status      string             `json:"status"`
	Output      json.RawMessage    `json:"output,omitempty"`
	Error       *fsm.InstanceError `json:"error,omitempty"`
	CreatedAt   time.Time          `json:"created_at"`
	UpdatedAt   time.Time          `json:"updated_at"`
	EndedAt     time.Time          `json:"ended_at,omitzero"`
	ModifyIndex uint64             `json:"modify_index"`
}

// viewParam reads ?view=: absent or "full" for the whole instance,
// "outcome" for instanceOutcome.
func viewParam(r *http.Request) (instanceView, error) {
	switch v := r.URL.Query().Get("view"); v {
	case "", "full":
		return func(inst *fsm.Instance) any {
			if inst == nil {
				return nil
			}
			return inst
		}, nil
	case "outcome":
		return func(inst *fsm.Instance) any {
			if inst == nil {
				return nil
			}
			return &instanceOutcome{ID: inst.ID, Workflow: inst.Workflow, Version: inst.Version, Status: inst.Status,
				Output: inst.Output, Error: inst.Error, CreatedAt: inst.CreatedAt, UpdatedAt: inst.UpdatedAt,
				EndedAt: inst.EndedAt, ModifyIndex: inst.ModifyIndex}
		}, nil
	default:
		return nil, &Error{Status: 400, Code: "bad_request", Message: "view must be full or outcome, got " + strconv.Quote(v)}
	}
}

type instanceSummary struct {
	ID        string `json:"id"`
	Workflow  string `json:"workflow"`
	Version   uint64 `json:"version"`
	Status    string `json:"status"`
	CreatedAt string `json:"created_at"`
}

// GET /v1/instances?workflow=&page_size=&next_token=
func (s *Server) listInstances(r *http.Request, _ httprouter.Params, _ []byte) (any, error) {
	q := r.URL.Query()
	size := 100
	if v := q.Get("page_size"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return nil, &Error{Status: 400, Code: "bad_request", Message: "page_size must be between 1 and 1000"}
		}
		size = n
	}
	insts := s.cfg.FSM.State().Read().Instances(q.Get("workflow"), q.Get("next_token"), size+1)
	out := make([]instanceSummary, 0, len(insts))
	next := ""
	for i, inst := range insts {
		if i == size {
			next = insts[i-1].ID
			break
		}
		out = append(out, instanceSummary{ID: inst.ID, Workflow: inst.Workflow, Version: inst.Version, Status: inst.Status, CreatedAt: inst.CreatedAt.Format("2006-01-02T15:04:05.000Z07:00")})
	}
	return map[string]any{"instances": out, "next_token": next}, nil
}

// TerminateRequest is the body of POST /v1/instances/:id/terminate.
type TerminateRequest struct {
	Reason string `json:"reason"`
}

// POST /v1/instances/:id/terminate — end at once, no compensation.
func (s *Server) terminateInstance(r *http.Request, ps httprouter.Params, body []byte) (any, error) {
	var req TerminateRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	if len(req.Reason) > 4096 {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "reason is limited to 4096 bytes"}
	}
	return s.apply(r, fsm.TerminateInstanceType, &fsm.TerminateInstanceRequest{Header: s.header(), ID: ps.ByName("id"), Reason: req.Reason})
}

// SignalRequest is the body of POST /v1/instances/:id/signals/:name.
type SignalRequest struct {
	Payload   json.RawMessage `json:"payload"`
	RequestID string          `json:"request_id"`
}

// POST /v1/instances/:id/signals/:name — deliver to a waiting step, or
// buffer until one waits. A repeated request_id is accepted once.
func (s *Server) signalInstance(r *http.Request, ps httprouter.Params, body []byte) (any, error) {
	var req SignalRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	name := ps.ByName("name")
	if !hcl.ValidName(name) {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "invalid signal name " + strconv.Quote(name) + ": use letters, digits, '_' or '-', starting with a letter"}
	}
	if len(req.RequestID) > 128 {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "request_id is limited to 128 characters"}
	}
	if len(req.Payload) > 0 && !json.Valid(req.Payload) {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "payload is not valid JSON"}
	}
	return s.apply(r, fsm.SignalInstanceType, &fsm.SignalInstanceRequest{Header: s.header(), ID: ps.ByName("id"), Name: name, Payload: req.Payload, RequestID: req.RequestID})
}

func (s *Server) instanceOr404(id string) (*fsm.Instance, *fsm.Txn, error) {
	tx := s.cfg.FSM.State().Read()
	inst := tx.Instance(id)
	if inst == nil {
		return nil, nil, &Error{Status: 404, Code: "not_found", Message: "instance " + strconv.Quote(id) + " not found"}
	}
	return inst, tx, nil
}

// GET /v1/instances/:id/history?after=SEQ&limit=N — events in order; with
// ?index=&wait= it blocks like any read (follow an instance live).
func (s *Server) instanceHistory(r *http.Request, ps httprouter.Params, _ []byte) (any, error) {
	_, tx, err := s.instanceOr404(ps.ByName("id"))
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	var after uint64
	if v := q.Get("after"); v != "" {
		if after, err = strconv.ParseUint(v, 10, 64); err != nil {
			return nil, &Error{Status: 400, Code: "bad_request", Message: "after must be an event sequence number"}
		}
	}
	limit := 1000
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 10000 {
			return nil, &Error{Status: 400, Code: "bad_request", Message: "limit must be between 1 and 10000"}
		}
	}
	events := tx.History(ps.ByName("id"), after, limit)
	last := after
	if n := len(events); n > 0 {
		last = events[n-1].Seq
	}
	return map[string]any{"events": events, "last": last}, nil
}

// GET /v1/instances/:id/steps/:step — the step's state and every event of
// it (each attempt: leased to whom, when, how it ended).
func (s *Server) instanceStep(_ *http.Request, ps httprouter.Params, _ []byte) (any, error) {
	inst, tx, err := s.instanceOr404(ps.ByName("id"))
	if err != nil {
		return nil, err
	}
	name := ps.ByName("step")
	st, ok := inst.Steps[name]
	if !ok {
		return nil, &Error{Status: 404, Code: "not_found", Message: "instance " + strconv.Quote(inst.ID) + " has no step " + strconv.Quote(name)}
	}
	events := []*fsm.Event{}
	for _, e := range tx.History(inst.ID, 0, 0) {
		if e.Step == name {
			events = append(events, e)
		}
	}
	return map[string]any{"step": name, "state": st, "events": events}, nil
}

// GET /v1/instances/:id/variables — the input and every step's output.
func (s *Server) instanceVariables(_ *http.Request, ps httprouter.Params, _ []byte) (any, error) {
	inst, _, err := s.instanceOr404(ps.ByName("id"))
	if err != nil {
		return nil, err
	}
	outputs := map[string]json.RawMessage{}
	for name, st := range inst.Steps {
		if len(st.Output) > 0 {
			outputs[name] = st.Output
		}
	}
	return map[string]any{"input": inst.Input, "steps": outputs}, nil
}

// GET /v1/instances/:id/replay[?version=N] — re-derive the instance from
// its history, against its own version or another, on this node.
func (s *Server) replayInstance(r *http.Request, ps httprouter.Params, _ []byte) (any, error) {
	var version uint64
	if v := r.URL.Query().Get("version"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			return nil, &Error{Status: 400, Code: "bad_request", Message: "version must be a positive integer"}
		}
		version = n
	}
	return s.cfg.FSM.Replay(s.cfg.FSM.State().Read(), ps.ByName("id"), version)
}

// POST /v1/instances/:id/cancel — stop, then undo the succeeded steps.
func (s *Server) cancelInstance(r *http.Request, ps httprouter.Params, body []byte) (any, error) {
	var req TerminateRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	if len(req.Reason) > 4096 {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "reason is limited to 4096 bytes"}
	}
	return s.apply(r, fsm.CancelInstanceType, &fsm.CancelInstanceRequest{Header: s.header(), ID: ps.ByName("id"), Reason: req.Reason})
}

// POST /v1/instances/:id/suspend — nothing dispatched, no timer takes effect.
func (s *Server) suspendInstance(r *http.Request, ps httprouter.Params, body []byte) (any, error) {
	return s.pauseOrResume(r, ps, body, fsm.SuspendInstanceType)
}

// POST /v1/instances/:id/resume — what came due meanwhile takes effect now.
func (s *Server) resumeInstance(r *http.Request, ps httprouter.Params, body []byte) (any, error) {
	return s.pauseOrResume(r, ps, body, fsm.ResumeInstanceType)
}

func (s *Server) pauseOrResume(r *http.Request, ps httprouter.Params, body []byte, t fsm.MessageType) (any, error) {
	var req TerminateRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	if len(req.Reason) > 4096 {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "reason is limited to 4096 bytes"}
	}
	return s.apply(r, t, &fsm.SuspendInstanceRequest{Header: s.header(), ID: ps.ByName("id"), Reason: req.Reason})
}

// RetryRequest is the body of POST /v1/instances/:id/retry.
type RetryRequest struct {
	Step   string `json:"step"`
	Reason string `json:"reason"`
}

// POST /v1/instances/:id/retry — a failed instance runs again, keeping its
// succeeded steps; with a step, that step and what follows it run again.
func (s *Server) retryInstance(r *http.Request, ps httprouter.Params, body []byte) (any, error) {
	var req RetryRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	return s.apply(r, fsm.RetryInstanceType, &fsm.RetryInstanceRequest{Header: s.header(), ID: ps.ByName("id"), Step: req.Step, Reason: req.Reason})
}

// OverrideRequest is the body of POST /v1/instances/:id/steps/:step/:action.
type OverrideRequest struct {
	Output json.RawMessage `json:"output"`
	Error  *fsm.TaskError  `json:"error"`
	Reason string          `json:"reason"`
}

// POST /v1/instances/:id/steps/:step/complete|skip|fail|rerun
func (s *Server) overrideStep(r *http.Request, ps httprouter.Params, body []byte) (any, error) {
	action := ps.ByName("action")
	switch action {
	case fsm.OverrideComplete, fsm.OverrideSkip, fsm.OverrideFail, fsm.OverrideRerun:
	default:
		return nil, &Error{Status: 404, Code: "not_found", Message: "no step action " + strconv.Quote(action) + ": use complete, skip, fail or rerun"}
	}
	var req OverrideRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	if len(req.Output) > 0 && !json.Valid(req.Output) {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "output is not valid JSON"}
	}
	return s.apply(r, fsm.StepOverrideType, &fsm.StepOverrideRequest{Header: s.header(), ID: ps.ByName("id"), Step: ps.ByName("step"),
		Action: action, Output: req.Output, Error: req.Error, Reason: req.Reason})
}
