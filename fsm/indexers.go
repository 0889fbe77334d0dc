package fsm

import (
	"encoding/binary"
	"fmt"
)

// strIndex and uintIndex are go-memdb indexers that read their field
// through a function. go-memdb's StringFieldIndex and UintFieldIndex find
// the field by reflection on every insert and lookup, which the hot tables
// (instances, tasks, history, counters) pay several times per command. The
// encodings are theirs: a string and a NUL, a uint as 8 big-endian bytes.
type strIndex struct{ field func(any) string }

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
