package agent

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type recordingTransport struct{ hosts []string }

func (r *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.hosts = append(r.hosts, req.URL.Host+"|"+req.Host)
	return &http.Response{StatusCode: 204, Body: http.NoBody, Request: req}, nil
}

// Each request goes to whichever node leads at that moment.
func TestLeaderTransportFollowsTheLeader(t *testing.T) {
	rec := &recordingTransport{}
	leader := "10.0.0.1:7700"
	lt := &leaderTransport{base: rec, leader: func() string { return leader }}
	client := &http.Client{Transport: lt}
	for _, l := range []string{"10.0.0.1:7700", "10.0.0.2:7700"} {
		leader = l
		req, _ := http.NewRequest("POST", "http://127.0.0.1:7700/v1/queues/default/poll", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if req.URL.Host != "127.0.0.1:7700" {
			t.Fatal("the caller's request was changed")
		}
	}
	if len(rec.hosts) != 2 || rec.hosts[0] != "10.0.0.1:7700|10.0.0.1:7700" || rec.hosts[1] != "10.0.0.2:7700|10.0.0.2:7700" {
		t.Fatalf("sent to %v", rec.hosts)
	}
}

// A leader that cannot be dialled has gone before this node noticed: the
// request (body and all) goes to this node, which holds it until the next
// leader is elected, instead of failing the pool's poll.
func TestLeaderTransportFallsBackToThisNode(t *testing.T) {
	var got []string
	self := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, r.URL.Path+" "+string(b))
		w.WriteHeader(204)
	}))
	defer self.Close()
	gone := httptest.NewServer(http.NotFoundHandler())
	goneAddr := strings.TrimPrefix(gone.URL, "http://")
	gone.Close()

	lt := &leaderTransport{base: http.DefaultTransport, leader: func() string { return goneAddr }}
	client := &http.Client{Transport: lt}
	resp, err := client.Post(self.URL+"/v1/queues/default/poll", "application/json", strings.NewReader(`{"worker_id":"w"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || len(got) != 1 || got[0] != `/v1/queues/default/poll {"worker_id":"w"}` {
		t.Fatalf("answer %d, this node got %q", resp.StatusCode, got)
	}
}
