package cluster_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockstep-io/lockstep/cluster"
	"github.com/lockstep-io/lockstep/fsm"
)

// startDev starts a single-node cluster on dir with the given log store
// ("" for the one dir holds) and waits until it leads. A WAL gets 1 KiB
// segments, so that a few writes seal some and a restart recovers them.
func startDev(t *testing.T, dir, store string) (*node, error) {
	t.Helper()
	f := fsm.New(nil)
	c, err := cluster.New(cluster.Config{NodeName: "dev", DataDir: dir, LogStore: store, WALSegmentSize: 1024, BindAddr: "127.0.0.1", HTTPAddr: "127.0.0.1:1",
		Dev: true, RaftTimeoutScale: 0.2, GossipLocal: true, FSM: f,
		Logger: hclog.New(&hclog.LoggerOptions{Name: "dev", Level: hclog.Warn})})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Shutdown() })
	waitFor(t, 10*time.Second, "leadership", func() error {
		if !c.IsLeader() {
			return fmt.Errorf("not leader")
		}
		return nil
	})
	return &node{c: c, fsm: f, dir: dir}, nil
}

// Each log store keeps the log across a restart, a data dir keeps the
// store it was made with when none is named, and asking for the other one
// is refused before anything is opened.
func TestLogStoresKeepTheLogAcrossRestarts(t *testing.T) {
	for _, tc := range []struct{ store, file string }{
		{cluster.LogStoreWAL, "wal"},
		{cluster.LogStoreBolt, "raft.db"},
		{"", "wal"}, // a new data dir gets a WAL
	} {
		t.Run("store="+tc.store, func(t *testing.T) {
			dir := t.TempDir()
			n, err := startDev(t, dir, tc.store)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 20; i++ {
				registerNamed(t, n, fmt.Sprintf("w%d", i))
			}
			if err := n.c.Shutdown(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, "raft", tc.file)); err != nil {
				t.Fatalf("the log is not where it should be: %v", err)
			}
			if tc.file == "wal" {
				segs, _ := filepath.Glob(filepath.Join(dir, "raft", "wal", "*.wal"))
				if len(segs) < 2 {
					t.Fatalf("segments %v: the restart would not recover a sealed one", segs)
				}
			}

			// No snapshot was taken: the state comes back from the log.
			again, err := startDev(t, dir, "")
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the log to be applied again", func() error {
				for i := 0; i < 20; i++ {
					if again.fsm.State().Read().LatestWorkflow(fmt.Sprintf("w%d", i)) == nil {
						return fmt.Errorf("w%d missing", i)
					}
				}
				return nil
			})
			registerNamed(t, again, "w20") // and it takes new writes
			if again.fsm.State().Read().LatestWorkflow("w20") == nil {
				t.Fatal("a write after the restart is missing")
			}
			if err := again.c.Shutdown(); err != nil {
				t.Fatal(err)
			}

			other := cluster.LogStoreBolt
			if tc.file == "raft.db" {
				other = cluster.LogStoreWAL
			}
			_, err = startDev(t, dir, other)
			if err == nil || !strings.Contains(err.Error(), "not converted") {
				t.Fatalf("opening a %s data dir as %s: err = %v", tc.file, other, err)
			}
		})
	}
}

// A data dir holding both stores is an operator's mistake the node names
// instead of picking one.
func TestLogStoreRefusesADataDirWithBoth(t *testing.T) {
	dir := t.TempDir()
	n, err := startDev(t, dir, cluster.LogStoreBolt)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "raft", "wal"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "raft", "wal", "wal-meta.db"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := startDev(t, dir, ""); err == nil || !strings.Contains(err.Error(), "both") {
		t.Fatalf("err = %v, want one naming both stores", err)
	}
}

func TestConfigValidateLogStore(t *testing.T) {
	err := (&cluster.Config{LogStore: "leveldb"}).Validate()
	if err == nil || !strings.Contains(err.Error(), `"leveldb"`) {
		t.Fatalf("Validate() = %v", err)
	}
}
