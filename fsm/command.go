package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// MessageType identifies a command in the raft log. Values are append-only:
// never reuse or renumber one, since old logs and snapshots still hold them.
type MessageType uint8

const (
	RegisterWorkflowType  MessageType = 1
	StartInstanceType     MessageType = 2
	LeaseTasksType        MessageType = 3
	CompleteTaskType      MessageType = 4
	FailTaskType          MessageType = 5
	ExpireLeasesType      MessageType = 6
	FireTimersType        MessageType = 7
	TerminateInstanceType MessageType = 8
	SignalInstanceType    MessageType = 9
	HeartbeatTaskType     MessageType = 10
	IdempotentType        MessageType = 11
	CancelInstanceType    MessageType = 12
	SuspendInstanceType   MessageType = 13
	ResumeInstanceType    MessageType = 14
	RetryInstanceType     MessageType = 15
	StepOverrideType      MessageType = 16
	SetBreakerType        MessageType = 17
	FireTriggerType       MessageType = 18
	SetTriggerType        MessageType = 19
	PutSecretType         MessageType = 20
	WebhookDeliveryType   MessageType = 21
	TaskResultsType       MessageType = 22
	NoopType              MessageType = 23
	PurgeInstancesType    MessageType = 24
	ReleaseLeasesType     MessageType = 25
	// A start or a batch of results that also leases tasks (Next). The
	// handlers are those of StartInstance and TaskResults, which still
	// accept Next in logs written before these types existed; proposers
	// use these so that a node too old to lease for Next stops at the
	// unknown type instead of applying the command without the leases
	// and diverging.
	StartInstanceNextType MessageType = 26
	TaskResultsNextType   MessageType = 27
)

// IgnoreUnknownTypeFlag marks a command that an older node may skip if it
// does not know the type. Without the flag an unknown type is a corrupt or
// too-new log and Apply panics rather than diverge silently.
const IgnoreUnknownTypeFlag MessageType = 128

// The second byte of every log entry names the encoding of the command
// body. Entries are written with codecMsgpack; codecJSON is still read, for
// logs and snapshots of logs written before it. A node that meets a codec it
// does not know stops (Decode's error panics the handler) rather than guess.
const (
	codecJSON    byte = 1
	codecMsgpack byte = 2
	// codecVersion is the codec Encode writes.
	codecVersion = codecMsgpack
)

// msgpackHandle encodes commands compactly: field names as the JSON tags
// give them (so a command reads the same in either codec), byte slices
// (json.RawMessage bodies among them) as raw bytes rather than escaped
// text, times in Go's binary form, which keeps the zone offset as the JSON
// text did, and map keys sorted, so equal commands encode to equal bytes.
var msgpackHandle = func() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{}
	h.WriteExt = true
	h.TimeNotBuiltin = true
	h.Canonical = true
	return h
}()

// encoder is a pooled msgpack encoder with the buffer it writes into.
type encoder struct {
	enc *codec.Encoder
	buf []byte
}

var encoders, decoders = codecPools(msgpackHandle)

// codecPools returns pools of encoders and decoders of one handle.
func codecPools(h *codec.MsgpackHandle) (encoders, decoders *sync.Pool) {
	encoders = &sync.Pool{New: func() any {
		e := &encoder{}
		e.enc = codec.NewEncoderBytes(&e.buf, h)
		return e
	}}
	decoders = &sync.Pool{New: func() any { return codec.NewDecoderBytes(nil, h) }}
	return encoders, decoders
}

// Encode frames a command for the raft log: type byte, codec byte, body.
func Encode(t MessageType, msg any) ([]byte, error) {
	e := encoders.Get().(*encoder)
	defer encoders.Put(e)
	e.enc.ResetBytes(&e.buf)
	if err := e.enc.Encode(msg); err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	buf := make([]byte, 2+len(e.buf))
	buf[0], buf[1] = byte(t), codecVersion
	copy(buf[2:], e.buf)
	return buf, nil
}

// Decode reads the body of a command framed by Encode (without its type
// byte, as handlers receive it) into out. A body may be in either codec.
func Decode(buf []byte, out any) error {
	if len(buf) < 1 {
		return errors.New("empty command")
	}
	switch buf[0] {
	case codecMsgpack:
		dec := decoders.Get().(*codec.Decoder)
		dec.ResetBytes(buf[1:])
		err := dec.Decode(out)
		dec.ResetBytes(nil)
		decoders.Put(dec)
		return err
	case codecJSON:
		return json.Unmarshal(buf[1:], out)
	}
	return fmt.Errorf("unknown command codec %d", buf[0])
}

func (t MessageType) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

var typeNames = map[MessageType]string{
	RegisterWorkflowType:  "RegisterWorkflow",
	StartInstanceType:     "StartInstance",
	LeaseTasksType:        "LeaseTasks",
	CompleteTaskType:      "CompleteTask",
	FailTaskType:          "FailTask",
	ExpireLeasesType:      "ExpireLeases",
	FireTimersType:        "FireTimers",
	TerminateInstanceType: "TerminateInstance",
	SignalInstanceType:    "SignalInstance",
	HeartbeatTaskType:     "HeartbeatTask",
	IdempotentType:        "Idempotent",
	CancelInstanceType:    "CancelInstance",
	SuspendInstanceType:   "SuspendInstance",
	ResumeInstanceType:    "ResumeInstance",
	RetryInstanceType:     "RetryInstance",
	StepOverrideType:      "StepOverride",
	SetBreakerType:        "SetBreaker",
	FireTriggerType:       "FireTrigger",
	SetTriggerType:        "SetTrigger",
	PutSecretType:         "PutSecret",
	WebhookDeliveryType:   "WebhookDelivery",
	TaskResultsType:       "TaskResults",
	NoopType:              "Noop",
	PurgeInstancesType:    "PurgeInstances",
	ReleaseLeasesType:     "ReleaseLeases",
	StartInstanceNextType: "StartInstanceNext",
	TaskResultsNextType:   "TaskResultsNext",
}

// applyFunc is the one shape of a command handler: decode the body (a decode
// failure is a corrupt log: panic), change the state in txn, and return the
// command's result or a business *Error. It must be deterministic.
type applyFunc func(f *FSM, tx *Txn, body []byte) any

var commands = map[MessageType]applyFunc{}

// registerCommand adds a handler to the dispatch table; each concept file
// registers its own commands from init.
func registerCommand(t MessageType, fn applyFunc) {
	if _, dup := commands[t]; dup {
		panic(fmt.Sprintf("fsm: command %s registered twice", t))
	}
	commands[t] = fn
}

func mustDecode(t MessageType, body []byte, out any) {
	if err := Decode(body, out); err != nil {
		panic(fmt.Sprintf("fsm: corrupt %s command: %v", t, err))
	}
}

// Header is carried by every command: the proposer's wall time, settled
// before the command reaches raft so that Apply never reads a clock.
type Header struct {
	Time time.Time `json:"time"`
}

// Error is a business error returned by Apply: the command was committed
// but refused, and changed nothing. Codes are stable; the HTTP layer maps
// them to statuses.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Stable error codes.
const (
	CodeNotFound   = "not_found"
	CodeConflict   = "conflict"
	CodeStaleToken = "stale_token"
	CodeInvalid    = "invalid"
	// CodeInvalidInput: an instance's input does not match the workflow's
	// declared input type.
	CodeInvalidInput = "invalid_input"
	// CodeForbidden: a webhook delivery whose signature does not match.
	CodeForbidden = "forbidden"
)

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
