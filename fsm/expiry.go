package fsm

import (
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/go-memdb"
)

// Expiry buckets. Ended instances are found by when they expire through
// the expiry table: one record per bucket of expiry times (2^expiryShift
// nanoseconds, 67 ms: small enough that the copy a transaction makes of
// the bucket it adds to stays small at thousands of ends a second),
// holding the bucket's (expiry, id) pairs in order. As an index of the
// instances table they cost each retained instance a radix path of its
// own (about six heap objects on every node, walked by every collection)
// and were written again at every change of an ended instance. A bucket
// is copied once per transaction that changes it, and instances end, and
// expire, in about the order of their times, so almost every change
// appends to the newest bucket or takes from the oldest. The table is
// derived: a restore rebuilds it as it inserts the instances, and
// snapshots leave it out.

const (
	tableExpiry = "expiry"
	expiryShift = 26
)

// expiryEntry is an ended instance and when it expires.
type expiryEntry struct {
	Key uint64 // the instance's ExpiresKey
	ID  string
}

func (e expiryEntry) less(o expiryEntry) bool {
	return e.Key < o.Key || (e.Key == o.Key && e.ID < o.ID)
}

// expiryBucket is a record of the expiry table. A stored bucket keeps its
// entries' keys and ids apart, the ids packed (idList); a transaction's
// copy works on Entries and packs them when it writes the bucket.
type expiryBucket struct {
	Bucket  uint64
	Entries []expiryEntry
	keys    []uint64
	ids     idList
}

// entry is a stored bucket's i-th entry, its id sharing the bucket's bytes.
func (b *expiryBucket) entry(i int) expiryEntry {
	return expiryEntry{Key: b.keys[i], ID: b.ids.at(i)}
}

func init() {
	registerTable(&memdb.TableSchema{
		Name: tableExpiry,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: uintIndex{func(o any) uint64 { return o.(*expiryBucket).Bucket }}},
		},
	})
	derivedTables[tableExpiry] = true
}

// storeInstance writes an instance's record, a live one into the
// instances table and an archived one into its archive page, takes the
// record it replaces (stored, as storedInstance read it) out of the other,
// and moves the instance's expiry from that record's.
func (t *Txn) storeInstance(obj, stored any) {
	id := instanceID(obj)
	delete(t.absent, id)
	var from uint64
	if stored != nil {
		from = instanceExpires(stored)
	}
	if rec, ok := obj.(*archivedInstance); ok {
		if live, ok := stored.(*Instance); ok {
			if err := t.Txn.Delete(tableInstances, live); err != nil {
				panic(fmt.Sprintf("fsm: archive instance %s: %v", id, err))
			}
		}
		t.putArchived(rec)
	} else {
		if _, ok := stored.(*archivedInstance); ok {
			t.dropArchivedRecord(id)
		}
		if err := t.Txn.Insert(tableInstances, obj); err != nil {
			panic(fmt.Sprintf("fsm: insert instance %s: %v", id, err))
		}
	}
	t.moveExpiry(id, from, instanceExpires(obj))
}

// deleteInstance deletes the stored record of an instance and its expiry.
func (t *Txn) deleteInstance(obj any) error {
	id := instanceID(obj)
	switch old := t.storedInstance(id).(type) {
	case nil:
		return memdb.ErrNotFound
	case *archivedInstance:
		t.dropArchivedRecord(id)
		t.moveExpiry(id, old.ExpiresKey, 0)
	default:
		if err := t.Txn.Delete(tableInstances, old); err != nil {
			return err
		}
		t.moveExpiry(id, instanceExpires(old), 0)
	}
	return nil
}

// moveExpiry moves an instance's entry from one expiry to another (0:
// none).
func (t *Txn) moveExpiry(id string, from, to uint64) {
	if from == to {
		return
	}
	if from != 0 {
		b := t.expiryBucketToWrite(from >> expiryShift)
		e := expiryEntry{Key: from, ID: id}
		i := sort.Search(len(b.Entries), func(i int) bool { return !b.Entries[i].less(e) })
		if i == len(b.Entries) || b.Entries[i] != e {
			panic(fmt.Sprintf("fsm: instance %s expires at %d but is not in its bucket", id, from))
		}
		b.Entries = append(b.Entries[:i], b.Entries[i+1:]...)
	}
	if to != 0 {
		b := t.expiryBucketToWrite(to >> expiryShift)
		e := expiryEntry{Key: to, ID: id}
		i := len(b.Entries) // the usual case: the latest to expire
		if i > 0 && e.less(b.Entries[i-1]) {
			i = sort.Search(len(b.Entries), func(i int) bool { return !b.Entries[i].less(e) })
		}
		b.Entries = append(b.Entries, expiryEntry{})
		copy(b.Entries[i+1:], b.Entries[i:])
		b.Entries[i] = e
	}
}

// expiryBucketToWrite returns this transaction's copy of a bucket, made at
// its first change.
func (t *Txn) expiryBucketToWrite(bucket uint64) *expiryBucket {
	if b, ok := t.expiries[bucket]; ok {
		return b
	}
	b := &expiryBucket{Bucket: bucket}
	if raw, err := t.Txn.First(tableExpiry, "id", bucket); err == nil && raw != nil {
		old := raw.(*expiryBucket)
		b.Entries = make([]expiryEntry, len(old.keys), len(old.keys)+16)
		for i := range b.Entries {
			b.Entries[i] = old.entry(i)
		}
	}
	if t.expiries == nil {
		t.expiries = map[uint64]*expiryBucket{}
	}
	t.expiries[bucket] = b
	return b
}

// flushExpiry writes the buckets this transaction changed, deleting
// those left empty.
func (t *Txn) flushExpiry() {
	for _, b := range t.expiries {
		b.keys = make([]uint64, len(b.Entries))
		for i, e := range b.Entries {
			b.keys[i] = e.Key
		}
		b.ids = packEach(len(b.Entries), func(i int) string { return b.Entries[i].ID })
		b.Entries = nil
	}
	writeChanged(t, tableExpiry, t.expiries, func(b *expiryBucket) bool { return len(b.keys) == 0 })
	t.expiries = nil
}

// eachExpiry calls fn with the ended instances' expiries in order, until
// fn returns false. A write transaction first writes what it holds.
func (t *Txn) eachExpiry(fn func(expiryEntry) bool) {
	if t.write {
		t.flush(tableInstances)
		t.flushExpiry()
	}
	it, err := t.Txn.Get(tableExpiry, "id")
	if err != nil {
		panic(fmt.Sprintf("fsm: expiry: %v", err))
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		b := raw.(*expiryBucket)
		for i := range b.keys {
			if !fn(b.entry(i)) {
				return
			}
		}
	}
}

// Expired lists up to limit ended instances whose retention has passed at
// now, the earliest expiry first.
func (t *Txn) Expired(now time.Time, limit int) []*Instance {
	out := []*Instance{}
	cutoff := uint64(now.UnixNano())
	var ids []string
	t.eachExpiry(func(e expiryEntry) bool {
		if e.Key > cutoff || len(ids) >= limit {
			return false
		}
		ids = append(ids, e.ID)
		return true
	})
	for _, id := range ids {
		raw := t.storedInstance(id)
		if raw == nil {
			panic(fmt.Sprintf("fsm: instance %s expires but is missing", id))
		}
		out = append(out, t.instance(raw))
	}
	return out
}

// NextExpiry is when the next ended instance expires (zero when none).
func (t *Txn) NextExpiry() time.Time {
	var next uint64
	t.eachExpiry(func(e expiryEntry) bool {
		next = e.Key
		return false
	})
	if next == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(next)).UTC()
}
