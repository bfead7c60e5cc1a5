package control

import (
	"context"
	"fmt"
	"path"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/taas-appliance/taas/control/store"
)

// listIDs lists path and returns the ids, sorted, of the list under key.
func (ts *testServer) listIDs(path, key string, headers ...string) []string {
	ts.t.Helper()
	var ids []string
	for _, it := range ts.list(path, key, headers...) {
		if id, ok := it["id"].(string); ok {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// findIn returns the item of a list with id, or nil.
func findIn(items []map[string]any, id string) map[string]any {
	for _, it := range items {
		if it["id"] == id {
			return it
		}
	}
	return nil
}

// TestListCacheNeverStale: a list sent after a write was answered shows
// the write, whatever was listed (and cached) just before it: API writes
// of every collection, cascades, the reconciler's status writes and a
// write through the store (issue 10).
func TestListCacheNeverStale(t *testing.T) {
	dp := newRecorder()
	ts := startServer(t, Config{DataPlane: dp})
	ctx := context.Background()
	src := ts.createPort("src", "cap0", "")
	mon := ts.createPort("mon", "mon0", "")
	svc := ts.createService("s", mon)
	const flows, ports, services = "/v2.0/taas/tap_flows", "/v2.0/ports", "/v2.0/taas/tap_services"
	var flow string
	syncNow := func() {
		if err := ts.srv.Reconciler().Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	flowStatus := func(want string) func() error {
		return func() error {
			if f := findIn(ts.list(flows, "tap_flows"), flow); f == nil || f["status"] != want {
				return fmt.Errorf("flow %v, want status %s", f, want)
			}
			return nil
		}
	}
	tests := []struct {
		name  string
		list  string // listed (and so cached) before the write
		write func()
		check func() error
	}{
		{"create flow", flows, func() { flow = ts.createFlow("f", svc, src, "IN", nil) }, func() error {
			if findIn(ts.list(flows, "tap_flows"), flow) == nil {
				return fmt.Errorf("new flow %s missing", flow)
			}
			return nil
		}},
		{"status DOWN", flows, func() { dp.set(func(d *recordingDataPlane) { d.ifaceUp["cap0"] = false }); syncNow() },
			flowStatus("DOWN")},
		{"status ACTIVE", flows, func() {
			dp.set(func(d *recordingDataPlane) { d.ifaceUp["cap0"], d.ifaceUp["mon0"] = true, true })
			syncNow()
		}, flowStatus("ACTIVE")},
		{"status through the store", flows, func() {
			if err := ts.st.SetStatuses(ctx, nil, map[string]store.Status{flow: {State: "ERROR", Reason: "x"}}, nil); err != nil {
				t.Fatal(err)
			}
		}, flowStatus("ERROR")},
		{"update flow", flows, func() {
			ts.must(200, "PUT", flows+"/"+flow, `{"tap_flow": {"name": "renamed"}}`, "")
		}, func() error {
			if f := findIn(ts.list(flows, "tap_flows"), flow); f == nil || f["name"] != "renamed" {
				return fmt.Errorf("flow %v, want name renamed", f)
			}
			return nil
		}},
		{"update port", ports, func() {
			ts.must(200, "PUT", ports+"/"+src, `{"port": {"admin_state_up": false}}`, "")
		}, func() error {
			if p := findIn(ts.list(ports, "ports"), src); p == nil || p["admin_state_up"] != false || p["status"] != "DOWN" {
				return fmt.Errorf("port %v, want admin_state_up false, DOWN", p)
			}
			return nil
		}},
		{"delete flow", flows, func() { ts.must(204, "DELETE", flows+"/"+flow, "", "") }, func() error {
			if ids := ts.listIDs(flows, "tap_flows"); len(ids) != 0 {
				return fmt.Errorf("flows %v after delete", ids)
			}
			return nil
		}},
		{"delete port cascades", services, func() { ts.must(204, "DELETE", ports+"/"+mon, "", "") }, func() error {
			if ids := ts.listIDs(services, "tap_services"); len(ids) != 0 {
				return fmt.Errorf("services %v after their port's delete", ids)
			}
			return nil
		}},
		{"create network", "/v2.0/networks", func() {
			ts.must(201, "POST", "/v2.0/networks", `{"network": {"name": "n2"}}`, "")
		}, func() error {
			if n := len(ts.list("/v2.0/networks", "networks")); n != 2 {
				return fmt.Errorf("%d networks, want 2", n)
			}
			return nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts.list(tc.list, path.Base(tc.list))
			tc.write()
			if err := tc.check(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestListCacheConcurrentWrites: while 8 clients keep the flow list hot,
// every flow created is in the first list sent after its 201.
func TestListCacheConcurrentWrites(t *testing.T) {
	ts := startServer(t, Config{})
	src := ts.createPort("src", "cap0", "")
	svc := ts.createService("s", ts.createPort("mon", "mon0", ""))
	var (
		stop  atomic.Bool
		wg    sync.WaitGroup
		lists atomic.Int64
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Bounded: the writer below stops them after its 30 creates.
			for n := 0; n < 10000 && !stop.Load(); n++ {
				ts.do("GET", "/v2.0/taas/tap_flows", "")
				lists.Add(1)
			}
		}()
	}
	for i := range 30 {
		id := ts.createFlow(fmt.Sprint("f", i), svc, src, "BOTH", nil)
		if !slices.Contains(ts.listIDs("/v2.0/taas/tap_flows", "tap_flows"), id) {
			t.Errorf("flow %d (%s) missing from the list after its create", i, id)
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d lists ran alongside 30 creates", lists.Load())
}

// TestListCacheIsolation: in token mode, whoever listed first, a caller's
// list (with fields, filters, paging or sorting) holds only what its
// project and roles may see: members of two projects, a reader of one and
// the admin list each collection in turn, in both orders (hR is the
// reader of startMirrorServer).
func TestListCacheIsolation(t *testing.T) {
	ts := startMirrorServer(t)
	type owned struct{ ports, services, flows, mirrors []string }
	mine := map[string]*owned{}
	for _, p := range []struct{ project, who, capIf, monIf, tunnel string }{
		{"proj-a", hA, "cap0", "mon0", "1"}, {"proj-b", hB, "cap1", "mon0", "2"},
	} {
		o := &owned{}
		src := ts.createPortIn(p.project, p.project+"-src", p.capIf, "", hAdmin)
		mon := ts.createPortIn(p.project, p.project+"-mon", p.monIf, "", hAdmin)
		svc := ts.createService(p.project+"-s", mon, p.who)
		o.ports, o.services = []string{src, mon}, []string{svc}
		for i := range 3 {
			o.flows = append(o.flows, ts.createFlow(fmt.Sprint(p.project, "-f", i), svc, src, "IN", nil, p.who))
		}
		o.mirrors = []string{ts.createMirror(src, `{"IN": `+p.tunnel+`}`, "192.0.2.1", "gre", p.who)}
		mine[p.project] = o
	}
	a, b := mine["proj-a"], mine["proj-b"]
	union := func(x, y []string) []string { return append(slices.Clone(x), y...) }
	type caller struct {
		name, header string
		// sees: the ids of each collection this caller may list.
		flows, services, ports, mirrors []string
	}
	callers := []caller{
		{"member a", hA, a.flows, a.services, a.ports, a.mirrors},
		{"member b", hB, b.flows, b.services, b.ports, b.mirrors},
		{"reader a", hR, nil, nil, a.ports, a.mirrors},
		{"admin", hAdmin, union(a.flows, b.flows), union(a.services, b.services), union(a.ports, b.ports),
			union(a.mirrors, b.mirrors)},
	}
	queries := []string{"", "?fields=id&fields=name", "?fields=name&fields=id&limit=2", "?project_id=proj-a",
		"?project_id=proj-b&fields=id", "?limit=1", "?limit=2&marker=" + a.flows[0], "?limit=2&marker=" + b.flows[0],
		"?limit=2&marker=" + a.ports[0] + "&page_reverse=True", "?name=proj-a-f1", "?status=DOWN"}
	for _, coll := range []struct {
		path, key string
		sees      func(c caller) []string
	}{
		{"/v2.0/taas/tap_flows", "tap_flows", func(c caller) []string { return c.flows }},
		{"/v2.0/taas/tap_services", "tap_services", func(c caller) []string { return c.services }},
		{"/v2.0/ports", "ports", func(c caller) []string { return c.ports }},
		{"/v2.0/taas/tap_mirrors", "tap_mirrors", func(c caller) []string { return c.mirrors }},
	} {
		for _, q := range queries {
			for _, order := range [][]caller{callers, reversed(callers)} {
				for _, c := range order {
					t.Run(coll.key+q+" as "+c.name, func(t *testing.T) {
						for _, id := range ts.listIDs(coll.path+q, coll.key, c.header) {
							if !slices.Contains(coll.sees(c), id) {
								t.Errorf("GET %s%s as %s lists %s, which it may not see", coll.path, q, c.name, id)
							}
						}
					})
				}
			}
		}
		// And without a query, each caller gets exactly its rows.
		for _, c := range callers {
			want := slices.Clone(coll.sees(c))
			sort.Strings(want)
			if got := ts.listIDs(coll.path, coll.key, c.header); !slices.Equal(got, want) {
				t.Errorf("GET %s as %s = %v, want %v", coll.path, c.name, got, want)
			}
		}
	}
}

func reversed[T any](s []T) []T {
	r := slices.Clone(s)
	slices.Reverse(r)
	return r
}
