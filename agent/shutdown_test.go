package agent

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockstep-io/lockstep/internal/poll"
)

// A connection accepted but never used (HTTP clients dial ahead) is
// tracked as quiet and closed by Shutdown, which otherwise waits for it
// until it is five seconds old.
func TestShutdownClosesConnectionsThatNeverSentARequest(t *testing.T) {
	zero, dev, workers := 0, true, false
	cfg := DefaultConfig().Merge(&Config{NodeName: "dev", DataDir: t.TempDir(),
		HTTPPort: &zero, RaftPort: &zero, GossipPort: &zero, Dev: &dev, Worker: &workers,
		RaftTimeoutScale: 0.2, GossipLocal: true})
	a, err := New(cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Shutdown)
	conn, err := net.Dial("tcp", a.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	poll.Until(t, 10*time.Second, "the connection to be tracked", func() error {
		a.quietMu.Lock()
		defer a.quietMu.Unlock()
		if len(a.quiet) != 1 {
			return errors.New("not yet")
		}
		return nil
	})
	a.Shutdown()
	a.quietMu.Lock()
	left := len(a.quiet)
	a.quietMu.Unlock()
	if left != 0 {
		t.Fatalf("%d quiet connections left after shutdown", left)
	}
	if n, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes from a connection the agent closed", n)
	}
}
