package fsm

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/lockstep-io/lockstep/hcl"
)

// WorkflowVersion is one immutable registration of a workflow's source.
type WorkflowVersion struct {
	Name        string            `json:"name"`
	Version     uint64            `json:"version"`
	Description string            `json:"description,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Source      string            `json:"source"`
	CreatedAt   time.Time         `json:"created_at"`
	CreateIndex uint64            `json:"create_index"`

	// compiled is the parsed source, kept on the stored record (which is
	// never changed once written) so the FSM's hot path finds it without
	// building a key.
	compiled atomic.Pointer[hcl.Workflow]
}

func (w *WorkflowVersion) key() string { return fmt.Sprintf("%s@%d", w.Name, w.Version) }

const tableWorkflows = "workflows"

func init() {
	registerTable(&memdb.TableSchema{
		Name: tableWorkflows,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
				&memdb.StringFieldIndex{Field: "Name"},
				&memdb.UintFieldIndex{Field: "Version"},
			}}},
			"name": {Name: "name", Indexer: &memdb.StringFieldIndex{Field: "Name"}},
		},
	})
	registerRecord(tableWorkflows, func() any { return new(WorkflowVersion) })
	registerCommand(RegisterWorkflowType, (*FSM).applyRegisterWorkflow)
}

// RegisterWorkflowRequest registers a workflow's source. The proposer has
// already validated it; Apply compiles it again (parsing is deterministic)
// and refuses it if it does not compile.
type RegisterWorkflowRequest struct {
	Header
	Source string `json:"source"`
}

// RegisterWorkflowResponse names the version the source is stored as.
// Created is false when the source equals the latest version's.
type RegisterWorkflowResponse struct {
	Name    string `json:"name"`
	Version uint64 `json:"version"`
	Created bool   `json:"created"`
}

func (f *FSM) applyRegisterWorkflow(tx *Txn, body []byte) any {
	var req RegisterWorkflowRequest
	mustDecode(RegisterWorkflowType, body, &req)
	wf, diags := hcl.Parse("workflow.hcl", []byte(req.Source))
	if diags.HasErrors() {
		return errorf(CodeInvalid, "workflow does not compile: %s", diags.Error())
	}
	if diags := hcl.CheckChildInputs(wf, f.ChildLookup(tx, wf)); diags.HasErrors() {
		return errorf(CodeInvalid, "workflow does not compile: %s", diags.Error())
	}
	if latest := tx.LatestWorkflow(wf.Name); latest != nil && latest.Source == req.Source {
		return &RegisterWorkflowResponse{Name: wf.Name, Version: latest.Version}
	}
	wv := &WorkflowVersion{
		Name:        wf.Name,
		Version:     tx.nextSeq("workflow_version/" + wf.Name),
		Description: wf.Description,
		Labels:      wf.Labels,
		Source:      req.Source,
		CreatedAt:   req.Time,
		CreateIndex: tx.Index,
	}
	tx.mustInsert(tableWorkflows, wv)
	tx.upsertServices(wf)
	tx.upsertTriggers(wf, req.Time)
	return &RegisterWorkflowResponse{Name: wv.Name, Version: wv.Version, Created: true}
}

// ChildLookup finds the child workflows a workflow being registered starts,
// among those stored; self stands for the workflow's own new version, so a
// workflow that starts itself is checked against itself.
func (f *FSM) ChildLookup(tx *Txn, self *hcl.Workflow) hcl.ChildLookup {
	return func(name string, version uint64) *hcl.Workflow {
		if self != nil && name == self.Name && version == 0 {
			return self
		}
		wv := tx.LatestWorkflow(name)
		if version > 0 {
			wv = tx.WorkflowVersion(name, version)
		}
		if wv == nil {
			return nil
		}
		wf, err := f.workflow(wv)
		if err != nil {
			return nil
		}
		return wf
	}
}

// WorkflowVersion returns one version of a workflow, or nil.
func (t *Txn) WorkflowVersion(name string, version uint64) *WorkflowVersion {
	// A command reads its instance's workflow several times: the FSM's
	// transactions remember what they read until they write the table.
	k := versionKey{name, version}
	if wv, ok := t.versions[k]; ok {
		return wv
	}
	raw, err := t.First(tableWorkflows, "id", name, version)
	if err != nil || raw == nil {
		return nil
	}
	wv := raw.(*WorkflowVersion)
	if t.write {
		if t.versions == nil {
			t.versions = map[versionKey]*WorkflowVersion{}
		}
		t.versions[k] = wv
	}
	return wv
}

type versionKey struct {
	name    string
	version uint64
}

// LatestWorkflow returns the newest version of a workflow, or nil.
func (t *Txn) LatestWorkflow(name string) *WorkflowVersion {
	v := t.counter("workflow_version/" + name)
	if v == 0 {
		return nil
	}
	return t.WorkflowVersion(name, v)
}

// WorkflowVersions lists every version of a workflow, oldest first.
func (t *Txn) WorkflowVersions(name string) []*WorkflowVersion {
	out := []*WorkflowVersion{}
	it, err := t.Get(tableWorkflows, "name", name)
	if err != nil {
		return out
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*WorkflowVersion))
	}
	return out
}

// Workflows lists the latest version of every workflow, by name.
func (t *Txn) Workflows() []*WorkflowVersion {
	out := []*WorkflowVersion{}
	it, err := t.Get(tableWorkflows, "id")
	if err != nil {
		return out
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		wv := raw.(*WorkflowVersion)
		if n := len(out); n > 0 && out[n-1].Name == wv.Name {
			out[n-1] = wv
		} else {
			out = append(out, wv)
		}
	}
	return out
}
