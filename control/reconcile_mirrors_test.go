package control

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/control/store"
	"github.com/taas-appliance/taas/internal/testutil"
)

// TestBuildPlanMirrors: a tap mirror reaches the plan with its port's
// interface and MAC, its type, its remote IP and a tunnel per direction in
// the order IN, OUT, BOTH, each id parsed from the raw value; one the data
// plane cannot use stays out with its status. The uplinks go as given.
func TestBuildPlanMirrors(t *testing.T) {
	dirs := func(s string) store.Directions {
		var d store.Directions
		if err := json.Unmarshal([]byte(s), &d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	ok := store.DesiredMirror{ID: "m", PortID: "p", Iface: "cap0", PortUp: true, MAC: "fa:16:3e:00:00:0a",
		Directions: dirs(`{"BOTH": 7, "OUT": "102", "IN": 101}`), RemoteIP: "2001:db8::1", MirrorType: "erspanv1"}
	for _, tc := range []struct {
		name   string
		change func(m *store.DesiredMirror)
		want   *broker.Mirror // nil: held with held
		held   broker.Status
	}{
		{"every direction", func(*store.DesiredMirror) {}, &broker.Mirror{ID: "m", PortID: "p", Iface: "cap0",
			MAC: [6]byte{0xfa, 0x16, 0x3e, 0, 0, 0x0a}, Type: broker.TunnelERSPANv1, RemoteIP: netip.MustParseAddr("2001:db8::1"),
			Tunnels: []broker.Tunnel{{Direction: broker.DirIn, ID: 101}, {Direction: broker.DirOut, ID: 102}, {Direction: broker.DirBoth, ID: 7}}}, broker.Status{}},
		{"unbound, gre, no directions", func(m *store.DesiredMirror) {
			m.Iface, m.MirrorType, m.RemoteIP, m.Directions = "", "gre", "192.0.2.1", store.Directions{}
		}, &broker.Mirror{ID: "m", PortID: "p", MAC: [6]byte{0xfa, 0x16, 0x3e, 0, 0, 0x0a}, Type: broker.TunnelGRE,
			RemoteIP: netip.MustParseAddr("192.0.2.1")}, broker.Status{}},
		{"vxlan", func(m *store.DesiredMirror) { m.MirrorType, m.Directions = "vxlan", dirs(`{"OUT": 4294967295}`) },
			&broker.Mirror{ID: "m", PortID: "p", Iface: "cap0", MAC: [6]byte{0xfa, 0x16, 0x3e, 0, 0, 0x0a}, Type: broker.TunnelVXLAN,
				RemoteIP: netip.MustParseAddr("2001:db8::1"), Tunnels: []broker.Tunnel{{Direction: broker.DirOut, ID: 1<<32 - 1}}}, broker.Status{}},
		{"port down", func(m *store.DesiredMirror) { m.PortUp = false }, nil,
			broker.Status{State: broker.StateDown, Reason: "port p is administratively down (admin_state_up is false)"}},
		{"tunnel id too large", func(m *store.DesiredMirror) { m.Directions = dirs(`{"IN": "4294967296"}`) }, nil,
			broker.Status{State: broker.StateError, Reason: `tunnel id 4294967296 of direction IN: not an integer from 0 to 4294967295`}},
		{"bad remote ip", func(m *store.DesiredMirror) { m.RemoteIP = "192.0.2.300" }, nil,
			broker.Status{State: broker.StateError, Reason: `remote_ip "192.0.2.300": ParseAddr("192.0.2.300"): IPv4 field has value >255`}},
		{"unknown type", func(m *store.DesiredMirror) { m.MirrorType = "erspanv2" }, nil,
			broker.Status{State: broker.StateError, Reason: `mirror_type "erspanv2" is not one the data plane knows`}},
		{"unknown direction", func(m *store.DesiredMirror) { m.Directions = dirs(`{"IN": 1, "in": 2}`) }, nil,
			broker.Status{State: broker.StateError, Reason: `directions {"IN":1,"in":2}: only IN, OUT and BOTH are directions`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := ok
			tc.change(&m)
			p, held := buildPlan(3, store.DesiredState{Mirrors: []store.DesiredMirror{m}}, []string{"up0", "up1"})
			if !reflect.DeepEqual(p.Uplinks, []string{"up0", "up1"}) {
				t.Errorf("plan uplinks = %v, want [up0 up1]", p.Uplinks)
			}
			if tc.want == nil {
				if len(p.Mirrors) != 0 || held.Mirrors["m"] != tc.held {
					t.Errorf("plan mirrors %+v, held %+v, want none and %+v", p.Mirrors, held.Mirrors, tc.held)
				}
				return
			}
			if len(p.Mirrors) != 1 || !reflect.DeepEqual(p.Mirrors[0], *tc.want) || len(held.Mirrors) != 0 {
				t.Errorf("plan mirrors = %+v (held %+v), want %+v", p.Mirrors, held.Mirrors, *tc.want)
			}
		})
	}
}

// TestReconcilerMirrors: tap mirrors reach the data plane with the
// declared uplinks; their statuses, which the store does not keep, are the
// reconciler's (MirrorStatuses), each change logged once; a mirror whose
// port is bound outside the declared captures is kept out, ERROR.
func TestReconcilerMirrors(t *testing.T) {
	dp := newRecorder()
	dp.ifaceUp["cap0"] = true
	var logs testutil.LogBuffer
	ts := startServer(t, Config{DataPlane: dp, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Interfaces: map[string]string{"cap0": RoleCapture, "mon0": RoleMonitor, "up0": RoleUplink, "up1": RoleUplink}})
	ctx := context.Background()
	rec := ts.srv.Reconciler()
	src := ts.createPort("src", "cap0", "fa:16:3e:00:00:0a")
	mon := ts.createPort("mon", "mon0", "")
	mirror := func(id, port, dirs string) {
		var d store.Directions
		if err := json.Unmarshal([]byte(dirs), &d); err != nil {
			t.Fatal(err)
		}
		if err := ts.st.CreateTapMirror(ctx, store.TapMirror{ID: id, ProjectID: "default", PortID: port, Directions: d,
			RemoteIP: "198.51.100.9", MirrorType: "gre"}, ""); err != nil {
			t.Fatal(err)
		}
	}
	mirror("m1", src, `{"OUT": "102", "IN": 101}`)
	// The API would refuse it (checkUse); an old or hand-made row.
	mirror("m2", mon, `{"IN": 5}`)
	pass := func() map[string]broker.Status {
		t.Helper()
		if err := rec.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		return rec.MirrorStatuses()
	}
	st := pass()
	p := dp.last()
	want := broker.Mirror{ID: "m1", PortID: src, Iface: "cap0", MAC: [6]byte{0xfa, 0x16, 0x3e, 0, 0, 0x0a}, Type: broker.TunnelGRE,
		RemoteIP: netip.MustParseAddr("198.51.100.9"), Tunnels: []broker.Tunnel{{Direction: broker.DirIn, ID: 101}, {Direction: broker.DirOut, ID: 102}}}
	if len(p.Mirrors) != 1 || !reflect.DeepEqual(p.Mirrors[0], want) {
		t.Errorf("plan mirrors = %+v, want only %+v", p.Mirrors, want)
	}
	if !reflect.DeepEqual(p.Uplinks, []string{"up0", "up1"}) {
		t.Errorf("plan uplinks = %v, want [up0 up1]", p.Uplinks)
	}
	wantSt := map[string]broker.Status{"m1": {State: broker.StateActive},
		"m2": {State: broker.StateError, Reason: "interface mon0 is a monitor interface, not a capture interface"}}
	if !reflect.DeepEqual(st, wantSt) {
		t.Errorf("MirrorStatuses = %+v, want %+v", st, wantSt)
	}
	pass()
	if n := strings.Count(logs.String(), `resource=tap_mirror name="" id=m1 old_status=DOWN status=ACTIVE`); n != 1 {
		t.Errorf("ACTIVE of m1 logged %d times over two passes, want once", n)
	}

	// The link goes down, the port goes administratively down, the
	// mirror goes.
	dp.set(func(d *recordingDataPlane) { d.ifaceUp["cap0"] = false })
	if st := pass(); st["m1"] != (broker.Status{State: broker.StateDown, Reason: "link down"}) {
		t.Errorf("m1 after link down = %+v, want DOWN link down", st["m1"])
	}
	pass()
	if n := strings.Count(logs.String(), `id=m1 old_status=ACTIVE status=DOWN reason="link down"`); n != 1 {
		t.Errorf("DOWN of m1 logged %d times over two passes, want once", n)
	}
	ts.must(200, "PUT", "/v2.0/ports/"+src, `{"port": {"admin_state_up": false}}`, "port")
	if st := pass(); st["m1"].State != broker.StateDown || !strings.Contains(st["m1"].Reason, "administratively down") {
		t.Errorf("m1 on a port administratively down = %+v", st["m1"])
	}
	if _, err := ts.st.DeleteTapMirror(ctx, "", "m1"); err != nil {
		t.Fatal(err)
	}
	if st := pass(); len(st) != 1 || len(dp.last().Mirrors) != 0 {
		t.Errorf("after deleting m1: statuses %+v, plan mirrors %+v; want m2's only and none", st, dp.last().Mirrors)
	}
}

// TestReconcilerRests: under a stream of triggers Run's passes start at
// least minRest apart, and the last trigger still gets its pass.
func TestReconcilerRests(t *testing.T) {
	ts := startServer(t, Config{})
	dp := newRecorder()
	r := newReconciler(ts.st, dp, ts.srv.log, newHub(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Now()
	go func() { defer close(done); r.Run(ctx) }()
	for range 200 { // about 200 ms of triggers, one a millisecond
		r.Trigger()
		time.Sleep(time.Millisecond)
	}
	last := dp.count()
	r.Trigger()
	waitFor(t, "a pass after the last trigger", func() bool { return dp.count() > last })
	cancel()
	<-done
	elapsed, n := time.Since(start), dp.count()
	t.Logf("%d passes in %v of triggers", n, elapsed.Round(time.Millisecond))
	if most := int(elapsed/minRest) + 1; n > most {
		t.Errorf("%d passes in %v, want at most %d (one per %v)", n, elapsed, most, minRest)
	}
}
