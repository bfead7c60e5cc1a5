package control

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taas-appliance/taas/broker"
)

// stream reads an events stream over real HTTP in the background.
type stream struct {
	mu     sync.Mutex
	events []Event
	beats  int
	cancel context.CancelFunc
	ended  chan struct{} // closed when the server ends the stream
}

func openStream(t *testing.T, ts *testServer, headers ...string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", ts.base+"/v2.0/taas/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET events = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &stream{cancel: cancel, ended: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		defer close(s.ended)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		first := true
		for sc.Scan() {
			line := sc.Text()
			if first && strings.HasPrefix(line, ":") {
				first = false
				close(ready)
				continue
			}
			s.mu.Lock()
			switch {
			case strings.HasPrefix(line, "data: "):
				var e Event
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &e); err == nil {
					s.events = append(s.events, e)
				}
			case line == ": heartbeat":
				s.beats++
			}
			s.mu.Unlock()
		}
	}()
	t.Cleanup(cancel)
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatal("no stream preamble within 20s")
	}
	return s
}

func (s *stream) has(resource, id, action string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.events {
		if e.Resource == resource && e.ID == id && e.Action == action {
			return true
		}
	}
	return false
}

func (s *stream) snapshot() ([]Event, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.events...), s.beats
}

// TestEvents subscribes over real HTTP and checks create/update/delete and
// status events, project scoping and heartbeats.
func TestEvents(t *testing.T) {
	ts := startServer(t, Config{Heartbeat: 50 * time.Millisecond})
	all := openStream(t, ts)
	other := openStream(t, ts, "X-Project-Id: other")

	mon := ts.createPort("mon", "mon0", "")
	svc := ts.createService("s", mon)
	ts.must(200, "PUT", "/v2.0/taas/tap_services/"+svc, `{"tap_service": {"name": "t"}}`, "tap_service")
	theirs := ts.createPort("theirs", "", "", "X-Project-Id: other")
	// The reconciler rests between passes: a service deleted at once might
	// never have a status.
	waitFor(t, "the service's status event", func() bool { return all.has("tap_service", svc, "status") })
	ts.must(204, "DELETE", "/v2.0/ports/"+mon, "", "")

	waitFor(t, "admin stream events", func() bool {
		return all.has("port", mon, "create") && all.has("tap_service", svc, "create") &&
			all.has("tap_service", svc, "update") && all.has("tap_service", svc, "status") &&
			all.has("tap_service", svc, "delete") && all.has("port", mon, "delete") && all.has("port", theirs, "create")
	})
	waitFor(t, "other project's stream event", func() bool { return other.has("port", theirs, "create") })
	waitFor(t, "heartbeats", func() bool { _, b := all.snapshot(); return b >= 2 })
	evs, _ := other.snapshot()
	for _, e := range evs {
		if e.ID != theirs {
			t.Errorf("project other received %+v about a resource of another project", e)
		}
	}
}

// TestEventsTokenChanged checks that a stream lasts only as long as its
// token: SetTokens removing the token, or moving it to another project or
// role, ends the stream before the next event, so a revoked member stops
// receiving its former project's events.
func TestEventsTokenChanged(t *testing.T) {
	toks, err := LoadTokens(writeTokens(t, "adm proj-x admin\nkeep proj-a member\ngone proj-a member\n"+
		"moved proj-a member\nreader proj-a member\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, Config{Auth: AuthToken, Tokens: toks, Heartbeat: 50 * time.Millisecond})
	streams := map[string]*stream{}
	for _, tok := range []string{"keep", "gone", "moved", "reader"} {
		streams[tok] = openStream(t, ts, "X-Auth-Token: "+tok)
	}
	next, err := LoadTokens(writeTokens(t, "adm proj-x admin\nkeep proj-a member\nmoved proj-b member\n"+
		"reader proj-a reader\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.srv.SetTokens(next); err != nil {
		t.Fatal(err)
	}
	port := ts.createPortIn("proj-a", "after", "", "", "X-Auth-Token: adm")
	waitFor(t, "the kept token's event", func() bool { return streams["keep"].has("port", port, "create") })
	for _, tc := range []struct {
		token string
		ends  bool
	}{
		{"keep", false},
		{"gone", true},
		{"moved", true},
		{"reader", true},
	} {
		t.Run(tc.token, func(t *testing.T) {
			s := streams[tc.token]
			if got := s.has("port", port, "create"); got != !tc.ends {
				t.Errorf("stream of token %s has the event after SetTokens = %v, want %v", tc.token, got, !tc.ends)
			}
			select {
			case <-s.ended:
				if !tc.ends {
					t.Errorf("stream of token %s ended, want it open", tc.token)
				}
			case <-time.After(2 * time.Second):
				if tc.ends {
					t.Errorf("stream of token %s still open 2 s after SetTokens, want it ended", tc.token)
				}
			}
		})
	}
}

// TestEventsNeverBlock fills a subscriber that never reads: publishing
// still returns and counts the drops.
func TestEventsNeverBlock(t *testing.T) {
	h := newHub()
	s := h.subscribe("")
	done := make(chan struct{})
	go func() {
		for i := range 1000 {
			h.publish(Event{Resource: "tap_flow", ID: fmt.Sprint(i), Action: "status"})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("publish blocked on a subscriber that does not read")
	}
	if d := h.dropped.Load(); d != 1000-uint64(cap(s.ch)) {
		t.Errorf("dropped = %d, want %d", d, 1000-cap(s.ch))
	}
	h.close()
	if h.subscribe("") != nil {
		t.Errorf("subscribe after close succeeded")
	}
}

// TestStatsScoping checks that a project sees only its services and
// flows (and taasd's version, as GET / shows it to anybody), not the appliance's interfaces even where its ports are bound, with
// zero counters for what the data plane does not report.
func TestStatsScoping(t *testing.T) {
	dp := newRecorder()
	ts := startServer(t, Config{DataPlane: dp, Version: "1.2.3-test"})
	mon := ts.createPortIn("a", "mon", "mon0", "")
	src := ts.createPortIn("a", "src", "cap0", "")
	svc := ts.createService("s", mon, "X-Project-Id: a")
	flow := ts.createFlow("f", svc, src, "IN", nil, "X-Project-Id: a")
	otherSvc := ts.createService("o", ts.createPortIn("b", "m2", "mon9", ""), "X-Project-Id: b")
	dp.set(func(d *recordingDataPlane) {
		d.stats = broker.Stats{UnixNano: 42, PlanVersion: 7,
			Interfaces: []broker.IfaceStats{{Name: "mon0", Role: "monitor"}, {Name: "cap0", Role: "capture"}, {Name: "mon9", Role: "monitor"}},
			Services:   []broker.ServiceStats{{ID: svc, DeliveredPackets: 5, DeliveredBytes: 300}, {ID: otherSvc, DeliveredPackets: 9}},
		}
	})
	st := ts.must(200, "GET", "/v2.0/taas/stats", "", "taas_stats", "X-Project-Id: a")
	if st["plan_version"] != float64(7) || st["time_unix_nano"] != float64(42) || st["taasd_version"] != "1.2.3-test" ||
		st["taasd_started_unix_nano"] == nil {
		t.Errorf("stats header = %v", st)
	}
	var names []string
	for _, e := range st["interfaces"].([]any) {
		names = append(names, e.(map[string]any)["name"].(string))
	}
	if len(names) != 0 {
		t.Errorf("project a sees interfaces %v, want none: they are the admin's", names)
	}
	svcs := st["tap_services"].([]any)
	if len(svcs) != 1 || svcs[0].(map[string]any)["delivered_packets"] != float64(5) {
		t.Errorf("project a services = %v, want its one with 5 packets", svcs)
	}
	flows := st["tap_flows"].([]any)
	if len(flows) != 1 || flows[0].(map[string]any)["id"] != flow || flows[0].(map[string]any)["matched_packets"] != float64(0) {
		t.Errorf("project a flows = %v, want its flow with zero counters", flows)
	}
	admin := ts.must(200, "GET", "/v2.0/taas/stats", "", "taas_stats")
	if len(admin["interfaces"].([]any)) != 3 || len(admin["tap_services"].([]any)) != 2 {
		t.Errorf("admin stats = %v, want everything", admin)
	}
}

// TestConcurrentRequests runs many creates and lists at once: every one
// must succeed (no SQLITE_BUSY surfacing as a 500) and nothing is lost.
func TestConcurrentRequests(t *testing.T) {
	ts := startServer(t, Config{})
	mon := ts.createPort("mon", "mon0", "")
	src := ts.createPort("src", "cap0", "")
	svc := ts.createService("s", mon)
	const workers, each = 8, 20
	var wg sync.WaitGroup
	errs := make(chan string, workers*each*2)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				body := jsonBody(map[string]any{"tap_flow": map[string]any{"name": fmt.Sprint(w, "-", i),
					"tap_service_id": svc, "source_port": src, "direction": "BOTH"}})
				for _, rq := range [][3]string{{"POST", "/v2.0/taas/tap_flows", body}, {"GET", "/v2.0/taas/tap_flows", ""}} {
					req, _ := http.NewRequest(rq[0], ts.base+rq[1], strings.NewReader(rq[2]))
					resp, err := client.Do(req)
					if err != nil {
						errs <- err.Error()
						continue
					}
					resp.Body.Close()
					if resp.StatusCode >= 300 {
						errs <- fmt.Sprintf("%s %s = %d", rq[0], rq[1], resp.StatusCode)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := len(ts.list("/v2.0/taas/tap_flows", "tap_flows")); n != workers*each {
		t.Errorf("%d flows, want %d", n, workers*each)
	}
}
