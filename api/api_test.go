package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestAddressDefaults(t *testing.T) {
	t.Setenv("LOCKSTEP_ADDR", "")
	c, err := New(Config{})
	if err != nil || c.Address() != DefaultAddr {
		t.Fatalf("default = %v %v", c, err)
	}
	t.Setenv("LOCKSTEP_ADDR", "10.0.0.1:7700")
	if c, _ := New(Config{}); c.Address() != "http://10.0.0.1:7700" {
		t.Fatalf("env = %s", c.Address())
	}
	if c, _ := New(Config{Address: "https://x:1/"}); c.Address() != "https://x:1" {
		t.Fatalf("explicit = %s", c.Address())
	}
	if _, err := New(Config{Address: "http://"}); err == nil {
		t.Fatal("empty host accepted")
	}
}

func TestErrorsAndNoContent(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/instances/gone":
			w.WriteHeader(404)
			w.Write([]byte(`{"error":{"code":"not_found","message":"instance \"gone\" not found"}}`))
		case "/v1/queues/q/poll":
			w.WriteHeader(204)
		case "/v1/workflows":
			w.WriteHeader(400)
			w.Write([]byte(`{"error":{"code":"invalid_workflow","message":"bad","diagnostics":[{"severity":"error","summary":"x","range":{"filename":"f.hcl","start":{"line":2,"column":3}}}]}}`))
		default:
			w.WriteHeader(502)
			w.Write([]byte("bad gateway"))
		}
	}))
	defer srv.Close()
	c, _ := New(Config{Address: srv.URL})
	ctx := context.Background()
	_, err := c.Instance(ctx, "gone")
	if !IsStatus(err, 404) || err.(*Error).Code != "not_found" {
		t.Fatalf("404 = %v", err)
	}
	if task, err := c.Poll(ctx, "q", PollRequest{WorkerID: "w"}); task != nil || err != nil {
		t.Fatalf("204 = %v %v", task, err)
	}
	_, err = c.RegisterWorkflow(ctx, "f.hcl", []byte("x"))
	if e, ok := err.(*Error); !ok || len(e.Diagnostics) != 1 || e.Diagnostics[0].Range.Start.Line != 2 {
		t.Fatalf("diagnostics = %v", err)
	}
	if _, err := c.Leader(ctx); !IsStatus(err, 502) || err.(*Error).Message != "bad gateway" {
		t.Fatalf("non-JSON error = %v", err)
	}
}
