package control

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/taas-appliance/taas/broker"
)

// settableStats is a data plane whose counters the test sets.
type settableStats struct {
	NullDataPlane
	mu sync.Mutex
	st broker.Stats
}

func (d *settableStats) Stats() broker.Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.st
	st.UnixNano = time.Now().UnixNano() // every snapshot has its time
	return st
}

func (d *settableStats) set(st broker.Stats) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.st = st
}

// A node publishes its counters only when they changed (an idle node
// rewrote its row every second), and past maxPublishedStats without the
// per-resource counters (1000 services and 1000 flows made 227 KB a
// second), keeping the interfaces (review of issue 14).
func TestPublishedStatsSkipUnchangedAndCapped(t *testing.T) {
	ts := startServer(t, Config{})
	dp := &settableStats{}
	dp.set(broker.Stats{PlanVersion: 1, Interfaces: []broker.IfaceStats{{Name: "cap0", Role: "capture", LinkUp: true, RxPackets: 1}}})
	srv, err := New(Config{Store: ts.st, Logger: ts.srv.log, DataPlane: dp, Node: "a", Fleet: true, NodeTimeout: 3 * time.Hour, NodeHeartbeat: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := srv.Register(ctx); err != nil {
		t.Fatal(err)
	}
	published := func() (int64, broker.Stats, int) {
		t.Helper()
		pub, err := ts.st.ListNodeStats(ctx, "")
		if err != nil || len(pub) != 1 {
			t.Fatalf("node stats: %v %v", pub, err)
		}
		var st broker.Stats
		if err := json.Unmarshal(pub[0].Stats, &st); err != nil {
			t.Fatal(err)
		}
		return pub[0].UpdatedAt, st, len(pub[0].Stats)
	}
	beat := func() {
		t.Helper()
		time.Sleep(2 * time.Millisecond) // a new updated_at, were it written
		if err := srv.heartbeat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	beat()
	first, _, _ := published()
	beat()
	beat()
	if again, _, _ := published(); again != first {
		t.Errorf("unchanged counters rewritten: updated_at %d -> %d", first, again)
	}
	big := broker.Stats{PlanVersion: 2, Interfaces: []broker.IfaceStats{{Name: "cap0", Role: "capture", LinkUp: true, RxPackets: 2}}}
	for i := range 1000 {
		big.Services = append(big.Services, broker.ServiceStats{ID: fmt.Sprintf("00000000-0000-0000-0000-%012d", i), DeliveredPackets: uint64(i)})
		big.Flows = append(big.Flows, broker.FlowStats{ID: fmt.Sprintf("10000000-0000-0000-0000-%012d", i), MatchedPackets: uint64(i)})
	}
	full, _ := json.Marshal(big)
	dp.set(big)
	beat()
	at, st, size := published()
	t.Logf("1000 services + 1000 flows: %d bytes of JSON, published %d (cap %d)", len(full), size, maxPublishedStats)
	if at == first || st.PlanVersion != 2 || len(st.Interfaces) != 1 || st.Interfaces[0].RxPackets != 2 {
		t.Errorf("changed counters not published: updated_at %d (was %d), %+v", at, first, st)
	}
	if size > maxPublishedStats || len(st.Services) != 0 || len(st.Flows) != 0 {
		t.Errorf("published %d bytes, %d services, %d flows: want at most %d bytes, no per-resource counters",
			size, len(st.Services), len(st.Flows), maxPublishedStats)
	}
}
