package httpapi

import (
	"net/http"
	"strconv"

	hhcl "github.com/hashicorp/hcl/v2"
	"github.com/julienschmidt/httprouter"

	"github.com/lockstep-io/lockstep/fsm"
	"github.com/lockstep-io/lockstep/hcl"
)

// parseWorkflow validates an HCL body, answering 400 with every diagnostic.
func (s *Server) parseWorkflow(r *http.Request, body []byte) (*hcl.Workflow, error) {
	filename := r.URL.Query().Get("filename")
	if filename == "" {
		filename = "workflow.hcl"
	}
	if len(body) == 0 {
		return nil, &Error{Status: 400, Code: "invalid_workflow", Message: "the request body must be the workflow's HCL source"}
	}
	wf, diags := s.checkWorkflow(filename, body)
	if diags.HasErrors() {
		return nil, &Error{Status: 400, Code: "invalid_workflow", Message: diags.Error(), Diagnostics: hcl.DiagnosticsJSON(diags)}
	}
	return wf, nil
}

// checkWorkflow parses and validates a workflow, and checks the input of
// its child workflow steps against the children this node knows.
func (s *Server) checkWorkflow(filename string, body []byte) (*hcl.Workflow, hhcl.Diagnostics) {
	wf, diags := hcl.Parse(filename, body)
	if diags.HasErrors() {
		return nil, diags
	}
	return wf, hcl.CheckChildInputs(wf, s.cfg.FSM.ChildLookup(s.cfg.FSM.State().Read(), wf))
}

// POST /v1/workflows[?dry_run=true]
func (s *Server) registerWorkflow(r *http.Request, _ httprouter.Params, body []byte) (any, error) {
	wf, err := s.parseWorkflow(r, body)
	if err != nil {
		return nil, err
	}
	if dry, _ := strconv.ParseBool(r.URL.Query().Get("dry_run")); dry {
		return map[string]any{"name": wf.Name, "valid": true, "diagnostics": []hcl.Diagnostic{}}, nil
	}
	res, err := s.apply(r, fsm.RegisterWorkflowType, &fsm.RegisterWorkflowRequest{Header: s.header(), Source: string(body)})
	if err != nil {
		return nil, err
	}
	reg := res.(*fsm.RegisterWorkflowResponse)
	status := http.StatusOK
	if reg.Created {
		status = http.StatusCreated
	}
	return &response{status, reg}, nil
}

// POST /v1/workflows/validate
func (s *Server) postWorkflowAction(r *http.Request, ps httprouter.Params, body []byte) (any, error) {
	if ps.ByName("name") != "validate" {
		return nil, &Error{Status: 405, Code: "method_not_allowed", Message: "POST is not allowed on " + r.URL.Path + "; register workflows with POST /v1/workflows"}
	}
	filename := r.URL.Query().Get("filename")
	if filename == "" {
		filename = "workflow.hcl"
	}
	wf, diags := s.checkWorkflow(filename, body)
	out := map[string]any{"valid": !diags.HasErrors(), "diagnostics": hcl.DiagnosticsJSON(diags)}
	if wf != nil {
		out["name"] = wf.Name
	}
	return out, nil
}

type workflowSummary struct {
	Name        string            `json:"name"`
	Version     uint64            `json:"version"`
	Description string            `json:"description,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	CreatedAt   string            `json:"created_at"`
}

func summarize(wv *fsm.WorkflowVersion) workflowSummary {
	return workflowSummary{Name: wv.Name, Version: wv.Version, Description: wv.Description, Labels: wv.Labels, CreatedAt: wv.CreatedAt.Format("2006-01-02T15:04:05.000Z07:00")}
}

// GET /v1/workflows
func (s *Server) listWorkflows(*http.Request, httprouter.Params, []byte) (any, error) {
	out := []workflowSummary{}
	for _, wv := range s.cfg.FSM.State().Read().Workflows() {
		out = append(out, summarize(wv))
	}
	return map[string]any{"workflows": out}, nil
}

// GET /v1/workflows/:name[?version=N] — the versions, or one with its source.
func (s *Server) getWorkflow(r *http.Request, ps httprouter.Params, _ []byte) (any, error) {
	name := ps.ByName("name")
	tx := s.cfg.FSM.State().Read()
	if v := r.URL.Query().Get("version"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			return nil, &Error{Status: 400, Code: "bad_request", Message: "version must be a positive integer"}
		}
		wv := tx.WorkflowVersion(name, n)
		if wv == nil {
			return nil, &Error{Status: 404, Code: "not_found", Message: "workflow " + strconv.Quote(name) + " has no version " + v}
		}
		return wv, nil
	}
	versions := tx.WorkflowVersions(name)
	if len(versions) == 0 {
		return nil, &Error{Status: 404, Code: "not_found", Message: "workflow " + strconv.Quote(name) + " is not registered"}
	}
	out := make([]workflowSummary, 0, len(versions))
	for _, wv := range versions {
		out = append(out, summarize(wv))
	}
	latest := versions[len(versions)-1]
	return map[string]any{"name": name, "latest": latest.Version, "versions": out, "source": latest.Source}, nil
}
