package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/lockstep-io/lockstep/cluster"
)

// Starts (and signals) a follower forwards to the leader travel together: each forward
// costs the leader and the follower a whole HTTP round trip (about a
// tenth of a saturated cluster's CPU went to them), and under load many
// are waiting at once. A few senders each take every start waiting when
// they are free and send them in one POST /v1/internal/forward; the leader
// serves each as the request it would have received alone, concurrently
// (raft batches their proposals as it does any others'), and answers each
// with the status, headers and body it would have had. An idle follower
// sends at once, a start alone in its request.

const (
	// forwardSenders is how many batches of one follower may be out at
	// once.
	forwardSenders = 4
	// Bounds on one batch.
	maxForwardBatch      = 256
	maxForwardBatchBytes = 1 << 20
	// maxForwardBody bounds the body of one start that is batched; a
	// larger one is forwarded alone.
	maxForwardBody = 64 << 10
	// maxForwardBatchBody bounds POST /v1/internal/forward's body (the
	// bodies travel in base64).
	maxForwardBatchBody = 8 << 20
)

// forwardItem is one request in POST /v1/internal/forward.
type forwardItem struct {
	Method string      `json:"method"`
	URI    string      `json:"uri"`
	Header http.Header `json:"header,omitempty"`
	Body   []byte      `json:"body,omitempty"`
}

// forwardAnswer is the leader's answer to one forwardItem.
type forwardAnswer struct {
	Status int         `json:"status"`
	Header http.Header `json:"header,omitempty"`
	Body   []byte      `json:"body,omitempty"`
}

type forwardBatchRequest struct {
	Requests []forwardItem `json:"requests"`
}

type forwardBatchResponse struct {
	Answers []forwardAnswer `json:"answers"`
}

// batchableForward says a request may travel in a batch: a start or a
// signal, writes that answer as soon as they are applied (never a long
// poll, which would hold its batch).
func batchableForward(method, uri string) bool {
	if method != http.MethodPost {
		return false
	}
	path, _, _ := strings.Cut(uri, "?")
	if rest, ok := strings.CutPrefix(path, "/v1/workflows/"); ok {
		name, ok := strings.CutSuffix(rest, "/instances")
		return ok && name != "" && !strings.Contains(name, "/")
	}
	if rest, ok := strings.CutPrefix(path, "/v1/instances/"); ok {
		parts := strings.Split(rest, "/")
		return len(parts) == 3 && parts[0] != "" && parts[1] == "signals" && parts[2] != ""
	}
	return false
}

// pendingForward is a start waiting for its batch.
type pendingForward struct {
	item forwardItem
	done chan forwardResult // buffered: the sender never waits for the handler
}

type forwardResult struct {
	status int
	header http.Header
	body   []byte
	err    error
}

// forwarder sends a follower's forwarded starts and signals in batches.
type forwarder struct {
	s       *Server
	mu      sync.Mutex
	pending []*pendingForward
	senders int
}

// forward sends one request (a start or a signal) to the leader, in a batch with any
// others waiting, and returns the leader's answer as forwardCapture does.
// When the node it went to had stopped leading and refused it (no_leader),
// it goes again to the next leader, within the leader hold.
func (f *forwarder) forward(r *http.Request, uri string, body []byte) (int, http.Header, []byte, error) {
	if !batchableForward(r.Method, uri) || len(body) > maxForwardBody {
		return f.s.forwardCapture(r, uri, body)
	}
	until := time.Now().Add(f.s.cfg.LeaderHold)
	for {
		changed := f.s.cfg.Cluster.LeaderChanged()
		status, header, data, err := f.forwardOnce(r, uri, body)
		if err != nil || !refusedForNoLeader(status, data) || !f.s.awaitLeaderChange(r.Context(), until, changed) {
			return status, header, data, err
		}
	}
}

// forwardOnce sends the request in the next batch and waits for its answer.
func (f *forwarder) forwardOnce(r *http.Request, uri string, body []byte) (int, http.Header, []byte, error) {
	p := &pendingForward{item: forwardItem{Method: r.Method, URI: uri, Header: r.Header.Clone(), Body: body}, done: make(chan forwardResult, 1)}
	f.mu.Lock()
	f.pending = append(f.pending, p)
	if f.senders < forwardSenders {
		f.senders++
		go f.send()
	}
	f.mu.Unlock()
	select {
	case res := <-p.done:
		return res.status, res.header, res.body, res.err
	case <-r.Context().Done():
		// The start may still be applied: as when a client leaves
		// during a forward of its own.
		return 0, nil, nil, r.Context().Err()
	}
}

// send sends batches until nothing waits.
func (f *forwarder) send() {
	for {
		f.mu.Lock()
		n, size := 0, 0
		for n < len(f.pending) && n < maxForwardBatch && (n == 0 || size+len(f.pending[n].item.Body) <= maxForwardBatchBytes) {
			size += len(f.pending[n].item.Body)
			n++
		}
		if n == 0 {
			f.senders--
			f.mu.Unlock()
			return
		}
		batch := append([]*pendingForward(nil), f.pending[:n]...)
		f.pending = append(f.pending[:0:0], f.pending[n:]...)
		f.mu.Unlock()
		f.sendBatch(batch)
	}
}

func (f *forwarder) sendBatch(batch []*pendingForward) {
	fail := func(err error) {
		for _, p := range batch {
			p.done <- forwardResult{err: err}
		}
	}
	s := f.s
	req := forwardBatchRequest{Requests: make([]forwardItem, len(batch))}
	for i, p := range batch {
		req.Requests[i] = p.item
	}
	data, err := json.Marshal(req)
	if err != nil {
		fail(err)
		return
	}
	// Each request's own client may go; the batch goes on for the others.
	ctx, cancel := context.WithTimeout(context.Background(), forwardBatchTimeout)
	defer cancel()
	resp, leader, err := s.sendToLeader(ctx, time.Now().Add(s.cfg.LeaderHold), func(leader cluster.LeaderInfo) (*http.Request, error) {
		hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+leader.HTTPAddr+"/v1/internal/forward", bytes.NewReader(data))
		if err == nil {
			hreq.Header.Set("Content-Type", "application/json")
		}
		return hreq, err
	})
	if err != nil {
		fail(err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
		// A leader without the endpoint (an older version, during an
		// upgrade) served none of them: forward each alone.
		_, _ = io.Copy(io.Discard, resp.Body)
		f.forwardEach(batch)
		return
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxForwardedBatchAnswer))
	var out forwardBatchResponse
	if err == nil && resp.StatusCode == http.StatusOK {
		err = json.Unmarshal(raw, &out)
	}
	if err != nil || resp.StatusCode != http.StatusOK || len(out.Answers) != len(batch) {
		// Some may have been applied: the same answer as a forward whose
		// connection broke.
		fail(errForwardLost(leader, fmt.Errorf("status %d, %d bytes, %v", resp.StatusCode, len(raw), err)))
		return
	}
	for i, p := range batch {
		a := out.Answers[i]
		p.done <- forwardResult{status: a.Status, header: a.Header, body: a.Body}
	}
}

// forwardEach forwards each start of a batch alone.
func (f *forwarder) forwardEach(batch []*pendingForward) {
	var wg sync.WaitGroup
	for _, p := range batch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), forwardBatchTimeout)
			defer cancel()
			r, err := http.NewRequestWithContext(ctx, p.item.Method, p.item.URI, nil)
			if err != nil {
				p.done <- forwardResult{err: err}
				return
			}
			r.Header = p.item.Header
			status, header, body, err := f.s.forwardCapture(r, p.item.URI, p.item.Body)
			p.done <- forwardResult{status, header, body, err}
		}()
	}
	wg.Wait()
}

const (
	// forwardBatchTimeout bounds a batch's round trip; a start is answered
	// by the leader as soon as it is applied.
	forwardBatchTimeout = 30 * time.Second
	// maxForwardedBatchAnswer bounds the leader's answer to a batch.
	maxForwardedBatchAnswer = 64 << 20
)

// POST /v1/internal/forward — the starts and signals a follower forwards,
// served each as if it had come alone, concurrently.
func (s *Server) internalForward(r *http.Request, _ httprouter.Params, body []byte) (any, error) {
	var req forwardBatchRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	if len(req.Requests) == 0 || len(req.Requests) > maxForwardBatch {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "requests must hold 1 to 256 requests"}
	}
	for i, it := range req.Requests {
		if !batchableForward(it.Method, it.URI) {
			return nil, &Error{Status: 400, Code: "bad_request", Message: "request " + strconv.Itoa(i) + " is neither a start (POST /v1/workflows/{name}/instances) nor a signal (POST /v1/instances/{id}/signals/{name})"}
		}
	}
	from := r.Header.Get(forwardedHeader)
	if from == "" {
		from = "client"
	}
	out := forwardBatchResponse{Answers: make([]forwardAnswer, len(req.Requests))}
	var wg sync.WaitGroup
	for i, it := range req.Requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out.Answers[i] = s.serveForwarded(r, it, from)
		}()
	}
	wg.Wait()
	return out, nil
}

// serveForwarded serves one forwarded request through the router, as
// forwardCapture's request would have been served.
func (s *Server) serveForwarded(batch *http.Request, it forwardItem, from string) forwardAnswer {
	r, err := http.NewRequestWithContext(batch.Context(), it.Method, it.URI, bytes.NewReader(it.Body))
	if err != nil {
		return forwardAnswer{Status: 400, Header: http.Header{"Content-Type": {"application/json"}}, Body: errorBody("bad_request", "request uri: "+err.Error())}
	}
	r.Header = it.Header
	if r.Header == nil {
		r.Header = http.Header{}
	}
	r.Header.Set(forwardedHeader, from)
	r.RemoteAddr = batch.RemoteAddr
	r.RequestURI = it.URI
	rec := &recorder{header: http.Header{}}
	s.router.ServeHTTP(rec, r)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return forwardAnswer{Status: rec.status, Header: rec.header, Body: rec.body.Bytes()}
}

func errorBody(code, msg string) []byte {
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	return b
}

// recorder is the response of a request served inside a batch.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *recorder) Header() http.Header { return w.header }

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(b)
}
