// Package agent assembles one Lockstep node: the FSM, the cluster (raft and
// gossip), the leader's engine, the HTTP API and the built-in worker pool.
// cmd/lockstep runs it as `lockstep agent`; tests run several in-process.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	hhcl "github.com/hashicorp/hcl/v2"

	"github.com/lockstep-io/lockstep/api"
	"github.com/lockstep-io/lockstep/cluster"
	"github.com/lockstep-io/lockstep/engine"
	"github.com/lockstep-io/lockstep/fsm"
	"github.com/lockstep-io/lockstep/httpapi"
	"github.com/lockstep-io/lockstep/internal/metrics"
	"github.com/lockstep-io/lockstep/worker"
)

var hclsyntaxPos = hhcl.InitialPos

// Agent is one running node.
type Agent struct {
	cfg    *Config
	logger hclog.Logger

	FSM     *fsm.FSM
	Cluster *cluster.Cluster
	Engine  *engine.Engine
	Metrics *metrics.Metrics

	httpLn  net.Listener
	httpSrv *http.Server
	tempDir string
	// quiet are the accepted connections that have not sent a request yet
	// (HTTP clients dial ahead and may never use one). http.Server's
	// Shutdown waits for such a connection until it is five seconds old;
	// Shutdown closes them first.
	quietMu sync.Mutex
	quiet   map[net.Conn]struct{}

	cancel context.CancelFunc
	wg     sync.WaitGroup

	shutdownOnce sync.Once
}

// New validates the configuration and starts the node.
func New(cfg *Config, logger hclog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = hclog.New(&hclog.LoggerOptions{Name: "lockstep", Level: hclog.LevelFromString(cfg.LogLevel)})
	}
	a := &Agent{cfg: cfg, logger: logger.With("node", cfg.NodeName)}
	dev := cfg.Dev != nil && *cfg.Dev
	if cfg.DataDir == "" && dev {
		dir, err := os.MkdirTemp("", "lockstep-dev-")
		if err != nil {
			return nil, err
		}
		a.tempDir, cfg.DataDir = dir, dir
	}

	// Listen first so the advertised HTTP address carries the real port.
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.BindAddr, strconv.Itoa(*cfg.HTTPPort)))
	if err != nil {
		a.cleanupTemp()
		return nil, fmt.Errorf("http listener: %w", err)
	}
	a.httpLn = ln

	a.FSM = fsm.New(a.logger)
	a.Metrics = metrics.New()
	expect := *cfg.BootstrapExpect
	cl, err := cluster.New(cluster.Config{
		NodeName:         cfg.NodeName,
		DataDir:          cfg.DataDir,
		LogStore:         cfg.RaftLogStore,
		BindAddr:         cfg.BindAddr,
		RaftPort:         *cfg.RaftPort,
		GossipPort:       *cfg.GossipPort,
		HTTPAddr:         ln.Addr().String(),
		BootstrapExpect:  expect,
		Join:             cfg.Join,
		Dev:              dev,
		RaftTimeoutScale: cfg.RaftTimeoutScale,
		GossipLocal:      cfg.GossipLocal,
		Logger:           a.logger,
		FSM:              a.FSM,
		Metrics:          a.Metrics,
		CommandName: func(cmd []byte) string {
			return (fsm.MessageType(cmd[0]) &^ fsm.IgnoreUnknownTypeFlag).String()
		},
	})
	if err != nil {
		ln.Close()
		a.cleanupTemp()
		return nil, err
	}
	a.Cluster = cl
	a.Engine = engine.New(engine.Config{Logger: a.logger, Raft: cl, State: a.FSM, Metrics: a.Metrics, GoneWorkers: a.goneWorkers})

	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.Engine.Run(ctx)
	}()

	api := httpapi.New(httpapi.Config{Logger: a.logger, NodeName: cfg.NodeName, Cluster: cl, Dispatcher: a.Engine, FSM: a.FSM, Metrics: a.Metrics})
	// No write timeout: worker polls are held open. Reading a request is
	// bounded, so a slow client cannot hold a connection forever.
	a.quiet = map[net.Conn]struct{}{}
	a.httpSrv = &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		ConnState: func(c net.Conn, st http.ConnState) {
			a.quietMu.Lock()
			defer a.quietMu.Unlock()
			if st == http.StateNew {
				a.quiet[c] = struct{}{}
			} else {
				delete(a.quiet, c)
			}
		}}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.logger.Error("http server stopped", "error", err)
		}
	}()

	if *cfg.Worker {
		if err := a.startWorkers(ctx); err != nil {
			a.Shutdown()
			return nil, err
		}
	}
	a.logger.Info("agent started", "http", a.HTTPAddr(), "raft", cl.RaftAddr(), "gossip", cl.GossipAddr(), "data_dir", cfg.DataDir, "id", cl.ID())
	return a, nil
}

// builtinWorkerPrefix is the worker id prefix of a node's built-in pool.
func builtinWorkerPrefix(node string) string { return node + "-builtin/" }

// goneWorkers names the built-in pools of the nodes gossip reports failed
// or left: the leader releases their leases at once.
func (a *Agent) goneWorkers() map[string]string {
	out := map[string]string{}
	for _, m := range a.Cluster.Members() {
		if m.Status == "failed" || m.Status == "left" {
			out[builtinWorkerPrefix(m.Name)] = "node " + m.Name + " " + m.Status
		}
	}
	return out
}

func (a *Agent) startWorkers(ctx context.Context) error {
	// The built-in workers talk to the leader directly: through this node
	// (when it follows) every poll and result would take a second HTTP hop.
	// Until a leader is known, and when it is this node, they use this node.
	toLeader := &leaderTransport{
		base: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second},
		leader: func() string {
			if l, ok := a.Cluster.Leader(); ok && l.HTTPAddr != "" {
				return l.HTTPAddr
			}
			return a.HTTPAddr()
		},
	}
	client, err := api.New(api.Config{Address: "http://" + a.HTTPAddr(), HTTPClient: &http.Client{Transport: toLeader}})
	if err != nil {
		return err
	}
	acts, err := worker.Builtins(a.logger, a.cfg.HTTPAllow)
	if err != nil {
		return err
	}
	pool, err := worker.NewPool(worker.Config{
		Client: client, Logger: a.logger, Name: strings.TrimSuffix(builtinWorkerPrefix(a.cfg.NodeName), "/"),
		Queues: a.cfg.WorkerQueues, Concurrency: *a.cfg.WorkerCount, Batch: *a.cfg.WorkerBatch, Activities: acts,
	})
	if err != nil {
		return err
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		pool.Run(ctx)
	}()
	return nil
}

// HTTPAddr is the address the API listens on.
func (a *Agent) HTTPAddr() string { return a.httpLn.Addr().String() }

// GossipAddr is the address other agents join.
func (a *Agent) GossipAddr() string { return a.Cluster.GossipAddr() }

// NodeName is the agent's node name.
func (a *Agent) NodeName() string { return a.cfg.NodeName }

// Shutdown stops workers, the API, the engine and the cluster, in that
// order, so in-flight work is reported before raft stops.
func (a *Agent) Shutdown() {
	a.shutdownOnce.Do(func() {
		a.logger.Info("shutting down")
		a.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		a.quietMu.Lock()
		for c := range a.quiet {
			c.Close()
		}
		a.quietMu.Unlock()
		_ = a.httpSrv.Shutdown(ctx)
		cancel()
		_ = a.httpSrv.Close()
		a.wg.Wait()
		if err := a.Cluster.Shutdown(); err != nil {
			a.logger.Warn("cluster shutdown", "error", err)
		}
		a.cleanupTemp()
	})
}

func (a *Agent) cleanupTemp() {
	if a.tempDir != "" {
		os.RemoveAll(a.tempDir)
	}
}

// leaderTransport sends each request to the current leader's HTTP address.
// A leader that has just lost its role answers as any follower does
// (forwarding, or 503 no_leader), and the worker pool retries. A leader
// that cannot even be dialled has gone before this node noticed: the
// request goes to this node instead (the address the caller gave), which
// holds it until the next leader is elected rather than leave the pool to
// back off for seconds after the failover.
type leaderTransport struct {
	base   http.RoundTripper
	leader func() string
}

func (t *leaderTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	addr := t.leader()
	if addr == r.URL.Host {
		return t.base.RoundTrip(r)
	}
	c := r.Clone(r.Context())
	c.URL.Host = addr
	c.Host = addr
	resp, err := t.base.RoundTrip(c)
	var op *net.OpError
	if err == nil || !errors.As(err, &op) || op.Op != "dial" || (r.Body != nil && r.Body != http.NoBody && r.GetBody == nil) {
		return resp, err
	}
	local := r.Clone(r.Context())
	if r.GetBody != nil {
		if local.Body, err = r.GetBody(); err != nil {
			return nil, err
		}
	}
	return t.base.RoundTrip(local)
}
