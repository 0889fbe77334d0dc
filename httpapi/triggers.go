package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/julienschmidt/httprouter"

	"github.com/lockstep-io/lockstep/fsm"
	"github.com/lockstep-io/lockstep/hcl"
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

// POST /v1/webhooks/:workflow/:trigger — a delivery: the raw JSON body and
// headers go into the log with the X-Lockstep-Signature header; the state
// machine checks the signature (when the trigger names a secret) and starts
// the instance. 202 with the instance id.
func (s *Server) webhook(r *http.Request, ps httprouter.Params, body []byte) (any, error) {
	if len(body) > 0 && !json.Valid(body) {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "a webhook delivery's body must be JSON"}
	}
	headers := map[string]string{}
	for k, vs := range r.Header {
		if len(vs) > 0 && k != forwardedHeader && k != "X-Lockstep-Signature" {
			headers[strings.ToLower(k)] = vs[0]
		}
	}
	res, err := s.apply(r, fsm.WebhookDeliveryType, &fsm.WebhookDeliveryRequest{Header: s.header(),
		ID: ps.ByName("workflow") + "." + ps.ByName("trigger"), Body: body, Headers: headers, Signature: r.Header.Get("X-Lockstep-Signature")})
	if err != nil {
		return nil, err
	}
	return &response{http.StatusAccepted, res}, nil
}

// GET /v1/secrets — names only; a secret's value is never returned.
func (s *Server) listSecrets(*http.Request, httprouter.Params, []byte) (any, error) {
	return map[string]any{"secrets": s.cfg.FSM.State().Read().SecretNames()}, nil
}

// PUT /v1/secrets/:name {"value"}
func (s *Server) putSecret(r *http.Request, ps httprouter.Params, body []byte) (any, error) {
	var req struct {
		Value string `json:"value"`
	}
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	name := ps.ByName("name")
	if !hcl.ValidName(name) || req.Value == "" || len(req.Value) > 4096 {
		return nil, &Error{Status: 400, Code: "bad_request", Message: "a secret has a name of letters, digits, '_' or '-' and a value of 1 to 4096 bytes"}
	}
	return s.apply(r, fsm.PutSecretType, &fsm.PutSecretRequest{Header: s.header(), Name: name, Value: req.Value})
}

// DELETE /v1/secrets/:name
func (s *Server) deleteSecret(r *http.Request, ps httprouter.Params, _ []byte) (any, error) {
	return s.apply(r, fsm.PutSecretType, &fsm.PutSecretRequest{Header: s.header(), Name: ps.ByName("name"), Delete: true})
}
