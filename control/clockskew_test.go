package control

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/taas-appliance/taas/control/store"
)

// A node whose clock is 5 s behind this one's, heartbeating every 50 ms,
// is alive: liveness is judged by seeing its last_seen move on this
// node's clock, not by comparing two machines' clocks (review of issue
// 14). A second taasd under its name watches the row before taking it,
// however old last_seen looks, and refuses.
func TestNodeLivenessIgnoresClockSkew(t *testing.T) {
	dp := newRecorder()
	ts := startServer(t, Config{DataPlane: dp, Node: "a", Fleet: true, NodeTimeout: 2 * time.Second, NodeHeartbeat: 100 * time.Millisecond})
	ctx := context.Background()
	const skew = 5000 // ms behind
	now := time.Now().UnixMilli() - skew
	if err := ts.st.ClaimNode(ctx, store.Node{Name: "b", Instance: "i", StartedAt: now, LastSeen: now}, 0); err != nil {
		t.Fatal(err)
	}
	port := ts.hostPort
	monB, capB := port("mon-b", "mon0", "", "b"), port("cap-b", "cap0", "fa:16:3e:00:00:02", "b")
	svcB := ts.createService("svc-b", monB)
	flowB := ts.createFlow("flow-b", svcB, capB, "BOTH", nil)
	active := store.Status{State: "ACTIVE"}
	if err := ts.st.SetStatuses(ctx, map[string]store.Status{svcB: active}, map[string]store.Status{flowB: active}, nil); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	beats := make(chan struct{})
	go func() {
		defer close(beats)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			_ = ts.st.Heartbeat(ctx, "b", "i", time.Now().UnixMilli()-skew, []byte(`{}`), nil)
		}
	}()
	defer func() { close(stop); <-beats }()
	ts.settle()
	time.Sleep(1500 * time.Millisecond) // many heartbeats of a and of b
	f := ts.must(200, "GET", "/v2.0/taas/tap_flows/"+flowB, "", "tap_flow")
	t.Logf("flow on b (clock %d ms behind): %v %q", skew, f["status"], f["status_reason"])
	if f["status"] != "ACTIVE" {
		t.Errorf("flow on a live node with a slow clock: %v %q, want ACTIVE", f["status"], f["status_reason"])
	}
	for _, n := range ts.list("/v2.0/taas/nodes", "nodes") {
		if n["name"] == "b" && n["alive"] != true {
			t.Errorf("node b listed %v, want alive", n)
		}
	}
	b2, err := New(Config{DataPlane: newRecorder(), Node: "b", Fleet: true, NodeTimeout: 2 * time.Second, NodeHeartbeat: 100 * time.Millisecond, Store: ts.st})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	err = b2.Register(ctx)
	t.Logf("second b's Register after %v: %v", time.Since(t0), err)
	if err == nil || !strings.Contains(err.Error(), "is in use") {
		t.Errorf("second b's Register: %v, want node b is in use", err)
	}
	if n, err := ts.st.GetNode(ctx, "b"); err != nil || n.Instance != "i" {
		t.Errorf("b's row after a second b tried: %+v %v, want the live instance i", n, err)
	}
	if err := ts.st.Heartbeat(ctx, "b", "i", time.Now().UnixMilli()-skew, nil, nil); errors.Is(err, store.ErrNodeTaken) {
		t.Errorf("the live b lost its name: %v", err)
	}
}
