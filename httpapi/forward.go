package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/lockstep-io/lockstep/cluster"
	"github.com/lockstep-io/lockstep/engine"
)

// forwardedHeader marks a request a follower forwarded, so it is never
// forwarded twice (a leader that lost leadership mid-request answers 503).
const forwardedHeader = "X-Lockstep-Forwarded-By"

// errNoLeader is the answer when there is no leader to send a write to.
func errNoLeader() *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: "no_leader", Message: "no cluster leader is available; retry shortly"}
}

// errLeadsHere is what a forward returns, having sent nothing, when this
// node became the leader while the request waited for one: the caller
// serves the request itself.
var errLeadsHere = errors.New("this node leads now")

// errForwardLost is the answer to a request forwarded to the leader whose
// answer did not come back: it may or may not have taken effect, so it is
// indeterminate, not no_leader (a client retries it with the same id or
// Idempotency-Key, not blindly).
func errForwardLost(leader cluster.LeaderInfo, err error) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: "indeterminate", Message: "the answer of leader " + leader.Node + " was lost (" + err.Error() + "); whether the request took effect is unknown"}
}

// elsewhere reports whether err means the request must be served by a
// leader this node is not (yet): it was refused without effect.
func elsewhere(err error) bool {
	return errors.Is(err, cluster.ErrNotLeader) || errors.Is(err, engine.ErrNotLeader) ||
		errors.Is(err, cluster.ErrNoLeader) || errors.Is(err, errLeadsHere)
}

// leaderRecheck bounds one wait for a change of leader: some changes
// (this node's engine starting, a gossip record arriving) are not
// announced.
const leaderRecheck = 25 * time.Millisecond

// awaitLeaderChange waits until the cluster announces a change of leader
// on changed, or leaderRecheck passes; false when until has passed or ctx
// ended.
func (s *Server) awaitLeaderChange(ctx context.Context, until time.Time, changed <-chan struct{}) bool {
	d := time.Until(until)
	if d <= 0 || ctx.Err() != nil {
		return false
	}
	t := time.NewTimer(min(d, leaderRecheck))
	defer t.Stop()
	select {
	case <-changed:
	case <-t.C:
	case <-ctx.Done():
		return false
	}
	return true
}

// sendToLeader sends a request to the leader and returns its answer. With
// no leader known (an election under way), or one whose request could not
// even be sent (a failed dial: a leader that has gone), it waits for the
// next until until, as Consul and Nomad hold RPCs; then it answers
// no_leader. It returns errLeadsHere when this node leads meanwhile.
func (s *Server) sendToLeader(ctx context.Context, until time.Time, build func(leader cluster.LeaderInfo) (*http.Request, error)) (*http.Response, cluster.LeaderInfo, error) {
	for {
		changed := s.cfg.Cluster.LeaderChanged()
		if s.cfg.Cluster.IsLeader() {
			return nil, cluster.LeaderInfo{}, errLeadsHere
		}
		leader, ok := s.cfg.Cluster.Leader()
		if ok && leader.HTTPAddr != "" && leader.Node != s.cfg.NodeName {
			req, err := build(leader)
			if err != nil {
				return nil, leader, err
			}
			req.Header.Set(forwardedHeader, s.cfg.NodeName)
			resp, err := s.forward.Do(req)
			if err == nil {
				if resp.StatusCode != http.StatusServiceUnavailable {
					return resp, leader, nil
				}
				// A leader that has just stepped down refuses what it is
				// sent without acting on it: wait for the next, as when
				// there is none.
				head, rerr := io.ReadAll(io.LimitReader(resp.Body, maxRefusal))
				if rerr == nil && refusedForNoLeader(resp.StatusCode, head) && s.awaitLeaderChange(ctx, until, changed) {
					resp.Body.Close()
					continue
				}
				resp.Body = struct {
					io.Reader
					io.Closer
				}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
				return resp, leader, nil
			}
			var op *net.OpError
			if !errors.As(err, &op) || op.Op != "dial" {
				// Sent, perhaps served: only the answer is missing.
				return nil, leader, errForwardLost(leader, err)
			}
			if !s.awaitLeaderChange(ctx, until, changed) {
				return nil, leader, &Error{Status: http.StatusServiceUnavailable, Code: "no_leader", Message: "forwarding to leader " + leader.Node + " failed: " + err.Error()}
			}
			continue
		}
		if !s.awaitLeaderChange(ctx, until, changed) {
			return nil, leader, errNoLeader()
		}
	}
}

// maxRefusal bounds what is read of a 503 answer to tell a no_leader
// refusal from other answers; more than that is not one.
const maxRefusal = 64 << 10

// refusedForNoLeader reports whether an answer is a no_leader refusal: the
// node asked did not lead, so it took no action on the request, which may
// go to the next leader as it is. (Every no_leader answer means that;
// a request that may have taken effect is answered indeterminate.)
func refusedForNoLeader(status int, body []byte) bool {
	if status != http.StatusServiceUnavailable {
		return false
	}
	var e envelope
	return json.Unmarshal(body, &e) == nil && e.Error != nil && e.Error.Code == errNoLeader().Code
}

// serveOnLeader serves a request that serve, run here, refused because
// this node does not lead: a follower forwards it to the leader, waiting
// for one as sendToLeader does; a node that has just become the leader
// (its engine not started, its first barrier not passed) serves it once
// it can. A request forwarded to this node is never forwarded again.
func (s *Server) serveOnLeader(w http.ResponseWriter, r *http.Request, body []byte, serve func() (any, error)) {
	until := time.Now().Add(s.cfg.LeaderHold)
	forwarded := r.Header.Get(forwardedHeader) != ""
	for {
		changed := s.cfg.Cluster.LeaderChanged()
		switch {
		case s.cfg.Cluster.IsLeader():
			if out, err := serve(); !elsewhere(err) {
				s.answer(w, r, out, err)
				return
			}
		case forwarded:
			s.writeError(w, r, errNoLeader())
			return
		default:
			if err := s.forwardToLeader(w, r, body, until); !errors.Is(err, errLeadsHere) {
				return
			}
			continue // this node leads now: serve at once
		}
		if !s.awaitLeaderChange(r.Context(), until, changed) {
			s.writeError(w, r, errNoLeader())
			return
		}
	}
}

func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		for _, v := range vs {
			dst.Add(k, v)
		}
	}
}

// forwardToLeader sends the buffered request to the leader and passes its
// status, headers and body back verbatim. It writes nothing and returns
// errLeadsHere when this node became the leader while it waited for one.
func (s *Server) forwardToLeader(w http.ResponseWriter, r *http.Request, body []byte, until time.Time) error {
	if batchableForward(r.Method, r.URL.RequestURI()) {
		// A start or a signal: it may travel with others (batchforward.go).
		status, header, data, err := s.batched.forward(r, r.URL.RequestURI(), body)
		if errors.Is(err, errLeadsHere) {
			return err
		}
		if err != nil {
			s.writeError(w, r, err)
			return nil
		}
		copyHeader(w.Header(), header)
		w.WriteHeader(status)
		_, _ = w.Write(data)
		return nil
	}
	resp, _, err := s.sendToLeader(r.Context(), until, func(leader cluster.LeaderInfo) (*http.Request, error) {
		req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+leader.HTTPAddr+r.URL.RequestURI(), bytesReader(body))
		if err == nil {
			copyHeader(req.Header, r.Header)
		}
		return req, err
	})
	if errors.Is(err, errLeadsHere) {
		return err
	}
	if err != nil {
		s.writeError(w, r, err)
		return nil
	}
	defer resp.Body.Close()
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	buf := copyBufs.Get().(*[]byte)
	_, _ = io.CopyBuffer(w, resp.Body, *buf)
	copyBufs.Put(buf)
	return nil
}

// forwardCapture sends the buffered request to the leader at uri (path and
// query) and returns its answer instead of passing it on, for a handler
// that has more to do with it. It waits for a leader as sendToLeader does.
func (s *Server) forwardCapture(r *http.Request, uri string, body []byte) (int, http.Header, []byte, error) {
	resp, leader, err := s.sendToLeader(r.Context(), time.Now().Add(s.cfg.LeaderHold), func(leader cluster.LeaderInfo) (*http.Request, error) {
		req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+leader.HTTPAddr+uri, bytesReader(body))
		if err == nil {
			copyHeader(req.Header, r.Header)
		}
		return req, err
	})
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxForwardedAnswer))
	if err != nil {
		return 0, nil, nil, errForwardLost(leader, err)
	}
	return resp.StatusCode, resp.Header, data, nil
}

// maxForwardedAnswer bounds an answer forwardCapture reads (a start's is
// about 100 bytes).
const maxForwardedAnswer = 1 << 20

// copyBufs are the buffers forwarded answers are copied through. io.Copy
// allocates (and zeroes) 32 KiB for every call: 8 % of all the bytes a
// saturated local cluster allocated, for answers of about 100 bytes.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 8<<10); return &b }}
