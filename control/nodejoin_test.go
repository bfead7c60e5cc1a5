package control

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/taas-appliance/taas/control/store"
)

// TestJoinedNodeKnownAtOnce: a node that registers is known to another
// node's API from the moment its row is committed, not from that node's
// next look at the nodes table (issue 14: its resources showed DOWN "node
// b never seen" for up to a heartbeat). Node a heartbeats every 2 s; b
// claims its row through the same store (as a taasd on another database
// connection would, but with no notification to wait for) and a's API is
// asked at once, and for 300 ms after.
func TestJoinedNodeKnownAtOnce(t *testing.T) {
	dp := newRecorder()
	dp.ifaceUp["mon0"], dp.ifaceUp["cap0"] = true, true
	ts := startServer(t, Config{DataPlane: dp, Node: "a", Fleet: true, NodeTimeout: 5 * time.Second, NodeHeartbeat: 2 * time.Second})
	svc, flow, never := resourcesOfB(t, ts)
	start := time.Now()
	startFakeNode(t, ts.st, "b", `{}`)
	for n := 0; n == 0 || time.Since(start) < 300*time.Millisecond; n++ {
		for _, c := range []struct{ kind, id string }{{"tap_flow", flow}, {"tap_service", svc}} {
			if reason := never(c.kind, c.id); reason != "" {
				t.Fatalf("%s %s through a's API %v after b joined (answer %d): %q", c.kind, c.id,
					time.Since(start).Round(time.Millisecond), n, reason)
			}
		}
		for _, f := range ts.list("/v2.0/taas/tap_flows", "tap_flows") {
			if reason, _ := f["status_reason"].(string); strings.Contains(reason, "never seen") {
				t.Fatalf("tap flow list through a's API after b joined: %q", reason)
			}
		}
	}
}

// resourcesOfB creates a tap service and a flow on ports of node b, which
// has not joined (a database may hold ports of a node deleted since, or of
// one about to join), and waits until ts's API shows them DOWN "node b
// never seen". never returns a resource's reason through ts's API when it
// says "never seen", else "".
func resourcesOfB(t *testing.T, ts *testServer) (svc, flow string, never func(kind, id string) string) {
	t.Helper()
	mon, capp := ts.hostPort("mon-b", "mon0", "", "a"), ts.hostPort("cap-b", "cap0", "fa:16:3e:00:00:01", "a")
	svc = ts.createService("svc-b", mon)
	flow = ts.createFlow("flow-b", svc, capp, "BOTH", nil)
	ts.moveUnchecked(mon, "b")
	ts.moveUnchecked(capp, "b")
	never = func(kind, id string) string {
		r := ts.must(200, "GET", "/v2.0/taas/"+kind+"s/"+id, "", kind)
		if reason, _ := r["status_reason"].(string); strings.Contains(reason, "never seen") {
			return reason
		}
		return ""
	}
	waitFor(t, "b's resources never seen before b joins", func() bool { return never("tap_flow", flow) != "" })
	return svc, flow, never
}

// TestJoinedNodeKnownOnNotification: on PostgreSQL, a node that registers
// through a taasd of its own (another Store) is known to node a's API as
// soon as a has heard of the claim (its notification), without waiting
// for a's next heartbeat (every 2 s here).
func TestJoinedNodeKnownOnNotification(t *testing.T) {
	dsn := engineDB(t, "postgres")
	dp := newRecorder()
	dp.ifaceUp["mon0"], dp.ifaceUp["cap0"] = true, true
	ts := startServerAt(t, dsn, Config{DataPlane: dp, Node: "a", Fleet: true, NodeTimeout: 5 * time.Second, NodeHeartbeat: 2 * time.Second})
	svc, flow, never := resourcesOfB(t, ts)
	other, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	heard, stop := ts.st.Subscribe()
	defer stop()
	start := time.Now()
	startFakeNode(t, other, "b", `{}`)
	select {
	case <-heard:
	case <-time.After(10 * time.Second):
		t.Fatal("a did not hear of b's claim")
	}
	t.Logf("a heard of b's claim %v after it began", time.Since(start).Round(time.Microsecond))
	for _, c := range []struct{ kind, id string }{{"tap_flow", flow}, {"tap_service", svc}} {
		if reason := never(c.kind, c.id); reason != "" {
			t.Errorf("%s %s through a's API once a heard of b's claim: %q", c.kind, c.id, reason)
		}
	}
}

// TestNeverSeenCostsNoReread: while a resource sits on a node that never
// joins, ordinary writes (creates, status writes) do not make the API
// reread the nodes table for it (review of issue 14: every write of the
// fleet did, one answer after another, each waiting on the table); a
// node's registration does, once.
func TestNeverSeenCostsNoReread(t *testing.T) {
	ts := startServer(t, Config{DataPlane: newRecorder(), Node: "a", Fleet: true, NodeTimeout: 2 * time.Hour, NodeHeartbeat: time.Hour})
	_, flow, never := resourcesOfB(t, ts)
	ts.srv.rereadNodes() // whatever the set-up moved
	for i := range 5 {
		ts.createPort(fmt.Sprint("p", i), "", "")
		if err := ts.st.SetStatuses(context.Background(), nil, map[string]store.Status{flow: {State: "DOWN"}}, nil); err != nil {
			t.Fatal(err)
		}
		if ts.srv.rereadNodes() {
			t.Fatalf("write %d made a reread of the nodes", i)
		}
	}
	if never("tap_flow", flow) == "" {
		t.Fatal("flow-b is not 'never seen' any more, before any node joined")
	}
	if err := ts.st.ClaimNode(context.Background(), store.Node{Name: "c", Instance: "c1", StartedAt: 1, LastSeen: 1}, 0); err != nil {
		t.Fatal(err)
	}
	if !ts.srv.rereadNodes() {
		t.Error("a registration made no reread of the nodes")
	}
	if ts.srv.rereadNodes() {
		t.Error("one registration made two rereads")
	}
}
