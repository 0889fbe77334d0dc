package cluster

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// The raft log stores a node can keep its log and stable store in.
const (
	// LogStoreWAL is hashicorp/raft-wal: append-only segment files, one
	// write and one fsync per batch of entries. New data dirs use it.
	LogStoreWAL = "wal"
	// LogStoreBolt is raft-boltdb: a copy-on-write B+tree in one file,
	// whose commit writes pages and fsyncs twice. Data dirs made before
	// the WAL keep it.
	LogStoreBolt = "boltdb"
)

// logStore is what raft needs from the log store: the log, the stable
// store (term and vote), and a way to close the files.
type logStore interface {
	raft.LogStore
	raft.StableStore
	io.Closer
}

// Where each store lives under the node's raft directory.
const (
	boltFile = "raft.db"
	walDir   = "wal"
)

// existingLogStore says which store dir already holds, or "" when it holds
// neither.
func existingLogStore(dir string) (string, error) {
	_, boltErr := os.Stat(filepath.Join(dir, boltFile))
	if boltErr != nil && !errors.Is(boltErr, os.ErrNotExist) {
		return "", boltErr
	}
	walEntries, walErr := os.ReadDir(filepath.Join(dir, walDir))
	if walErr != nil && !errors.Is(walErr, os.ErrNotExist) {
		return "", walErr
	}
	hasBolt, hasWAL := boltErr == nil, len(walEntries) > 0
	switch {
	case hasBolt && hasWAL:
		return "", fmt.Errorf("%s holds both a boltdb raft log (%s) and a WAL (%s/); remove the one this node does not use", dir, boltFile, walDir)
	case hasBolt:
		return LogStoreBolt, nil
	case hasWAL:
		return LogStoreWAL, nil
	}
	return "", nil
}

// openLogStore opens the raft log in dir: the store it already holds, or a
// new WAL. want ("" for either) must agree with what dir holds: a log is
// never converted, and a node that opened an empty store of the other kind
// would have lost its log and vote.
func openLogStore(dir, want string, segmentSize int, logger hclog.Logger) (logStore, string, error) {
	have, err := existingLogStore(dir)
	if err != nil {
		return nil, "", fmt.Errorf("raft log store: %w", err)
	}
	kind := want
	switch {
	case have != "" && want != "" && have != want:
		return nil, "", fmt.Errorf("raft log store: %s holds a %s log, but %s was asked for; a log is not converted: leave raft_log_store unset to keep the one this data dir holds", dir, have, want)
	case have != "":
		kind = have
	case kind == "":
		kind = LogStoreWAL
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	switch kind {
	case LogStoreBolt:
		// NoSync stays off: an acknowledged write is fsync'd on a quorum.
		s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, boltFile)})
		if err != nil {
			return nil, "", fmt.Errorf("open raft store: %w", err)
		}
		return s, kind, nil
	case LogStoreWAL:
		d := filepath.Join(dir, walDir)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, "", err
		}
		// Every StoreLogs is written and fsync'd before it returns.
		meta := &metadb.BoltMetaDB{}
		w, err := wal.Open(d, wal.WithLogger(logger.Named("wal")), wal.WithMetaStore(meta), wal.WithSegmentSize(segmentSize))
		if err != nil {
			meta.Close()
			return nil, "", fmt.Errorf("open raft WAL: %w", err)
		}
		return &walStore{WAL: w, meta: meta}, kind, nil
	}
	return nil, "", fmt.Errorf("raft log store %q: must be %q or %q", kind, LogStoreWAL, LogStoreBolt)
}

// walStore closes the WAL's metadata file with the WAL: raft-wal v0.4.0's
// Close leaves it open (and locked), so a node restarted in the same
// process would wait on the lock for ever.
type walStore struct {
	*wal.WAL
	meta *metadb.BoltMetaDB
}

func (s *walStore) Close() error {
	return errors.Join(s.WAL.Close(), s.meta.Close())
}
