package httpapi

import (
	"io"
	"net/http"
	"sync"

	"github.com/lockstep-io/lockstep/cluster"
)

// forwardedHeader marks a request a follower forwarded, so it is never
// forwarded twice (a leader that lost leadership mid-request answers 503).
const forwardedHeader = "X-Lockstep-Forwarded-By"

// errNoLeader is the answer when there is no leader to send a write to.
func errNoLeader() *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: "no_leader", Message: "no cluster leader is available; retry shortly"}
}

// forwardTarget is the leader this node forwards to: known, with an HTTP
// address, and not this node.
func (s *Server) forwardTarget() (cluster.LeaderInfo, error) {
	leader, ok := s.cfg.Cluster.Leader()
	if !ok || leader.HTTPAddr == "" || leader.Node == s.cfg.NodeName {
		return cluster.LeaderInfo{}, errNoLeader()
	}
	return leader, nil
}

func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		for _, v := range vs {
			dst.Add(k, v)
		}
	}
}

// forwardToLeader sends the buffered request to the leader and passes its
// status, headers and body back verbatim.
func (s *Server) forwardToLeader(w http.ResponseWriter, r *http.Request, body []byte) {
	leader, err := s.forwardTarget()
	if err == nil && r.Header.Get(forwardedHeader) != "" {
		err = errNoLeader()
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if batchableForward(r.Method, r.URL.RequestURI()) {
		// A start or a signal: it may travel with others (batchforward.go).
		status, header, data, err := s.batched.forward(r, r.URL.RequestURI(), body)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		copyHeader(w.Header(), header)
		w.WriteHeader(status)
		_, _ = w.Write(data)
		return
	}
	url := "http://" + leader.HTTPAddr + r.URL.RequestURI()
	req, err := http.NewRequestWithContext(r.Context(), r.Method, url, bytesReader(body))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set(forwardedHeader, s.cfg.NodeName)
	resp, err := s.forward.Do(req)
	if err != nil {
		s.writeError(w, r, &Error{Status: http.StatusServiceUnavailable, Code: "no_leader", Message: "forwarding to leader " + leader.Node + " failed: " + err.Error()})
		return
	}
	defer resp.Body.Close()
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	buf := copyBufs.Get().(*[]byte)
	_, _ = io.CopyBuffer(w, resp.Body, *buf)
	copyBufs.Put(buf)
}

// forwardCapture sends the buffered request to the leader at uri (path and
// query) and returns its answer instead of passing it on, for a handler
// that has more to do with it.
func (s *Server) forwardCapture(r *http.Request, uri string, body []byte) (int, http.Header, []byte, error) {
	leader, err := s.forwardTarget()
	if err != nil {
		return 0, nil, nil, err
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+leader.HTTPAddr+uri, bytesReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set(forwardedHeader, s.cfg.NodeName)
	resp, err := s.forward.Do(req)
	if err != nil {
		return 0, nil, nil, &Error{Status: http.StatusServiceUnavailable, Code: "no_leader", Message: "forwarding to leader " + leader.Node + " failed: " + err.Error()}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxForwardedAnswer))
	if err != nil {
		return 0, nil, nil, &Error{Status: http.StatusServiceUnavailable, Code: "no_leader", Message: "reading the answer of leader " + leader.Node + ": " + err.Error()}
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
