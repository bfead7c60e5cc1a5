package control

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/control/store"
)

// TestNodePlan: which node realises a tap service, flow and mirror, and
// what this node says of those it cannot realise (issue 14). Node a is
// this node; the service's port is on svcHost, the flow's source port and
// the mirror's port on srcHost.
func TestNodePlan(t *testing.T) {
	single, fleet := nodeRules{self: "a"}, nodeRules{self: "a", fleet: true}
	for _, tc := range []struct {
		name             string
		rules            nodeRules
		svcHost, srcHost string
		// planned lists what is in the plan (s, f, m); held what is held
		// with a reason containing the value; anything else is another
		// node's (neither).
		planned string
		held    map[string]string
	}{
		{"single, unbound hosts are this appliance", single, "", "", "sfm", nil},
		{"single, named this node", single, "a", "a", "sfm", nil},
		// A host_id was stored and ignored before nodes: an upgraded
		// single appliance still realises those ports.
		{"single, any host_id is this appliance", single, "b", "c", "sfm", nil},
		{"single, one host_id set", single, "b", "", "sfm", nil},
		{"fleet, this node's", fleet, "a", "a", "sfm", nil},
		{"fleet, unbound", fleet, "", "", "", map[string]string{
			"s": "port svc-port is bound to no node (its binding:host_id is empty)",
			"f": "source port src-port is bound to no node",
			"m": "port src-port is bound to no node"}},
		{"fleet, another node's", fleet, "b", "b", "", nil},
		{"fleet, source here, service on b", fleet, "b", "a", "m", map[string]string{
			"f": "source port src-port is on node a and tap service svc's port on node b: copies do not cross nodes"}},
		{"fleet, source on b, service here", fleet, "a", "b", "s", nil},
		{"fleet, source here, service unbound", fleet, "", "a", "m", map[string]string{
			"s": "port svc-port is bound to no node",
			"f": "tap service svc's port is bound to no node"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := store.DesiredState{
				Services: []store.DesiredService{{ID: "svc", PortID: "svc-port", Iface: "mon0", HostID: tc.svcHost, PortUp: true}},
				Flows: []store.DesiredFlow{{ID: "flow", ServiceID: "svc", SourcePortID: "src-port", Iface: "cap0", HostID: tc.srcHost,
					PortUp: true, MAC: "fa:16:3e:00:00:01", Direction: "BOTH"}},
				Mirrors: []store.DesiredMirror{{ID: "mir", PortID: "src-port", Iface: "cap0", HostID: tc.srcHost, PortUp: true,
					MAC: "fa:16:3e:00:00:01", RemoteIP: "198.51.100.9", MirrorType: "gre",
					Directions: store.Directions{{Direction: "IN", ID: []byte("7")}}}},
			}
			p, held, owners := buildNodePlan(1, d, nil, tc.rules)
			planned := ""
			if len(p.Services) == 1 {
				planned += "s"
			}
			if len(p.Flows) == 1 {
				planned += "f"
			}
			if len(p.Mirrors) == 1 {
				planned += "m"
			}
			if planned != tc.planned {
				t.Errorf("planned = %q, want %q", planned, tc.planned)
			}
			got := map[string]broker.Status{}
			for k, m := range map[string]map[string]broker.Status{"s": held.Services, "f": held.Flows, "m": held.Mirrors} {
				for _, st := range m {
					got[k] = st
				}
			}
			for k, want := range tc.held {
				if st, ok := got[k]; !ok || st.State != broker.StateDown || !strings.Contains(st.Reason, want) {
					t.Errorf("held %s = %+v, want DOWN with %q", k, st, want)
				}
			}
			for k := range got {
				if _, ok := tc.held[k]; !ok {
					t.Errorf("held %s = %+v, want nothing held", k, got[k])
				}
			}
			wantNode := func(host string) string { return tc.rules.portNode(host) }
			if owners["svc"].node != wantNode(tc.svcHost) || owners["flow"].node != wantNode(tc.srcHost) ||
				owners["mir"].node != wantNode(tc.srcHost) {
				t.Errorf("owners = %+v", owners)
			}
		})
	}
}

// TestCheckNodeName: --node's rule.
func TestCheckNodeName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"node-1", true}, {"rack2.tap_7", true}, {strings.Repeat("a", 64), true},
		{"", false}, {strings.Repeat("a", 65), false}, {"a b", false}, {"a/b", false}, {"né", false}, {"a:1", false},
	} {
		if err := CheckNodeName(tc.name); (err == nil) != tc.ok {
			t.Errorf("CheckNodeName(%q) = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

// FuzzCheckNodeName: the validator never panics and accepts only what
// the rule says.
func FuzzCheckNodeName(f *testing.F) {
	for _, s := range []string{"node-1", "", "a b", strings.Repeat("x", 65), "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if CheckNodeName(name) != nil {
			return
		}
		if len(name) == 0 || len(name) > 64 || strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
			t.Errorf("CheckNodeName(%q) accepted it", name)
		}
	})
}

// fakeNode stands in for another taasd of the fleet on the same database:
// it claims its node and heartbeats (publishing stats) until stopped.
type fakeNode struct {
	st       *store.Store
	name, id string
	stats    string
	mu       sync.Mutex
	stop     chan struct{}
	done     chan struct{}
}

func startFakeNode(t *testing.T, st *store.Store, name, stats string) *fakeNode {
	t.Helper()
	n := &fakeNode{st: st, name: name, id: "fake-" + name, stats: stats}
	now := time.Now().UnixMilli()
	var seen int64
	if old, err := st.GetNode(context.Background(), name); err == nil {
		seen = old.LastSeen
	}
	if err := st.ClaimNode(context.Background(), store.Node{Name: name, Instance: n.id, StartedAt: now, LastSeen: now}, seen); err != nil {
		t.Fatal(err)
	}
	if err := st.Heartbeat(context.Background(), name, n.id, now, []byte(stats), nil); err != nil {
		t.Fatal(err)
	}
	n.beat(t)
	return n
}

// beat heartbeats every 50 ms until halt.
func (n *fakeNode) beat(t *testing.T) {
	n.stop, n.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(n.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-n.stop:
				return
			case <-tick.C:
			}
			if err := n.st.Heartbeat(context.Background(), n.name, n.id, time.Now().UnixMilli(), []byte(n.stats), nil); err != nil {
				t.Errorf("heartbeat of %s: %v", n.name, err)
				return
			}
		}
	}()
	t.Cleanup(n.halt)
}

// halt stops heartbeating, as kill -9 would.
func (n *fakeNode) halt() {
	n.mu.Lock()
	defer n.mu.Unlock()
	select {
	case <-n.stop:
	default:
		close(n.stop)
		<-n.done
	}
}

// moveUnchecked sets port id's binding:host_id to host through the store,
// past the API's binding checks.
func (ts *testServer) moveUnchecked(id, host string) {
	ts.t.Helper()
	if _, err := ts.st.UpdatePort(context.Background(), "", id, func(_ *store.Tx, p *store.Port) error {
		p.HostID = host
		return nil
	}); err != nil {
		ts.t.Fatal(err)
	}
	ts.settle()
}

// TestFleetLiveness: through node a's API, node b's resources show the
// status b wrote and b's counters while b heartbeats, DOWN "node b not
// seen since ..." once it is silent for the timeout, and what b wrote
// again when it is back, without anybody writing them; a node that never
// joined, an unbound port and a flow across two nodes are DOWN with their
// reasons; a's own resources are a's. Each change is a status event.
func TestFleetLiveness(t *testing.T) {
	dp := newRecorder()
	dp.ifaceUp["mon0"], dp.ifaceUp["cap0"] = true, true
	ts := startServer(t, Config{DataPlane: dp, Node: "a", Fleet: true, NodeTimeout: time.Second, NodeHeartbeat: 100 * time.Millisecond})
	ctx := context.Background()
	port := ts.hostPort
	// b registers, so that its ports can be bound; its heartbeats start
	// below.
	if err := ts.st.ClaimNode(ctx, store.Node{Name: "b", Instance: "first", StartedAt: 1, LastSeen: 1}, 0); err != nil {
		t.Fatal(err)
	}
	monA, capA := port("mon-a", "mon0", "", "a"), port("cap-a", "cap0", "fa:16:3e:00:00:01", "a")
	monB, capB := port("mon-b", "mon0", "", "b"), port("cap-b", "cap0", "fa:16:3e:00:00:02", "b")
	// The API binds ports to the fleet's nodes only: ports of a node
	// that never joined, and of none, are what a database may still
	// hold of a node deleted since, or of a single appliance's days.
	capC, capNone := port("cap-c", "cap0", "fa:16:3e:00:00:03", "a"), port("cap-none", "cap0", "fa:16:3e:00:00:04", "a")
	svcA, svcB := ts.createService("svc-a", monA), ts.createService("svc-b", monB)
	flowA := ts.createFlow("flow-a", svcA, capA, "BOTH", nil)
	flowB := ts.createFlow("flow-b", svcB, capB, "BOTH", nil)
	flowC := ts.createFlow("flow-c", svcB, capC, "BOTH", nil)
	flowNone := ts.createFlow("flow-none", svcA, capNone, "BOTH", nil)
	flowCross := ts.createFlow("flow-cross", svcB, capA, "BOTH", nil)
	ts.moveUnchecked(capC, "c")
	ts.moveUnchecked(capNone, "")

	b := startFakeNode(t, ts.st, "b", fmt.Sprintf(`{"tap_flows": [{"id": %q, "matched_packets": 42}]}`, flowB))
	// What b's reconciler would write.
	active := store.Status{State: "ACTIVE"}
	if err := ts.st.SetStatuses(ctx, map[string]store.Status{svcB: active}, map[string]store.Status{flowB: active}, nil); err != nil {
		t.Fatal(err)
	}
	ts.settle()

	type want struct{ status, reason, node string }
	check := func(what string, wants map[string]want) {
		t.Helper()
		waitFor(t, what, func() bool {
			st := ts.must(200, "GET", "/v2.0/taas/stats", "", "taas_stats")
			got := map[string]want{}
			for _, kind := range []string{"tap_services", "tap_flows"} {
				for _, e := range st[kind].([]any) {
					m := e.(map[string]any)
					node, _ := m["node"].(string)
					got[m["id"].(string)] = want{m["status"].(string), m["status_reason"].(string), node}
				}
			}
			for id, w := range wants {
				g := got[id]
				if g.status != w.status || !strings.Contains(g.reason, w.reason) || g.node != w.node {
					return false
				}
				// The resource itself shows the same.
				kind := "tap_flow"
				if id == svcA || id == svcB {
					kind = "tap_service"
				}
				r := ts.must(200, "GET", "/v2.0/taas/"+kind+"s/"+id, "", kind)
				if r["status"] != w.status || !strings.Contains(r["status_reason"].(string), w.reason) {
					return false
				}
			}
			return true
		})
	}
	alive := map[string]want{
		svcA:      {"ACTIVE", "", "a"},
		flowA:     {"ACTIVE", "", "a"},
		svcB:      {"ACTIVE", "", "b"},
		flowB:     {"ACTIVE", "", "b"},
		flowC:     {"DOWN", "node c never seen", "c"},
		flowNone:  {"DOWN", "source port " + capNone + " is bound to no node", ""},
		flowCross: {"DOWN", "source port " + capA + " is on node a and tap service " + svcB + "'s port on node b", "a"},
	}
	check("b alive", alive)
	st := ts.must(200, "GET", "/v2.0/taas/stats", "", "taas_stats")
	for _, e := range st["tap_flows"].([]any) {
		if m := e.(map[string]any); m["id"] == flowB && m["matched_packets"] != float64(42) {
			t.Errorf("flow on b = %v, want b's published 42 matched packets", m)
		}
	}
	if got := ts.list("/v2.0/taas/tap_flows?status=DOWN", "tap_flows"); len(got) != 3 {
		t.Errorf("flows DOWN while b is alive = %d, want 3 (c's, the unbound one, the cross-node one)", len(got))
	}

	sub := ts.srv.hub.subscribe("")
	defer ts.srv.hub.unsubscribe(sub)
	// event waits for a status event of id with status.
	event := func(id, status string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case e := <-sub.ch:
				if e.ID == id && e.Action == "status" && e.Status == status {
					return
				}
			case <-timeout:
				t.Fatalf("no status event %s for %s", status, id)
			}
		}
	}
	b.halt()
	start := time.Now()
	gone, err := ts.st.GetNode(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	dead := map[string]want{}
	for id, w := range alive {
		dead[id] = w
	}
	reason := "node b not seen since " + time.UnixMilli(gone.LastSeen).UTC().Format(time.RFC3339)
	dead[svcB], dead[flowB] = want{"DOWN", reason, "b"}, want{"DOWN", reason, "b"}
	check("b DOWN", dead)
	event(flowB, "DOWN")
	t.Logf("node b (timeout 1s, heartbeat 100ms) seen dead through a's API after %v", time.Since(start).Round(time.Millisecond))
	if got := ts.list("/v2.0/taas/tap_flows?status=DOWN", "tap_flows"); len(got) != 4 {
		t.Errorf("flows DOWN while b is dead = %d, want 4 (the list cache follows b's death)", len(got))
	}

	b.beat(t)
	check("b back", alive)
	event(flowB, "ACTIVE")
	if nodes := ts.list("/v2.0/taas/nodes", "nodes"); len(nodes) != 2 || nodes[1]["name"] != "b" || nodes[1]["alive"] != true {
		t.Errorf("nodes with b back = %v", nodes)
	}
}

// TestNodesAPI: GET /v2.0/taas/nodes lists every node, alive or not, for
// admins only, and the extension is advertised.
func TestNodesAPI(t *testing.T) {
	ts := startIsoServer(t, Config{Node: "a", Fleet: true, NodeTimeout: time.Second, NodeHeartbeat: 100 * time.Millisecond})
	now := time.Now().UnixMilli()
	if err := ts.st.ClaimNode(context.Background(), store.Node{Name: "old", Instance: "x", Version: "v0", StartedAt: now - 60000,
		LastSeen: now - 50000}, 0); err != nil {
		t.Fatal(err)
	}
	var nodes []map[string]any
	waitFor(t, "two nodes", func() bool {
		nodes = ts.list("/v2.0/taas/nodes", "nodes", hAdmin)
		return len(nodes) == 2
	})
	if nodes[0]["name"] != "a" || nodes[0]["alive"] != true || nodes[0]["self"] != true ||
		nodes[1]["name"] != "old" || nodes[1]["alive"] != false || nodes[1]["last_seen"] != time.UnixMilli(now-50000).UTC().Format(time.RFC3339) {
		t.Errorf("nodes = %v", nodes)
	}
	runIsoCases(t, ts, []isoCase{
		{"member", "GET", "/v2.0/taas/nodes", "", hA, 403, "PolicyNotAuthorized", "rule:get_nodes is disallowed by policy"},
		{"extension", "GET", "/v2.0/extensions/taas-nodes", "", hA, 200, "", ""},
	})

	// A single appliance registers without heartbeats, and is alive.
	solo := startServer(t, Config{Node: "solo"})
	var got []map[string]any
	waitFor(t, "the single appliance's node", func() bool {
		got = solo.list("/v2.0/taas/nodes", "nodes")
		return len(got) == 1
	})
	if got[0]["name"] != "solo" || got[0]["alive"] != true || got[0]["self"] != true {
		t.Errorf("a single appliance's nodes = %v", got)
	}
}

// TestRegister: a second taasd under the name of a live node refuses to
// start, naming it; once that node is silent (killed), a new run takes
// the name over after watching it for two heartbeats.
func TestRegister(t *testing.T) {
	ts := startServer(t, Config{})
	other := startFakeNode(t, ts.st, "n1", "{}")
	newServer := func() *Server {
		srv, err := New(Config{Store: ts.st, Logger: ts.srv.log, Node: "n1", Fleet: true, NodeTimeout: 5 * time.Second,
			NodeHeartbeat: 100 * time.Millisecond, Version: "v-test"})
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
	err := newServer().Register(context.Background())
	if err == nil || !strings.Contains(err.Error(), "node n1 is in use: another taasd") ||
		!strings.Contains(err.Error(), "start this one with another --node") {
		t.Fatalf("Register beside a live n1 = %v, want refused", err)
	}
	other.halt()
	start := time.Now()
	srv := newServer()
	if err := srv.Register(context.Background()); err != nil {
		t.Fatalf("Register after n1 went silent = %v", err)
	}
	t.Logf("took over a killed node's name (heartbeat 100ms) in %v", time.Since(start).Round(time.Millisecond))
	n, err := ts.st.GetNode(context.Background(), "n1")
	if err != nil || n.Instance != srv.fleet.instance || n.Version != "v-test" {
		t.Errorf("n1 after the takeover = %+v, %v", n, err)
	}
	// The killed run's heartbeat, were it to come back, is refused.
	if err := ts.st.Heartbeat(context.Background(), "n1", other.id, time.Now().UnixMilli(), nil, nil); err == nil {
		t.Errorf("the old run's heartbeat succeeded after the takeover")
	}
}

// TestFleetMetrics: a fleet node's /metrics holds its own counters and
// those every other node published, each series labelled with its node;
// a single appliance's keep their labels (TestMetricsHandler).
func TestFleetMetrics(t *testing.T) {
	ts := startServer(t, Config{})
	srv, err := New(Config{Store: ts.st, Logger: ts.srv.log, DataPlane: fixedStats{}, Node: "a", Fleet: true})
	if err != nil {
		t.Fatal(err)
	}
	startFakeNode(t, ts.st, "b", `{"plan_version": 3, "interfaces": [{"name": "cap9", "role": "capture", "rx_packets": 5}],
		"tap_flows": [{"id": "flow-b", "matched_packets": 42}]}`)
	if err := srv.refreshNodes(context.Background()); err != nil { // b is alive: its counters show
		t.Fatal(err)
	}
	body := scrape(t, srv.MetricsHandler())
	for _, want := range []string{
		`taas_plan_version{node="a"} 7`,
		`taas_plan_version{node="b"} 3`,
		`taas_tap_flow_matched_packets_total{node="a",tap_flow_id="flow-1",tap_flow_name=""} 6`,
		`taas_tap_flow_matched_packets_total{node="b",tap_flow_id="flow-b",tap_flow_name=""} 42`,
		`taas_interface_rx_packets_total{iface="cap9",node="b",role="capture"} 5`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}

// TestUnseen: how long a node has been unseen, as this node tells it, its
// own blind spells (its heartbeats failing) not counted (the review of
// issue 14's database cut: every node showed the others DOWN for a second
// when PostgreSQL came back).
func TestUnseen(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 18, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	for _, tc := range []struct {
		name              string
		lastSeen, now     int // seconds after t0
		blind             bool
		blindFrom, backAt int // 0: never blind
		want              time.Duration
	}{
		{name: "never blind", lastSeen: 10, now: 14, want: 4 * time.Second},
		{name: "blind now: judged as of the last read", lastSeen: 10, now: 25, blind: true, blindFrom: 11, want: time.Second},
		{name: "back: the spell does not count", lastSeen: 10, now: 22, blindFrom: 11, backAt: 21, want: 2 * time.Second},
		{name: "seen after the spell", lastSeen: 23, now: 24, blindFrom: 11, backAt: 21, want: time.Second},
		{name: "silent before the spell: its time counts", lastSeen: 2, now: 22, blindFrom: 11, backAt: 21, want: 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fleet{blind: tc.blind}
			if tc.blindFrom != 0 {
				f.blindFrom = at(tc.blindFrom)
			}
			if tc.backAt != 0 {
				f.backAt = at(tc.backAt)
			}
			got := f.unseenLocked(store.Node{LastSeen: at(tc.lastSeen).UnixMilli()}, at(tc.now))
			if got != tc.want {
				t.Errorf("unseen = %v, want %v", got, tc.want)
			}
		})
	}
}
