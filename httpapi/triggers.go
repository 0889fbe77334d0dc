package httpapi

import (
	"net/http"
	"strconv"

	"github.com/julienschmidt/httprouter"

	"github.com/lockstep-io/lockstep/fsm"
)

// GET /v1/triggers — every cron trigger with its state.
func (s *Server) listTriggers(*http.Request, httprouter.Params, []byte) (any, error) {
	return map[string]any{"triggers": s.cfg.FSM.State().Read().Triggers()}, nil
}

// POST /v1/triggers/:id/enable|disable|fire
func (s *Server) triggerAction(r *http.Request, ps httprouter.Params, _ []byte) (any, error) {
	id := ps.ByName("id")
	switch action := ps.ByName("action"); action {
	case "enable", "disable":
		return s.apply(r, fsm.SetTriggerType, &fsm.SetTriggerRequest{Header: s.header(), ID: id, Enabled: action == "enable"})
	case "fire":
		h := s.header()
		return s.apply(r, fsm.FireTriggerType, &fsm.FireTriggerRequest{Header: h, ID: id, Scheduled: h.Time, Manual: true})
	default:
		return nil, &Error{Status: 404, Code: "not_found", Message: "no trigger action " + strconv.Quote(action) + ": use enable, disable or fire"}
	}
}
