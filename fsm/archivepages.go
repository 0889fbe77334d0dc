package fsm

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/go-memdb"
)

// Archived instances live in pages of their own, not in the instances
// table. In the instances table each was a radix node and leaf with their
// watch channels, its record and its key: about eight heap objects, on
// every node, that every garbage collection walked (a full collection of
// 20,000 retained chain3 instances cost 1,670 ns per instance, 70 ns for
// the same values in pages; docs/performance-history.md, "The eleventh series").
// A page holds, in id order, the archived instances from its Lo up to the
// next page's Lo (the first page may start at ""), as values: an archived
// instance is then its key (the id shares it) and its encoded value. Pages
// split in two past archivePageMax instances; a transaction copies a page
// once, at its first change, and writes its copies at commit. The instances
// table holds the live instances only; an instance is in one or the
// other, never both (storeInstance, deleteInstance move it). The table is
// derived: snapshots write archived instances as instance records, and a
// restore archives them again at its commit, so its pages may be cut
// elsewhere on a restored node than on one that applied the log, which no
// read can tell.

const tableArchive = "archive"

// archivePageMax is smaller than the workflow lists' pageMax: a record is
// 88 bytes, and the page an archiving batch copies is most of what
// archiving allocates (8.4 KB a copy at 128, for the two or three
// instances a batch at 1,000/s archives; docs/performance-history.md, "The twelfth
// series"), while a page is one more heap object per 32 retained
// instances instead of per 128.
const archivePageMax = 32

// archivePage is a record of the archive table.
type archivePage struct {
	Lo   string
	Recs []archivedInstance
}

func init() {
	registerTable(&memdb.TableSchema{
		Name: tableArchive,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: loIndex{strIndex{func(o any) string { return o.(*archivePage).Lo }}}},
		},
	})
	derivedTables[tableArchive] = true
}

// loIndex is strIndex that also keys the first page, whose Lo is "" (ids
// hold no NUL, so keys sort as their ids do).
type loIndex struct{ strIndex }

func (l loIndex) FromObject(obj any) (bool, []byte, error) {
	return true, append([]byte(l.field(obj)), 0), nil
}

// find returns where id is, or would be, in the page.
func (p *archivePage) find(id string) (int, bool) {
	i := sort.Search(len(p.Recs), func(i int) bool { return p.Recs[i].ID() >= id })
	return i, i < len(p.Recs) && p.Recs[i].ID() == id
}

// storedArchivePage returns the stored page that would hold id (the one
// with the greatest Lo not after it), or nil.
func (t *Txn) storedArchivePage(id string) *archivePage {
	it, err := t.Txn.ReverseLowerBound(tableArchive, "id", id)
	if err != nil {
		panic(fmt.Sprintf("fsm: archive: %v", err))
	}
	if raw := it.Next(); raw != nil {
		return raw.(*archivePage)
	}
	return nil
}

// archivePageFor returns the page that holds, or would hold, id: the one
// with the greatest Lo not after id among the stored pages and the copies
// this transaction made. With write it is this transaction's copy (a first
// page when there is none); without, it may be nil.
func (t *Txn) archivePageFor(id string, write bool) *archivePage {
	best, found := "", false
	stored := t.storedArchivePage(id)
	if stored != nil {
		best, found = stored.Lo, true
	}
	if lo, ok := t.apages.floor(id); ok && (!found || lo > best) {
		best, found = lo, true
	}
	if p, ok := t.apages.get(best); ok && found {
		return p
	}
	if !write {
		if found {
			return stored
		}
		return nil
	}
	p := &archivePage{}
	if found {
		p.Lo = stored.Lo
		p.Recs = make([]archivedInstance, len(stored.Recs), len(stored.Recs)+4)
		copy(p.Recs, stored.Recs)
	}
	t.apages.put(p.Lo, p)
	return p
}

// archivedRecord returns the stored record of an instance if it is
// archived: a copy, so that no later change of its page moves it.
// Whether two reads found the same record is sameArchived's to say.
func (t *Txn) archivedRecord(id string) *archivedInstance {
	p := t.archivePageFor(id, false)
	if p == nil {
		return nil
	}
	i, ok := p.find(id)
	if !ok {
		return nil
	}
	rec := p.Recs[i]
	return &rec
}

// sameArchived says whether two archived records are the same version of
// an instance: the same encoded value.
func sameArchived(a, b *archivedInstance) bool {
	return a != nil && b != nil && len(a.Blob) > 0 && len(b.Blob) > 0 && &a.Blob[0] == &b.Blob[0]
}

// putArchived writes an archived record (a new one or a new version).
func (t *Txn) putArchived(rec *archivedInstance) {
	id := rec.ID()
	p := t.archivePageFor(id, true)
	i, ok := p.find(id)
	if ok {
		p.Recs[i] = *rec
		return
	}
	p.Recs = append(p.Recs, archivedInstance{})
	copy(p.Recs[i+1:], p.Recs[i:])
	p.Recs[i] = *rec
	if len(p.Recs) > archivePageMax {
		// When the new record is the page's last (ids a client gives
		// often grow, as order numbers do; minted ids are random), the
		// full page stays full and the new one starts a page, as the
		// workflow lists do.
		half := len(p.Recs) / 2
		if i == len(p.Recs)-1 {
			half = i
		}
		// The bound is a copy: a page outlives the instance it was cut at.
		n := &archivePage{Lo: strings.Clone(p.Recs[half].ID()), Recs: append(make([]archivedInstance, 0, archivePageMax), p.Recs[half:]...)}
		p.Recs = p.Recs[:half:half]
		t.apages.put(n.Lo, n)
	}
}

// dropArchivedRecord takes an instance's record out of its page.
func (t *Txn) dropArchivedRecord(id string) {
	p := t.archivePageFor(id, true)
	i, ok := p.find(id)
	if !ok {
		panic(fmt.Sprintf("fsm: archived instance %s is not in its page", id))
	}
	p.Recs = append(p.Recs[:i], p.Recs[i+1:]...)
}

// flushArchive writes the pages this transaction changed, deleting those
// left empty.
func (t *Txn) flushArchive() {
	writeChanged(t, tableArchive, t.apages.byKey, func(p *archivePage) bool { return len(p.Recs) == 0 })
	t.apages.reset()
}

// eachArchived calls fn with the archived records from id after
// (inclusive) on, in id order, until fn returns false. A write
// transaction first writes what it holds.
func (t *Txn) eachArchived(after string, fn func(*archivedInstance) bool) {
	if t.write {
		t.flush(tableInstances)
		t.flushArchive()
	}
	start := ""
	if p := t.storedArchivePage(after); p != nil {
		start = p.Lo
	}
	it, err := t.Txn.LowerBound(tableArchive, "id", start)
	if err != nil {
		panic(fmt.Sprintf("fsm: archive: %v", err))
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		p := raw.(*archivePage)
		i, _ := p.find(after)
		for ; i < len(p.Recs); i++ {
			rec := p.Recs[i]
			if !fn(&rec) {
				return
			}
		}
	}
}

// storedInstance returns the stored record of an instance, live or
// archived, or nil. A write transaction remembers the ids it found
// nowhere until it stores them (a new instance is looked for at its
// start, its first save and its flush, and missing from the live table
// it costs a search of the archive's pages as well).
func (t *Txn) storedInstance(id string) any {
	if t.absent[id] {
		return nil
	}
	if raw, err := t.Txn.First(tableInstances, "id", id); err == nil && raw != nil {
		return raw
	}
	if rec := t.archivedRecord(id); rec != nil {
		return rec
	}
	if t.write {
		if t.absent == nil {
			t.absent = map[string]bool{}
		}
		t.absent[id] = true
	}
	return nil
}

// eachStoredInstance calls fn with every stored record of the instances,
// live and archived, from id after (inclusive) on, in id order, until fn
// returns false. A write transaction first writes what it holds.
func (t *Txn) eachStoredInstance(after string, fn func(any) bool) error {
	it, err := t.LowerBound(tableInstances, "id", after)
	if err != nil {
		return err
	}
	live := it.Next()
	stop := false
	t.eachArchived(after, func(rec *archivedInstance) bool {
		for live != nil && instanceID(live) < rec.ID() {
			if !fn(live) {
				stop = true
				return false
			}
			live = it.Next()
		}
		if !fn(rec) {
			stop = true
			return false
		}
		return true
	})
	for ; !stop && live != nil; live = it.Next() {
		if !fn(live) {
			return nil
		}
	}
	return nil
}
