package httpapi

import (
	"net/http"
	"strconv"

	"github.com/julienschmidt/httprouter"

	"github.com/lockstep-io/lockstep/fsm"
)

// GET /v1/services — every service's circuit breaker.
func (s *Server) listServices(*http.Request, httprouter.Params, []byte) (any, error) {
	return map[string]any{"services": s.cfg.FSM.State().Read().Breakers()}, nil
}

// GET /v1/services/:name — one service's settings and breaker state.
func (s *Server) getService(_ *http.Request, ps httprouter.Params, _ []byte) (any, error) {
	b := s.cfg.FSM.State().Read().Breaker(ps.ByName("name"))
	if b == nil {
		return nil, &Error{Status: 404, Code: "not_found", Message: "no workflow declares a service " + strconv.Quote(ps.ByName("name"))}
	}
	return b, nil
}

// BreakerRequest is the body of POST /v1/services/:name/breaker.
type BreakerRequest struct {
	State string `json:"state"`
}

// POST /v1/services/:name/breaker — {"state": "closed"} resets it,
// {"state": "open"} trips it.
func (s *Server) setBreaker(r *http.Request, ps httprouter.Params, body []byte) (any, error) {
	var req BreakerRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	if req.State != fsm.BreakerClosed && req.State != fsm.BreakerOpen {
		return nil, &Error{Status: 400, Code: "bad_request", Message: `state must be "closed" (reset) or "open" (trip)`}
	}
	return s.apply(r, fsm.SetBreakerType, &fsm.SetBreakerRequest{Header: s.header(), Name: ps.ByName("name"), State: req.State})
}
