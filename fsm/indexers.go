package fsm

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/hashicorp/go-memdb"
)

// strIndex and uintIndex are go-memdb indexers that read their field
// through a function. go-memdb's StringFieldIndex and UintFieldIndex find
// the field by reflection on every insert and lookup, which the hot tables
// (instances, tasks, history, counters) pay several times per command. The
// encodings are theirs: a string and a NUL, a uint as 8 big-endian bytes.
type strIndex struct{ field func(any) string }

// idIndex is strIndex for the id index of records that carry their key
// (keyed): go-memdb asks an index for a record's key at every insert (three
// times for an update) and keeps it in the tree, so a key made once with
// the record saves those allocations and an object per stored record.
type idIndex struct{ strIndex }

// keyed records return their id index key, or nil when they have none.
type keyed interface{ idKey() []byte }

func (s idIndex) FromObject(obj any) (bool, []byte, error) {
	if k, ok := obj.(keyed); ok {
		if b := k.idKey(); b != nil {
			return true, b, nil
		}
	}
	return s.strIndex.FromObject(obj)
}

// newKey returns id's index key (id and a NUL) and id as a string that
// shares its bytes, one allocation for both. The key's capacity is its
// length, so nothing appended to it can write into the string; neither
// go-memdb nor the radix tree writes into a key it is given.
func newKey(id string) (string, []byte) {
	if id == "" {
		return "", nil
	}
	b := make([]byte, len(id)+1)
	copy(b, id)
	return unsafe.String(&b[0], len(id)), b
}

// keyOf returns key if it is id's index key (a record copied and given
// another id keeps the old key, which must not be used), else nil.
func keyOf(key []byte, id string) []byte {
	if len(key) == len(id)+1 && string(key[:len(id)]) == id {
		return key
	}
	return nil
}

func (s strIndex) FromObject(obj any) (bool, []byte, error) {
	v := s.field(obj)
	if v == "" {
		return false, nil, nil
	}
	return true, append([]byte(v), 0), nil
}

func (s strIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("one argument, got %d", len(args))
	}
	v, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("%T is not a string", args[0])
	}
	return append([]byte(v), 0), nil
}

func (s strIndex) PrefixFromArgs(args ...any) ([]byte, error) {
	b, err := s.FromArgs(args...)
	if err != nil {
		return nil, err
	}
	return b[:len(b)-1], nil
}

type uintIndex struct{ field func(any) uint64 }

func (u uintIndex) FromObject(obj any) (bool, []byte, error) {
	return true, binary.BigEndian.AppendUint64(make([]byte, 0, 8), u.field(obj)), nil
}

func (u uintIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("one argument, got %d", len(args))
	}
	var v uint64
	switch a := args[0].(type) {
	case uint64:
		v = a
	case uint:
		v = uint64(a)
	case uint32:
		v = uint64(a)
	default:
		return nil, fmt.Errorf("%T is not an unsigned integer", args[0])
	}
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v), nil
}

// keyPart is a sub-index of compound that can append its part of a key.
type keyPart interface {
	memdb.SingleIndexer
	memdb.Indexer
	// keyLen is the length of the part's bytes for obj; false when the
	// record has no value for it (the compound key is then missing).
	keyLen(obj any) (int, bool)
	// appendKey appends the part's bytes for obj (which has a value).
	appendKey(b []byte, obj any) []byte
}

func (s strIndex) keyLen(obj any) (int, bool) {
	v := s.field(obj)
	return len(v) + 1, v != ""
}

func (s strIndex) appendKey(b []byte, obj any) []byte {
	return append(append(b, s.field(obj)...), 0)
}

func (uintIndex) keyLen(any) (int, bool) { return 8, true }

func (u uintIndex) appendKey(b []byte, obj any) []byte {
	return binary.BigEndian.AppendUint64(b, u.field(obj))
}

func (priorityIndex) keyLen(any) (int, bool) { return 1, true }

func (priorityIndex) appendKey(b []byte, obj any) []byte {
	return append(b, byte(255-obj.(*Task).Priority))
}

// compound is a memdb.CompoundIndex (without AllowMissing) whose keys are
// built in one allocation: CompoundIndex allocates each part's key, then
// grows the whole, at every insert and for the record it replaces. Queries
// (FromArgs, PrefixFromArgs) go through the CompoundIndex, which makes the
// same bytes.
type compound struct {
	*memdb.CompoundIndex
	parts []keyPart
}

func newCompound(parts ...keyPart) compound {
	idx := make([]memdb.Indexer, len(parts))
	for i, p := range parts {
		idx[i] = p
	}
	return compound{CompoundIndex: &memdb.CompoundIndex{Indexes: idx}, parts: parts}
}

func (c compound) FromObject(obj any) (bool, []byte, error) {
	n := 0
	for _, p := range c.parts {
		l, ok := p.keyLen(obj)
		if !ok {
			return false, nil, nil
		}
		n += l
	}
	b := make([]byte, 0, n)
	for _, p := range c.parts {
		b = p.appendKey(b, obj)
	}
	return true, b, nil
}
