package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/lockstep-io/lockstep/agent"
)

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func runAgent(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configFile string
		flags      agent.Config
		httpPort   = fs.Int("http-port", 7700, "HTTP API port")
		raftPort   = fs.Int("raft-port", 7701, "raft port")
		gossipPort = fs.Int("gossip-port", 7702, "gossip (memberlist) port")
		expect     = fs.Int("bootstrap-expect", 0, "bootstrap raft once this many servers have found each other")
		workers    = fs.Bool("worker", true, "run the built-in worker pool (noop, log, delay, http)")
		workerN    = fs.Int("worker-concurrency", 8, "pollers per queue in the built-in worker pool")
		workerB    = fs.Int("worker-batch", 16, "tasks each built-in poller takes per poll and runs at once")
		gcPercent  = fs.Int("gc-percent", agent.DefaultGCPercent, "garbage collector target, as GOGC (ignored when GOGC is set)")
		dev        = fs.Bool("dev", false, "run one node with a temporary data dir, bootstrapped at once")
		join       stringList
		allow      stringList
		queues     stringList
	)
	fs.StringVar(&configFile, "config", "", "HCL file with agent settings; flags override it")
	fs.StringVar(&flags.NodeName, "node", "", "node name, unique in the cluster (default: hostname)")
	fs.StringVar(&flags.DataDir, "data-dir", "", "directory for the node id, raft log and snapshots")
	fs.StringVar(&flags.RaftLogStore, "raft-log-store", "", "raft log store, wal or boltdb; must agree with the data dir (default: the one it holds, wal when new)")
	fs.StringVar(&flags.BindAddr, "bind", "", "IP address to bind every listener to (default 127.0.0.1)")
	fs.StringVar(&flags.LogLevel, "log-level", "", "trace, debug, info, warn or error (default info)")
	fs.Var(&join, "join", "gossip address HOST:PORT of a node to join (repeatable)")
	fs.Var(&allow, "http-allow", "host name or CIDR the http activity may call (repeatable; default loopback)")
	fs.Var(&queues, "worker-queue", "queue the built-in workers poll (repeatable; default \"default\")")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: lockstep agent [flags]\n\nRuns one Lockstep node. Examples:\n"+
			"  lockstep agent -dev\n"+
			"  lockstep agent -node n1 -data-dir /var/lib/lockstep -bootstrap-expect 3 -join 10.0.0.2:7702\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 1
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "lockstep agent: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 1
	}
	// Only flags given on the command line override the file.
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "http-port":
			flags.HTTPPort = httpPort
		case "raft-port":
			flags.RaftPort = raftPort
		case "gossip-port":
			flags.GossipPort = gossipPort
		case "bootstrap-expect":
			flags.BootstrapExpect = expect
		case "worker":
			flags.Worker = workers
		case "worker-concurrency":
			flags.WorkerCount = workerN
		case "worker-batch":
			flags.WorkerBatch = workerB
		case "gc-percent":
			flags.GCPercent = gcPercent
		case "dev":
			flags.Dev = dev
		case "join":
			flags.Join = join
		case "http-allow":
			flags.HTTPAllow = allow
		case "worker-queue":
			flags.WorkerQueues = queues
		}
	})

	cfg := agent.DefaultConfig()
	if configFile != "" {
		fileCfg, err := agent.LoadConfigFile(configFile)
		if err != nil {
			fmt.Fprintf(stderr, "lockstep agent: config %s:\n%v\n", configFile, err)
			return 1
		}
		cfg = cfg.Merge(fileCfg)
	}
	cfg = cfg.Merge(&flags)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "lockstep agent: invalid configuration:\n%v\n", err)
		return 1
	}
	cfg.ApplyGCPercent()
	logger := hclog.New(&hclog.LoggerOptions{Name: "lockstep", Level: hclog.LevelFromString(cfg.LogLevel), Output: stderr})
	a, err := agent.New(cfg, logger)
	if err != nil {
		fmt.Fprintf(stderr, "lockstep agent: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "==> Lockstep agent %q running\n    HTTP API: http://%s\n    Gossip:   %s\n    Data dir: %s\n", cfg.NodeName, a.HTTPAddr(), a.GossipAddr(), cfg.DataDir)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	sig := <-sigs
	fmt.Fprintf(stdout, "==> Caught %s, shutting down\n", sig)
	go func() {
		<-sigs
		fmt.Fprintln(stderr, "==> Second signal, exiting now")
		os.Exit(1)
	}()
	a.Shutdown()
	return 0
}
