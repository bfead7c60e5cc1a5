package control

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/taas-appliance/taas/control/store"
	"github.com/taas-appliance/taas/internal/testutil"
	"github.com/taas-appliance/taas/xdpprog"
)

// TestBindingChecksThePortsNode: in a fleet, whichever node's API takes a
// request, a port's binding is checked against the node its
// binding:host_id names, as that node published its interfaces: node a
// binds a port to b's eth1, which a does not have, and refuses a's own
// cap0 for b; roles, uplinks and loops are b's; a bound port names a node
// of the fleet; moving a port to another node checks it again; the
// interfaces in use and a capture interface's filters are counted per
// node (issue 14's review: all were the answering node's).
func TestBindingChecksThePortsNode(t *testing.T) {
	ts := startServer(t, Config{DataPlane: newRecorder(), Node: "a", Fleet: true, NodeTimeout: time.Hour,
		NodeHeartbeat: 100 * time.Millisecond, Interfaces: map[string]string{"cap0": RoleCapture, "mon0": RoleMonitor}})
	ctx := context.Background()
	claim := func(name, interfaces string) {
		t.Helper()
		if err := ts.st.ClaimNode(ctx, store.Node{Name: name, Instance: name + "-1", StartedAt: 1, LastSeen: 1,
			Interfaces: interfaces}, 0); err != nil {
			t.Fatal(err)
		}
	}
	claim("b", `{"eth1": {"role": "capture"}, "cap0": {"role": "capture"}, "eth2": {"role": "monitor"},
		"eth3": {"role": "uplink"}, "mon9": {"role": "monitor", "loop": "monitor interface mon9 is the veth peer of capture interface eth1, so copies sent out of mon9 would be captured again (a mirror loop)"}}`)
	claim("c", `{}`) // declares none: any netdev
	claim("d", ``)   // published nothing (an older taasd): as c

	post := func(host, iface string) response {
		t.Helper()
		p := map[string]any{"network_id": defaultNetwork, "binding:host_id": host}
		if iface != "" {
			p["binding:profile"] = map[string]any{"interface": iface}
		}
		return ts.do("POST", "/v2.0/ports", jsonBody(map[string]any{"port": p}))
	}
	for _, tc := range []struct {
		host, iface string
		status      int
		message     string
	}{
		{"b", "eth1", 201, ""},
		{"b", "cap0", 201, ""},
		{"b", "mon0", 400, "Interface mon0 is not one of node b's interfaces: bind to a capture interface (cap0, eth1) or a monitor interface (eth2, mon9)."},
		{"b", "eth3", 400, "Interface eth3 is an uplink"},
		{"a", "eth1", 400, "Interface eth1 is not one of the appliance's interfaces: bind to a capture interface (cap0) or a monitor interface (mon0)."},
		{"a", "cap0", 201, ""},
		{"c", "anything0", 201, ""},
		{"d", "anything0", 201, ""},
		{"", "eth1", 400, "A port bound to interface eth1 must name its node: in a fleet, set binding:host_id to the node whose interface it is (a, b, c, d)."},
		{"zz", "eth1", 400, "binding:host_id zz is not a node of this fleet (a, b, c, d)"},
		{"zz", "", 201, ""}, // unbound: nothing to check, nothing realised
		{"", "", 201, ""},
	} {
		r := post(tc.host, tc.iface)
		ne, _ := r.body["NeutronError"].(map[string]any)
		msg, _ := ne["message"].(string)
		if r.status != tc.status || tc.status == 400 && !strings.Contains(msg, tc.message) {
			t.Errorf("port on node %q bound to %q = %d %s, want %d %q", tc.host, tc.iface, r.status, r.raw, tc.status, tc.message)
		}
	}

	// Uses: the port's role and loops on its node.
	capB, monB, loopB := ts.hostPort("cap-b", "eth1", "", "b"), ts.hostPort("mon-b", "eth2", "", "b"), ts.hostPort("loop-b", "mon9", "", "b")
	want400 := func(what, path, body, message string) {
		t.Helper()
		r := ts.do("POST", path, body)
		if r.status != 400 || !strings.Contains(r.raw, message) {
			t.Errorf("%s = %d %s, want 400 %q", what, r.status, r.raw, message)
		}
	}
	service := func(port string) string {
		return jsonBody(map[string]any{"tap_service": map[string]any{"port_id": port}})
	}
	want400("a tap service on b's capture eth1", "/v2.0/taas/tap_services", service(capB),
		"is bound to eth1, a capture interface: a tap service's port must be bound to a monitor interface")
	want400("a tap service on b's looping mon9", "/v2.0/taas/tap_services", service(loopB),
		"Refused on node b: monitor interface mon9 is the veth peer of capture interface eth1")
	svcB := ts.createService("svc-b", monB)
	ts.createFlow("flow-b", svcB, capB, "BOTH", nil)
	want400("a flow from b's monitor eth2", "/v2.0/taas/tap_flows", jsonBody(map[string]any{"tap_flow": map[string]any{
		"tap_service_id": svcB, "source_port": monB, "direction": "IN"}}), "a capture interface")

	// Moves between nodes are bindings too.
	put := func(id, body string) response {
		t.Helper()
		return ts.do("PUT", "/v2.0/ports/"+id, body)
	}
	if r := put(capB, `{"port": {"binding:host_id": "a"}}`); r.status != 400 || !strings.Contains(r.raw, "Interface eth1 is not one of the appliance's") {
		t.Errorf("moving b's eth1 port to node a = %d %s, want 400", r.status, r.raw)
	}
	if r := put(capB, `{"port": {"binding:host_id": "b", "binding:profile": {"interface": "cap0"}}}`); r.status != 200 {
		t.Errorf("rebinding b's port to b's cap0 = %d %s, want 200", r.status, r.raw)
	}
	if r := put(capB, `{"port": {"binding:host_id": "c"}}`); r.status != 200 {
		t.Errorf("moving a port to node c, which declares none = %d %s, want 200", r.status, r.raw)
	}

	// A's cap0 full of filters leaves b's cap0 as empty as it is.
	capA, monA := ts.hostPort("cap-a", "cap0", "", "a"), ts.hostPort("mon-a", "mon0", "", "a")
	svcA := ts.createService("svc-a", monA)
	flow := func(svc, src, filter string) response {
		return ts.do("POST", "/v2.0/taas/tap_flows", jsonBody(map[string]any{"tap_flow": map[string]any{
			"tap_service_id": svc, "source_port": src, "direction": "IN", "filter": filter}}))
	}
	for i := range xdpprog.MaxFastFilters {
		if r := flow(svcA, capA, fmt.Sprintf("udp port %d", i+1)); r.status != 201 {
			t.Fatalf("filter %d on a's cap0 = %d %s", i+1, r.status, r.raw)
		}
	}
	if r := flow(svcA, capA, "tcp"); r.status != 409 {
		t.Errorf("filter %d on a's cap0 = %d %s, want 409 TapFlowFilterLimit", xdpprog.MaxFastFilters+1, r.status, r.raw)
	}
	if r := put(capB, `{"port": {"binding:host_id": "b"}}`); r.status != 200 {
		t.Fatalf("moving the port back to b: %d %s", r.status, r.raw)
	}
	if r := flow(svcB, capB, "tcp"); r.status != 201 {
		t.Errorf("a filter on b's cap0 while a's is full = %d %s, want 201", r.status, r.raw)
	}

	// GET /v2.0/taas/nodes shows what each node declares.
	got := nodeInterfacesOf(ts)
	for node, want := range map[string]string{
		"a": `{"cap0":{"role":"capture"},"mon0":{"role":"monitor"}}`,
		"b": `{"cap0":{"role":"capture"},"eth1":{"role":"capture"},"eth2":{"role":"monitor"},"eth3":{"role":"uplink"},` +
			`"mon9":{"loop":"monitor interface mon9 is the veth peer of capture interface eth1, so copies sent out of mon9 would be captured again (a mirror loop)","role":"monitor"}}`,
		"c": `{}`, "d": `{}`,
	} {
		if got[node] != want {
			t.Errorf("GET /v2.0/taas/nodes: node %s's interfaces %s, want %s", node, got[node], want)
		}
	}
}

// nodeInterfacesOf returns each node's interfaces as GET
// /v2.0/taas/nodes shows them, as JSON.
func nodeInterfacesOf(ts *testServer) map[string]string {
	ts.t.Helper()
	out := map[string]string{}
	for _, n := range ts.must(200, "GET", "/v2.0/taas/nodes", "", "")["nodes"].([]any) {
		m := n.(map[string]any)
		out[m["name"].(string)] = jsonBody(m["interfaces"])
	}
	return out
}

// TestLoopOnAnotherNode: node a publishes which of its declared
// interfaces close a mirror loop on its host (here a monitor that is the
// veth peer of a capture), and node b's API, which cannot see a's links,
// refuses a tap service on that monitor with a's reason.
func TestLoopOnAnotherNode(t *testing.T) {
	testutil.RequireRoot(t, "CAP_NET_ADMIN for a veth pair")
	p := testutil.Prefix(t)
	mon, capt := p+"m", p+"c"
	testutil.Veth(t, mon, capt, testutil.VethOpts{})
	db := testDB(t)
	fleet := func(node string, ifaces map[string]string) Config {
		return Config{DataPlane: newRecorder(), Node: node, Fleet: true, NodeTimeout: time.Hour,
			NodeHeartbeat: 100 * time.Millisecond, Interfaces: ifaces}
	}
	a := startServerAt(t, db, fleet("a", map[string]string{mon: RoleMonitor, capt: RoleCapture}))
	b := startServerAt(t, db, fleet("b", nil))
	waitFor(t, "b sees node a", func() bool { return a.srv.fleet.registered.Load() })
	port := b.hostPort("mon-a", mon, "", "a")
	r := b.do("POST", "/v2.0/taas/tap_services", jsonBody(map[string]any{"tap_service": map[string]any{"port_id": port}}))
	want := "Refused on node a: monitor interface " + mon + " is the veth peer of capture interface " + capt
	if r.status != 400 || !strings.Contains(r.raw, want) {
		t.Errorf("tap service on a's looping monitor through b = %d %s, want 400 %q", r.status, r.raw, want)
	}
	loop := fmt.Sprintf(`"loop":"monitor interface %s is the veth peer of capture interface %s, so copies sent out of %s would be captured again (a mirror loop)"`, mon, capt, mon)
	want = fmt.Sprintf(`{%q:{%s,"role":"capture"},%q:{%s,"role":"monitor"}}`, capt, loop, mon, loop)
	if got := nodeInterfacesOf(b)["a"]; got != want {
		t.Errorf("node a's interfaces through b: %s, want %s", got, want)
	}
}

// TestFleetRefusalsToMembers: a project member whose port is on a node the
// fleet no longer has (deleted since) is refused a tap service on it, with
// a 400 that names the port's node but not the fleet's other nodes (their
// names are the admins' to read, GET /v2.0/taas/nodes).
func TestFleetRefusalsToMembers(t *testing.T) {
	ts := startIsoServer(t, Config{DataPlane: newRecorder(), Node: "a", Fleet: true, NodeTimeout: time.Hour,
		NodeHeartbeat: 100 * time.Millisecond})
	if err := ts.st.ClaimNode(context.Background(), store.Node{Name: "secret-rack", Instance: "i", StartedAt: 1, LastSeen: 1}, 0); err != nil {
		t.Fatal(err)
	}
	port := ts.postPort(map[string]any{"name": "b-mon", "project_id": "proj-b", "binding:host_id": "a"}, "mon0", "", hAdmin)
	ts.moveUnchecked(port, "gone")
	r := ts.do("POST", "/v2.0/taas/tap_services", jsonBody(map[string]any{"tap_service": map[string]any{"port_id": port}}), hB)
	if r.status != 400 || !strings.Contains(r.raw, "binding:host_id gone is not a node of this fleet") ||
		strings.Contains(r.raw, "secret-rack") {
		t.Errorf("member's tap service on a port of a gone node = %d %s, want 400 without the fleet's node names", r.status, r.raw)
	}
}
