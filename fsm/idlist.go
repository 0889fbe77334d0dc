package fsm

import (
	"sort"
	"unsafe"
)

// idList is how a stored page, bucket or block of a derived table keeps
// its ids: back to back in one byte slice, with where each ends. A
// []string is a pointer per id, which every garbage collection follows on
// every node for every retained instance; the ids of a workflow's list,
// of the expiry buckets and of the task owners were three to five of the
// eight pointers a retained chain3 instance kept (docs/performance.md,
// "Retained instances"). A transaction that changes a record works on
// the ids unpacked (strings that share the stored bytes, which never
// change) and packs them again when it writes the record.
type idList struct {
	buf  []byte
	ends []uint32
}

// packIDs copies ids into a list.
func packIDs(ids []string) idList {
	return packEach(len(ids), func(i int) string { return ids[i] })
}

// packEach copies the ids id(0) ... id(n-1) into a list.
func packEach(n int, id func(int) string) idList {
	size := 0
	for i := range n {
		size += len(id(i))
	}
	l := idList{buf: make([]byte, 0, size), ends: make([]uint32, n)}
	for i := range n {
		l.buf = append(l.buf, id(i)...)
		l.ends[i] = uint32(len(l.buf))
	}
	return l
}

func (l idList) len() int { return len(l.ends) }

// at returns the i-th id, sharing the list's bytes.
func (l idList) at(i int) string {
	lo := uint32(0)
	if i > 0 {
		lo = l.ends[i-1]
	}
	if l.ends[i] == lo {
		return ""
	}
	return unsafe.String(&l.buf[lo], int(l.ends[i]-lo))
}

// unpack returns the ids, with room for extra more.
func (l idList) unpack(extra int) []string {
	out := make([]string, l.len(), l.len()+extra)
	for i := range out {
		out[i] = l.at(i)
	}
	return out
}

// search is sort.SearchStrings on a sorted list.
func (l idList) search(id string) int {
	return sort.Search(l.len(), func(i int) bool { return l.at(i) >= id })
}
