package fsm

func init() { registerCommand(NoopType, (*FSM).applyNoop) }

// NoopRequest changes nothing: it measures the path every write takes
// (HTTP, forwarding, raft commit on a quorum, apply) without the cost of a
// workflow command, which is the raft ceiling `lockstep bench -workload
// raft` reports.
type NoopRequest struct {
	Header
}

// NoopResponse is the index the no-op was applied at.
type NoopResponse struct {
	Index uint64 `json:"index"`
}

func (f *FSM) applyNoop(tx *Txn, body []byte) any {
	var req NoopRequest
	mustDecode(NoopType, body, &req)
	return &NoopResponse{Index: tx.Index}
}
