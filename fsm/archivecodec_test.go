package fsm

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"reflect"
	"testing"
	"time"
)

// fill sets every exported field of v, recursively, to a random value:
// strings, numbers, times (UTC or a fixed zone, or zero), and lists, maps
// and pointers that are nil, empty or full. A field added to the types
// later is filled too, so a codec that forgets it loses it.
func fill(rnd *rand.Rand, v reflect.Value, depth int) {
	switch v.Type() {
	case reflect.TypeFor[time.Time]():
		switch rnd.Intn(3) {
		case 0: // zero
		case 1:
			v.Set(reflect.ValueOf(time.Unix(rnd.Int63n(4e9)-1e9, rnd.Int63n(1e9)).UTC()))
		default: // a zone of offset 0 reads back as UTC
			v.Set(reflect.ValueOf(time.Unix(rnd.Int63n(4e9), rnd.Int63n(1e9)).In(time.FixedZone("", (rnd.Intn(24)+1)*1800))))
		}
		return
	case reflect.TypeFor[json.RawMessage](), reflect.TypeFor[[]byte]():
		switch rnd.Intn(3) {
		case 0: // nil
		case 1:
			v.SetBytes([]byte{})
		default:
			v.SetBytes([]byte(fmt.Sprintf(`{"n":%d}`, rnd.Intn(1000))))
		}
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d", rnd.Intn(1000)))
	case reflect.Bool:
		v.SetBool(rnd.Intn(2) == 1)
	case reflect.Int, reflect.Int64:
		v.SetInt(rnd.Int63n(1<<40) - 1<<39)
	case reflect.Uint64:
		v.SetUint(rnd.Uint64())
	case reflect.Pointer:
		if depth > 4 || rnd.Intn(4) == 0 {
			return
		}
		p := reflect.New(v.Type().Elem())
		fill(rnd, p.Elem(), depth+1)
		v.Set(p)
	case reflect.Slice:
		if rnd.Intn(4) == 0 {
			return
		}
		n := rnd.Intn(4)
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := 0; i < n; i++ {
			fill(rnd, s.Index(i), depth+1)
		}
		v.Set(s)
	case reflect.Map:
		if rnd.Intn(4) == 0 {
			return
		}
		m := reflect.MakeMap(v.Type())
		for i := rnd.Intn(4); i > 0; i-- {
			k := reflect.New(v.Type().Key()).Elem()
			fill(rnd, k, depth+1)
			e := reflect.New(v.Type().Elem()).Elem()
			fill(rnd, e, depth+1)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(rnd, v.Field(i), depth+1)
			}
		}
	default:
		panic(fmt.Sprintf("fill: no values for %s (%s)", v.Type(), v.Kind()))
	}
}

// An archive blob reads back every exported field of its instance, its
// steps and elements, and its tasks, exactly: nil and empty apart, times
// in their zones.
func TestArchiveCodecKeepsEveryField(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	for i := 0; i < 2000; i++ {
		var b archiveBlob
		fill(rnd, reflect.ValueOf(&b).Elem(), 0)
		if b.Instance == nil {
			b.Instance = &Instance{}
		}
		if len(b.Tasks) == 0 {
			b.Tasks = nil // the blob keeps a count of tasks, nothing more
		}
		for k, task := range b.Tasks {
			if task == nil {
				b.Tasks[k] = &Task{} // an archive's tasks are never nil
			}
		}
		blob := encodeArchiveIn(nil, 0, &b)
		inst, tail, tasks := decodeArchive(blob, "x", true)
		if !reflect.DeepEqual(inst, b.Instance) || !reflect.DeepEqual(tail, b.Tail) || !reflect.DeepEqual(tasks, b.Tasks) {
			t.Fatalf("case %d reads back otherwise:\n%s\nagainst\n%s", i, dump(archiveBlob{inst, tail, tasks}), dump(b))
		}
		if alone, tail2, none := decodeArchive(blob, "x", false); !reflect.DeepEqual(alone, inst) || !reflect.DeepEqual(tail2, tail) || none != nil {
			t.Fatalf("case %d: the instance alone reads %s", i, dump(alone))
		}
	}
}

// A blob cut short or with bytes to spare is a bug, and panics.
func TestArchiveCodecRefusesWhatItDidNotWrite(t *testing.T) {
	var b archiveBlob
	fill(rand.New(rand.NewSource(2)), reflect.ValueOf(&b).Elem(), 0)
	b.Instance = &Instance{ID: "a", Steps: map[string]*StepState{"s": {Status: StepSucceeded}}}
	blob := encodeArchiveIn(nil, 0, &b)
	for _, bad := range [][]byte{blob[:len(blob)-1], append(blob[:len(blob):len(blob)], 0)} {
		func() {
			defer func() {
				if recover() == nil {
					t.Fatalf("a blob of %d bytes (of %d) decoded", len(bad), len(blob))
				}
			}()
			decodeArchive(bad, "a", true)
		}()
	}
}

func dump(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
