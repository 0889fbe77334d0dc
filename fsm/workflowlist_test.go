package fsm

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"pgregory.net/rapid"
)

// pagedTxns runs rapid cases of 2 to 8 transactions, of 50 to 449
// operations each, on a fresh store: newCase gives a case's op (one
// operation) and check (run on the store after each commit). rapid draws
// small numbers most of the time; the operations come from a generator it
// seeds (stream tells the tests' generators apart), so that pages fill
// and split.
func pagedTxns(t *testing.T, stream uint64, newCase func() (op func(*rapid.T, *rand.Rand, *Txn), check func(*rapid.T, *Txn))) {
	rapid.Check(t, func(rt *rapid.T) {
		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(rt, "seed"), stream))
		s := NewStateStore()
		op, check := newCase()
		for n := rapid.IntRange(2, 8).Draw(rt, "txns"); n > 0; n-- {
			tx := s.write(uint64(n))
			for ops := 50 + rng.IntN(400); ops > 0; ops-- {
				op(rt, rng, tx)
			}
			tx.Commit()
			check(rt, s.Read())
		}
	})
}

// Instances added to and taken off their workflows' lists in transactions
// of any size, some of them listing mid-way, are listed exactly, in order,
// from any point, and the pages keep their ranges.
func TestWorkflowPagesListExactly(t *testing.T) {
	pagedTxns(t, 1, func() (func(*rapid.T, *rand.Rand, *Txn), func(*rapid.T, *Txn)) {
		model := map[string]map[string]bool{"a": {}, "b": {}, "ab": {}}
		workflows := []string{"a", "b", "ab"}
		afters := []string{"", "i1", "i5", "i999"}
		op := func(rt *rapid.T, rng *rand.Rand, tx *Txn) {
			wf := workflows[rng.IntN(len(workflows))]
			switch kind := rng.IntN(12); {
			case kind < 3 && len(model[wf]) > 0:
				ids := sortedIDs(model[wf], "")
				id := ids[rng.IntN(len(ids))]
				tx.removeInstanceRef(wf, id)
				delete(model[wf], id)
			case kind == 3:
				listsExactly(rt, tx, wf, model[wf], afters[rng.IntN(len(afters))])
			default:
				id := fmt.Sprintf("i%d", rng.IntN(3000))
				if !model[wf][id] {
					tx.addInstanceRef(&Instance{Workflow: wf, ID: id})
					model[wf][id] = true
				}
			}
		}
		check := func(rt *rapid.T, read *Txn) {
			for _, wf := range workflows {
				for _, after := range []string{"", "i1", "i15", "i2000", "i9"} {
					listsExactly(rt, read, wf, model[wf], after)
				}
			}
			pagesKeepTheirRanges(rt, read)
		}
		return op, check
	})
}

func sortedIDs(set map[string]bool, after string) []string {
	var out []string
	for id := range set {
		if id > after {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

func listsExactly(rt *rapid.T, tx *Txn, wf string, set map[string]bool, after string) {
	var got []string
	tx.eachOfWorkflow(wf, after, func(id string) bool {
		got = append(got, id)
		return true
	})
	if want := sortedIDs(set, after); fmt.Sprint(got) != fmt.Sprint(want) {
		rt.Fatalf("%s after %q: listed %v, want %v", wf, after, got, want)
	}
}

func pagesKeepTheirRanges(rt *rapid.T, tx *Txn) {
	it, err := tx.Txn.Get(tableInstanceWorkflow, "id")
	if err != nil {
		rt.Fatal(err)
	}
	var prev *workflowPage
	var prevIDs []string
	for raw := it.Next(); raw != nil; raw = it.Next() {
		p := raw.(*workflowPage)
		ids := p.packed.unpack(0)
		if p.IDs != nil || len(ids) == 0 || len(ids) > pageMax || !sort.StringsAreSorted(ids) || ids[0] < p.Lo {
			rt.Fatalf("page %q of %s: %v (unpacked %v)", p.Lo, p.Workflow, ids, p.IDs)
		}
		if prev != nil && prev.Workflow == p.Workflow && prevIDs[len(prevIDs)-1] >= p.Lo {
			rt.Fatalf("page %q of %s reaches into the next, %q", prev.Lo, p.Workflow, p.Lo)
		}
		prev, prevIDs = p, ids
	}
}
