package httpapi

import (
	"net/http"

	"github.com/julienschmidt/httprouter"
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
