package agent

import (
	"net/http"
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
