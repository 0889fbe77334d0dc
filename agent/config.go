package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime/debug"

	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/lockstep-io/lockstep/cluster"
	hcldiag "github.com/lockstep-io/lockstep/hcl"
	"github.com/lockstep-io/lockstep/worker"
)

// Config is an agent's configuration: DefaultConfig, then a file, then
// flags, each layer overriding the one before (Merge).
type Config struct {
	NodeName        string   `hcl:"node,optional"`
	DataDir         string   `hcl:"data_dir,optional"`
	RaftLogStore    string   `hcl:"raft_log_store,optional"`
	BindAddr        string   `hcl:"bind,optional"`
	HTTPPort        *int     `hcl:"http_port,optional"`
	RaftPort        *int     `hcl:"raft_port,optional"`
	GossipPort      *int     `hcl:"gossip_port,optional"`
	BootstrapExpect *int     `hcl:"bootstrap_expect,optional"`
	Join            []string `hcl:"join,optional"`
	Worker          *bool    `hcl:"worker,optional"`
	WorkerQueues    []string `hcl:"worker_queues,optional"`
	WorkerCount     *int     `hcl:"worker_concurrency,optional"`
	WorkerBatch     *int     `hcl:"worker_batch,optional"`
	GCPercent       *int     `hcl:"gc_percent,optional"`
	HTTPAllow       []string `hcl:"http_allow,optional"`
	Dev             *bool    `hcl:"dev,optional"`
	LogLevel        string   `hcl:"log_level,optional"`

	// Test-only knobs (not in files or flags).
	RaftTimeoutScale float64
	GossipLocal      bool
}

// DefaultGCPercent is the garbage collector's target (GOGC) an agent runs
// with unless GOGC is set: 300 measured 17% more chain3 throughput than
// Go's 100, for about 1.8 times the memory (docs/performance-history.md).
const DefaultGCPercent = 300

// ApplyGCPercent sets the process's GC target from the configuration,
// unless the GOGC environment variable already chose one. It changes the
// whole process: the agent command calls it, not the library.
func (c *Config) ApplyGCPercent() {
	if os.Getenv("GOGC") == "" && c.GCPercent != nil {
		debug.SetGCPercent(*c.GCPercent)
	}
}

func intp(i int) *int    { return &i }
func boolp(b bool) *bool { return &b }

// DefaultConfig is the base every agent starts from.
func DefaultConfig() *Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "lockstep"
	}
	return &Config{
		NodeName:        host,
		BindAddr:        "127.0.0.1",
		HTTPPort:        intp(7700),
		RaftPort:        intp(7701),
		GossipPort:      intp(7702),
		BootstrapExpect: intp(0),
		Worker:          boolp(true),
		WorkerQueues:    []string{"default"},
		WorkerCount:     intp(8),
		WorkerBatch:     intp(16),
		GCPercent:       intp(DefaultGCPercent),
		HTTPAllow:       append([]string{}, worker.DefaultHTTPAllow...),
		Dev:             boolp(false),
		LogLevel:        "info",
	}
}

// Merge returns c overridden by every field set in o.
func (c *Config) Merge(o *Config) *Config {
	r := *c
	if o.NodeName != "" {
		r.NodeName = o.NodeName
	}
	if o.DataDir != "" {
		r.DataDir = o.DataDir
	}
	if o.RaftLogStore != "" {
		r.RaftLogStore = o.RaftLogStore
	}
	if o.BindAddr != "" {
		r.BindAddr = o.BindAddr
	}
	if o.HTTPPort != nil {
		r.HTTPPort = o.HTTPPort
	}
	if o.RaftPort != nil {
		r.RaftPort = o.RaftPort
	}
	if o.GossipPort != nil {
		r.GossipPort = o.GossipPort
	}
	if o.BootstrapExpect != nil {
		r.BootstrapExpect = o.BootstrapExpect
	}
	if o.Join != nil {
		r.Join = o.Join
	}
	if o.Worker != nil {
		r.Worker = o.Worker
	}
	if o.WorkerQueues != nil {
		r.WorkerQueues = o.WorkerQueues
	}
	if o.WorkerCount != nil {
		r.WorkerCount = o.WorkerCount
	}
	if o.WorkerBatch != nil {
		r.WorkerBatch = o.WorkerBatch
	}
	if o.GCPercent != nil {
		r.GCPercent = o.GCPercent
	}
	if o.HTTPAllow != nil {
		r.HTTPAllow = o.HTTPAllow
	}
	if o.Dev != nil {
		r.Dev = o.Dev
	}
	if o.LogLevel != "" {
		r.LogLevel = o.LogLevel
	}
	if o.RaftTimeoutScale != 0 {
		r.RaftTimeoutScale = o.RaftTimeoutScale
	}
	if o.GossipLocal {
		r.GossipLocal = true
	}
	return &r
}

// LoadConfigFile reads an agent configuration in HCL; errors name the file,
// line and column.
func LoadConfigFile(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseConfig(path, src)
}

// ParseConfig parses agent settings from HCL source; filename is used in
// error positions.
func ParseConfig(filename string, src []byte) (*Config, error) {
	if len(src) > hcldiag.MaxSourceBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", filename, hcldiag.MaxSourceBytes)
	}
	file, diags := hclsyntax.ParseConfig(src, filename, hclsyntaxPos)
	if diags.HasErrors() {
		return nil, errors.New(hcldiag.RenderDiagnostics(diags, src))
	}
	var c Config
	if diags := gohcl.DecodeBody(file.Body, nil, &c); diags.HasErrors() {
		return nil, errors.New(hcldiag.RenderDiagnostics(diags, src))
	}
	return &c, nil
}

// Validate reports every setting that cannot work.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("node name must not be empty"))
	}
	if net.ParseIP(c.BindAddr) == nil {
		errs = append(errs, fmt.Errorf("bind %q is not an IP address", c.BindAddr))
	}
	for name, p := range map[string]*int{"http_port": c.HTTPPort, "raft_port": c.RaftPort, "gossip_port": c.GossipPort} {
		if p == nil || *p < 0 || *p > 65535 {
			errs = append(errs, fmt.Errorf("%s must be between 0 and 65535", name))
		}
	}
	dev := c.Dev != nil && *c.Dev
	if c.DataDir == "" && !dev {
		errs = append(errs, errors.New("data_dir is required (or run with -dev)"))
	}
	if c.BootstrapExpect == nil || *c.BootstrapExpect < 0 {
		errs = append(errs, errors.New("bootstrap_expect must not be negative"))
	} else if dev && *c.BootstrapExpect > 1 {
		errs = append(errs, errors.New("-dev runs a single node; drop -bootstrap-expect"))
	}
	if c.WorkerCount == nil || *c.WorkerCount < 1 {
		errs = append(errs, errors.New("worker_concurrency must be at least 1"))
	}
	if c.WorkerBatch == nil || *c.WorkerBatch < 1 || *c.WorkerBatch > 1000 {
		errs = append(errs, errors.New("worker_batch must be from 1 to 1000"))
	}
	if c.GCPercent == nil || *c.GCPercent < 25 || *c.GCPercent > 10000 {
		errs = append(errs, errors.New("gc_percent must be from 25 to 10000"))
	}
	for _, q := range c.WorkerQueues {
		if !hcldiag.ValidName(q) {
			errs = append(errs, fmt.Errorf("worker queue %q is not a valid queue name", q))
		}
	}
	switch c.RaftLogStore {
	case "", cluster.LogStoreWAL, cluster.LogStoreBolt:
	default:
		errs = append(errs, fmt.Errorf("raft_log_store %q is not %q or %q (leave it unset for the one the data dir holds)", c.RaftLogStore, cluster.LogStoreWAL, cluster.LogStoreBolt))
	}
	switch c.LogLevel {
	case "trace", "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level %q is not one of trace, debug, info, warn, error", c.LogLevel))
	}
	return errors.Join(errs...)
}
