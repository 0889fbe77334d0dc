package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/lockstep-io/lockstep/cluster"
	"github.com/lockstep-io/lockstep/fsm"
	"github.com/lockstep-io/lockstep/hcl"
)

// Error is an API error: an HTTP status and a stable code. Every error the
// API returns is written as {"error": {"code", "message", ...}}.
type Error struct {
	Status      int              `json:"-"`
	Code        string           `json:"code"`
	Message     string           `json:"message"`
	Diagnostics []hcl.Diagnostic `json:"diagnostics,omitempty"`
}

func (e *Error) Error() string { return e.Message }

type envelope struct {
	Error *Error `json:"error"`
}

// toAPIError maps any error to its status and code.
func toAPIError(err error) *Error {
	var apiErr *Error
	if errors.As(err, &apiErr) {
		return apiErr
	}
	var fsmErr *fsm.Error
	if errors.As(err, &fsmErr) {
		status := http.StatusBadRequest // invalid, invalid_input
		switch fsmErr.Code {
		case fsm.CodeNotFound:
			status = http.StatusNotFound
		case fsm.CodeConflict, fsm.CodeStaleToken:
			status = http.StatusConflict
		case fsm.CodeForbidden:
			status = http.StatusForbidden
		}
		return &Error{Status: status, Code: fsmErr.Code, Message: fsmErr.Message}
	}
	switch {
	case errors.Is(err, cluster.ErrNoLeader), errors.Is(err, cluster.ErrNotLeader), errors.Is(err, errLeadsHere):
		return errNoLeader()
	case errors.Is(err, cluster.ErrIndeterminate):
		return &Error{Status: http.StatusServiceUnavailable, Code: "indeterminate", Message: err.Error() + "; retry with the same id"}
	}
	return &Error{Status: http.StatusInternalServerError, Code: "internal", Message: err.Error()}
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := toAPIError(err)
	if e.Status == http.StatusServiceUnavailable {
		s.logger.Debug("request refused", "method", r.Method, "path", r.URL.Path, "code", e.Code, "error", e.Message)
	} else if e.Status >= 500 {
		s.logger.Warn("request failed", "method", r.Method, "path", r.URL.Path, "status", e.Status, "error", e.Message)
	}
	if e.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	s.setMeta(w)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(envelope{Error: e})
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
