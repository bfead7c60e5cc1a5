package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/testutil"
)

// TestKillDuringGroupCommits kills the real binary (SIGKILL) while 8
// clients create ports one at a time, so that the store commits their
// creates in shared transactions (group commit, issue 10), restarts it on
// the same database, and checks that every create answered 201 is there
// and nothing that was never sent is.
func TestKillDuringGroupCommits(t *testing.T) {
	const (
		rounds  = 2
		clients = 8
	)
	bin := testutil.BuildTaasd(t)
	d := testutil.StartTaasd(t, bin, "--dataplane", "none", "--log-level", "warn", "--quota-port", "-1")
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	var (
		mu    sync.Mutex
		sent  = map[string]bool{}
		acked = map[string]bool{}
	)
	for round := range rounds {
		var wg sync.WaitGroup
		acks := make(chan struct{}, clients*1000)
		for w := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range 1000 { // bounded: the kill comes long before
					name := fmt.Sprintf("r%d-c%d-%d", round, w, j)
					mu.Lock()
					sent[name] = true
					mu.Unlock()
					resp, err := hc.Post(d.URL+"/v2.0/ports", "application/json", strings.NewReader(
						`{"port": {"name": "`+name+`", "network_id": "6a1c2c7e-4f1e-4d8a-9c55-3b1f0a7d2e10"}}`))
					if err != nil {
						return // killed: this create's fate is unknown
					}
					io.Copy(io.Discard, resp.Body) //nolint:errcheck // the status decides
					resp.Body.Close()
					if resp.StatusCode != 201 {
						t.Errorf("create %s = %d", name, resp.StatusCode)
						return
					}
					mu.Lock()
					acked[name] = true
					mu.Unlock()
					acks <- struct{}{}
				}
			}()
		}
		// Kill once a few hundred creates have committed, with every
		// client waiting on one.
		for range 200 + 150*round {
			select {
			case <-acks:
			case <-time.After(30 * time.Second):
				t.Fatal("no create answered within 30s")
			}
		}
		d.Kill(t)
		wg.Wait()
		mu.Lock()
		t.Logf("round %d: killed; %d creates sent, %d answered 201 so far", round, len(sent), len(acked))
		mu.Unlock()
		d = d.Restart(t)
	}

	have := map[string]bool{}
	for _, name := range portField(t, hc, d, "name") {
		if !sent[name] {
			t.Errorf("port %q, which no client created", name)
		}
		have[name] = true
	}
	lost := 0
	for name := range acked {
		if !have[name] {
			lost++
			t.Errorf("port %s was answered 201 and is gone after kill -9", name)
		}
	}
	t.Logf("after %d kills: %d ports, %d answered 201 (%d lost), %d sent", rounds, len(have), len(acked), lost, len(sent))
}
