package fsm

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/go-memdb"
)

// Instances by workflow. The instance_workflow table lists each
// workflow's instances in pages: a page holds the ids, in order, from its
// Lo up to the next page's Lo (the first page of a workflow may start at
// ""), and splits in two past pageMax ids. It is a table of its own,
// written when an instance is created and when it is purged, because an
// index of the instances table would be written again at every change of
// the instance; and pages rather than a record per instance, because a
// record per instance is a radix path of its own, about six heap objects
// per instance on every node that each collection walks. A transaction
// copies a page once, at its first change, and writes its copies at
// commit. The table is derived: snapshots leave it out and a restore
// rebuilds it as it inserts the instances, so its pages may be cut
// elsewhere on a restored node than on one that applied the log, which no
// read can tell.

const pageMax = 128

// workflowPage is a record of the instance_workflow table. A stored page
// keeps its ids packed (idList); a transaction's copy works on IDs and
// packs them when it writes the page.
type workflowPage struct {
	Workflow string
	Lo       string
	IDs      []string
	packed   idList
}

// pageKey is the table key of the page of a workflow that starts at lo;
// ids and workflow names hold no NUL, so key order is (workflow, lo)
// order.
func pageKey(workflow, lo string) string { return workflow + "\x00" + lo }

func (p *workflowPage) key() string { return pageKey(p.Workflow, p.Lo) }

func init() {
	registerTable(&memdb.TableSchema{
		Name: tableInstanceWorkflow,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: strIndex{func(o any) string { return o.(*workflowPage).key() }}},
		},
	})
	derivedTables[tableInstanceWorkflow] = true
}

// storedPage returns the stored page of a workflow that would hold id
// (the one with the greatest Lo not after it), or nil.
func (t *Txn) storedPage(workflow, id string) *workflowPage {
	it, err := t.Txn.ReverseLowerBound(tableInstanceWorkflow, "id", pageKey(workflow, id))
	if err != nil {
		panic(fmt.Sprintf("fsm: instances of %s: %v", workflow, err))
	}
	if raw := it.Next(); raw != nil {
		if p := raw.(*workflowPage); p.Workflow == workflow {
			return p
		}
	}
	return nil
}

// pageToWrite returns this transaction's copy of the page of a workflow
// that holds, or would hold, id: its greatest Lo not after id among the
// stored pages and those this transaction made. A workflow with none gets
// a first page.
func (t *Txn) pageToWrite(workflow, id string) *workflowPage {
	q := pageKey(workflow, id)
	best := ""
	found := false
	if p := t.storedPage(workflow, id); p != nil {
		best, found = p.key(), true
	}
	if k, ok := t.pages.floor(q); ok && strings.HasPrefix(k, workflow+"\x00") && (!found || k > best) {
		best, found = k, true
	}
	if !found {
		best = pageKey(workflow, "")
	}
	if p, ok := t.pages.get(best); ok {
		return p
	}
	p := &workflowPage{Workflow: workflow}
	if found {
		raw, err := t.Txn.First(tableInstanceWorkflow, "id", best)
		if err != nil || raw == nil {
			panic(fmt.Sprintf("fsm: instances of %s: page %q is missing", workflow, best))
		}
		old := raw.(*workflowPage)
		p.Lo = old.Lo
		p.IDs = old.packed.unpack(8)
	}
	t.pages.put(best, p)
	return p
}

// addInstanceRef lists a new instance under its workflow.
func (t *Txn) addInstanceRef(inst *Instance) {
	p := t.pageToWrite(inst.Workflow, inst.ID)
	i := sort.SearchStrings(p.IDs, inst.ID)
	if i < len(p.IDs) && p.IDs[i] == inst.ID {
		return
	}
	p.IDs = append(p.IDs, "")
	copy(p.IDs[i+1:], p.IDs[i:])
	p.IDs[i] = inst.ID
	if len(p.IDs) > pageMax {
		// When the new id is the page's last (ids a client gives often
		// grow, as order numbers do; minted ids are random), the full
		// page stays full and the new one starts a page, rather than
		// leaving every page half full.
		half := len(p.IDs) / 2
		if i == len(p.IDs)-1 {
			half = i
		}
		// The bound is a copy: a page outlives the instance it was cut at.
		n := &workflowPage{Workflow: p.Workflow, Lo: strings.Clone(p.IDs[half]), IDs: append(make([]string, 0, pageMax), p.IDs[half:]...)}
		p.IDs = p.IDs[:half:half]
		t.pages.put(n.key(), n)
	}
}

// removeInstanceRef takes a purged instance off its workflow's list.
func (t *Txn) removeInstanceRef(workflow, id string) {
	p := t.pageToWrite(workflow, id)
	i := sort.SearchStrings(p.IDs, id)
	if i == len(p.IDs) || p.IDs[i] != id {
		panic(fmt.Sprintf("fsm: instance %s is not listed under its workflow %s", id, workflow))
	}
	p.IDs = append(p.IDs[:i], p.IDs[i+1:]...)
}

// flushPages writes the pages this transaction changed, deleting those
// left empty.
func (t *Txn) flushPages() {
	for _, p := range t.pages.byKey {
		p.packed, p.IDs = packIDs(p.IDs), nil
	}
	writeChanged(t, tableInstanceWorkflow, t.pages.byKey, func(p *workflowPage) bool { return p.packed.len() == 0 })
	t.pages.reset()
}

// eachOfWorkflow calls fn with the ids of a workflow's instances after
// after, in order, until fn returns false.
func (t *Txn) eachOfWorkflow(workflow, after string, fn func(id string) bool) {
	if t.write {
		t.flushPages()
	}
	start := pageKey(workflow, "")
	if p := t.storedPage(workflow, after); p != nil {
		start = p.key()
	}
	it, err := t.Txn.LowerBound(tableInstanceWorkflow, "id", start)
	if err != nil {
		panic(fmt.Sprintf("fsm: instances of %s: %v", workflow, err))
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		p := raw.(*workflowPage)
		if p.Workflow != workflow {
			return
		}
		for i := p.packed.search(after); i < p.packed.len(); i++ {
			if id := p.packed.at(i); id != after && !fn(id) {
				return
			}
		}
	}
}
