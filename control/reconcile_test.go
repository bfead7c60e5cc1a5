package control

import (
	"context"
	"errors"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/internal/testutil"
)

// recordingDataPlane is a test double of DataPlane: it records the plans it
// is given and reports what the test decides. A double, not the real
// broker: the broker needs root, AF_XDP and veths, and the broker engineer
// tests it end to end; here we test what control hands it and writes back.
type recordingDataPlane struct {
	NullDataPlane // live captures: none
	mu            sync.Mutex
	plans         []*broker.Plan
	// ifaceUp decides a status: services, flows and mirrors whose Iface is
	// listed here are ACTIVE, others DOWN "link down".
	ifaceUp map[string]bool
	err     error
	stats   broker.Stats
	// mirrors, when set, are the statuses Apply reports for those mirrors.
	mirrors map[string]broker.Status
	links   chan struct{}
}

func newRecorder() *recordingDataPlane {
	return &recordingDataPlane{ifaceUp: map[string]bool{}, links: make(chan struct{}, 1)}
}

func (d *recordingDataPlane) Apply(_ context.Context, p *broker.Plan) (broker.Report, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.plans = append(d.plans, p)
	if d.err != nil {
		return broker.Report{}, d.err
	}
	r := broker.Report{Version: p.Version, Services: map[string]broker.Status{}, Flows: map[string]broker.Status{},
		Mirrors: map[string]broker.Status{}}
	status := func(iface string) broker.Status {
		if d.ifaceUp[iface] {
			return broker.Status{State: broker.StateActive}
		}
		return broker.Status{State: broker.StateDown, Reason: "link down"}
	}
	for _, s := range p.Services {
		r.Services[s.ID] = status(s.Iface)
	}
	for _, f := range p.Flows {
		r.Flows[f.ID] = status(f.Iface)
	}
	for _, m := range p.Mirrors {
		r.Mirrors[m.ID] = status(m.Iface)
		if st, ok := d.mirrors[m.ID]; ok {
			r.Mirrors[m.ID] = st
		}
	}
	return r, nil
}

func (d *recordingDataPlane) Stats() broker.Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

func (d *recordingDataPlane) LinkEvents() <-chan struct{} { return d.links }

func (d *recordingDataPlane) set(fn func(d *recordingDataPlane)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fn(d)
}

func (d *recordingDataPlane) last() *broker.Plan {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.plans[len(d.plans)-1]
}

func (d *recordingDataPlane) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.plans)
}

func TestReconcilerPlanAndStatus(t *testing.T) {
	dp := newRecorder()
	dp.ifaceUp["mon0"] = true
	dp.ifaceUp["veth0"] = true
	ts := startServer(t, Config{DataPlane: dp})
	ctx := context.Background()
	src := ts.createPort("src", "veth0", "fa:16:3e:aa:bb:cc")
	unbound := ts.createPort("unbound", "", "fa:16:3e:00:00:02")
	mon := ts.createPort("mon", "mon0", "")
	svc := ts.createService("s", mon)
	fIn := ts.createFlow("in", svc, src, "IN", "10-20,30")
	fBoth := ts.createFlow("both", svc, unbound, "BOTH", nil)
	if err := ts.srv.Reconciler().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	p := dp.last()
	if len(p.Services) != 1 || p.Services[0] != (broker.Service{ID: svc, Iface: "mon0"}) {
		t.Errorf("plan services = %+v", p.Services)
	}
	want := map[string]broker.Flow{
		fIn: {ID: fIn, ServiceID: svc, SourcePortID: src, Iface: "veth0", MAC: [6]byte{0xfa, 0x16, 0x3e, 0xaa, 0xbb, 0xcc},
			Direction: broker.DirIn, VLANFilter: "10-20,30"},
		fBoth: {ID: fBoth, ServiceID: svc, SourcePortID: unbound, Iface: "", MAC: [6]byte{0xfa, 0x16, 0x3e, 0, 0, 2},
			Direction: broker.DirBoth},
	}
	if len(p.Flows) != 2 {
		t.Fatalf("plan flows = %+v, want 2", p.Flows)
	}
	for _, f := range p.Flows {
		if f != want[f.ID] {
			t.Errorf("plan flow = %+v, want %+v", f, want[f.ID])
		}
	}
	if s := ts.must(200, "GET", "/v2.0/taas/tap_services/"+svc, "", "tap_service"); s["status"] != "ACTIVE" {
		t.Errorf("service status = %v, want ACTIVE", s["status"])
	}
	if f := ts.must(200, "GET", "/v2.0/taas/tap_flows/"+fIn, "", "tap_flow"); f["status"] != "ACTIVE" {
		t.Errorf("flow in status = %v, want ACTIVE", f["status"])
	}
	if f := ts.must(200, "GET", "/v2.0/taas/tap_flows/"+fBoth, "", "tap_flow"); f["status"] != "DOWN" {
		t.Errorf("unbound flow status = %v, want DOWN", f["status"])
	}
	// The reason is in the stats extension, not on the resource.
	st := ts.must(200, "GET", "/v2.0/taas/stats", "", "taas_stats")
	for _, e := range st["tap_flows"].([]any) {
		m := e.(map[string]any)
		if m["id"] == fBoth && (m["status"] != "DOWN" || m["status_reason"] != "link down") {
			t.Errorf("stats of unbound flow = %v, want DOWN link down", m)
		}
	}

	// Link goes down: a LinkEvents value alone brings the status to DOWN.
	before := dp.count()
	dp.set(func(d *recordingDataPlane) { d.ifaceUp["mon0"] = false })
	dp.links <- struct{}{}
	waitFor(t, "service DOWN after link event", func() bool {
		return dp.count() > before && ts.must(200, "GET", "/v2.0/taas/tap_services/"+svc, "", "tap_service")["status"] == "DOWN"
	})

	// Binding a port through the API reaches the plan.
	ts.must(200, "PUT", "/v2.0/ports/"+unbound, `{"port": {"binding:profile": {"interface": "veth0"}}}`, "port")
	if err := ts.srv.Reconciler().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, f := range dp.last().Flows {
		if f.ID == fBoth && f.Iface != "veth0" {
			t.Errorf("after binding, flow iface = %q, want veth0", f.Iface)
		}
	}

	// Apply failing marks everything ERROR with the reason.
	dp.set(func(d *recordingDataPlane) { d.err = errors.New("boom") })
	if err := ts.srv.Reconciler().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if f := ts.must(200, "GET", "/v2.0/taas/tap_flows/"+fIn, "", "tap_flow"); f["status"] != "ERROR" {
		t.Errorf("flow status after Apply error = %v, want ERROR", f["status"])
	}
}

// TestReconcilerAdminDown: a port with admin_state_up false carries no
// traffic, as in Neutron: the service on it and every flow into that service
// leave the plan, so do flows sourced on it, each DOWN with the reason; the
// port back up brings them back ACTIVE.
func TestReconcilerAdminDown(t *testing.T) {
	dp := newRecorder()
	dp.ifaceUp["mon0"], dp.ifaceUp["mon1"], dp.ifaceUp["veth0"] = true, true, true
	ts := startServer(t, Config{DataPlane: dp})
	ctx := context.Background()
	src := ts.createPort("src", "veth0", "fa:16:3e:aa:bb:01")
	other := ts.createPort("other", "veth0", "fa:16:3e:aa:bb:02")
	mon := ts.createPort("mon", "mon0", "")
	mon1 := ts.createPort("mon1", "mon1", "")
	svc := ts.createService("s", mon)
	svc1 := ts.createService("s1", mon1)
	fSrc := ts.createFlow("from-src", svc1, src, "BOTH", nil)
	fOther := ts.createFlow("from-other", svc1, other, "BOTH", nil)
	fIntoSvc := ts.createFlow("into-s", svc, other, "IN", nil)

	status := func(kind, id string) (state, reason string) {
		t.Helper()
		st := ts.must(200, "GET", "/v2.0/taas/stats", "", "taas_stats")
		for _, e := range st[kind].([]any) {
			if m := e.(map[string]any); m["id"] == id {
				return m["status"].(string), m["status_reason"].(string)
			}
		}
		t.Fatalf("%s %s not in stats", kind, id)
		return "", ""
	}
	inPlan := func(id string) bool {
		p := dp.last()
		for _, s := range p.Services {
			if s.ID == id {
				return true
			}
		}
		for _, f := range p.Flows {
			if f.ID == id {
				return true
			}
		}
		return false
	}

	ts.must(200, "PUT", "/v2.0/ports/"+src, `{"port": {"admin_state_up": false}}`, "port")
	ts.must(200, "PUT", "/v2.0/ports/"+mon, `{"port": {"admin_state_up": false}}`, "port")
	if err := ts.srv.Reconciler().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ kind, id, reason string }{
		{"tap_services", svc, "port " + mon + " is administratively down (admin_state_up is false)"},
		{"tap_flows", fIntoSvc, "tap service's port " + mon + " is administratively down (admin_state_up is false)"},
		{"tap_flows", fSrc, "source port " + src + " is administratively down (admin_state_up is false)"},
	} {
		if inPlan(c.id) {
			t.Errorf("%s %s is in the plan with its port administratively down", c.kind, c.id)
		}
		if st, why := status(c.kind, c.id); st != "DOWN" || why != c.reason {
			t.Errorf("%s %s: %s %q, want DOWN %q", c.kind, c.id, st, why, c.reason)
		}
	}
	for _, id := range []string{svc1, fOther} {
		if !inPlan(id) {
			t.Errorf("%s left the plan, but none of its ports is down", id)
		}
	}
	if st, _ := status("tap_flows", fOther); st != "ACTIVE" {
		t.Errorf("flow from an enabled port: %s, want ACTIVE", st)
	}

	ts.must(200, "PUT", "/v2.0/ports/"+src, `{"port": {"admin_state_up": true}}`, "port")
	ts.must(200, "PUT", "/v2.0/ports/"+mon, `{"port": {"admin_state_up": true}}`, "port")
	if err := ts.srv.Reconciler().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ kind, id string }{{"tap_services", svc}, {"tap_flows", fIntoSvc}, {"tap_flows", fSrc}} {
		if !inPlan(c.id) {
			t.Errorf("%s %s not back in the plan with its port up", c.kind, c.id)
		}
		if st, why := status(c.kind, c.id); st != "ACTIVE" {
			t.Errorf("%s %s after admin up: %s %q, want ACTIVE", c.kind, c.id, st, why)
		}
	}
}

// TestReconcilerCoalescesAndNull: a burst of changes gives far fewer passes
// than changes, and NullDataPlane leaves everything DOWN "no data plane".
func TestReconcilerCoalescesAndNull(t *testing.T) {
	ts := startServer(t, Config{})
	mon := ts.createPort("mon", "mon0", "")
	svc := ts.createService("s", mon)
	if err := ts.srv.Reconciler().Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := ts.must(200, "GET", "/v2.0/taas/stats", "", "taas_stats")
	s := st["tap_services"].([]any)[0].(map[string]any)
	if s["id"] != svc || s["status"] != "DOWN" || s["status_reason"] != "no data plane" {
		t.Errorf("stats service = %v, want DOWN no data plane", s)
	}

	r := newReconciler(ts.st, NullDataPlane{}, ts.srv.log, newHub(), nil)
	for range 100 {
		r.Trigger()
	}
	if n := len(r.trigger); n != 1 {
		t.Errorf("100 triggers left %d pending passes, want 1", n)
	}
}

// TestReconcilerRebuildsAtStart: a server started on an existing database
// hands the data plane the whole stored state before any API call, so the
// data plane after a restart is rebuilt from the store alone.
func TestReconcilerRebuildsAtStart(t *testing.T) {
	path := testDB(t)
	first := startServerAt(t, path, Config{})
	src := first.createPort("src", "cap0", "fa:16:3e:00:00:33")
	svc := first.createService("s", first.createPort("mon", "mon0", ""))
	flow := first.createFlow("f", svc, src, "OUT", "7")
	first.stop()

	dp := newRecorder()
	startServerAt(t, path, Config{DataPlane: dp})
	waitFor(t, "the start-up pass", func() bool { return dp.count() > 0 })
	p := dp.last()
	if len(p.Services) != 1 || p.Services[0].ID != svc || len(p.Flows) != 1 || p.Flows[0].ID != flow ||
		p.Flows[0].Direction != broker.DirOut || p.Flows[0].VLANFilter != "7" || p.Flows[0].Iface != "cap0" {
		t.Errorf("start-up plan = %+v", p)
	}
}

// TestReconcilerWokenByOtherTaasd: two taasd on one PostgreSQL database
// (issue 14): a flow created through A's API reaches B's data plane
// without any request to B, woken by A's notification, and B's list
// shows it at once after (its list cache follows the other's writes).
func TestReconcilerWokenByOtherTaasd(t *testing.T) {
	dsn := testutil.StartPostgres(t)
	a := startServerAt(t, dsn, Config{Node: "a"})
	dp := newRecorder()
	b := startServerAt(t, dsn, Config{DataPlane: dp, Node: "b"})
	waitFor(t, "B's start-up pass", func() bool { return dp.count() > 0 })
	if r := b.do("GET", "/v2.0/taas/tap_flows", "", asAdmin...); r.status != 200 || strings.Contains(r.raw, `"id"`) {
		t.Fatalf("B lists %d %s, want no flows", r.status, r.raw)
	}
	src := a.createPort("src", "cap0", "fa:16:3e:00:00:34")
	svc := a.createService("s", a.createPort("mon", "mon0", ""))
	start := time.Now()
	flow := a.createFlow("f", svc, src, "BOTH", "7")
	waitFor(t, "B's plan holding A's flow", func() bool {
		p := dp.last()
		return len(p.Flows) == 1 && p.Flows[0].ID == flow
	})
	t.Logf("flow created through A in B's plan after %v", time.Since(start).Round(time.Microsecond))
	if r := b.do("GET", "/v2.0/taas/tap_flows", "", asAdmin...); r.status != 200 || !strings.Contains(r.raw, flow) {
		t.Errorf("B lists %d %s, want the flow created through A", r.status, r.raw)
	}
}

// waitFor polls cond (every 10ms, up to 20s: never a timing assertion,
// only a bound on a hang).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRestAfter: passes take at most a ninth of a core under a stream of
// triggers (issue 10), within minRest and maxRest.
func TestRestAfter(t *testing.T) {
	for _, tc := range []struct {
		pass, want time.Duration
	}{
		{0, minRest},
		{3 * time.Millisecond, minRest},
		{10 * time.Millisecond, 80 * time.Millisecond},
		{30 * time.Millisecond, 240 * time.Millisecond},
		{40 * time.Millisecond, maxRest},
		{time.Second, maxRest},
	} {
		if got := restAfter(tc.pass); got != tc.want {
			t.Errorf("restAfter(%v) = %v, want %v", tc.pass, got, tc.want)
		}
	}
}

// TestReconcilerLogsStatusChanges: every status change of a service or
// flow is logged once, when written, with resource, name, id, old and new
// status and reason: at info, at warning for ERROR; passes that change
// nothing log no change.
func TestReconcilerLogsStatusChanges(t *testing.T) {
	dp := newRecorder()
	dp.ifaceUp["mon0"] = true
	var logs testutil.LogBuffer
	ts := startServer(t, Config{DataPlane: dp, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx := context.Background()
	src := ts.createPort("src", "veth0", "fa:16:3e:aa:bb:cc")
	svc := ts.createService("web-svc", ts.createPort("mon", "mon0", ""))
	flow := ts.createFlow("web-flow", svc, src, "IN", nil)
	sync := func() {
		t.Helper()
		if err := ts.srv.Reconciler().Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sync()
	sync()
	dp.set(func(d *recordingDataPlane) { d.ifaceUp["veth0"] = true })
	sync()
	sync()
	dp.set(func(d *recordingDataPlane) { d.err = errors.New("kernel says no") })
	sync()
	out := logs.String()
	var changes []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, `msg="status changed"`) {
			changes = append(changes, l)
		}
	}
	for _, want := range []struct{ level, tail string }{
		{"INFO", `resource=tap_service name=web-svc id=` + svc + ` old_status=DOWN status=ACTIVE reason=""`},
		{"INFO", `resource=tap_flow name=web-flow id=` + flow + ` old_status=DOWN status=DOWN reason="link down"`},
		{"INFO", `resource=tap_flow name=web-flow id=` + flow + ` old_status=DOWN status=ACTIVE reason=""`},
		{"WARN", `resource=tap_flow name=web-flow id=` + flow + ` old_status=ACTIVE status=ERROR reason="apply plan `},
		{"WARN", `resource=tap_service name=web-svc id=` + svc + ` old_status=ACTIVE status=ERROR reason="apply plan `},
	} {
		n := 0
		for _, l := range changes {
			if strings.Contains(l, "level="+want.level+" ") && strings.Contains(l, want.tail) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("logged %d times, want once at %s: %s\nlog:\n%s", n, want.level, want.tail, out)
		}
	}
	// status and status_reason are attributes lists filter on.
	for _, c := range []struct{ coll, id string }{{"/v2.0/taas/tap_services", svc}, {"/v2.0/taas/tap_flows", flow}} {
		for q, want := range map[string]bool{"?status=ERROR": true, "?status=ACTIVE": false,
			"?status_reason=other": false} {
			if got := slices.Contains(ts.listIDs(c.coll+q, path.Base(c.coll)), c.id); got != want {
				t.Errorf("GET %s%s lists %s: %v, want %v", c.coll, q, c.id, got, want)
			}
		}
	}
	if n := len(changes); n != 5 {
		t.Errorf("%d status changes logged, want 5:\n%s", n, out)
	}
}
