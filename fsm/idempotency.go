package fsm

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/go-memdb"
)

// IdempotentRequest wraps a command sent with an Idempotency-Key: the first
// time the key is seen the command runs and its answer is stored; a repeat
// with the same request (Fingerprint) gets that answer and changes nothing;
// the same key with another request is a conflict.
type IdempotentRequest struct {
	Header
	Key         string `json:"key"`
	Fingerprint string `json:"fingerprint"`
	// Command is the wrapped command, framed by Encode.
	Command []byte `json:"command"`
}

// idempotencyRecord is the stored first answer to a key.
type idempotencyRecord struct {
	Key         string          `json:"key"`
	Fingerprint string          `json:"fingerprint"`
	Type        MessageType     `json:"type"`
	Response    json.RawMessage `json:"response,omitempty"`
	Error       *Error          `json:"error,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
	CreateIndex uint64          `json:"create_index"`
}

const tableIdempotency = "idempotency"

// IdempotencyWindow is how long an Idempotency-Key is remembered: a repeat
// within it gets the first answer; after it the key is forgotten (deleted
// by PurgeInstances) and may be used afresh.
const IdempotencyWindow = 72 * time.Hour

// responseTypes makes an empty response of each command that can be sent
// with an idempotency key, to decode a stored answer.
var responseTypes = map[MessageType]func() any{
	RegisterWorkflowType:  func() any { return new(RegisterWorkflowResponse) },
	StartInstanceType:     func() any { return new(StartInstanceResponse) },
	CompleteTaskType:      func() any { return new(TaskResultResponse) },
	FailTaskType:          func() any { return new(TaskResultResponse) },
	TerminateInstanceType: func() any { return new(InstanceStatusResponse) },
	CancelInstanceType:    func() any { return new(InstanceStatusResponse) },
	SuspendInstanceType:   func() any { return new(InstanceStatusResponse) },
	ResumeInstanceType:    func() any { return new(InstanceStatusResponse) },
	RetryInstanceType:     func() any { return new(InstanceStatusResponse) },
	StepOverrideType:      func() any { return new(InstanceStatusResponse) },
	SetBreakerType:        func() any { return new(Breaker) },
	FireTriggerType:       func() any { return new(FireTriggerResponse) },
	SetTriggerType:        func() any { return new(Trigger) },
	PutSecretType:         func() any { return new(SecretInfo) },
	WebhookDeliveryType:   func() any { return new(FireTriggerResponse) },
	SignalInstanceType:    func() any { return new(SignalResponse) },
	HeartbeatTaskType:     func() any { return new(HeartbeatResponse) },
	TaskResultsType:       func() any { return new(TaskResultsResponse) },
	StartInstanceNextType: func() any { return new(StartInstanceResponse) },
	TaskResultsNextType:   func() any { return new(TaskResultsResponse) },
}

func init() {
	registerTable(&memdb.TableSchema{
		Name: tableIdempotency,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Key"}},
			// By age, for retention.
			"created": {Name: "created", Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
				&memdb.UintFieldIndex{Field: "CreateIndex"},
				&memdb.StringFieldIndex{Field: "Key"},
			}}},
		},
	})
	registerRecord(tableIdempotency, func() any { return new(idempotencyRecord) })
	registerCommand(IdempotentType, (*FSM).applyIdempotent)
}

func (f *FSM) applyIdempotent(tx *Txn, body []byte) any {
	var req IdempotentRequest
	mustDecode(IdempotentType, body, &req)
	if len(req.Command) < 2 {
		panic("fsm: idempotent command wraps nothing")
	}
	t := MessageType(req.Command[0])
	if raw, err := tx.First(tableIdempotency, "id", req.Key); err == nil && raw != nil {
		rec := raw.(*idempotencyRecord)
		if rec.Fingerprint != req.Fingerprint || rec.Type != t {
			return errorf(CodeConflict, "Idempotency-Key %q was first used for a different request", req.Key)
		}
		if rec.Error != nil {
			return rec.Error
		}
		out := responseTypes[rec.Type]()
		if err := json.Unmarshal(rec.Response, out); err != nil {
			panic(fmt.Sprintf("fsm: stored answer for key %q: %v", req.Key, err))
		}
		return out
	}
	fn := commands[t]
	if _, ok := responseTypes[t]; !ok || fn == nil {
		return errorf(CodeInvalid, "%s cannot be sent with an Idempotency-Key", t)
	}
	res := fn(f, tx, req.Command[1:])
	rec := &idempotencyRecord{Key: req.Key, Fingerprint: req.Fingerprint, Type: t, CreatedAt: req.Time, CreateIndex: tx.Index}
	if e, ok := res.(*Error); ok {
		rec.Error = e
	} else {
		b, err := json.Marshal(res)
		if err != nil {
			panic(fmt.Sprintf("fsm: encode answer of %s: %v", t, err))
		}
		rec.Response = b
	}
	tx.mustInsert(tableIdempotency, rec)
	return res
}
