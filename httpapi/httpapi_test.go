package httpapi_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/agent/agenttest"
	"github.com/lockstep-io/lockstep/api"
	"github.com/lockstep-io/lockstep/internal/poll"
)

// devAgent runs one real node (raft, gossip, engine, HTTP) on loopback
// ports chosen by the OS, and returns its base URL.
func devAgent(t testing.TB, workers bool) string {
	t.Helper()
	return "http://" + agenttest.Dev(t, workers).HTTPAddr()
}

type result struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func call(t testing.TB, method, url, body string) result {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode, header: resp.Header, raw: string(data)}
	if len(data) > 0 {
		if err := json.Unmarshal(data, &r.body); err != nil {
			t.Fatalf("%s %s: non-JSON answer %q", method, url, data)
		}
	}
	return r
}

func (r result) errCode() string {
	e, _ := r.body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

func readExample(t *testing.T) string {
	src, err := os.ReadFile(filepath.Join("..", "examples", "diamond.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	return string(src)
}

func TestErrorsUseOneEnvelope(t *testing.T) {
	base := devAgent(t, false)
	if r := call(t, "POST", base+"/v1/workflows", readExample(t)); r.status != 201 {
		t.Fatalf("register = %d %s", r.status, r.raw)
	}
	cases := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"unknown route", "GET", "/v1/nope", "", 404, "not_found"},
		{"wrong method", "DELETE", "/v1/workflows", "", 405, "method_not_allowed"},
		{"invalid hcl", "POST", "/v1/workflows", `workflow "x" {`, 400, "invalid_workflow"},
		{"empty hcl", "POST", "/v1/workflows", ``, 400, "invalid_workflow"},
		{"bad json", "POST", "/v1/workflows/diamond/instances", `{"input":`, 400, "bad_request"},
		{"unknown field", "POST", "/v1/workflows/diamond/instances", `{"inputs":{}}`, 400, "bad_request"},
		{"trailing data", "POST", "/v1/workflows/diamond/instances", `{} {}`, 400, "bad_request"},
		{"hostile id", "POST", "/v1/workflows/diamond/instances", `{"id":"../../etc/passwd"}`, 400, "bad_request"},
		{"long id", "POST", "/v1/workflows/diamond/instances", `{"id":"` + strings.Repeat("x", 200) + `"}`, 400, "bad_request"},
		{"unknown workflow", "POST", "/v1/workflows/nope/instances", `{}`, 404, "not_found"},
		{"unknown version", "POST", "/v1/workflows/diamond/instances", `{"version": 9}`, 404, "not_found"},
		{"unknown instance", "GET", "/v1/instances/nope", "", 404, "not_found"},
		{"unknown task", "POST", "/v1/tasks/t999/complete", `{"token":"1.0"}`, 404, "not_found"},
		{"missing token", "POST", "/v1/tasks/t1/complete", `{}`, 400, "bad_request"},
		{"poll without worker", "POST", "/v1/queues/default/poll", `{"wait_ms": 1}`, 400, "bad_request"},
		{"poll bad queue", "POST", "/v1/queues/bad%20queue/poll", `{"worker_id":"w"}`, 400, "bad_request"},
		{"bad blocking index", "GET", "/v1/instances?index=x", "", 400, "bad_request"},
		{"bad page size", "GET", "/v1/instances?page_size=0", "", 400, "bad_request"},
		{"bad version", "GET", "/v1/workflows/diamond?version=x", "", 400, "bad_request"},
		{"oversized body", "POST", "/v1/workflows", strings.Repeat("#", 2<<20), 413, "too_large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := call(t, tc.method, base+tc.path, tc.body)
			if r.status != tc.status || r.errCode() != tc.code {
				t.Fatalf("%s %s = %d %s, want %d %s", tc.method, tc.path, r.status, r.raw, tc.status, tc.code)
			}
			if e, _ := r.body["error"].(map[string]any); e["message"] == "" {
				t.Fatalf("no message: %s", r.raw)
			}
		})
	}
	// Nothing above changed the state: one workflow, no instances.
	r := call(t, "GET", base+"/v1/instances", "")
	if n := len(r.body["instances"].([]any)); n != 0 {
		t.Fatalf("bad requests created %d instances", n)
	}
}

func TestValidateDryRunAndDiagnostics(t *testing.T) {
	base := devAgent(t, false)
	bad := "workflow \"x\" {\n  step \"a\" {\n    activity = \"noop\"\n    input    = step.b.output\n  }\n}\n"
	r := call(t, "POST", base+"/v1/workflows?filename=x.hcl", bad)
	diags, _ := r.body["error"].(map[string]any)["diagnostics"].([]any)
	if r.status != 400 || len(diags) != 1 {
		t.Fatalf("register invalid = %d %s", r.status, r.raw)
	}
	rng := diags[0].(map[string]any)["range"].(map[string]any)
	if rng["filename"] != "x.hcl" || rng["start"].(map[string]any)["line"].(float64) != 4 {
		t.Fatalf("range = %v", rng)
	}
	if r := call(t, "POST", base+"/v1/workflows/validate", bad); r.status != 200 || r.body["valid"] != false {
		t.Fatalf("validate invalid = %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", base+"/v1/workflows/validate", readExample(t)); r.status != 200 || r.body["valid"] != true || r.body["name"] != "diamond" {
		t.Fatalf("validate valid = %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", base+"/v1/workflows?dry_run=true", readExample(t)); r.status != 200 || r.body["valid"] != true {
		t.Fatalf("dry run = %d %s", r.status, r.raw)
	}
	if r := call(t, "GET", base+"/v1/workflows/diamond", ""); r.status != 404 {
		t.Fatalf("dry run registered the workflow: %d %s", r.status, r.raw)
	}
	// Registering twice keeps the version; a change makes a new one.
	if r := call(t, "POST", base+"/v1/workflows", readExample(t)); r.status != 201 || r.body["version"].(float64) != 1 {
		t.Fatalf("first = %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", base+"/v1/workflows", readExample(t)); r.status != 200 || r.body["version"].(float64) != 1 {
		t.Fatalf("unchanged = %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", base+"/v1/workflows", readExample(t)+"\n"); r.status != 201 || r.body["version"].(float64) != 2 {
		t.Fatalf("changed = %d %s", r.status, r.raw)
	}
	if r := call(t, "GET", base+"/v1/workflows/diamond?version=1", ""); r.status != 200 || r.body["source"] != readExample(t) {
		t.Fatalf("version 1 = %d %s", r.status, r.raw)
	}
	if r := call(t, "GET", base+"/v1/workflows", ""); len(r.body["workflows"].([]any)) != 1 {
		t.Fatalf("list = %s", r.raw)
	}
}

func TestBlockingQueryAndIndexHeader(t *testing.T) {
	base := devAgent(t, true)
	call(t, "POST", base+"/v1/workflows", readExample(t))
	r := call(t, "POST", base+"/v1/workflows/diamond/instances", `{"id":"b1","input":{"n":1}}`)
	idx, err := strconv.ParseUint(r.header.Get("X-Lockstep-Index"), 10, 64)
	if r.status != 201 || err != nil || idx == 0 {
		t.Fatalf("start = %d %s index=%q", r.status, r.raw, r.header.Get("X-Lockstep-Index"))
	}
	if r.header.Get("X-Lockstep-KnownLeader") != "true" {
		t.Fatalf("known leader header = %q", r.header.Get("X-Lockstep-KnownLeader"))
	}
	// Follow the instance with blocking queries until it completes.
	index := "0"
	for i := 0; i < 100; i++ {
		r = call(t, "GET", base+"/v1/instances/b1?index="+index+"&wait=5s", "")
		if r.body["status"] == "completed" {
			break
		}
		next := r.header.Get("X-Lockstep-Index")
		if next <= index && len(next) <= len(index) {
			t.Fatalf("blocking query returned without progress: %s -> %s", index, next)
		}
		index = next
	}
	if r.body["status"] != "completed" {
		t.Fatalf("instance = %s", r.raw)
	}
	// A blocking query past the current index waits for its timeout.
	now, _ := strconv.ParseUint(r.header.Get("X-Lockstep-Index"), 10, 64)
	startedAt := time.Now()
	r = call(t, "GET", fmt.Sprintf("%s/v1/instances/b1?index=%d&wait=200ms", base, now+10), "")
	if r.status != 200 || time.Since(startedAt) < 150*time.Millisecond {
		t.Fatalf("blocking query did not wait: %d after %s", r.status, time.Since(startedAt))
	}
}

func TestPollProtocol(t *testing.T) {
	base := devAgent(t, false)
	if r := call(t, "POST", base+"/v1/queues/default/poll", `{"worker_id":"w","wait_ms":20}`); r.status != 204 {
		t.Fatalf("empty poll = %d %s", r.status, r.raw)
	}
	call(t, "POST", base+"/v1/workflows", readExample(t))
	call(t, "POST", base+"/v1/workflows/diamond/instances", `{"id":"p1","input":{"n":2}}`)
	// A worker that only runs other activities is not handed the task.
	if r := call(t, "POST", base+"/v1/queues/default/poll", `{"worker_id":"w","wait_ms":50,"activities":["email.send"]}`); r.status != 204 {
		t.Fatalf("filtered poll = %d %s", r.status, r.raw)
	}
	r := call(t, "POST", base+"/v1/queues/default/poll", `{"worker_id":"w","wait_ms":1000,"max_tasks":10}`)
	tasks, _ := r.body["tasks"].([]any)
	if r.status != 200 || len(tasks) != 1 {
		t.Fatalf("batch poll = %d %s", r.status, r.raw)
	}
	task := tasks[0].(map[string]any)
	id, token := task["task_id"].(string), task["token"].(string)
	if r := call(t, "GET", base+"/v1/tasks/"+id, ""); r.status != 200 || r.body["token"] != nil || r.body["status"] != "leased" {
		t.Fatalf("get task = %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", base+"/v1/tasks/"+id+"/fail", fmt.Sprintf(`{"token":%q,"error":{"type":"boom","message":"no","non_retryable":true}}`, token)); r.status != 200 || r.body["instance_status"] != "failed" {
		t.Fatalf("fail = %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", base+"/v1/tasks/"+id+"/complete", fmt.Sprintf(`{"token":%q}`, token)); r.status != 409 || r.errCode() != "stale_token" {
		t.Fatalf("complete after fail = %d %s", r.status, r.raw)
	}
	r = call(t, "GET", base+"/v1/instances/p1", "")
	if e := r.body["error"].(map[string]any); e["type"] != "boom" || e["step"] != "a" {
		t.Fatalf("instance error = %v", e)
	}
	if r := call(t, "GET", base+"/v1/health", ""); r.status != 200 || r.body["leader"] != true {
		t.Fatalf("health = %d %s", r.status, r.raw)
	}
	r = call(t, "GET", base+"/v1/stats", "")
	if r.status != 200 || r.body["leader"] != true {
		t.Fatalf("stats = %d %s", r.status, r.raw)
	}
	if st := r.body["state"].(map[string]any); st["instances"].(float64) < 1 || st["workflows"].(float64) < 1 {
		t.Fatalf("stats state = %v", st)
	}
	if rf := r.body["raft"].(map[string]any); rf["state"] != "Leader" || rf["applied_index"].(float64) < 1 {
		t.Fatalf("stats raft = %v", rf)
	}
	if p := r.body["process"].(map[string]any); p["cpu_user_seconds"].(float64) <= 0 || p["goroutines"].(float64) < 1 || p["minor_page_faults"].(float64) < 1 {
		t.Fatalf("stats process = %v", p)
	}
	runtime.GC() // so that the test binary's collector has marked at least once
	r = call(t, "GET", base+"/v1/stats", "")
	if p := r.body["process"].(map[string]any); p["gc_cycles"].(float64) < 1 || p["heap_live_bytes"].(float64) <= 0 || p["gc_cpu_seconds"].(float64) <= 0 || p["gc_assist_cpu_seconds"] == nil {
		t.Fatalf("stats process, collector = %v", p)
	}
	host := r.body["host"].(map[string]any)
	if host["cpus"].(float64) != float64(runtime.NumCPU()) {
		t.Fatalf("stats host = %v", host)
	}
	if b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled"); err == nil && !strings.Contains(string(b), "["+fmt.Sprint(host["transparent_huge_pages"])+"]") {
		t.Fatalf("stats host = %v, the kernel says %q", host, b)
	}
}

func FuzzStartBody(f *testing.F) {
	f.Add(`{"id":"a","input":{"n":1}}`)
	f.Add(`{"input":[1,2,{"x":null}],"version":1}`)
	f.Add(`{"id":"` + strings.Repeat("x", 300) + `"}`)
	base := devAgent(f, false)
	call(f, "POST", base+"/v1/workflows", "workflow \"w\" {\n  step \"a\" {\n    activity = \"noop\"\n  }\n}\n")
	f.Fuzz(func(t *testing.T, body string) {
		r := call(t, "POST", base+"/v1/workflows/w/instances", body)
		if r.status >= 500 {
			t.Fatalf("body %q: %d %s", body, r.status, r.raw)
		}
		if r.status >= 400 && r.errCode() == "" {
			t.Fatalf("error without envelope: %s", r.raw)
		}
	})
}

// FuzzWorkerBodies throws arbitrary bodies at every worker-protocol decoder:
// none may answer 5xx or without the error envelope.
func FuzzWorkerBodies(f *testing.F) {
	f.Add(`{"worker_id":"w","wait_ms":1}`, `{"token":"1.0","output":{"a":[1,2]}}`)
	f.Add(`{"worker_id":"","max_tasks":-1}`, `{"token":"x","error":{"type":"t","message":"m"}}`)
	f.Add(`[]`, `null`)
	base := devAgent(f, false)
	f.Fuzz(func(t *testing.T, pollBody, resultBody string) {
		for _, req := range []struct{ path, body string }{
			// (wait_ms is capped by the engine; fuzzed polls end when it runs out)
			{"/v1/queues/default/poll", pollBody},
			{"/v1/tasks/t1/complete", resultBody},
			{"/v1/tasks/t1/fail", resultBody},
		} {
			r := call(t, "POST", base+req.path, req.body)
			if r.status >= 500 || (r.status >= 400 && r.errCode() == "") {
				t.Fatalf("POST %s %q = %d %s", req.path, req.body, r.status, r.raw)
			}
		}
	})
}

func TestStartRejectsInputOfTheWrongType(t *testing.T) {
	base := devAgent(t, false)
	src := "workflow \"typed\" {\n  input {\n    n = number\n  }\n  step \"a\" {\n    activity = \"noop\"\n    input    = input.n\n  }\n}\n"
	if r := call(t, "POST", base+"/v1/workflows", src); r.status != 201 {
		t.Fatalf("register = %d %s", r.status, r.raw)
	}
	r := call(t, "POST", base+"/v1/workflows/typed/instances", `{"id":"x","input":{"n":"lots"}}`)
	if r.status != 400 || r.errCode() != "invalid_input" || !strings.Contains(r.raw, "input.n") {
		t.Fatalf("start = %d %s", r.status, r.raw)
	}
	if r := call(t, "GET", base+"/v1/instances/x", ""); r.status != 404 {
		t.Fatalf("refused start created an instance: %d", r.status)
	}
}

func TestTerminateOverHTTP(t *testing.T) {
	base := devAgent(t, false)
	call(t, "POST", base+"/v1/workflows", readExample(t))
	call(t, "POST", base+"/v1/workflows/diamond/instances", `{"id":"x","input":{"n":1}}`)
	r := call(t, "POST", base+"/v1/instances/x/terminate", `{"reason":"testing"}`)
	if r.status != 200 || r.body["status"] != "terminated" {
		t.Fatalf("terminate = %d %s", r.status, r.raw)
	}
	r = call(t, "POST", base+"/v1/instances/x/terminate", ``)
	if r.status != 409 || r.errCode() != "conflict" || !strings.Contains(r.raw, "terminated and cannot become terminated") {
		t.Fatalf("again = %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", base+"/v1/instances/nope/terminate", `{}`); r.status != 404 {
		t.Fatalf("unknown = %d %s", r.status, r.raw)
	}
	if r := call(t, "GET", base+"/v1/instances/x", ""); r.body["status"] != "terminated" || r.body["steps"].(map[string]any)["a"].(map[string]any)["status"] != "cancelled" {
		t.Fatalf("instance = %s", r.raw)
	}
}

func TestHistoryStepsAndVariables(t *testing.T) {
	base := devAgent(t, true)
	call(t, "POST", base+"/v1/workflows", readExample(t))
	r := call(t, "POST", base+"/v1/workflows/diamond/instances", `{"id":"h","input":{"n":3}}`)
	index := r.header.Get("X-Lockstep-Index")
	for i := 0; i < 50; i++ {
		r = call(t, "GET", base+"/v1/instances/h?index="+index+"&wait=5s", "")
		if r.body["status"] == "completed" {
			break
		}
		index = r.header.Get("X-Lockstep-Index")
	}
	r = call(t, "GET", base+"/v1/instances/h/history", "")
	events := r.body["events"].([]any)
	if len(events) != 14 || events[0].(map[string]any)["type"] != "instance_started" || events[13].(map[string]any)["type"] != "instance_completed" {
		t.Fatalf("history = %s", r.raw)
	}
	if r := call(t, "GET", base+"/v1/instances/h/history?after=12", ""); len(r.body["events"].([]any)) != 2 || r.body["last"].(float64) != 14 {
		t.Fatalf("after 12 = %s", r.raw)
	}
	r = call(t, "GET", base+"/v1/instances/h/steps/b", "")
	if r.status != 200 || len(r.body["events"].([]any)) != 3 || r.body["state"].(map[string]any)["status"] != "succeeded" {
		t.Fatalf("step = %d %s", r.status, r.raw)
	}
	r = call(t, "GET", base+"/v1/instances/h/variables", "")
	if string(mustJSON(t, r.body["input"])) != `{"n":3}` || string(mustJSON(t, r.body["steps"].(map[string]any)["d"])) != `{"b":3,"c":1}` {
		t.Fatalf("variables = %s", r.raw)
	}
	for _, path := range []string{"/v1/instances/nope/history", "/v1/instances/h/steps/zz", "/v1/instances/nope/variables"} {
		if r := call(t, "GET", base+path, ""); r.status != 404 || r.errCode() != "not_found" {
			t.Fatalf("%s = %d %s", path, r.status, r.raw)
		}
	}
	if r := call(t, "GET", base+"/v1/instances/h/history?after=x", ""); r.status != 400 {
		t.Fatalf("bad after = %d", r.status)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func callWithKey(t *testing.T, method, url, body, key string) result {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode, header: resp.Header, raw: string(data)}
	_ = json.Unmarshal(data, &r.body)
	return r
}

func TestIdempotencyKeyReturnsTheFirstAnswer(t *testing.T) {
	base := devAgent(t, false)
	call(t, "POST", base+"/v1/workflows", readExample(t))
	// A start without an id, retried with its key: one instance, one id.
	first := callWithKey(t, "POST", base+"/v1/workflows/diamond/instances", `{"input":{"n":1}}`, "start-1")
	again := callWithKey(t, "POST", base+"/v1/workflows/diamond/instances", `{"input":{"n":1}}`, "start-1")
	if first.status != 201 || again.status != 201 || first.body["id"] != again.body["id"] {
		t.Fatalf("first %d %s, again %d %s", first.status, first.raw, again.status, again.raw)
	}
	if n := len(call(t, "GET", base+"/v1/instances", "").body["instances"].([]any)); n != 1 {
		t.Fatalf("%d instances", n)
	}
	// The same key for another request is refused.
	if r := callWithKey(t, "POST", base+"/v1/workflows/diamond/instances", `{"input":{"n":2}}`, "start-1"); r.status != 409 || !strings.Contains(r.raw, "different request") {
		t.Fatalf("reused key = %d %s", r.status, r.raw)
	}
	// An error is a first answer too.
	for i := 0; i < 2; i++ {
		if r := callWithKey(t, "POST", base+"/v1/workflows/nope/instances", `{}`, "start-2"); r.status != 404 {
			t.Fatalf("error answer %d = %d %s", i, r.status, r.raw)
		}
	}
	// A completion retried with its key gets its first answer, not a 409.
	r := call(t, "POST", base+"/v1/queues/default/poll", `{"worker_id":"w","wait_ms":2000}`)
	done := fmt.Sprintf(`{"token":%q,"output":{"n":1}}`, r.body["token"])
	url := base + "/v1/tasks/" + r.body["task_id"].(string) + "/complete"
	for i := 0; i < 2; i++ {
		if r := callWithKey(t, "POST", url, done, "done-1"); r.status != 200 || r.body["instance_status"] != "running" {
			t.Fatalf("completion %d = %d %s", i, r.status, r.raw)
		}
	}
	if r := callWithKey(t, "POST", base+"/v1/workflows", readExample(t), strings.Repeat("k", 200)); r.status != 400 {
		t.Fatalf("long key = %d", r.status)
	}
}

func TestOperatorVerbsOverHTTP(t *testing.T) {
	base := devAgent(t, false)
	call(t, "POST", base+"/v1/workflows", readExample(t))
	call(t, "POST", base+"/v1/workflows/diamond/instances", `{"id":"v","input":{"n":1}}`)
	for _, step := range []struct{ path, status string }{
		{"suspend", "suspended"}, {"resume", "running"}, {"suspend", "suspended"}, {"cancel", "cancelled"},
	} {
		r := call(t, "POST", base+"/v1/instances/v/"+step.path, `{"reason":"test"}`)
		if r.status != 200 || r.body["status"] != step.status {
			t.Fatalf("%s = %d %s", step.path, r.status, r.raw)
		}
	}
	for _, verb := range []string{"suspend", "resume", "cancel", "terminate"} {
		if r := call(t, "POST", base+"/v1/instances/v/"+verb, ``); r.status != 409 || r.errCode() != "conflict" {
			t.Fatalf("%s after cancel = %d %s", verb, r.status, r.raw)
		}
	}
}

func TestRetryAndOverridesOverHTTP(t *testing.T) {
	base := devAgent(t, false)
	call(t, "POST", base+"/v1/workflows", readExample(t))
	call(t, "POST", base+"/v1/workflows/diamond/instances", `{"id":"r","input":{"n":1}}`)
	if r := call(t, "POST", base+"/v1/instances/r/steps/a/complete", `{"output":{"n":4},"reason":"done by hand"}`); r.status != 200 || r.body["status"] != "running" {
		t.Fatalf("complete = %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", base+"/v1/instances/r/steps/b/fail", `{"error":{"type":"bad","message":"no"}}`); r.status != 200 || r.body["status"] != "failed" {
		t.Fatalf("fail = %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", base+"/v1/instances/r/retry", `{"reason":"try again"}`); r.status != 200 || r.body["status"] != "running" {
		t.Fatalf("retry = %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", base+"/v1/instances/r/steps/b/explode", `{}`); r.status != 404 {
		t.Fatalf("unknown action = %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", base+"/v1/instances/r/steps/a/skip", `{}`); r.status != 409 {
		t.Fatalf("skip an ended step = %d %s", r.status, r.raw)
	}
}

func TestServicesAndBreakersOverHTTP(t *testing.T) {
	base := devAgent(t, false)
	src := "workflow \"calls\" {\n  service \"payments\" {\n    base_url = \"http://127.0.0.1:1\"\n    headers  = { X-Team = \"pay\" }\n  }\n  step \"a\" {\n    activity = \"http\"\n    service  = \"payments\"\n    input    = { url = \"/charge\" }\n  }\n}\n"
	if r := call(t, "POST", base+"/v1/workflows", src); r.status != 201 {
		t.Fatalf("register = %d %s", r.status, r.raw)
	}
	if r := call(t, "GET", base+"/v1/services/payments", ""); r.status != 200 || r.body["state"] != "closed" || r.body["base_url"] != "http://127.0.0.1:1" {
		t.Fatalf("service = %d %s", r.status, r.raw)
	}
	call(t, "POST", base+"/v1/workflows/calls/instances", `{"id":"c"}`)
	r := call(t, "POST", base+"/v1/queues/default/poll", `{"worker_id":"w","wait_ms":2000}`)
	svc, _ := r.body["service"].(map[string]any)
	if r.status != 200 || svc["base_url"] != "http://127.0.0.1:1" || svc["headers"].(map[string]any)["X-Team"] != "pay" {
		t.Fatalf("leased task = %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", base+"/v1/services/payments/breaker", `{"state":"open"}`); r.status != 200 || r.body["state"] != "open" {
		t.Fatalf("trip = %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", base+"/v1/services/payments/breaker", `{"state":"ajar"}`); r.status != 400 {
		t.Fatalf("bad state = %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", base+"/v1/services/nope/breaker", `{"state":"open"}`); r.status != 404 {
		t.Fatalf("unknown = %d %s", r.status, r.raw)
	}
	if r := call(t, "GET", base+"/v1/services", ""); len(r.body["services"].([]any)) != 1 {
		t.Fatalf("list = %s", r.raw)
	}
}

func TestTriggersOverHTTP(t *testing.T) {
	base := devAgent(t, false)
	src := "workflow \"nightly\" {\n  trigger \"cron\" \"etl\" {\n    schedule = \"0 2 * * *\"\n    input    = { day = \"x\" }\n  }\n  step \"a\" {\n    activity = \"noop\"\n    input    = input\n  }\n}\n"
	if r := call(t, "POST", base+"/v1/workflows", src); r.status != 201 {
		t.Fatalf("register = %d %s", r.status, r.raw)
	}
	r := call(t, "GET", base+"/v1/triggers", "")
	ts := r.body["triggers"].([]any)
	if len(ts) != 1 || ts[0].(map[string]any)["id"] != "nightly.etl" || ts[0].(map[string]any)["enabled"] != true {
		t.Fatalf("triggers = %s", r.raw)
	}
	r = call(t, "POST", base+"/v1/triggers/nightly.etl/fire", "")
	if r.status != 200 || r.body["outcome"] != "started" {
		t.Fatalf("fire = %d %s", r.status, r.raw)
	}
	if r := call(t, "GET", base+"/v1/instances/"+r.body["instance_id"].(string), ""); r.status != 200 || string(mustJSON(t, r.body["input"])) != `{"day":"x"}` {
		t.Fatalf("fired instance = %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", base+"/v1/triggers/nightly.etl/disable", ""); r.status != 200 || r.body["enabled"] != false {
		t.Fatalf("disable = %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", base+"/v1/triggers/nightly.etl/explode", ""); r.status != 404 {
		t.Fatalf("bad action = %d", r.status)
	}
	if r := call(t, "POST", base+"/v1/triggers/nope/fire", ""); r.status != 404 {
		t.Fatalf("unknown = %d", r.status)
	}
}

func TestWebhookDeliveriesAreSignedAndDeduplicated(t *testing.T) {
	base := devAgent(t, false)
	src := `workflow "incident" {
  trigger "webhook" "alert" {
    secret = "alerts"
    id     = request.body.alert_id
    input  = { service = request.body.service, severity = try(request.body.severity, "low"), via = request.headers["user-agent"] }
  }
  input {
    service  = string
    severity = string
    via      = string
  }
  step "page" {
    activity = "noop"
    input    = input
  }
}
`
	if r := call(t, "POST", base+"/v1/workflows", src); r.status != 201 {
		t.Fatalf("register = %d %s", r.status, r.raw)
	}
	body := `{"alert_id":"a-17","service":"checkout","severity":"high"}`
	post := func(sig string) result {
		req, _ := http.NewRequest("POST", base+"/v1/webhooks/incident/alert", strings.NewReader(body))
		req.Header.Set("User-Agent", "alertmanager")
		if sig != "" {
			req.Header.Set("X-Lockstep-Signature", sig)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		r := result{status: resp.StatusCode, raw: string(data)}
		_ = json.Unmarshal(data, &r.body)
		return r
	}
	if r := post(""); r.status != 409 || !strings.Contains(r.raw, "not set") {
		t.Fatalf("no secret yet = %d %s", r.status, r.raw)
	}
	if r := call(t, "PUT", base+"/v1/secrets/alerts", `{"value":"s3cret"}`); r.status != 200 || strings.Contains(r.raw, "s3cret") {
		t.Fatalf("put secret = %d %s", r.status, r.raw)
	}
	if r := call(t, "GET", base+"/v1/secrets", ""); strings.Contains(r.raw, "s3cret") || !strings.Contains(r.raw, "alerts") {
		t.Fatalf("a secret's value was shown: %s", r.raw)
	}
	if r := post("sha256=00"); r.status != 403 || r.errCode() != "forbidden" {
		t.Fatalf("forged = %d %s", r.status, r.raw)
	}
	mac := hmac.New(sha256.New, []byte("s3cret"))
	mac.Write([]byte(body))
	sig := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	r := post(sig)
	if r.status != 202 || r.body["instance_id"] != "incident.alert.a-17" || r.body["outcome"] != "started" {
		t.Fatalf("signed = %d %s", r.status, r.raw)
	}
	if r := post(sig); r.status != 202 || r.body["outcome"] != "duplicate" {
		t.Fatalf("redelivery = %d %s", r.status, r.raw)
	}
	inst := call(t, "GET", base+"/v1/instances/incident.alert.a-17", "")
	if string(mustJSON(t, inst.body["input"])) != `{"service":"checkout","severity":"high","via":"alertmanager"}` {
		t.Fatalf("input = %s", inst.raw)
	}
}

// Workers may take several tasks per poll and report several results per
// request; each result is settled on its own.
func TestBatchedPollAndResults(t *testing.T) {
	base, c := diamondAgent(t)
	ctx := context.Background()
	tasks := startAndLease(t, c, "b1", "b2", "b3")
	res, err := c.ReportResults(ctx, []api.TaskOutcome{
		{TaskID: tasks[0].TaskID, Token: tasks[0].Token, Output: json.RawMessage(`{"n":1}`)},
		{TaskID: tasks[1].TaskID, Token: "1.0", Output: json.RawMessage(`{"n":1}`)},
		{TaskID: tasks[2].TaskID, Token: tasks[2].Token, Error: &api.TaskError{Type: "boom", NonRetryable: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 || res[0].Error != nil || res[1].Error == nil || res[1].Error.Code != "stale_token" || res[2].Error != nil || res[2].InstanceStatus != "failed" {
		t.Fatalf("results = %+v", res)
	}
	// The refused result left its lease alone: the real token still works.
	if _, err := c.Complete(ctx, tasks[1].TaskID, tasks[1].Token, json.RawMessage(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	for body, want := range map[string]string{
		`{"results":[]}`: "between 1 and 1000",
		`{"results":[{"task_id":"t1","token":"1.0","output":{},"error":{"type":"x"}}]}`: "not both",
		`{"results":[{"task_id":"t1"}]}`:                                                "required",
	} {
		for _, path := range []string{"/v1/task-results", "/v1/tasks/complete"} {
			r := call(t, "POST", base+path, body)
			if r.status != 400 || !strings.Contains(r.raw, want) {
				t.Errorf("%s %s = %d %s", path, body, r.status, r.raw)
			}
		}
	}
}

// startAndLease starts a diamond instance for each id and leases their
// first tasks to worker "w", one each.
func startAndLease(t *testing.T, c *api.Client, ids ...string) []api.Task {
	t.Helper()
	ctx := context.Background()
	for _, id := range ids {
		if _, err := c.StartInstance(ctx, "diamond", api.StartRequest{ID: id, Input: json.RawMessage(`{"n":1}`)}); err != nil {
			t.Fatal(err)
		}
	}
	var tasks []api.Task
	poll.Until(t, 10*time.Second, fmt.Sprintf("%d tasks leased", len(ids)), func() error {
		got, err := c.PollTasks(ctx, "default", api.PollRequest{WorkerID: "w", WaitMS: 200}, 10)
		if err != nil {
			return err
		}
		tasks = append(tasks, got...)
		if len(tasks) < len(ids) {
			return fmt.Errorf("%d tasks", len(tasks))
		}
		return nil
	})
	return tasks
}

// POST /v1/tasks/complete is the batch of results under the name the
// issue gives it: the same request and answer as /v1/task-results. POST
// on any other task id is refused and changes nothing.
func TestTasksCompleteIsTheBatchOfResults(t *testing.T) {
	base, c := diamondAgent(t)
	tasks := startAndLease(t, c, "k1", "k2")
	refused := call(t, "POST", base+"/v1/tasks/"+tasks[0].TaskID, fmt.Sprintf(`{"results":[{"task_id":%q,"token":%q,"output":{"n":1}}]}`, tasks[0].TaskID, tasks[0].Token))
	if refused.status != 405 || refused.body["error"].(map[string]any)["code"] != "method_not_allowed" {
		t.Fatalf("POST /v1/tasks/<id> = %d %s", refused.status, refused.raw)
	}
	if task := call(t, "GET", base+"/v1/tasks/"+tasks[0].TaskID, ""); task.body["status"] != "leased" {
		t.Fatalf("the refused POST changed the task: %s", task.raw)
	}
	body := fmt.Sprintf(`{"results":[{"task_id":%q,"token":%q,"output":{"n":1}},{"task_id":%q,"token":"1.0","output":{"n":1}}]}`,
		tasks[0].TaskID, tasks[0].Token, tasks[1].TaskID)
	r := call(t, "POST", base+"/v1/tasks/complete", body)
	results, _ := r.body["results"].([]any)
	if r.status != 200 || len(results) != 2 {
		t.Fatalf("POST /v1/tasks/complete = %d %s", r.status, r.raw)
	}
	first, second := results[0].(map[string]any), results[1].(map[string]any)
	if first["error"] != nil || first["instance_id"] != tasks[0].InstanceID || second["error"].(map[string]any)["code"] != "stale_token" {
		t.Fatalf("results = %s", r.raw)
	}
	if task := call(t, "GET", base+"/v1/tasks/"+tasks[0].TaskID, ""); task.body["status"] != "completed" {
		t.Fatalf("the completed task: %s", task.raw)
	}
	if task := call(t, "GET", base+"/v1/tasks/"+tasks[1].TaskID, ""); task.body["status"] != "leased" {
		t.Fatalf("the refused result changed its task: %s", task.raw)
	}
}

// A child workflow step whose input the registered child would reject is
// refused at registration, with a diagnostic pointing at the input.
func TestRegisterChecksChildInput(t *testing.T) {
	base := devAgent(t, false)
	child := "workflow \"charge\" {\n  input {\n    amount = number\n  }\n  step \"a\" {\n    activity = \"noop\"\n  }\n}\n"
	if r := call(t, "POST", base+"/v1/workflows", child); r.status != 201 {
		t.Fatalf("child = %d %s", r.status, r.raw)
	}
	parent := "workflow \"parent\" {\n  step \"pay\" {\n    workflow = \"charge\"\n    input    = { amount = \"lots\" }\n  }\n}\n"
	r := call(t, "POST", base+"/v1/workflows?filename=parent.hcl", parent)
	diags, _ := r.body["error"].(map[string]any)["diagnostics"].([]any)
	if r.status != 400 || len(diags) != 1 || !strings.Contains(r.raw, "a number is required") {
		t.Fatalf("mismatched parent = %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", base+"/v1/workflows/validate", parent); r.body["valid"] != false {
		t.Fatalf("validate = %s", r.raw)
	}
	ok := strings.Replace(parent, `"lots"`, `42`, 1)
	if r := call(t, "POST", base+"/v1/workflows", ok); r.status != 201 {
		t.Fatalf("matching parent = %d %s", r.status, r.raw)
	}
}

// A leased task carries its step's priority.
func TestLeasedTaskCarriesPriority(t *testing.T) {
	base := devAgent(t, false)
	wf := "workflow \"urgent\" {\n  step \"a\" {\n    activity = \"email.send\"\n    priority = 70\n  }\n}\n"
	if r := call(t, "POST", base+"/v1/workflows", wf); r.status != 201 {
		t.Fatalf("register = %d %s", r.status, r.raw)
	}
	call(t, "POST", base+"/v1/workflows/urgent/instances", `{"id":"u1"}`)
	r := call(t, "POST", base+"/v1/queues/default/poll", `{"worker_id":"w","wait_ms":2000}`)
	if r.status != 200 || r.body["priority"] != float64(70) {
		t.Fatalf("poll = %d %s", r.status, r.raw)
	}
}

// A node serves Prometheus metrics, and /v1/stats carries the same
// histograms as cumulative buckets.
func TestMetricsAndStatsHistograms(t *testing.T) {
	base := devAgent(t, true)
	call(t, "POST", base+"/v1/workflows", readExample(t))
	r := call(t, "POST", base+"/v1/workflows/diamond/instances", `{"id":"m1","input":{"n":1}}`)
	idx := r.header.Get("X-Lockstep-Index")
	if r := call(t, "GET", base+"/v1/instances/m1?wait=10s&index="+idx, ""); r.status != 200 {
		t.Fatalf("instance = %d %s", r.status, r.raw)
	}
	poll.Until(t, 10*time.Second, "the diamond to complete", func() error {
		if r := call(t, "GET", base+"/v1/instances/m1", ""); r.body["status"] != "completed" {
			return fmt.Errorf("status %v", r.body["status"])
		}
		return nil
	})
	resp, err := http.Get(base + "/v1/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The start leases its first step itself (StartInstanceNext) when a
	// built-in poll already waits on the leader, as it does once the pool
	// is up.
	if !strings.Contains(string(text), `lockstep_raft_apply_seconds_count{command="StartInstance"} 1`) &&
		!strings.Contains(string(text), `lockstep_raft_apply_seconds_count{command="StartInstanceNext"} 1`) {
		t.Errorf("metrics lack the start's raft apply")
	}
	for _, want := range []string{"lockstep_dispatch_latency_seconds_count 4",
		"lockstep_fsm_batch_commands_bucket", `lockstep_http_requests_total{code="2xx",route="POST /v1/workflows"} 1`, "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(string(text), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	poll.Until(t, 10*time.Second, "the built-in pollers to wait on the leader", func() error {
		st := call(t, "GET", base+"/v1/stats", "")
		if w, _ := st.body["waiting_polls"].(map[string]any); w["default"] == nil || w["default"].(float64) < 1 {
			return fmt.Errorf("waiting polls %v", st.body["waiting_polls"])
		}
		return nil
	})
	st := call(t, "GET", base+"/v1/stats", "")
	h, _ := st.body["histograms"].(map[string]any)["lockstep_dispatch_latency_seconds"].(map[string]any)
	if h["count"] != float64(4) || len(h["buckets"].([]any)) < 10 {
		t.Fatalf("dispatch histogram = %v", h)
	}
}

// ?until=ended makes a blocking read of an instance return at its end, not
// at its first change.
func TestBlockingReadUntilEnded(t *testing.T) {
	base := devAgent(t, false)
	call(t, "POST", base+"/v1/workflows", readExample(t))
	r := call(t, "POST", base+"/v1/workflows/diamond/instances", `{"id":"u1","input":{"n":1}}`)
	idx := r.header.Get("X-Lockstep-Index")
	got := make(chan result, 1)
	go func() {
		got <- call(t, "GET", base+"/v1/instances/u1?wait=30s&until=ended&index="+idx, "")
	}()
	// Run the four steps as a worker; each is a change the read sleeps through.
	for done := 0; done < 4; {
		p := call(t, "POST", base+"/v1/queues/default/poll", `{"worker_id":"w","wait_ms":5000}`)
		if p.status != 200 {
			continue
		}
		call(t, "POST", base+"/v1/tasks/"+p.body["task_id"].(string)+"/complete", fmt.Sprintf(`{"token":%q,"output":{"n":1,"from_a":1,"x":1}}`, p.body["token"]))
		done++
	}
	if res := <-got; res.status != 200 || res.body["status"] != "completed" {
		t.Fatalf("blocking read until ended = %d %s", res.status, res.raw)
	}
	// ?view=outcome shows how it ended and no more; an unknown view is 400.
	r = call(t, "GET", base+"/v1/instances/u1?view=outcome", "")
	var keys []string
	for k := range r.body {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if want := "created_at ended_at id modify_index output status updated_at version workflow"; r.status != 200 || strings.Join(keys, " ") != want {
		t.Fatalf("outcome view = %d %s", r.status, r.raw)
	}
	if r := call(t, "GET", base+"/v1/instances/u1?view=steps", ""); r.status != 400 {
		t.Fatalf("unknown view = %d %s", r.status, r.raw)
	}
	// ... and refused before a blocking read waits: this one would wait
	// five minutes, past the client's deadline.
	quick := &http.Client{Timeout: 20 * time.Second}
	resp, err := quick.Get(base + "/v1/instances/u1?view=steps&wait=5m&index=" + idx + "999")
	if err != nil {
		t.Fatalf("a blocking read with an unknown view: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("a blocking read with an unknown view = %d", resp.StatusCode)
	}
}

// A worker that lost the answer to results that asked for tasks (the
// leader died after committing them) sends them again under the same
// worker id with redeliver: its results are already recorded, and the
// tasks the lost answer held come back, same tokens, leased once.
func TestTaskResultsRedeliverALostAnswer(t *testing.T) {
	_, c := diamondAgent(t)
	ctx := context.Background()
	first := startAndPoll(t, c, "lost1")
	results := []api.TaskOutcome{{TaskID: first.TaskID, Token: first.Token, Output: json.RawMessage(`{"n":1}`)}}
	next := &api.NextTasks{WorkerID: "w/r0.1", Queue: "default", Activities: []string{"noop"}, MaxTasks: 10}
	_, lost, err := c.ReportResultsNext(ctx, results, next)
	if err != nil || len(lost) != 2 {
		t.Fatalf("first answer: %+v, %v", lost, err)
	}
	// A plain retry gets nothing: the tasks are leased, to the worker id.
	_, none, err := c.ReportResultsNext(ctx, results, &api.NextTasks{WorkerID: "w/r0.2", Queue: "default", MaxTasks: 10})
	if err != nil || len(none) != 0 {
		t.Fatalf("retry without redeliver: %+v, %v", none, err)
	}
	again := *next
	again.Redeliver = true
	res, back, err := c.ReportResultsNext(ctx, results, &again)
	if err != nil || len(res) != 1 || res[0].Error == nil || res[0].Error.Code != "stale_token" {
		t.Fatalf("retried results: %+v, %v", res, err)
	}
	got := map[string]string{}
	for _, tk := range back {
		got[tk.TaskID] = tk.Token
	}
	if len(back) != 2 || got[lost[0].TaskID] != lost[0].Token || got[lost[1].TaskID] != lost[1].Token {
		t.Fatalf("redelivered %+v, the lost answer held %+v", back, lost)
	}
}

// Results may take the worker's next tasks in the same request and raft
// entry: the diamond's two middle steps come back with the first step's
// result, the last with theirs.
func TestTaskResultsTakeTheNextTasks(t *testing.T) {
	base, c := diamondAgent(t)
	ctx := context.Background()
	first := startAndPoll(t, c, "n1")
	next := &api.NextTasks{WorkerID: "w/r0", Queue: "default", Activities: []string{"noop"}, MaxTasks: 10}
	tasks := []api.Task{*first}
	steps := []string{}
	for round := 0; len(tasks) > 0; round++ {
		var outcomes []api.TaskOutcome
		for _, tk := range tasks {
			outcomes = append(outcomes, api.TaskOutcome{TaskID: tk.TaskID, Token: tk.Token, Output: tk.Input})
		}
		res, got, err := c.ReportResultsNext(ctx, outcomes, next)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.Error != nil {
				t.Fatalf("round %d: %+v", round, r.Error)
			}
		}
		var names []string
		for _, tk := range got {
			if tk.Token == "" || tk.Step == "" {
				t.Fatalf("round %d: task %+v", round, tk)
			}
			names = append(names, tk.Step)
		}
		sort.Strings(names)
		steps = append(steps, strings.Join(names, "+"))
		tasks = got
	}
	inst, err := c.Instance(ctx, "n1")
	if err != nil || inst.Status != "completed" {
		t.Fatalf("instance %+v %v", inst, err)
	}
	if got := strings.Join(steps, " "); got != "b+c d " {
		t.Fatalf("steps leased with the results, by round: %q", got)
	}
	// Without next the answer has no tasks member, as before.
	r := call(t, "POST", base+"/v1/task-results", `{"results":[{"task_id":"t1","token":"1.0","output":{}}]}`)
	if r.status != 200 || r.body["tasks"] != nil {
		t.Fatalf("without next = %d %s", r.status, r.raw)
	}
	for body, want := range map[string]string{
		`{"results":[{"task_id":"t1","token":"1.0"}],"next":{"queue":"default","max_tasks":1}}`:                       "next.worker_id",
		`{"results":[{"task_id":"t1","token":"1.0"}],"next":{"worker_id":"w","queue":"no such","max_tasks":1}}`:       "next.queue",
		`{"results":[{"task_id":"t1","token":"1.0"}],"next":{"worker_id":"w","queue":"default","max_tasks":0}}`:       "between 1 and 1000",
		`{"results":[{"task_id":"t1","token":"1.0"}],"next":{"worker_id":"w","queue":"default","max_tasks":1,"x":1}}`: "unknown field",
	} {
		r := call(t, "POST", base+"/v1/task-results", body)
		if r.status != 400 || !strings.Contains(r.raw, want) {
			t.Errorf("%s = %d %s", body, r.status, r.raw)
		}
	}
}

// A start on the leader whose first step is a task for a worker already
// waiting leases it in the start's own raft entry, and the waiting poll
// gets it; with nobody waiting, or with an Idempotency-Key, the task is
// leased by a later round as before.
func TestStartLeasesItsFirstStepToAWaitingPoll(t *testing.T) {
	base, c := diamondAgent(t)
	ctx := context.Background()
	leaseIndex := func(id string) (started, leased uint64) {
		t.Helper()
		events, err := c.History(ctx, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			switch {
			case e.Type == "instance_started":
				started = e.Index
			case e.Type == "task_leased" && e.Step == "a":
				leased = e.Index
			}
		}
		return started, leased
	}
	waitingPoll := func() chan *api.Task {
		got := make(chan *api.Task, 1)
		go func() {
			task, err := c.Poll(ctx, "default", api.PollRequest{WorkerID: "w", WaitMS: 10000})
			if err != nil {
				t.Error(err)
			}
			got <- task
		}()
		poll.Until(t, 10*time.Second, "the poll to wait", func() error {
			st := call(t, "GET", base+"/v1/stats", "")
			if w, _ := st.body["waiting_polls"].(map[string]any); w["default"] == nil {
				return fmt.Errorf("waiting polls %v", st.body["waiting_polls"])
			}
			return nil
		})
		return got
	}

	got := waitingPoll()
	if _, err := c.StartInstance(ctx, "diamond", api.StartRequest{ID: "s1", Input: json.RawMessage(`{"n":1}`)}); err != nil {
		t.Fatal(err)
	}
	task := <-got
	if task == nil || task.InstanceID != "s1" || task.Step != "a" || task.Token == "" {
		t.Fatalf("the waiting poll got %+v", task)
	}
	if started, leased := leaseIndex("s1"); started == 0 || leased != started {
		t.Fatalf("s1 started at index %d, its first task leased at %d", started, leased)
	}
	// Proposed as its own type, which a node that cannot lease for a start
	// refuses (it stops) rather than applies without the lease.
	resp, err := http.Get(base + "/v1/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(text), `lockstep_raft_apply_seconds_count{command="StartInstanceNext"} 1`) {
		t.Fatal("the leasing start was not proposed as StartInstanceNext")
	}

	// Nobody waiting: the start leases nothing, a poll gets the task later.
	if _, err := c.StartInstance(ctx, "diamond", api.StartRequest{ID: "s2", Input: json.RawMessage(`{"n":1}`)}); err != nil {
		t.Fatal(err)
	}
	later, err := c.Poll(ctx, "default", api.PollRequest{WorkerID: "w", WaitMS: 5000})
	if err != nil || later == nil || later.InstanceID != "s2" {
		t.Fatalf("poll after the start = %+v, %v", later, err)
	}
	if started, leased := leaseIndex("s2"); leased <= started {
		t.Fatalf("s2 started at index %d, leased at %d", started, leased)
	}

	// An idempotent start never leases in its own entry: a repeat gets the
	// stored answer, and its tasks must not be handed out twice.
	got = waitingPoll()
	r := callWithKey(t, "POST", base+"/v1/workflows/diamond/instances", `{"id":"s3","input":{"n":1}}`, "k-s3")
	if r.status != 201 {
		t.Fatalf("idempotent start = %d %s", r.status, r.raw)
	}
	task = <-got
	if task == nil || task.InstanceID != "s3" {
		t.Fatalf("the waiting poll got %+v", task)
	}
	if started, leased := leaseIndex("s3"); leased <= started {
		t.Fatalf("s3 (idempotent) started at index %d, leased at %d", started, leased)
	}
}

// diamondAgent is a dev agent without built-in workers, with the diamond
// example registered, and a client of it.
// startAndPoll starts a diamond as id and returns its first task, polled
// as worker "w".
func startAndPoll(t *testing.T, c *api.Client, id string) *api.Task {
	t.Helper()
	ctx := context.Background()
	if _, err := c.StartInstance(ctx, "diamond", api.StartRequest{ID: id, Input: json.RawMessage(`{"n":1}`)}); err != nil {
		t.Fatal(err)
	}
	var first *api.Task
	poll.Until(t, 10*time.Second, "the first task", func() error {
		var err error
		first, err = c.Poll(ctx, "default", api.PollRequest{WorkerID: "w", WaitMS: 200})
		if err == nil && first == nil {
			return fmt.Errorf("no task yet")
		}
		return err
	})
	return first
}

func diamondAgent(t *testing.T) (string, *api.Client) {
	t.Helper()
	base := devAgent(t, false)
	c, err := api.New(api.Config{Address: base})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.RegisterWorkflow(context.Background(), "diamond.hcl", []byte(readExample(t))); err != nil {
		t.Fatal(err)
	}
	return base, c
}

// The leader serves a batch of forwarded starts and signals each as the
// request it holds (its own status, headers and errors) and refuses
// anything else.
func TestInternalForwardServesEachStart(t *testing.T) {
	base, c := diamondAgent(t)
	ctx := context.Background()
	body := func(s string) string { return `"` + base64.StdEncoding.EncodeToString([]byte(s)) + `"` }
	batch := `{"requests":[` +
		`{"method":"POST","uri":"/v1/workflows/diamond/instances","header":{"Content-Type":["application/json"]},"body":` + body(`{"id":"b1","input":{"n":2}}`) + `},` +
		`{"method":"POST","uri":"/v1/workflows/nope/instances","body":` + body(`{"id":"b2"}`) + `},` +
		`{"method":"POST","uri":"/v1/workflows/diamond/instances","body":` + body(`{"id":"b3","input":"not json`) + `},` +
		`{"method":"POST","uri":"/v1/instances/nope/signals/go","body":` + body(`{"payload":{}}`) + `}]}`
	r := call(t, "POST", base+"/v1/internal/forward", batch)
	if r.status != 200 {
		t.Fatalf("batch: %d %s", r.status, r.raw)
	}
	var out struct {
		Answers []struct {
			Status int                 `json:"status"`
			Header map[string][]string `json:"header"`
			Body   []byte              `json:"body"`
		} `json:"answers"`
	}
	if err := json.Unmarshal([]byte(r.raw), &out); err != nil || len(out.Answers) != 4 {
		t.Fatalf("answers: %s, %v", r.raw, err)
	}
	if a := out.Answers[0]; a.Status != 201 || !strings.Contains(string(a.Body), `"id":"b1"`) || len(a.Header["X-Lockstep-Index"]) != 1 {
		t.Fatalf("start: %d %v %s", a.Status, a.Header, a.Body)
	}
	if a := out.Answers[1]; a.Status != 404 || !strings.Contains(string(a.Body), `"code":"not_found"`) {
		t.Fatalf("unknown workflow: %d %s", a.Status, a.Body)
	}
	if a := out.Answers[2]; a.Status != 400 {
		t.Fatalf("bad body: %d %s", a.Status, a.Body)
	}
	if a := out.Answers[3]; a.Status != 404 || !strings.Contains(string(a.Body), `"code":"not_found"`) {
		t.Fatalf("signal to an unknown instance: %d %s", a.Status, a.Body)
	}
	if inst, err := c.Instance(ctx, "b1"); err != nil || inst.ID != "b1" {
		t.Fatalf("b1: %+v, %v", inst, err)
	}
	for _, bad := range []string{
		`{"requests":[]}`,
		`{"requests":[{"method":"POST","uri":"/v1/instances/b1/cancel"}]}`,
		`{"requests":[{"method":"GET","uri":"/v1/workflows/diamond/instances"}]}`,
	} {
		if r := call(t, "POST", base+"/v1/internal/forward", bad); r.status != 400 || r.errCode() != "bad_request" {
			t.Fatalf("%s: %d %s", bad, r.status, r.raw)
		}
	}
}
