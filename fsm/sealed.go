package fsm

import (
	"encoding/binary"
	"time"
	"unsafe"
)

// sealWriter and sealReader are the primitives of the process's own binary
// forms (a sealed history tail, an archived instance): numbers as varints,
// strings and bytes length first, times as seconds, nanoseconds and zone.
// The forms never leave the process, so they need no version; what a
// reader is given is only ever what a writer wrote here, and anything
// else is a bug, which panics.
type sealWriter struct{ buf []byte }

func (w *sealWriter) uvarint(v uint64) { w.buf = binary.AppendUvarint(w.buf, v) }
func (w *sealWriter) varint(v int64)   { w.buf = binary.AppendVarint(w.buf, v) }

func (w *sealWriter) str(v string) {
	w.uvarint(uint64(len(v)))
	w.buf = append(w.buf, v...)
}

// bytes writes b as its length plus one, 0 for nil: a nil JSON value and an
// empty one read back as they were.
func (w *sealWriter) bytes(b []byte) {
	if b == nil {
		w.uvarint(0)
		return
	}
	w.uvarint(uint64(len(b)) + 1)
	w.buf = append(w.buf, b...)
}

func (w *sealWriter) bool(b bool) {
	if b {
		w.buf = append(w.buf, 1)
	} else {
		w.buf = append(w.buf, 0)
	}
}

// time writes t as seconds, nanoseconds and its zone's offset (0 for UTC),
// which is what a decoded time is read back in: a fixed zone of that
// offset, so it writes the same JSON. The state's times are UTC.
func (w *sealWriter) time(t time.Time) {
	_, offset := t.Zone()
	w.varint(t.Unix())
	w.uvarint(uint64(t.Nanosecond()))
	w.varint(int64(offset))
}

type sealReader struct {
	buf  []byte
	what string // what is read, for the panic
}

func (r *sealReader) fail() { panic("fsm: " + r.what + " does not decode") }

func (r *sealReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.buf)
	if n <= 0 {
		r.fail()
	}
	r.buf = r.buf[n:]
	return v
}

func (r *sealReader) varint() int64 {
	v, n := binary.Varint(r.buf)
	if n <= 0 {
		r.fail()
	}
	r.buf = r.buf[n:]
	return v
}

func (r *sealReader) take(n uint64) []byte {
	if n > uint64(len(r.buf)) {
		r.fail()
	}
	b := r.buf[:n:n]
	r.buf = r.buf[n:]
	return b
}

// str reads a string that shares the buffer's memory: the buffers read
// are never written again.
func (r *sealReader) str() string {
	b := r.take(r.uvarint())
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// bytes reads what sealWriter.bytes wrote, sharing the buffer's memory
// (with no spare capacity: an append copies).
func (r *sealReader) bytes() []byte {
	n := r.uvarint()
	if n == 0 {
		return nil
	}
	return r.take(n - 1)
}

func (r *sealReader) bool() bool {
	b := r.take(1)
	if b[0] > 1 {
		r.fail()
	}
	return b[0] == 1
}

func (r *sealReader) time() time.Time {
	sec, nsec, offset := r.varint(), r.uvarint(), r.varint()
	t := time.Unix(sec, int64(nsec)).UTC()
	if offset != 0 {
		t = t.In(time.FixedZone("", int(offset)))
	}
	return t
}
