package fsm

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// SnapshotFormat is written in every snapshot's header. Bump it when the
// record layout changes, and keep reading the older formats. Format 3
// writes the tasks of archived instances as "archived_tasks" records (an
// older build refuses them); format 2 keeps every task in "tasks" and
// history in chunks (table "history"); format 1 had one "events" record
// per event, which Restore gathers into chunks.
const SnapshotFormat = 3

const snapshotMagic = "lockstep-snapshot"

type snapshotHeader struct {
	Magic   string `json:"magic"`
	Format  int    `json:"format"`
	Index   uint64 `json:"index"`
	Records int    `json:"records"`
}

// snapshotRecord is one line after the header: the table and one record.
type snapshotRecord struct {
	Table  string          `json:"t"`
	Record json.RawMessage `json:"r"`
}

// recordTypes makes an empty record of each table, for Restore.
var recordTypes = map[string]func() any{}

func registerRecord(table string, fn func() any) {
	if _, dup := recordTypes[table]; dup {
		panic(fmt.Sprintf("fsm: record type for %s registered twice", table))
	}
	recordTypes[table] = fn
}

func init() { registerRecord(tableMeta, func() any { return new(meta) }) }

type snapshot struct {
	tx   *Txn
	stop *atomic.Bool // the FSM's: set when the node shuts down
}

// Persist writes the header, then every record of every table: tables in
// name order, records in primary-key order, so two nodes holding the same
// state write the same bytes.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(sink, s.tx, s.stop); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *snapshot) Release() {}

// tableNames lists the tables a snapshot holds (derived ones are rebuilt).
func tableNames() []string {
	names := make([]string, 0, len(tableSchemas))
	for n := range tableSchemas {
		if !derivedTables[n] {
			names = append(names, n)
		}
	}
	names = append(names, snapshotArchivedTasks)
	sort.Strings(names)
	return names
}

// writeSnapshot writes the state; it gives up with ErrSnapshotAborted once
// stop (if any) is set.
func writeSnapshot(w io.Writer, tx *Txn, stop *atomic.Bool) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	count := 0
	for _, table := range tableNames() {
		if err := eachRecord(tx, table, func(any) error { count++; return nil }); err != nil {
			return err
		}
	}
	if err := enc.Encode(snapshotHeader{Magic: snapshotMagic, Format: SnapshotFormat, Index: tx.LatestIndex(), Records: count}); err != nil {
		return err
	}
	for _, table := range tableNames() {
		err := eachRecord(tx, table, func(raw any) error {
			if stop != nil && stop.Load() {
				return ErrSnapshotAborted
			}
			body, err := json.Marshal(raw)
			if err != nil {
				return fmt.Errorf("snapshot %s: %w", table, err)
			}
			return enc.Encode(snapshotRecord{Table: table, Record: body})
		})
		if err != nil {
			return err
		}
	}
	return bw.Flush()
}

// eachRecord calls fn with every record of a table in key order. The
// history comes instance by instance (the history table's key order), each
// instance's tail merged into its chunks.
func eachRecord(tx *Txn, table string, fn func(any) error) error {
	switch table {
	case tableHistory, tableInstances:
		// Live and archived instances, in id order.
		var ferr error
		err := tx.eachInstance(func(inst *Instance) bool {
			if table == tableInstances {
				ferr = fn(inst)
			} else {
				ferr = tx.historyRecords(inst, func(c *historyChunk) error { return fn(c) })
			}
			return ferr == nil
		})
		if err != nil {
			return err
		}
		return ferr
	case snapshotArchivedTasks:
		// The tasks of archived instances, instance by instance in id
		// order, each instance's in the order it created them.
		var ferr error
		tx.eachArchived("", func(rec *archivedInstance) bool {
			for _, task := range rec.decode().Tasks {
				if ferr = fn(task); ferr != nil {
					return false
				}
			}
			return true
		})
		return ferr
	}
	it, err := tx.Get(table, "id")
	if err != nil {
		return err
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if err := fn(raw); err != nil {
			return err
		}
	}
	return nil
}

// WriteSnapshot writes the state as a snapshot would; tests use it to
// compare the state of two nodes byte for byte.
func (s *StateStore) WriteSnapshot(w io.Writer) error { return writeSnapshot(w, s.Read(), nil) }

func readSnapshot(r io.Reader) (*StateStore, error) {
	dec := json.NewDecoder(bufio.NewReader(r))
	var h snapshotHeader
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("snapshot header: %w", err)
	}
	if h.Magic != snapshotMagic {
		return nil, fmt.Errorf("not a lockstep snapshot (magic %q)", h.Magic)
	}
	if h.Format < 1 || h.Format > SnapshotFormat {
		return nil, fmt.Errorf("snapshot format %d is not supported (this build reads 1 to %d)", h.Format, SnapshotFormat)
	}
	store := NewStateStore()
	tx := store.write(h.Index)
	n := 0
	// Format 1: events, in (instance, seq) order, become history chunks.
	var v1 []Event
	flushV1 := func() {
		if len(v1) > 0 {
			tx.storeHistory(v1[0].InstanceID, v1)
			v1 = v1[:0]
		}
	}
	for {
		var rec snapshotRecord
		err := dec.Decode(&rec)
		if err == io.EOF {
			break
		}
		if err != nil {
			tx.Abort()
			return nil, fmt.Errorf("snapshot record %d: %w", n, err)
		}
		if h.Format == 1 && rec.Table == "events" {
			var e Event
			if err := json.Unmarshal(rec.Record, &e); err != nil {
				tx.Abort()
				return nil, fmt.Errorf("snapshot record %d (events): %w", n, err)
			}
			if len(v1) > 0 && v1[0].InstanceID != e.InstanceID {
				flushV1()
			}
			v1 = append(v1, e)
			n++
			continue
		}
		mk, ok := recordTypes[rec.Table]
		if !ok {
			tx.Abort()
			return nil, fmt.Errorf("snapshot record %d: unknown table %q", n, rec.Table)
		}
		obj := mk()
		if err := json.Unmarshal(rec.Record, obj); err != nil {
			tx.Abort()
			return nil, fmt.Errorf("snapshot record %d (%s): %w", n, rec.Table, err)
		}
		switch r := obj.(type) {
		case *Instance:
			r.ID, r.key = newKey(r.ID)
		case *Task:
			r.ID, r.key = newKey(r.ID)
		}
		table := rec.Table
		if table == snapshotArchivedTasks {
			table = tableTasks // archived again at the commit
		}
		if err := tx.Insert(table, obj); err != nil {
			tx.Abort()
			return nil, fmt.Errorf("snapshot record %d (%s): %w", n, rec.Table, err)
		}
		if inst, ok := obj.(*Instance); ok {
			tx.addInstanceRef(inst)
		}
		n++
	}
	flushV1()
	if n != h.Records {
		tx.Abort()
		return nil, fmt.Errorf("snapshot is truncated: %d of %d records", n, h.Records)
	}
	tx.Commit()
	return store, nil
}
