package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigFileThenFlags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.hcl")
	if err := os.WriteFile(path, []byte(`
node             = "from-file"
data_dir         = "/var/lib/lockstep"
http_port        = 8800
bootstrap_expect = 3
join             = ["10.0.0.2:7702", "10.0.0.3:7702"]
worker           = false
http_allow       = ["api.internal"]
raft_log_store   = "boltdb"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	file, err := LoadConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	flagPort := 9900
	cfg := DefaultConfig().Merge(file).Merge(&Config{HTTPPort: &flagPort, NodeName: "from-flag"})
	if cfg.NodeName != "from-flag" || *cfg.HTTPPort != 9900 || *cfg.RaftPort != 7701 || cfg.DataDir != "/var/lib/lockstep" ||
		*cfg.BootstrapExpect != 3 || len(cfg.Join) != 2 || *cfg.Worker || cfg.HTTPAllow[0] != "api.internal" || cfg.BindAddr != "127.0.0.1" || cfg.RaftLogStore != "boltdb" {
		t.Fatalf("merged = %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigFileErrorsNamePosition(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.hcl")
	os.WriteFile(path, []byte("node = \"x\"\nhttp_prot = 1\n"), 0o600)
	_, err := LoadConfigFile(path)
	if err == nil || !strings.Contains(err.Error(), "bad.hcl:2:1") || !strings.Contains(err.Error(), "http_prot") {
		t.Fatalf("err = %v", err)
	}
	os.WriteFile(path, []byte("http_port = \"high\"\n"), 0o600)
	if _, err := LoadConfigFile(path); err == nil || !strings.Contains(err.Error(), "bad.hcl:1") {
		t.Fatalf("type error = %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	neg, big, zero, dev := -1, 70000, 0, true
	cfg := DefaultConfig().Merge(&Config{BindAddr: "not-an-ip", HTTPPort: &big, BootstrapExpect: &neg, WorkerCount: &zero,
		WorkerBatch: &zero, GCPercent: &zero, WorkerQueues: []string{"bad queue"}, LogLevel: "loud", RaftLogStore: "leveldb"})
	err := cfg.Validate()
	for _, want := range []string{"bind", "http_port", "data_dir", "bootstrap_expect", "worker_concurrency", "worker_batch", "gc_percent", "bad queue", "log_level", "raft_log_store"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	three := 3
	if err := DefaultConfig().Merge(&Config{Dev: &dev, BootstrapExpect: &three}).Validate(); err == nil {
		t.Error("dev with bootstrap_expect 3 accepted")
	}
	if err := DefaultConfig().Merge(&Config{Dev: &dev}).Validate(); err != nil {
		t.Errorf("dev without data dir: %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add("node = \"n1\"\nhttp_port = 7700\njoin = [\"a:1\"]\n")
	f.Add("worker = true\nhttp_allow = [\"10.0.0.0/8\"]\n")
	f.Add("bootstrap_expect = \"three\"\n")
	f.Fuzz(func(t *testing.T, src string) {
		cfg, err := ParseConfig("fuzz.hcl", []byte(src))
		if err == nil {
			_ = DefaultConfig().Merge(cfg).Validate()
		}
	})
}
