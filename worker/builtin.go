package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockstep-io/lockstep/api"
)

// DefaultHTTPAllow lets the http activity reach loopback only.
var DefaultHTTPAllow = []string{"127.0.0.0/8", "::1/128", "localhost"}

// Builtins returns the built-in activities: noop, log, delay and http.
// httpAllow lists the hosts (names or CIDRs) http may call.
func Builtins(logger hclog.Logger, httpAllow []string) (map[string]Activity, error) {
	allow, err := parseAllow(httpAllow)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	h := &httpActivity{allow: allow}
	h.client = &http.Client{
		Timeout: 30 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return &ActivityError{Type: "http.redirects", Message: "stopped after 5 redirects"}
			}
			// Every hop is checked: a redirect may not lead off the allow list.
			return h.check(req.URL)
		},
	}
	return map[string]Activity{
		"noop": func(_ context.Context, t *api.Task) (json.RawMessage, error) { return t.Input, nil },
		"log": func(_ context.Context, t *api.Task) (json.RawMessage, error) {
			logger.Named("activity").Info("log", "instance", t.InstanceID, "step", t.Step, "input", string(t.Input))
			return t.Input, nil
		},
		"delay": delay,
		"http":  h.run,
	}, nil
}

// delay waits input.ms milliseconds and returns its input.
func delay(ctx context.Context, t *api.Task) (json.RawMessage, error) {
	var in struct {
		MS float64 `json:"ms"`
	}
	if err := json.Unmarshal(t.Input, &in); err != nil || in.MS < 0 {
		return nil, &ActivityError{Type: "invalid_input", NonRetryable: true, Message: `delay takes {"ms": N} with N >= 0`}
	}
	timer := time.NewTimer(time.Duration(in.MS * float64(time.Millisecond)))
	defer timer.Stop()
	select {
	case <-timer.C:
		return t.Input, nil
	case <-ctx.Done():
		return nil, &ActivityError{Type: "cancelled", Message: ctx.Err().Error()}
	}
}

type allowList struct {
	hosts map[string]bool
	nets  []*net.IPNet
}

func parseAllow(entries []string) (*allowList, error) {
	a := &allowList{hosts: map[string]bool{}}
	for _, e := range entries {
		if strings.Contains(e, "/") {
			_, n, err := net.ParseCIDR(e)
			if err != nil {
				return nil, fmt.Errorf("http allow entry %q: %w", e, err)
			}
			a.nets = append(a.nets, n)
			continue
		}
		if ip := net.ParseIP(e); ip != nil {
			bits := 32
			if ip.To4() == nil {
				bits = 128
			}
			a.nets = append(a.nets, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
			continue
		}
		a.hosts[strings.ToLower(e)] = true
	}
	return a, nil
}

type httpActivity struct {
	allow  *allowList
	client *http.Client
}

// check allows a URL whose host is a listed name, or an IP inside a listed
// network. Names are not resolved here, so a name only passes when listed.
func (h *httpActivity) check(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return &ActivityError{Type: "http.forbidden", NonRetryable: true, Message: fmt.Sprintf("scheme %q is not allowed", u.Scheme)}
	}
	host := strings.ToLower(u.Hostname())
	if h.allow.hosts[host] {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil {
		for _, n := range h.allow.nets {
			if n.Contains(ip) {
				return nil
			}
		}
	}
	return &ActivityError{Type: "http.forbidden", NonRetryable: true, Message: fmt.Sprintf("host %q is not in this agent's http_allow list", host)}
}

type httpInput struct {
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers"`
	Body    *string           `json:"body"`
}

type httpOutput struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

// maxHTTPBody bounds a response the activity returns into workflow state.
const maxHTTPBody = 1 << 20

func (h *httpActivity) run(ctx context.Context, t *api.Task) (json.RawMessage, error) {
	var in httpInput
	if err := json.Unmarshal(t.Input, &in); err != nil || in.URL == "" {
		return nil, &ActivityError{Type: "invalid_input", NonRetryable: true, Message: `http takes {"method", "url", "headers", "body"}; url is required`}
	}
	if in.Method == "" {
		in.Method = "GET"
	}
	u, err := url.Parse(in.URL)
	if err != nil {
		return nil, &ActivityError{Type: "invalid_input", NonRetryable: true, Message: "invalid url: " + err.Error()}
	}
	if svc := t.Service; svc != nil {
		// A step of a service: relative URLs are the service's, its
		// headers come first (the input's win), its timeout bounds the call.
		base, err := url.Parse(svc.BaseURL)
		if err != nil {
			return nil, &ActivityError{Type: "invalid_input", NonRetryable: true, Message: "invalid service base_url: " + err.Error()}
		}
		u = base.ResolveReference(u)
		headers := map[string]string{}
		for k, v := range svc.Headers {
			headers[k] = v
		}
		for k, v := range in.Headers {
			headers[k] = v
		}
		in.Headers = headers
		if svc.TimeoutMS > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, time.Duration(svc.TimeoutMS)*time.Millisecond)
			defer cancel()
		}
	}
	if err := h.check(u); err != nil {
		return nil, err
	}
	var body io.Reader
	if in.Body != nil {
		body = strings.NewReader(*in.Body)
	}
	req, err := http.NewRequestWithContext(ctx, strings.ToUpper(in.Method), u.String(), body)
	if err != nil {
		return nil, &ActivityError{Type: "invalid_input", NonRetryable: true, Message: err.Error()}
	}
	for k, v := range in.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Idempotency-Key", t.IdempotencyKey)
	resp, err := h.client.Do(req)
	if err != nil {
		var ae *ActivityError
		if e, ok := err.(*url.Error); ok && asActivityError(e.Err, &ae) {
			return nil, ae
		}
		return nil, &ActivityError{Type: "http.transport", Message: err.Error()}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxHTTPBody+1))
	if err != nil {
		return nil, &ActivityError{Type: "http.transport", Message: err.Error()}
	}
	if len(data) > maxHTTPBody {
		return nil, &ActivityError{Type: "http.too_large", Message: fmt.Sprintf("response body exceeds %d bytes", maxHTTPBody)}
	}
	if resp.StatusCode >= 500 {
		snippet := string(bytes.ToValidUTF8(data, []byte("\uFFFD")))
		if len(snippet) > 512 {
			snippet = snippet[:512]
		}
		return nil, &ActivityError{Type: "http.status", Message: fmt.Sprintf("%s %s answered %d: %s", req.Method, u.Redacted(), resp.StatusCode, snippet)}
	}
	out := httpOutput{Status: resp.StatusCode, Headers: map[string]string{}, Body: string(bytes.ToValidUTF8(data, []byte("\uFFFD")))}
	for k := range resp.Header {
		out.Headers[strings.ToLower(k)] = resp.Header.Get(k)
	}
	return json.Marshal(out)
}

func asActivityError(err error, out **ActivityError) bool {
	ae, ok := err.(*ActivityError)
	if ok {
		*out = ae
	}
	return ok
}
