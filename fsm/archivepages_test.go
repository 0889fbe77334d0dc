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
	rapid.Check(t, func(rt *rapid.T) {
		// The bulk of the operations come from a generator rapid seeds,
		// so that pages fill and split.
		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(rt, "seed"), 2))
		s := NewStateStore()
		model := map[string]uint64{} // id -> ModifyIndex of its record
		afters := []string{"", "i1", "i5", "i999"}
		for n := rapid.IntRange(2, 8).Draw(rt, "txns"); n > 0; n-- {
			tx := s.write(uint64(n))
			for ops := 50 + rng.IntN(400); ops > 0; ops-- {
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
					rid, key := newKey(id)
					tx.putArchived(&archivedInstance{ID: rid, key: key, ModifyIndex: mi, Blob: []byte{byte(mi)}})
					model[id] = mi
				}
			}
			tx.Commit()
			read := s.Read()
			for _, after := range []string{"", "i1", "i15", "i2000", "i9"} {
				archiveListsExactly(rt, read, model, after)
			}
			archivePagesHold(rt, "store", read)
		}
	})
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
		if rec.ModifyIndex != model[rec.ID] {
			rt.Fatalf("after %q: %s is version %d, want %d", after, rec.ID, rec.ModifyIndex, model[rec.ID])
		}
		if rec.ID >= after { // eachArchived is inclusive
			got = append(got, rec.ID)
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
