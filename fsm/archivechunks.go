package fsm

// Archived blobs live in chunks. Each archived instance's blob as an
// allocation of its own was one heap object per retained instance on
// every node, and a collection's mark pays for each object it reaches
// (a lookup of its span, most often a cache miss: BenchmarkRetainedHeap,
// docs/performance.md "Retained instances"). So a write transaction
// copies each blob into the end of a chunk of blobChunkSize bytes, and
// the archive record's Blob is that part of the chunk: a chunk is one
// object for about 30 chain3 instances, and their pointers all reach the
// same span. A chunk is freed by the collector once no record points
// into it, so the blobs of a chunk should go at about the same time:
// there is a chunk being filled per retention (an instance's expiry less
// its end), and instances that end together with the same retention
// expire together. Blobs never change, and a chunk is only ever written
// past the blobs already in it, so readers of older states read their
// blobs while a writer fills the rest; write transactions are one at a
// time (go-memdb's writer lock). A transaction that aborts leaves its
// blobs as unused bytes in the chunk.

const (
	blobChunkSize = 64 << 10
	// blobAlone is the size from which a blob is an allocation of its
	// own: a large instance fills chunks fast, and would waste the end of
	// each.
	blobAlone = blobChunkSize / 4
)

// blobChunks are a store's chunks being filled, by retention.
type blobChunks struct {
	filling map[uint64][]byte
}

// place returns a copy of blob in the chunk of the given retention, or
// in an allocation of its own when it is large. The copy has no spare
// capacity: an append to it copies.
func (c *blobChunks) place(retention uint64, blob []byte) []byte {
	if c == nil || len(blob) >= blobAlone {
		return append([]byte(nil), blob...)
	}
	cur := c.filling[retention]
	if cap(cur)-len(cur) < len(blob) {
		cur = make([]byte, 0, blobChunkSize)
	}
	at := len(cur)
	cur = append(cur, blob...)
	if c.filling == nil {
		c.filling = map[uint64][]byte{}
	}
	c.filling[retention] = cur
	return cur[at:len(cur):len(cur)]
}
