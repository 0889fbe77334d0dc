// Package api is the Go client of Lockstep's HTTP API, used by the CLI, the
// built-in worker pool and the tests. It imports no other Lockstep package.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// DefaultAddr is used when neither Config.Address nor LOCKSTEP_ADDR is set.
const DefaultAddr = "http://127.0.0.1:7700"

// Config configures a Client.
type Config struct {
	// Address of any node, e.g. http://127.0.0.1:7700. Defaults to
	// $LOCKSTEP_ADDR, then DefaultAddr.
	Address string
	// HTTPClient defaults to one without an overall timeout, since worker
	// polls are long; requests are bounded by their contexts.
	HTTPClient *http.Client
}

// Client talks to one Lockstep node.
type Client struct {
	addr string
	http *http.Client
}

// New returns a client.
func New(cfg Config) (*Client, error) {
	addr := cfg.Address
	if addr == "" {
		addr = os.Getenv("LOCKSTEP_ADDR")
	}
	if addr == "" {
		addr = DefaultAddr
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("invalid address %q", addr)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}}
	}
	return &Client{addr: strings.TrimRight(addr, "/"), http: hc}, nil
}

// Address is the node this client talks to.
func (c *Client) Address() string { return c.addr }

// Error is an error answered by the API.
type Error struct {
	StatusCode  int          `json:"-"`
	Code        string       `json:"code"`
	Message     string       `json:"message"`
	Diagnostics []Diagnostic `json:"diagnostics,omitempty"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (HTTP %d, %s)", e.Message, e.StatusCode, e.Code)
}

// Diagnostic is one problem in a workflow source.
type Diagnostic struct {
	Severity string `json:"severity"`
	Summary  string `json:"summary"`
	Detail   string `json:"detail,omitempty"`
	Range    *struct {
		Filename string `json:"filename"`
		Start    struct {
			Line   int `json:"line"`
			Column int `json:"column"`
		} `json:"start"`
	} `json:"range,omitempty"`
}

// IsStatus reports whether err is an API error with the given HTTP status.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == status
}

// Meta is what a response says about the state it came from.
type Meta struct {
	Index       string
	KnownLeader bool
	StatusCode  int
}

func (m *Meta) index() uint64 {
	n, _ := strconv.ParseUint(m.Index, 10, 64)
	return n
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, contentType string, out any) (*Meta, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.addr+path, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if key, ok := ctx.Value(idempotencyKey{}).(string); ok && method != "GET" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	meta := &Meta{Index: resp.Header.Get("X-Lockstep-Index"), KnownLeader: resp.Header.Get("X-Lockstep-KnownLeader") == "true", StatusCode: resp.StatusCode}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return meta, err
	}
	if resp.StatusCode >= 400 {
		var env struct {
			Error *Error `json:"error"`
		}
		if json.Unmarshal(data, &env) != nil || env.Error == nil {
			return meta, &Error{StatusCode: resp.StatusCode, Code: "http_error", Message: strings.TrimSpace(string(data))}
		}
		env.Error.StatusCode = resp.StatusCode
		return meta, env.Error
	}
	if out != nil && resp.StatusCode != http.StatusNoContent && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return meta, fmt.Errorf("decode %s %s: %w", method, path, err)
		}
	}
	return meta, nil
}

func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) (*Meta, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	return c.do(ctx, method, path, body, "application/json", out)
}

type idempotencyKey struct{}

// WithIdempotencyKey makes the writes made with ctx safe to retry: the
// server stores the first answer to the key and returns it to every repeat
// of the same request (a different request with the key is refused).
func WithIdempotencyKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, idempotencyKey{}, key)
}
