package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/testutil"
)

// TestKillDuringBulks kills the real binary (SIGKILL) while clients send
// big bulk creates, restarts it on the same database, and checks that each
// bulk is there whole or not at all, and that every bulk answered 201 is
// there (issue 9: 150 bulks killed mid-way had left partial rows). Each
// bulk creates its ports in a project of its own, so a project's port
// count tells the bulk's fate.
func TestKillDuringBulks(t *testing.T) {
	const (
		rounds  = 2
		clients = 4
		size    = 1000
	)
	bin := testutil.BuildTaasd(t)
	d := testutil.StartTaasd(t, bin, "--dataplane", "none", "--log-level", "warn")
	hc := &http.Client{Timeout: 60 * time.Second}
	sent := map[string]bool{}  // projects a bulk was sent for
	acked := map[string]bool{} // projects whose bulk was answered 201
	for round := range rounds {
		var (
			mu       sync.Mutex
			inFlight int
			wg       sync.WaitGroup
		)
		firstAck := make(chan struct{}, clients*100)
		for w := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 100; j++ {
					project := fmt.Sprintf("r%d-c%d-b%d", round, w, j)
					var items []any
					for i := range size {
						items = append(items, map[string]any{"name": fmt.Sprint(project, "-", i),
							"network_id": "6a1c2c7e-4f1e-4d8a-9c55-3b1f0a7d2e10", "project_id": project})
					}
					body, err := json.Marshal(map[string]any{"ports": items})
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					sent[project] = true
					inFlight++
					mu.Unlock()
					resp, err := hc.Post(d.URL+"/v2.0/ports", "application/json", strings.NewReader(string(body)))
					if err != nil {
						return // killed: this bulk's fate is unknown
					}
					io.Copy(io.Discard, resp.Body) //nolint:errcheck // the status decides
					resp.Body.Close()
					if resp.StatusCode != 201 {
						t.Errorf("bulk %s = %d", project, resp.StatusCode)
						return
					}
					mu.Lock()
					acked[project] = true
					inFlight--
					mu.Unlock()
					firstAck <- struct{}{}
				}
			}()
		}
		// Kill once a few bulks have committed, while the others are in
		// flight.
		for range 3 {
			select {
			case <-firstAck:
			case <-time.After(60 * time.Second):
				t.Fatal("no bulk answered within 60s")
			}
		}
		time.Sleep(time.Duration(50+round*70) * time.Millisecond)
		d.Kill(t)
		wg.Wait()
		t.Logf("round %d: killed with %d bulks in flight; %d sent, %d answered 201 so far", round, inFlight, len(sent), len(acked))
		d = d.Restart(t)
	}

	count := map[string]int{}
	for _, project := range portField(t, hc, d, "project_id") {
		count[project]++
	}
	whole, absent := 0, 0
	for project := range sent {
		switch n := count[project]; {
		case n == size:
			whole++
		case n == 0 && acked[project]:
			t.Errorf("bulk %s was answered 201 and is gone after kill -9", project)
		case n == 0:
			absent++
		default:
			t.Errorf("bulk %s: %d of %d ports after kill -9, want all or none", project, n, size)
		}
	}
	for project := range count {
		if !sent[project] {
			t.Errorf("ports of project %s, which no bulk was sent for", project)
		}
	}
	t.Logf("after %d kills: %d bulks whole (%d answered 201), %d absent, of %d sent", rounds, whole, len(acked), absent, len(sent))
}

// portField lists one string field of every port d has.
func portField(t *testing.T, hc *http.Client, d *testutil.Taasd, field string) []string {
	t.Helper()
	resp, err := hc.Get(d.URL + "/v2.0/ports?fields=" + field)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Ports []map[string]string `json:"ports"`
	}
	err = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(list.Ports))
	for i, p := range list.Ports {
		out[i] = p[field]
	}
	return out
}

// TestQuotaFlags: the --quota-* flags reach the API as the defaults.
func TestQuotaFlags(t *testing.T) {
	d := testutil.StartTaasd(t, testutil.BuildTaasd(t), "--dataplane", "none", "--quota-port", "2",
		"--quota-tap-flow", "-1", "--quota-network", "2", "--quota-tap-mirror", "5")
	// Project default (a noauth caller's) has the shared network already.
	for _, tc := range []struct {
		resource, path, body string
		want                 []int // the statuses of successive creates
	}{
		{"port", "/v2.0/ports", `{"port": {"network_id": "6a1c2c7e-4f1e-4d8a-9c55-3b1f0a7d2e10"}}`, []int{201, 201, 409}},
		{"network", "/v2.0/networks", `{"network": {"name": "n"}}`, []int{201, 409}},
	} {
		for i, want := range tc.want {
			resp, err := http.Post(d.URL+tc.path, "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want || want == 409 && !strings.Contains(string(raw), "Quota exceeded for resources: ['"+tc.resource+"'].") {
				t.Errorf("%s %d = %d %s, want %d", tc.resource, i, resp.StatusCode, raw, want)
			}
		}
	}
	resp, err := http.Get(d.URL + "/v2.0/quotas/default")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `{"quota":{"network":2,"port":2,"tap_flow":-1,"tap_mirror":5,"tap_service":1000}}`; strings.TrimSpace(string(raw)) != want {
		t.Errorf("GET quotas = %s, want %s", raw, want)
	}
}
