package fsm

import (
	"fmt"
	"testing"
	"unsafe"
)

func TestIDListKeepsEveryID(t *testing.T) {
	for _, ids := range [][]string{nil, {""}, {"a"}, {"", "b", ""}, {"i1", "i10", "i2", "t35"}} {
		l := packIDs(ids)
		if l.len() != len(ids) {
			t.Fatalf("%q: %d ids, want %d", ids, l.len(), len(ids))
		}
		got := l.unpack(3)
		if fmt.Sprint(got) != fmt.Sprint(ids) || cap(got) != len(ids)+3 {
			t.Fatalf("%q: unpacked %q (cap %d)", ids, got, cap(got))
		}
	}
	sorted := packIDs([]string{"i1", "i3", "i5"})
	for id, want := range map[string]int{"": 0, "i1": 0, "i2": 1, "i5": 2, "i6": 3} {
		if got := sorted.search(id); got != want {
			t.Errorf("search %q = %d, want %d", id, got, want)
		}
	}
}

// The ids a list hands out stay as they were when the strings packed
// from change: the list holds copies.
func TestIDListCopiesTheIDs(t *testing.T) {
	b := []byte("i42")
	l := packIDs([]string{string(b[:2]), unsafe.String(&b[0], len(b))})
	b[0] = 'x'
	if l.at(0) != "i4" || l.at(1) != "i42" {
		t.Fatalf("got %q %q", l.at(0), l.at(1))
	}
}
