package fsm

import (
	"bytes"
	"testing"
	"unsafe"
)

func TestChunksKeepEachBlobAsPlaced(t *testing.T) {
	var c blobChunks
	var placed, want [][]byte
	for i := range 200 {
		blob := bytes.Repeat([]byte{byte(i)}, 1000+i)
		retention := uint64(i % 3)
		got := c.place(retention, blob)
		if cap(got) != len(got) {
			t.Fatalf("blob %d: spare capacity %d: an append would write into the chunk", i, cap(got)-len(got))
		}
		blob[0] = 0xff // the chunk holds a copy
		placed, want = append(placed, got), append(want, bytes.Repeat([]byte{byte(i)}, 1000+i))
	}
	for i := range placed {
		if !bytes.Equal(placed[i], want[i]) {
			t.Fatalf("blob %d changed after the others were placed", i)
		}
	}
	// The last blobs of each retention share its chunk being filled; a
	// blob of another retention is not in it.
	last := len(placed) - 1
	if !inChunk(c.filling[uint64(last%3)], placed[last]) || !inChunk(c.filling[uint64(last%3)], placed[last-3]) || inChunk(c.filling[uint64(last%3)], placed[last-1]) {
		t.Fatal("blobs are not in their retention's chunk")
	}
}

func TestChunksPlaceLargeBlobsAlone(t *testing.T) {
	var c blobChunks
	small := c.place(1, []byte("small"))
	large := c.place(1, make([]byte, blobAlone))
	after := c.place(1, []byte("after"))
	if chunk := c.filling[1]; !inChunk(chunk, small) || inChunk(chunk, large) || !inChunk(chunk, after) {
		t.Fatal("a large blob went into the chunk")
	}
	var none *blobChunks
	if got := none.place(1, []byte("x")); string(got) != "x" {
		t.Fatalf("without chunks: %q", got)
	}
}

// inChunk says whether b lies in chunk's memory.
func inChunk(chunk, b []byte) bool {
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(chunk)))
	p := uintptr(unsafe.Pointer(&b[0]))
	return p >= lo && p < lo+uintptr(cap(chunk))
}
