package fsm

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"pgregory.net/rapid"
)

// Archived records put, replaced and dropped in transactions of any size,
// some reading and listing mid-way, read back exactly, list exactly and in
// order from any point, and the pages keep their ranges as they split.
func TestArchivePagesHoldExactly(t *testing.T) {
	pagedTxns(t, 2, func() (func(*rapid.T, *rand.Rand, *Txn), func(*rapid.T, *Txn)) {
		model := map[string]uint64{} // id -> ModifyIndex of its record
		afters := []string{"", "i1", "i5", "i999"}
		op := func(rt *rapid.T, rng *rand.Rand, tx *Txn) {
			id := fmt.Sprintf("i%d", rng.IntN(3000))
			switch kind := rng.IntN(12); {
			case kind < 3 && len(model) > 0:
				ids := sortedIDs(archivedSet(model), "")
				id = ids[rng.IntN(len(ids))]
				tx.dropArchivedRecord(id)
				delete(model, id)
			case kind == 3:
				archiveListsExactly(rt, tx, model, afters[rng.IntN(len(afters))])
			case kind == 4:
				rec := tx.archivedRecord(id)
				if mi, ok := model[id]; ok != (rec != nil) || (ok && rec.ModifyIndex != mi) {
					rt.Fatalf("read %s: %+v, want %v %v", id, rec, mi, ok)
				}
			default:
				mi := uint64(rng.IntN(1 << 20))
				tx.putArchived(&archivedInstance{ModifyIndex: mi, Blob: idBlob(id, byte(mi))})
				model[id] = mi
			}
		}
		check := func(rt *rapid.T, read *Txn) {
			for _, after := range []string{"", "i1", "i15", "i2000", "i9"} {
				archiveListsExactly(rt, read, model, after)
			}
			archivePagesHold(rt, "store", read)
		}
		return op, check
	})
}

// idBlob is a stand-in for an archived instance's blob: its id, as the
// blob begins, then a byte that tells versions apart.
func idBlob(id string, v byte) []byte {
	var w sealWriter
	w.str(id)
	return append(w.buf, v)
}

func archivedSet(model map[string]uint64) map[string]bool {
	out := map[string]bool{}
	for id := range model {
		out[id] = true
	}
	return out
}

func archiveListsExactly(rt *rapid.T, tx *Txn, model map[string]uint64, after string) {
	var got []string
	tx.eachArchived(after, func(rec *archivedInstance) bool {
		id := rec.ID()
		if rec.ModifyIndex != model[id] {
			rt.Fatalf("after %q: %s is version %d, want %d", after, id, rec.ModifyIndex, model[id])
		}
		if id >= after { // eachArchived is inclusive
			got = append(got, id)
		}
		return true
	})
	want := sortedIDs(archivedSet(model), "")
	var from []string
	for _, id := range want {
		if id >= after {
			from = append(from, id)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(from) {
		rt.Fatalf("after %q: listed %v, want %v", after, got, from)
	}
}

// BenchmarkPagesOneTransaction puts b.N archived instances, and their
// workflow list entries, in one transaction, as a restore does: the cost
// per instance must not grow with the number of pages the transaction
// made (it did, walking them all at each put: 200,000 took 14.5 s).
func BenchmarkPagesOneTransaction(b *testing.B) {
	s := NewStateStore()
	tx := s.write(1)
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("bench-x-%08d", i)
		tx.putArchived(&archivedInstance{Blob: idBlob(id, 1)})
		tx.addInstanceRef(&Instance{ID: id, Workflow: "w"})
	}
	tx.Commit()
}
