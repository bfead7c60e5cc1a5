package control

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/taas-appliance/taas/broker"
)

// gatedDP is a recorder whose Apply, when a release channel waits in gate,
// takes it and blocks until it is closed: a slow pass, held open.
type gatedDP struct {
	*recordingDataPlane
	gate chan chan struct{}
}

func (g *gatedDP) Apply(ctx context.Context, p *broker.Plan) (broker.Report, error) {
	select {
	case rel := <-g.gate:
		<-rel
	default:
	}
	return g.recordingDataPlane.Apply(ctx, p)
}

// A pass of node a that read the desired state while the ports were a's,
// and writes after they moved to node b and b wrote its status, must not
// put its stale ACTIVE over b's ERROR (review of issue 14: the ownership
// was decided from the pass's start, the UPDATE was unconditional), nor
// announce it as a status event: the database never held it (issue 14's
// loose ends).
func TestStalePassDoesNotOverwriteAnotherNodesStatus(t *testing.T) {
	dpA := &gatedDP{recordingDataPlane: newRecorder(), gate: make(chan chan struct{}, 1)}
	ts := startServer(t, Config{DataPlane: dpA, Node: "a", Fleet: true, NodeTimeout: 5 * time.Second, NodeHeartbeat: 100 * time.Millisecond})
	ctx := context.Background()
	port := ts.hostPort
	mon, capp := port("mon", "mon0", "", "a"), port("cap", "cap0", "fa:16:3e:00:00:02", "a")
	svc := ts.createService("svc", mon)
	flow := ts.createFlow("flow", svc, capp, "BOTH", nil)
	ts.settle()
	dpB := newRecorder()
	dpB.err = fmt.Errorf("b cannot load its program")
	b, err := New(Config{DataPlane: dpB, Node: "b", Fleet: true, NodeTimeout: 5 * time.Second, NodeHeartbeat: 100 * time.Millisecond, Store: ts.st})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Register(ctx); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() { // b stays alive for a's API
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			_ = ts.st.Heartbeat(ctx, "b", b.fleet.instance, time.Now().UnixMilli(), []byte(`{}`), nil)
		}
	}()
	// a's links come up: a's pass reads the ports as a's, and is slow to apply.
	dpA.mu.Lock()
	dpA.ifaceUp["mon0"], dpA.ifaceUp["cap0"] = true, true
	dpA.mu.Unlock()
	rel := make(chan struct{})
	dpA.gate <- rel
	done := make(chan error, 1)
	go func() { done <- ts.srv.Reconciler().Sync(ctx) }()
	for len(dpA.gate) > 0 { // the pass took the gate: it has read
		time.Sleep(5 * time.Millisecond)
	}
	// What a's passes announce from now on: the stale one first.
	sub := ts.srv.hub.subscribe("")
	defer ts.srv.hub.unsubscribe(sub)
	for _, id := range []string{mon, capp} {
		ts.must(200, "PUT", "/v2.0/ports/"+id, `{"port": {"binding:host_id": "b"}}`, "port")
	}
	if err := b.Reconciler().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	close(rel)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ts.settle()
	// a's API learns of b's liveness at its next look at the nodes table.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		r := ts.must(200, "GET", "/v2.0/taas/tap_flows/"+flow, "", "tap_flow")
		if !strings.Contains(r["status_reason"].(string), "seen") {
			break
		}
	}
	for len(sub.ch) > 0 {
		if e := <-sub.ch; e.Action == "status" && e.Status == "ACTIVE" && (e.ID == svc || e.ID == flow) {
			t.Errorf("a announced %s %s ACTIVE, a status the database never held (b wrote ERROR)", e.Resource, e.ID)
		}
	}
	for _, c := range []struct{ path, key, id string }{
		{"/v2.0/taas/tap_flows/", "tap_flow", flow},
		{"/v2.0/taas/tap_services/", "tap_service", svc},
	} {
		r := ts.must(200, "GET", c.path+c.id, "", c.key)
		t.Logf("%s after a's stale pass: %v %q", c.key, r["status"], r["status_reason"])
		if r["status"] != "ERROR" || !strings.Contains(r["status_reason"].(string), "b cannot load") {
			t.Errorf("%s: status %v %q, want b's ERROR", c.key, r["status"], r["status_reason"])
		}
	}
}
