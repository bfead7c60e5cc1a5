package control

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// post sends a JSON POST from any goroutine (testServer.do may call
// t.Fatal, which only the test's goroutine may) and decodes the answer.
func post(ts *testServer, path, body string) (int, map[string]any, error) {
	resp, err := client.Post(ts.base+path, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("POST %s = %d: %v: %s", path, resp.StatusCode, err, raw)
	}
	return resp.StatusCode, m, nil
}

// TestFailedBulkLeavesNothing: while bulks of tap services fail on their
// last item, clients list the services and create flows on every service
// they can see. Every 201 must survive, and a failed bulk must leave no
// row, no event and no data-plane entry. Before issue 9's fix the bulk's
// services were visible (and announced to the data plane) while it ran,
// and undoing it deleted the flows other clients had been told were
// created.
func TestFailedBulkLeavesNothing(t *testing.T) {
	rec := newRecorder()
	ts := startServer(t, Config{DataPlane: rec})
	mon := ts.createPort("mon", "mon0", "")
	src := ts.createPort("src", "cap0", "")
	keep := ts.createService("keep", mon)
	events := openStream(t, ts)

	const (
		rounds  = 12
		size    = 150
		clients = 4
	)
	var (
		mu    sync.Mutex
		acked = map[string]bool{} // flows answered 201
		tried = map[string]bool{} // bulk services a client saw
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				targets := []string{keep}
				resp, err := client.Get(ts.base + "/v2.0/taas/tap_services?fields=id&fields=name")
				if err != nil {
					t.Error(err)
					return
				}
				var list struct {
					TapServices []struct{ ID, Name string } `json:"tap_services"`
				}
				err = json.NewDecoder(resp.Body).Decode(&list)
				resp.Body.Close()
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, s := range list.TapServices {
					if strings.HasPrefix(s.Name, "bulk-") && !tried[s.ID] {
						tried[s.ID] = true
						targets = append(targets, s.ID)
					}
				}
				mu.Unlock()
				for _, svc := range targets {
					body := jsonBody(map[string]any{"tap_flow": map[string]any{"name": fmt.Sprint("c", w, "-", i),
						"tap_service_id": svc, "source_port": src, "direction": "BOTH"}})
					status, m, err := post(ts, "/v2.0/taas/tap_flows", body)
					switch {
					case err != nil:
						t.Error(err)
						return
					case status == 201:
						mu.Lock()
						acked[m["tap_flow"].(map[string]any)["id"].(string)] = true
						mu.Unlock()
					case svc == keep:
						t.Errorf("flow on the stable service = %d %v", status, m)
					}
				}
			}
		}()
	}
	start := time.Now()
	for r := range rounds {
		var items []any
		for i := range size {
			items = append(items, map[string]any{"name": fmt.Sprint("bulk-", r, "-", i), "port_id": mon})
		}
		// The last item names a port that does not exist: 404, all undone.
		items = append(items, map[string]any{"name": fmt.Sprint("bulk-", r, "-bad"),
			"port_id": "00000000-0000-4000-8000-000000000000"})
		status, m, err := post(ts, "/v2.0/taas/tap_services", jsonBody(map[string]any{"tap_services": items}))
		if err != nil || status != 404 {
			t.Fatalf("failing bulk %d = %d %v %v, want 404", r, status, m, err)
		}
	}
	close(stop)
	wg.Wait()
	// Concurrent clients leave connections the transport dialled but
	// never used; fasthttp's shutdown waits for those until its read
	// timeout (30s), past the test server's 10s grace.
	client.CloseIdleConnections()
	t.Logf("%d failing bulks of %d in %v; %d flows acknowledged, %d bulk services seen by clients",
		rounds, size+1, time.Since(start).Round(time.Millisecond), len(acked), len(tried))

	if len(tried) > 0 {
		t.Errorf("clients saw %d services of bulks that failed", len(tried))
	}
	flows := ts.list("/v2.0/taas/tap_flows", "tap_flows")
	listed := map[string]bool{}
	for _, f := range flows {
		listed[f["id"].(string)] = true
	}
	var lost []string
	for id := range acked {
		if !listed[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d flows answered 201 are gone, e.g. %s", len(lost), len(acked), lost[0])
	}
	if len(flows) != len(acked) {
		t.Errorf("%d flows listed, %d acknowledged", len(flows), len(acked))
	}
	if svcs := ts.list("/v2.0/taas/tap_services", "tap_services"); len(svcs) != 1 || svcs[0]["id"] != keep {
		t.Errorf("services after failed bulks: %v, want only keep", svcs)
	}
	// Events: every create announced is of a row that exists.
	if err := ts.srv.Reconciler().Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	evs, _ := events.snapshot()
	for _, e := range evs {
		if e.Action == "create" && (e.Resource == "tap_service" || e.Resource == "tap_flow" && !acked[e.ID]) {
			t.Errorf("event %+v of a row no request created", e)
		}
	}
	// The data plane: no plan ever held a service but keep, nor a flow
	// that was not acknowledged.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, p := range rec.plans {
		for _, s := range p.Services {
			if s.ID != keep {
				t.Errorf("plan %d holds service %s of a failed bulk", p.Version, s.ID)
				break
			}
		}
		for _, f := range p.Flows {
			if !acked[f.ID] {
				t.Errorf("plan %d holds flow %s that no client was told of", p.Version, f.ID)
				break
			}
		}
	}
}
