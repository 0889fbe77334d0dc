package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// This file drives three real `lockstep agent` processes, built from this
// tree, through HTTP alone: the way a new user meets Lockstep.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func lockstepBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary; skipped with -short")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lockstep-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "lockstep")
		cmd := exec.Command("go", "build", "-o", binPath, "../cmd/lockstep")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// freePorts reserves n distinct loopback ports (TCP and UDP free, since
// gossip uses both on one port).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			l.Close()
			continue
		}
		held = append(held, l, u)
		ports = append(ports, port)
	}
	return ports
}

type proc struct {
	name     string
	cmd      *exec.Cmd
	http     string
	exited   chan struct{}
	exitErr  error
	lockedIO *lockedBuffer
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startProc(t *testing.T, bin, name, dataDir string, ports []int, join string) *proc {
	t.Helper()
	args := []string{"agent", "-node", name, "-data-dir", dataDir,
		"-http-port", strconv.Itoa(ports[0]), "-raft-port", strconv.Itoa(ports[1]), "-gossip-port", strconv.Itoa(ports[2]),
		"-bootstrap-expect", "3", "-join", join, "-log-level", "info"}
	cmd := exec.Command(bin, args...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, http: fmt.Sprintf("127.0.0.1:%d", ports[0]), exited: make(chan struct{}), lockedIO: out}
	go func() {
		p.exitErr = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("--- log of %s ---\n%s", name, out.String())
		}
	})
	return p
}

// httpJSON sends a request and decodes a JSON answer.
func httpJSON(method, url string, body string, out any) (int, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, data)
		}
	}
	return resp.StatusCode, nil
}

func leaderOf(procs []*proc) (string, error) {
	name := ""
	for _, p := range procs {
		var l struct {
			Node string `json:"node"`
		}
		code, err := httpJSON("GET", "http://"+p.http+"/v1/status/leader", "", &l)
		if err != nil || code != 200 {
			return "", fmt.Errorf("%s: %d %v", p.name, code, err)
		}
		if name != "" && name != l.Node {
			return "", fmt.Errorf("nodes disagree: %s vs %s", name, l.Node)
		}
		name = l.Node
	}
	return name, nil
}

func instanceStatus(p *proc, id string) (string, json.RawMessage, error) {
	var inst struct {
		Status string          `json:"status"`
		Output json.RawMessage `json:"output"`
		Error  any             `json:"error"`
	}
	code, err := httpJSON("GET", "http://"+p.http+"/v1/instances/"+id, "", &inst)
	if err != nil {
		return "", nil, err
	}
	if code != 200 {
		return "", nil, fmt.Errorf("status %d", code)
	}
	if inst.Status == "failed" {
		return inst.Status, nil, fmt.Errorf("instance failed: %v", inst.Error)
	}
	return inst.Status, inst.Output, nil
}

func TestRealProcessesFailover(t *testing.T) {
	bin := lockstepBinary(t)
	base := t.TempDir()
	ports := freePorts(t, 9)
	join := fmt.Sprintf("127.0.0.1:%d", ports[2])
	var procs []*proc
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("p%d", i+1)
		procs = append(procs, startProc(t, bin, name, filepath.Join(base, name), ports[i*3:i*3+3], join))
	}
	var leader string
	waitFor(t, 30*time.Second, "a leader all three agree on", func() (err error) {
		leader, err = leaderOf(procs)
		return err
	})
	var follower, leaderProc *proc
	for _, p := range procs {
		if p.name == leader {
			leaderProc = p
		} else if follower == nil {
			follower = p
		}
	}
	fURL := "http://" + follower.http

	// Register both workflows through a follower.
	for name, src := range map[string]string{"diamond": string(readExample(t, "diamond.hcl")), "slow": slowWorkflow} {
		var reg struct {
			Name    string `json:"name"`
			Version int    `json:"version"`
		}
		code, err := httpJSON("POST", fURL+"/v1/workflows", src, &reg)
		if err != nil || code != 201 || reg.Name != name || reg.Version != 1 {
			t.Fatalf("register %s: %d %+v %v", name, code, reg, err)
		}
	}
	// Invalid HCL is a 400 with diagnostics, through the follower too.
	var bad struct {
		Error struct {
			Code        string `json:"code"`
			Diagnostics []any  `json:"diagnostics"`
		} `json:"error"`
	}
	if code, _ := httpJSON("POST", fURL+"/v1/workflows", `workflow "x" { step "a" { activity = "noop" input = step.zz.output } }`, &bad); code != 400 || bad.Error.Code != "invalid_workflow" || len(bad.Error.Diagnostics) == 0 {
		t.Fatalf("invalid workflow: %d %+v", code, bad)
	}

	start := func(workflow, id, input string) {
		t.Helper()
		var res struct {
			ID string `json:"id"`
		}
		code, err := httpJSON("POST", fURL+"/v1/workflows/"+workflow+"/instances", fmt.Sprintf(`{"id":%q,"input":%s}`, id, input), &res)
		if err != nil || code != 201 || res.ID != id {
			t.Fatalf("start %s: %d %+v %v", id, code, res, err)
		}
	}
	start("diamond", "before-1", `{"n": 1}`)
	start("slow", "inflight-1", `{}`)
	waitFor(t, 20*time.Second, "before-1 to complete", func() error {
		st, _, err := instanceStatus(follower, "before-1")
		if err == nil && st != "completed" {
			err = fmt.Errorf("status %s", st)
		}
		return err
	})

	// kill -9 the leader while the slow instance is in flight.
	if err := leaderProc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-leaderProc.exited
	var rest []*proc
	for _, p := range procs {
		if p != leaderProc {
			rest = append(rest, p)
		}
	}
	waitFor(t, 30*time.Second, "a new leader", func() error {
		l, err := leaderOf(rest)
		if err == nil && l == leaderProc.name {
			err = fmt.Errorf("dead leader still named")
		}
		return err
	})
	waitFor(t, 30*time.Second, "a start after the failover", func() error {
		var res struct {
			ID string `json:"id"`
		}
		code, err := httpJSON("POST", fURL+"/v1/workflows/diamond/instances", `{"id":"after-1","input":{"n":2}}`, &res)
		if err == nil && code != 201 && code != 200 {
			err = fmt.Errorf("status %d", code)
		}
		return err
	})
	for _, id := range []string{"inflight-1", "after-1", "before-1"} {
		for _, p := range rest {
			waitFor(t, 30*time.Second, id+" to complete on "+p.name, func() error {
				st, _, err := instanceStatus(p, id)
				if err == nil && st != "completed" {
					err = fmt.Errorf("status %s", st)
				}
				return err
			})
		}
	}
	if _, out, _ := instanceStatus(rest[0], "after-1"); string(out) != `{"result":{"b":2,"c":1}}` {
		t.Fatalf("after-1 output = %s", out)
	}

	// Every node re-derives each instance from its history, the one that
	// lived through the leader's death included, with the CLI.
	for _, id := range []string{"inflight-1", "after-1", "before-1"} {
		for _, p := range rest {
			out, err := exec.Command(bin, "instance", "replay", "-address", "http://"+p.http, id).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "matches (completed)") {
				t.Fatalf("replay %s on %s: %v\n%s", id, p.name, err, out)
			}
		}
	}
	// Against a version that feeds c another input, the replay names c.
	v2 := strings.Replace(string(readExample(t, "diamond.hcl")), "input      = { x = 1 }", "input      = { x = 2 }", 1)
	if code, err := httpJSON("POST", fURL+"/v1/workflows", v2, nil); err != nil || code != 201 {
		t.Fatalf("register diamond v2: %d %v", code, err)
	}
	waitFor(t, 10*time.Second, "a replay against v2 to name step c", func() error {
		out, err := exec.Command(bin, "instance", "replay", "-address", fURL, "-version", "2", "after-1").CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), `step "c"`) {
			return fmt.Errorf("%v: %s", err, out) // the follower may not have v2 yet
		}
		return nil
	})

	// SIGTERM stops every remaining agent cleanly and promptly.
	for _, p := range rest {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range rest {
		select {
		case <-p.exited:
			if p.exitErr != nil {
				t.Errorf("%s exited with %v", p.name, p.exitErr)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("%s did not exit within 20s of SIGTERM", p.name)
		}
		if !strings.Contains(p.lockedIO.String(), "shutting down") {
			t.Errorf("%s did not log its shutdown", p.name)
		}
	}
}
