package control

import (
	"context"
	"io"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/taas-appliance/taas/control/store"
)

// Tenant isolation (issue 9): who binds ports, MACs per interface,
// interface roles, loops the API can see, and what members see.

// isoTokens are the callers of the isolation tests: an admin and members
// of two projects.
const isoTokens = "tadmin ops admin\nta proj-a member,reader\ntb proj-b member,reader\n"

const (
	hAdmin = "X-Auth-Token: tadmin"
	hA     = "X-Auth-Token: ta"
	hB     = "X-Auth-Token: tb"
)

// isoCase is one request of an isolation table and the answer it gets:
// the status and, for errors, the NeutronError type and (a part of) the
// message.
type isoCase struct {
	name, method, path, body, who string
	status                        int
	typ, msg                      string
}

func runIsoCases(t *testing.T, ts *testServer, cases []isoCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.do(tc.method, tc.path, tc.body, tc.who)
			if r.status != tc.status {
				t.Fatalf("%s %s = %d %s, want %d", tc.method, tc.path, r.status, r.raw, tc.status)
			}
			if r.status < 400 {
				return
			}
			if typ, msg := neutronErr(t, r); typ != tc.typ || !strings.Contains(msg, tc.msg) {
				t.Errorf("%s %s = %s %q, want %s %q", tc.method, tc.path, typ, msg, tc.typ, tc.msg)
			}
		})
	}
}

func startIsoServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	toks, err := LoadTokens(writeTokens(t, isoTokens), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Auth, cfg.Tokens = AuthToken, toks
	return startServer(t, cfg)
}

// TestPortBindingPolicy: binding:profile and binding:host_id are the
// admin's, mac_address the network owner's on create and the admin's on
// update, with neutron's 403 wording.
func TestPortBindingPolicy(t *testing.T) {
	ts := startIsoServer(t, Config{})
	// A network of project b, where b owns the network.
	netB := ts.must(201, "POST", "/v2.0/networks", `{"network": {"name": "b-net"}}`, "network", hB)["id"].(string)
	ownPort := ts.createPortIn("proj-b", "b-own", "", "", hAdmin)
	bound := ts.createPortIn("proj-b", "b-bound", "cap0", "fa:16:3e:00:00:01", hAdmin)
	port := func(extra string) string {
		return `{"port": {"network_id": "` + defaultNetwork + `"` + extra + `}}`
	}
	const denied = " is disallowed by policy"
	runIsoCases(t, ts, []isoCase{
		{"member binds on create", "POST", "/v2.0/ports", port(`, "binding:profile": {"interface": "cap0"}`), hB, 403, "PolicyNotAuthorized",
			"(rule:create_port and rule:create_port:binding:profile)" + denied},
		{"member sets host on create", "POST", "/v2.0/ports", port(`, "binding:host_id": "node-1"`), hB, 403, "PolicyNotAuthorized",
			"(rule:create_port and rule:create_port:binding:host_id)" + denied},
		{"member sets both", "POST", "/v2.0/ports", port(`, "binding:host_id": "n", "binding:profile": {"interface": "cap0"}`), hB, 403, "PolicyNotAuthorized",
			"((rule:create_port and rule:create_port:binding:host_id) and rule:create_port:binding:profile)" + denied},
		{"member names a MAC on the shared network", "POST", "/v2.0/ports", port(`, "mac_address": "fa:16:3e:00:00:01"`), hB, 403, "PolicyNotAuthorized",
			"(rule:create_port and rule:create_port:mac_address)" + denied},
		{"member in a bulk create", "POST", "/v2.0/ports", `{"ports": [{"network_id": "` + defaultNetwork + `"}, {"network_id": "` +
			defaultNetwork + `", "binding:profile": {"interface": "cap0"}}]}`, hB, 403, "PolicyNotAuthorized",
			"(rule:create_port and rule:create_port:binding:profile)" + denied},
		{"member leaves the defaults", "POST", "/v2.0/ports", port(`, "binding:host_id": "", "binding:profile": {}`), hB, 201, "", ""},
		{"member names a MAC on its own network", "POST", "/v2.0/ports",
			`{"port": {"network_id": "` + netB + `", "mac_address": "fa:16:3e:00:00:01"}}`, hB, 201, "", ""},
		{"member binds on update", "PUT", "/v2.0/ports/" + ownPort, `{"port": {"binding:profile": {"interface": "cap0"}}}`, hB, 403, "PolicyNotAuthorized",
			"(rule:update_port and rule:update_port:binding:profile)" + denied},
		{"member unbinds on update", "PUT", "/v2.0/ports/" + bound, `{"port": {"binding:profile": {}}}`, hB, 403, "PolicyNotAuthorized",
			"(rule:update_port and rule:update_port:binding:profile)" + denied},
		{"member changes a MAC", "PUT", "/v2.0/ports/" + ownPort, `{"port": {"mac_address": "fa:16:3e:00:00:02"}}`, hB, 403, "PolicyNotAuthorized",
			"(rule:update_port and rule:update_port:mac_address)" + denied},
		{"member renames its bound port", "PUT", "/v2.0/ports/" + bound, `{"port": {"name": "x"}}`, hB, 200, "", ""},
		{"admin binds into a project", "POST", "/v2.0/ports",
			`{"port": {"project_id": "proj-a", "network_id": "` + defaultNetwork + `", "binding:profile": {"interface": "cap1"}, "binding:host_id": "n"}}`,
			hAdmin, 201, "", ""},
		{"admin rebinds", "PUT", "/v2.0/ports/" + ownPort, `{"port": {"binding:profile": {"interface": "mon0"}}}`, hAdmin, 200, "", ""},
	})
	if p := ts.must(200, "GET", "/v2.0/ports/"+bound, "", "port", hB); p["binding:profile"].(map[string]any)["interface"] != "cap0" {
		t.Errorf("after the refused updates port = %v, want still bound to cap0", p)
	}
}

// TestMACUniquePerInterface: a MAC bound to an interface is unique there
// across networks and projects, on create and on update, and a member's
// request never learns of another project's MAC.
func TestMACUniquePerInterface(t *testing.T) {
	ts := startIsoServer(t, Config{})
	netA := ts.must(201, "POST", "/v2.0/networks", `{"network": {"name": "a-net"}}`, "network", hA)["id"].(string)
	const mac = "fa:16:3e:00:00:0a"
	vm := ts.createPortIn("proj-a", "vm", "cap0", mac, hAdmin)
	other := ts.createPortIn("proj-b", "other", "cap0", "fa:16:3e:00:00:0b", hAdmin)
	// The same MAC, unbound, on another network: no conflict.
	netB := ts.must(201, "POST", "/v2.0/networks", `{"network": {"name": "b-net"}}`, "network", hB)["id"].(string)
	free := ts.must(201, "POST", "/v2.0/ports", `{"port": {"network_id": "`+netB+`", "mac_address": "`+mac+`"}}`, "port", hB)["id"].(string)
	netC := ts.must(201, "POST", "/v2.0/networks", `{"network": {"name": "c-net", "project_id": "proj-b"}}`, "network", hAdmin)["id"].(string)
	body := func(network, iface, project string) string {
		return jsonBody(map[string]any{"port": map[string]any{"network_id": network, "project_id": project,
			"mac_address": mac, "binding:profile": map[string]any{"interface": iface}}})
	}
	runIsoCases(t, ts, []isoCase{
		{"same interface, other network and project", "POST", "/v2.0/ports", body(netA, "cap0", "proj-b"), hAdmin, 409,
			"MacAddressInUse", "Unable to complete operation for interface cap0. The mac address " + mac + " is in use by another port bound to it."},
		{"same network", "POST", "/v2.0/ports", body(defaultNetwork, "cap1", "proj-a"), hAdmin, 409,
			"MacAddressInUse", "Unable to complete operation for network " + defaultNetwork},
		{"rebind onto the interface", "PUT", "/v2.0/ports/" + free, `{"port": {"binding:profile": {"interface": "cap0"}}}`, hAdmin, 409,
			"MacAddressInUse", "for interface cap0"},
		{"MAC change onto a bound one", "PUT", "/v2.0/ports/" + other, `{"port": {"mac_address": "` + mac + `"}}`, hAdmin, 409,
			"MacAddressInUse", "for interface cap0"},
		{"another interface", "POST", "/v2.0/ports", body(netB, "cap1", "proj-b"), hAdmin, 409,
			"MacAddressInUse", "for network " + netB}, // free is on netB
		{"another interface and network", "POST", "/v2.0/ports", body(netC, "cap1", "proj-b"), hAdmin, 201, "", ""},
		// A member may not name a MAC on a network it does not own, so it
		// cannot probe the shared network for another project's MACs.
		{"member probes the shared network", "POST", "/v2.0/ports", `{"port": {"network_id": "` + defaultNetwork +
			`", "mac_address": "` + mac + `"}}`, hB, 403, "PolicyNotAuthorized", "rule:create_port:mac_address"},
		{"member's own network", "POST", "/v2.0/ports", `{"port": {"network_id": "` + netA + `", "mac_address": "` + mac + `"}}`,
			hA, 201, "", ""},
	})
	// Renaming a bound port keeps its binding and MAC: no conflict with
	// itself.
	ts.must(200, "PUT", "/v2.0/ports/"+vm, `{"port": {"name": "vm-renamed", "admin_state_up": false}}`, "port", hAdmin)
	// Moving the MAC away frees it on the interface.
	ts.must(200, "PUT", "/v2.0/ports/"+vm, `{"port": {"binding:profile": {}}}`, "port", hAdmin)
	ts.must(200, "PUT", "/v2.0/ports/"+free, `{"port": {"binding:profile": {"interface": "cap0"}}}`, "port", hAdmin)
}

// TestInterfaceRoles: with declared interfaces, only those can be bound,
// each in its role, on create, on use and on rebinding.
func TestInterfaceRoles(t *testing.T) {
	ts := startIsoServer(t, Config{Interfaces: map[string]string{"cap0": RoleCapture, "mon0": RoleMonitor, "mon1": RoleMonitor}})
	mon := ts.createPortIn("proj-a", "mon", "mon0", "", hAdmin)
	src := ts.createPortIn("proj-a", "src", "cap0", "", hAdmin)
	onCap := ts.createPortIn("proj-a", "on-cap", "cap0", "", hAdmin)
	onMon := ts.createPortIn("proj-a", "on-mon", "mon1", "", hAdmin)
	unbound := ts.createPortIn("proj-a", "unbound", "", "", hAdmin)
	svc := ts.createService("svc", mon, hA)
	ts.createFlow("flow", svc, src, "BOTH", nil, hA)
	ts.createService("svc2", unbound, hA)
	runIsoCases(t, ts, []isoCase{
		{"undeclared interface", "POST", "/v2.0/ports", jsonBody(map[string]any{"port": map[string]any{"network_id": defaultNetwork,
			"binding:profile": map[string]any{"interface": "eth9"}}}), hAdmin, 400, "HTTPBadRequest",
			"Interface eth9 is not one of the appliance's interfaces: bind to a capture interface (cap0) or a monitor interface (mon0, mon1)."},
		{"host loopback", "PUT", "/v2.0/ports/" + unbound, `{"port": {"binding:profile": {"interface": "lo"}}}`, hAdmin, 400, "HTTPBadRequest",
			"Interface lo is not one of the appliance's interfaces"},
		{"service on a capture", "POST", "/v2.0/taas/tap_services", jsonBody(map[string]any{"tap_service": map[string]any{"port_id": onCap}}),
			hA, 400, "HTTPBadRequest", "Port " + onCap + " is bound to cap0, a capture interface: a tap service's port must be bound to a monitor interface."},
		{"flow from a monitor", "POST", "/v2.0/taas/tap_flows", jsonBody(map[string]any{"tap_flow": map[string]any{"tap_service_id": svc,
			"source_port": onMon, "direction": "IN"}}), hA, 400, "HTTPBadRequest",
			"Port " + onMon + " is bound to mon1, a monitor interface: a tap flow's source port must be bound to a capture interface."},
		{"rebind a service's port onto a capture", "PUT", "/v2.0/ports/" + unbound, `{"port": {"binding:profile": {"interface": "cap0"}}}`,
			hAdmin, 400, "HTTPBadRequest", "a tap service's port must be bound to a monitor interface"},
		{"rebind a source onto a monitor", "PUT", "/v2.0/ports/" + src, `{"port": {"binding:profile": {"interface": "mon1"}}}`,
			hAdmin, 400, "HTTPBadRequest", "a tap flow's source port must be bound to a capture interface"},
		{"rebind a service's port onto a monitor", "PUT", "/v2.0/ports/" + unbound, `{"port": {"binding:profile": {"interface": "mon1"}}}`,
			hAdmin, 200, "", ""},
	})
	if p := ts.must(200, "GET", "/v2.0/ports/"+src, "", "port", hA); p["binding:profile"].(map[string]any)["interface"] != "cap0" {
		t.Errorf("refused rebinding changed the port: %v", p)
	}
}

// TestRebindInOneBatch: a use of an unbound port and an admin's rebinding
// of it that land in one group-commit batch: the rebinding, second, sees
// the use and is refused (issue 10's review: its check read the last
// commit, so both succeeded and the role guard was bypassed).
func TestRebindInOneBatch(t *testing.T) {
	ts := startIsoServer(t, Config{Interfaces: map[string]string{"cap0": RoleCapture, "mon0": RoleMonitor}})
	mon := ts.createPortIn("proj-a", "mon", "mon0", "", hAdmin)
	svc := ts.createService("svc", mon, hA)
	for _, tc := range []struct {
		name, use, rebind, want string
	}{
		{"tap service, then a capture binding",
			`{"tap_service": {"port_id": "PORT"}}`, "cap0", "a tap service's port must be bound to a monitor interface"},
		{"tap flow, then a monitor binding",
			`{"tap_flow": {"tap_service_id": "` + svc + `", "source_port": "PORT", "direction": "IN"}}`, "mon0",
			"a tap flow's source port must be bound to a capture interface"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := ts.createPortIn("proj-a", "p", "", "", hAdmin)
			path := "/v2.0/taas/tap_services"
			if strings.HasPrefix(tc.use, `{"tap_flow"`) {
				path = "/v2.0/taas/tap_flows"
			}
			// Hold the writer, so that the two Writes queue in this order
			// and share its next batch.
			running, release, held := make(chan struct{}), make(chan struct{}), make(chan error, 1)
			go func() {
				held <- ts.st.Write(context.Background(), func(*store.Tx) error { close(running); <-release; return nil })
			}()
			<-running
			defer func() {
				select {
				case <-release:
				default:
					close(release)
				}
			}()
			use, rebind := make(chan response, 1), make(chan response, 1)
			go func() { use <- ts.do("POST", path, strings.ReplaceAll(tc.use, "PORT", port), hA) }()
			waitQueued(t, ts.st, 1)
			go func() {
				rebind <- ts.do("PUT", "/v2.0/ports/"+port, `{"port": {"binding:profile": {"interface": "`+tc.rebind+`"}}}`, hAdmin)
			}()
			waitQueued(t, ts.st, 2)
			close(release)
			if err := <-held; err != nil {
				t.Fatal(err)
			}
			u, r := <-use, <-rebind
			if u.status != 201 {
				t.Errorf("use of the unbound port = %d %s, want 201", u.status, u.raw)
			}
			if typ, msg := neutronErr(t, r); r.status != 400 || typ != "HTTPBadRequest" || !strings.Contains(msg, tc.want) {
				t.Errorf("rebinding onto %s in the same batch = %d %s, want 400 %q", tc.rebind, r.status, r.raw, tc.want)
			}
			if p := ts.must(200, "GET", "/v2.0/ports/"+port, "", "port", hAdmin); p["binding:profile"].(map[string]any)["interface"] != nil {
				t.Errorf("refused rebinding changed the port: %v", p["binding:profile"])
			}
		})
	}
}

// waitQueued waits until n Writes are queued for st's writer.
func waitQueued(t *testing.T, st *store.Store, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); st.Queued() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d Writes queued after 10s, want %d", st.Queued(), n)
		}
	}
}

// TestLoopAtTheAPI: a port that would be both a monitor and a capture is
// refused whichever comes second; the veth cases need root and run in
// cmd/taasd's end-to-end test and broker's TestFeedsBack.
func TestLoopAtTheAPI(t *testing.T) {
	ts := startServer(t, Config{})
	p := ts.createPort("p", "veth0", "")
	q := ts.createPort("q", "veth0", "fa:16:3e:00:00:0e")
	svc := ts.createService("svc", p)
	r := ts.do("POST", "/v2.0/taas/tap_flows", jsonBody(map[string]any{"tap_flow": map[string]any{"tap_service_id": svc,
		"source_port": q, "direction": "IN"}}))
	want := "Refused: monitor interface veth0 is the capture interface itself, so copies sent out of veth0 would be captured again (a mirror loop)."
	if typ, msg := neutronErr(t, r); r.status != 400 || typ != "HTTPBadRequest" || msg != want {
		t.Errorf("flow from the monitor's interface = %d %s %q, want 400 %q", r.status, typ, msg, want)
	}
	src := ts.createPort("src", "cap0", "")
	other := ts.createPort("other", "mon0", "")
	ts.createFlow("f", ts.createService("s2", other), src, "IN", nil)
	// A monitor on the capture's own interface.
	m := ts.createPort("m", "cap0", "fa:16:3e:00:00:0f")
	r = ts.do("POST", "/v2.0/taas/tap_services", jsonBody(map[string]any{"tap_service": map[string]any{"port_id": m}}))
	if r.status != 400 || !strings.Contains(r.raw, "capture interface itself") {
		t.Errorf("service on a capture interface = %d %s, want 400 naming the loop", r.status, r.raw)
	}
	r = ts.do("PUT", "/v2.0/ports/"+other, `{"port": {"binding:profile": {"interface": "cap0"}}}`)
	if r.status != 400 || !strings.Contains(r.raw, "mirror loop") {
		t.Errorf("rebinding a monitor onto the capture = %d %s, want 400 naming the loop", r.status, r.raw)
	}
	// An unbound port may be a service's port and a flow's source; binding
	// it makes it its own loop.
	both := ts.createPort("both", "", "")
	ts.createFlow("self", ts.createService("s3", both), both, "IN", nil)
	r = ts.do("PUT", "/v2.0/ports/"+both, `{"port": {"binding:profile": {"interface": "eth5"}}}`)
	if r.status != 400 || !strings.Contains(r.raw, "monitor interface eth5 is the capture interface itself") {
		t.Errorf("binding a port that is monitor and source = %d %s, want 400 naming the loop", r.status, r.raw)
	}
}

// TestMemberVisibility: a member's stats carry no interface, and /metrics
// needs an admin token unless PublicMetrics.
func TestMemberVisibility(t *testing.T) {
	for _, tc := range []struct {
		name   string
		public bool
		want   map[string]int // caller -> status of GET /metrics
	}{
		{"admin only", false, map[string]int{"": 401, hA: 403, hAdmin: 200}},
		{"public", true, map[string]int{"": 200, hA: 200, hAdmin: 200}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			toks, err := LoadTokens(writeTokens(t, isoTokens), nil)
			if err != nil {
				t.Fatal(err)
			}
			cfg := Config{Auth: AuthToken, Tokens: toks, PublicMetrics: tc.public, DataPlane: fixedStats{}}
			ts := startServer(t, cfg)
			// The metrics route as cmd/taasd adds it, on a server of its own
			// (routes are added before Run), through app.Test.
			cfg.Store = ts.st
			srv, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			srv.MountMetrics(MetricsHandler(fixedStats{}))
			for who, status := range tc.want {
				req := httptest.NewRequest("GET", "/metrics", nil)
				if k, v, ok := strings.Cut(who, ": "); ok {
					req.Header.Set(k, v)
				}
				resp, err := srv.App().Test(req, -1)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != status {
					t.Errorf("GET /metrics as %q = %d %s, want %d", who, resp.StatusCode, body, status)
				}
				if status == 403 && !strings.Contains(string(body), `"PolicyNotAuthorized","message":"rule:get_metrics is disallowed by policy"`) {
					t.Errorf("GET /metrics as a member = %s", body)
				}
				if status == 200 && !strings.Contains(string(body), "taas_plan_version 7") {
					t.Errorf("GET /metrics as %q lacks the counters", who)
				}
			}
			if st := ts.must(200, "GET", "/v2.0/taas/stats", "", "taas_stats", hA); len(st["interfaces"].([]any)) != 0 {
				t.Errorf("member sees interfaces %v", st["interfaces"])
			}
			if st := ts.must(200, "GET", "/v2.0/taas/stats", "", "taas_stats", hAdmin); len(st["interfaces"].([]any)) != 1 {
				t.Errorf("admin sees interfaces %v, want cap0", st["interfaces"])
			}
		})
	}
}

// TestEventsScopedToProject: in token mode, B's stream carries B's events
// only, while an admin registers ports into A and B and A's services and
// flows are created and change status.
func TestEventsScopedToProject(t *testing.T) {
	ts := startIsoServer(t, Config{Heartbeat: 50 * time.Millisecond})
	streamA, streamB := openStream(t, ts, hA), openStream(t, ts, hB)
	mon := ts.createPortIn("proj-a", "a-mon", "mon0", "", hAdmin)
	src := ts.createPortIn("proj-a", "a-src", "cap0", "", hAdmin)
	svc := ts.createService("a-svc", mon, hA)
	flow := ts.createFlow("a-flow", svc, src, "IN", nil, hA)
	bMon := ts.createPortIn("proj-b", "b-mon", "mon1", "", hAdmin)
	bSvc := ts.createService("b-svc", bMon, hB)
	waitFor(t, "B's events", func() bool { return streamB.has("tap_service", bSvc, "status") })
	waitFor(t, "A's events", func() bool {
		return streamA.has("port", mon, "create") && streamA.has("tap_flow", flow, "status")
	})
	evs, _ := streamB.snapshot()
	for _, e := range evs {
		if e.ID != bMon && e.ID != bSvc {
			t.Errorf("B's stream carried %+v, of another project", e)
		}
	}
}

// TestRoleGuardOnOldBindings: bindings made before the interfaces were
// declared stay out of the data plane, ERROR with the reason, while the
// rest is realised.
func TestRoleGuardOnOldBindings(t *testing.T) {
	path := testDB(t)
	old := startServerAt(t, path, Config{})
	host := old.createService("on-a-host-netdev", old.createPort("m1", "eth9", ""))
	good := old.createService("good", old.createPort("m2", "mon0", ""))
	src := old.createPort("src", "cap0", "")
	intoHost := old.createFlow("into-host", host, src, "IN", nil)
	fromMon := old.createFlow("from-monitor", good, old.createPort("m3", "mon1", ""), "IN", nil)
	fine := old.createFlow("fine", good, src, "IN", nil)
	old.stop()

	dp := newRecorder()
	dp.ifaceUp["mon0"], dp.ifaceUp["cap0"] = true, true
	ts := startServerAt(t, path, Config{DataPlane: dp,
		Interfaces: map[string]string{"cap0": RoleCapture, "mon0": RoleMonitor, "mon1": RoleMonitor}})
	if err := ts.srv.Reconciler().Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ kind, id, status, reason string }{
		{"tap_service", host, "ERROR", "interface eth9 is not one of the appliance's declared interfaces"},
		{"tap_flow", intoHost, "ERROR", "tap service " + host + ": interface eth9 is not one of the appliance's declared interfaces"},
		{"tap_flow", fromMon, "ERROR", "interface mon1 is a monitor interface, not a capture interface"},
		{"tap_service", good, "ACTIVE", ""},
		{"tap_flow", fine, "ACTIVE", ""},
	} {
		var st store.Status
		var err error
		if tc.kind == "tap_service" {
			var s store.TapService
			s, err = ts.st.GetTapService(context.Background(), "", tc.id)
			st = store.Status{State: s.Status, Reason: s.StatusReason}
		} else {
			var f store.TapFlow
			f, err = ts.st.GetTapFlow(context.Background(), "", tc.id)
			st = store.Status{State: f.Status, Reason: f.StatusReason}
		}
		if err != nil {
			t.Fatal(err)
		}
		if st.State != tc.status || st.Reason != tc.reason {
			t.Errorf("%s %s = %s %q, want %s %q", tc.kind, tc.id, st.State, st.Reason, tc.status, tc.reason)
		}
	}
	dp.mu.Lock()
	last := dp.plans[len(dp.plans)-1]
	dp.mu.Unlock()
	if len(last.Services) != 1 || last.Services[0].ID != good || len(last.Flows) != 1 || last.Flows[0].ID != fine {
		t.Errorf("plan = %+v, want only the good service and the fine flow", last)
	}
}

// TestGeneratedMACTakenOnInterface: a generated MAC already bound to the
// interface (by a port of another network) is generated again, as one
// taken on the network is.
func TestGeneratedMACTakenOnInterface(t *testing.T) {
	const a, b = "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b"
	g := &macSeq{macs: []string{a, b}}
	ts := startServer(t, Config{newMAC: g.next})
	other := ts.must(201, "POST", "/v2.0/networks", `{"network": {"name": "other"}}`, "network")["id"].(string)
	ts.must(201, "POST", "/v2.0/ports", jsonBody(map[string]any{"port": map[string]any{"network_id": other,
		"mac_address": a, "binding:profile": map[string]any{"interface": "cap0"}}}), "port")
	g.set(a, b)
	p := ts.must(201, "POST", "/v2.0/ports", jsonBody(map[string]any{"port": map[string]any{"network_id": defaultNetwork,
		"binding:profile": map[string]any{"interface": "cap0"}}}), "port")
	if p["mac_address"] != b || g.count() != 2 {
		t.Errorf("port bound to cap0 got MAC %v after %d generations, want %s after 2", p["mac_address"], g.count(), b)
	}
}

// TestFilterIsolation: another project's member neither sees a flow's
// filter (show, list, fields=, taas/stats) nor finds the flow by it; the
// owner and the admin do.
func TestFilterIsolation(t *testing.T) {
	ts := startMirrorServer(t)
	src := ts.createPortIn("proj-a", "a-src", "cap0", "", hAdmin)
	svc := ts.createService("a-svc", ts.createPortIn("proj-a", "a-mon", "mon0", "", hAdmin), hA)
	const expr = "udp and port 5353"
	body := jsonBody(map[string]any{"tap_flow": map[string]any{"tap_service_id": svc, "source_port": src,
		"direction": "BOTH", "filter": expr}})
	flow := ts.must(201, "POST", "/v2.0/taas/tap_flows", body, "tap_flow", hA)["id"].(string)
	q := "?filter=" + url.QueryEscape(expr)
	for _, tc := range []struct {
		who  string
		want int // flows found by the filter
	}{{hA, 1}, {hAdmin, 1}, {hB, 0}, {hR, 0}} {
		if got := ts.list("/v2.0/taas/tap_flows"+q, "tap_flows", tc.who); len(got) != tc.want {
			t.Errorf("tap_flows%s as %s = %v, want %d flows", q, tc.who, got, tc.want)
		}
	}
	for _, path := range []string{"/v2.0/taas/tap_flows", "/v2.0/taas/tap_flows?fields=filter",
		"/v2.0/taas/tap_flows?fields=filter&fields=id" + strings.Replace(q, "?", "&", 1), "/v2.0/taas/stats"} {
		if r := ts.do("GET", path, "", hB); r.status != 200 || strings.Contains(r.raw, "5353") || strings.Contains(r.raw, flow) {
			t.Errorf("GET %s as B = %d %s, want nothing of A's flow", path, r.status, r.raw)
		}
	}
	if r := ts.do("GET", "/v2.0/taas/tap_flows/"+flow+"?fields=filter", "", hB); r.status != 404 || strings.Contains(r.raw, "5353") {
		t.Errorf("GET A's flow as B = %d %s, want 404", r.status, r.raw)
	}
	if got := ts.must(200, "GET", "/v2.0/taas/tap_flows/"+flow, "", "tap_flow", hA); got["filter"] != expr {
		t.Errorf("A's flow as A = %v, want filter %q", got, expr)
	}
}
