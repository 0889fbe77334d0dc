package fsm

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"

	"github.com/hashicorp/go-memdb"

	"github.com/lockstep-io/lockstep/hcl"
)

// Secret is a named value stored in the cluster, for webhook signatures.
// Reads never return its value.
type Secret struct {
	Name        string `json:"name"`
	Value       string `json:"value"`
	ModifyIndex uint64 `json:"modify_index"`
}

const tableSecrets = "secrets"

func init() {
	registerTable(&memdb.TableSchema{
		Name: tableSecrets,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name"}},
		},
	})
	registerRecord(tableSecrets, func() any { return new(Secret) })
	registerCommand(PutSecretType, (*FSM).applyPutSecret)
	registerCommand(WebhookDeliveryType, (*FSM).applyWebhook)
}

// PutSecretRequest sets (or, with Delete, removes) a secret.
type PutSecretRequest struct {
	Header
	Name   string `json:"name"`
	Value  string `json:"value,omitempty"`
	Delete bool   `json:"delete,omitempty"`
}

// SecretInfo is what reads show of a secret: never its value.
type SecretInfo struct {
	Name        string `json:"name"`
	ModifyIndex uint64 `json:"modify_index"`
}

func (f *FSM) applyPutSecret(tx *Txn, body []byte) any {
	var req PutSecretRequest
	mustDecode(PutSecretType, body, &req)
	old := tx.Secret(req.Name)
	if req.Delete {
		if old == nil {
			return errorf(CodeNotFound, "no secret %q", req.Name)
		}
		_ = tx.Delete(tableSecrets, old)
		return &SecretInfo{Name: req.Name, ModifyIndex: tx.Index}
	}
	tx.mustInsert(tableSecrets, &Secret{Name: req.Name, Value: req.Value, ModifyIndex: tx.Index})
	return &SecretInfo{Name: req.Name, ModifyIndex: tx.Index}
}

// WebhookDeliveryRequest is one delivery to a webhook trigger: the raw body
// and headers as received, and the signature header. The state machine
// checks the signature against the secret in the replicated state, so every
// node decides the same, with the secret as of this command.
type WebhookDeliveryRequest struct {
	Header
	ID        string            `json:"id"`
	Body      []byte            `json:"body"`
	Headers   map[string]string `json:"headers"`
	Signature string            `json:"signature,omitempty"`
}

func (f *FSM) applyWebhook(tx *Txn, body []byte) any {
	var req WebhookDeliveryRequest
	mustDecode(WebhookDeliveryType, body, &req)
	t := tx.Trigger(req.ID)
	if t == nil || t.Kind != hcl.TriggerWebhook {
		return errorf(CodeNotFound, "no webhook trigger %q", req.ID)
	}
	if !t.Enabled {
		return errorf(CodeConflict, "webhook trigger %q is disabled", req.ID)
	}
	if t.Secret != "" {
		s := tx.Secret(t.Secret)
		if s == nil {
			return errorf(CodeConflict, "webhook trigger %q needs secret %q, which is not set (PUT /v1/secrets/%s)", req.ID, t.Secret, t.Secret)
		}
		mac := hmac.New(sha256.New, []byte(s.Value))
		mac.Write(req.Body)
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		if !hmac.Equal([]byte(want), []byte(strings.TrimSpace(req.Signature))) {
			return errorf(CodeForbidden, "the delivery's signature does not match secret %q (expected X-Lockstep-Signature: sha256=HMAC-SHA256 of the body)", t.Secret)
		}
	}
	wv := tx.LatestWorkflow(t.Workflow)
	if wv == nil {
		return errorf(CodeNotFound, "workflow %q is not registered", t.Workflow)
	}
	wf, err := f.workflow(wv)
	if err != nil {
		return errorf(CodeInvalid, "%v", err)
	}
	var decl *hcl.CronTrigger
	for _, ct := range wf.Triggers {
		if ct.Name == t.Name {
			decl = ct
		}
	}
	reqBody := normalizeJSON(req.Body)
	if len(req.Body) > 0 && !json.Valid(req.Body) {
		return errorf(CodeInvalid, "the delivery's body is not JSON")
	}
	scope := hcl.Scope{Now: req.Time, Request: &hcl.Request{Body: reqBody, Headers: req.Headers}}
	id := t.ID + "." + itoa(tx.Index)
	if decl != nil && decl.ID != nil {
		raw, err := hcl.Eval(decl.ID, scope)
		var part string
		if err != nil || json.Unmarshal(raw, &part) != nil || !validIDPart(part) {
			return errorf(CodeInvalid, "the trigger's id expression must give 1 to 64 letters, digits, '-', '_' or '.' for this delivery")
		}
		id = t.ID + "." + part
	}
	if tx.Instance(id) != nil {
		return &FireTriggerResponse{InstanceID: id, Outcome: "duplicate", Reason: "this delivery already started its instance"}
	}
	input := reqBody
	if decl != nil && decl.Input != nil {
		if input, err = hcl.Eval(decl.Input, scope); err != nil {
			return errorf(CodeInvalid, "the trigger's input: %v", err)
		}
	}
	inst, e := f.createInstance(tx, id, t.Workflow, 0, input, req.Time, nil, t.ID)
	if e != nil {
		return e
	}
	c := *t
	c.Fired++
	c.RunningID, c.LastFire, c.ModifyIndex = inst.ID, req.Time, tx.Index
	tx.mustInsert(tableTriggers, &c)
	return &FireTriggerResponse{InstanceID: inst.ID, Outcome: "started"}
}

func validIDPart(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// Secret returns a secret by name, or nil.
func (tx *Txn) Secret(name string) *Secret {
	raw, err := tx.First(tableSecrets, "id", name)
	if err != nil || raw == nil {
		return nil
	}
	return raw.(*Secret)
}

// SecretNames lists the secrets without their values.
func (tx *Txn) SecretNames() []SecretInfo {
	out := []SecretInfo{}
	it, err := tx.Get(tableSecrets, "id")
	if err != nil {
		return out
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		s := raw.(*Secret)
		out = append(out, SecretInfo{Name: s.Name, ModifyIndex: s.ModifyIndex})
	}
	return out
}
