package control

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/control/store"
)

// mirrorEntries are the tap_mirrors of a taas/stats answer, by id.
func mirrorEntries(t *testing.T, r response) map[string]map[string]any {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("GET /v2.0/taas/stats = %d %s", r.status, r.raw)
	}
	list, ok := r.body["taas_stats"].(map[string]any)["tap_mirrors"].([]any)
	if !ok {
		t.Fatalf("taas/stats has no tap_mirrors list: %s", r.raw)
	}
	out := map[string]map[string]any{}
	for _, e := range list {
		m := e.(map[string]any)
		out[m["id"].(string)] = m
	}
	return out
}

// TestStatsMirrors: taas/stats lists the tap mirrors the caller sees (a
// member its project's, an admin all) with the data plane's counters (zero
// when it reports none) and the reconciler's status and reason, which
// follow the link and the port without a restart. A member never sees the
// uplink's name, an appliance interface (issue 9). A reader sees its
// project's mirrors as a member does (it lists them, and their one status
// is here) but not the tap services and flows it may not read; a caller
// with neither role sees nothing.
func TestStatsMirrors(t *testing.T) {
	dp := newRecorder()
	dp.ifaceUp["cap0"] = true
	toks, err := LoadTokens(writeTokens(t, isoTokens+"tr proj-a reader\ntn proj-a observer\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, Config{Auth: AuthToken, Tokens: toks, DataPlane: dp,
		Interfaces: map[string]string{"cap0": RoleCapture, "mon0": RoleMonitor, "up0": RoleUplink}})
	ctx := context.Background()
	aPort := ts.createPortIn("proj-a", "a1", "cap0", "", hAdmin)
	bPort := ts.createPortIn("proj-b", "b1", "cap0", "", hAdmin)
	mA := ts.createMirror(aPort, `{"OUT": "7", "IN": 5}`, "198.51.100.7", "erspanv3", hA)
	mB := ts.createMirror(bPort, `{"IN": 9}`, "198.51.100.9", "vxlan", hB)
	// The data plane's own status for mA stays ACTIVE below: taas/stats
	// must show the reconciler's.
	dp.set(func(d *recordingDataPlane) {
		d.stats = broker.Stats{UnixNano: 42, Mirrors: []broker.MirrorStats{{ID: mA, Status: "ACTIVE", Uplink: "up0",
			EncapPackets: 5, EncapBytes: 650, TruncatedPackets: 1, Drops: map[string]uint64{"mirror_down": 2, "tx_ring_full": 0}}}}
	})
	sync := func() {
		t.Helper()
		if err := ts.srv.Reconciler().Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sync()

	member := ts.do("GET", "/v2.0/taas/stats", "", hA)
	got := mirrorEntries(t, member)
	want := map[string]any{"id": mA, "status": "ACTIVE", "status_reason": "", "encapsulated_packets": 5.0,
		"encapsulated_bytes": 650.0, "truncated_packets": 1.0, "drops": map[string]any{"mirror_down": 2.0, "tx_ring_full": 0.0}}
	if len(got) != 1 || !reflect.DeepEqual(got[mA], want) {
		t.Errorf("member's tap_mirrors = %v, want only %v", got, want)
	}
	if strings.Contains(member.raw, "up0") || strings.Contains(member.raw, `"uplink"`) {
		t.Errorf("a member sees the uplink: %s", member.raw)
	}
	svc := ts.createService("svc", ts.createPortIn("proj-a", "mon", "mon0", "", hAdmin), hA)
	flow := ts.createFlow("flow", svc, aPort, "IN", nil, hA)
	sync()
	member = ts.do("GET", "/v2.0/taas/stats", "", hA)
	reader := ts.do("GET", "/v2.0/taas/stats", "", hR)
	if reader.status != 200 || !reflect.DeepEqual(mirrorEntries(t, reader), mirrorEntries(t, member)) ||
		strings.Contains(reader.raw, svc) || strings.Contains(reader.raw, flow) || !strings.Contains(member.raw, flow) {
		t.Errorf("reader's taas/stats = %d %s, want the member's mirrors and no service or flow of %s", reader.status, reader.raw, member.raw)
	}
	const none = `{"taas_stats":{"time_unix_nano":0,"plan_version":0,"interfaces":[],"tap_services":[],"tap_flows":[],"tap_mirrors":[]}}`
	if r := ts.do("GET", "/v2.0/taas/stats", "", "X-Auth-Token: tn"); r.status != 200 || strings.TrimSpace(r.raw) != none {
		t.Errorf("taas/stats without member or reader = %d %s, want %s", r.status, r.raw, none)
	}

	admin := mirrorEntries(t, ts.do("GET", "/v2.0/taas/stats", "", hAdmin))
	if len(admin) != 2 || admin[mA]["uplink"] != "up0" || admin[mA]["encapsulated_packets"] != 5.0 {
		t.Errorf("admin's tap_mirrors = %v, want %s with uplink up0 and %s", admin, mA, mB)
	}
	wantB := map[string]any{"id": mB, "status": "ACTIVE", "status_reason": "", "encapsulated_packets": 0.0,
		"encapsulated_bytes": 0.0, "truncated_packets": 0.0, "drops": map[string]any{}}
	if !reflect.DeepEqual(admin[mB], wantB) {
		t.Errorf("a mirror the data plane does not report = %v, want %v", admin[mB], wantB)
	}
	if b := mirrorEntries(t, ts.do("GET", "/v2.0/taas/stats", "", hB)); len(b) != 1 || b[mB] == nil {
		t.Errorf("B's tap_mirrors = %v, want %s only", b, mB)
	}

	for _, tc := range []struct {
		name   string
		change func()
		status string
		reason string
	}{
		{"link down", func() { dp.set(func(d *recordingDataPlane) { d.ifaceUp["cap0"] = false }) }, "DOWN", "link down"},
		{"link up", func() { dp.set(func(d *recordingDataPlane) { d.ifaceUp["cap0"] = true }) }, "ACTIVE", ""},
		{"port administratively down", func() {
			ts.must(200, "PUT", "/v2.0/ports/"+aPort, `{"port": {"admin_state_up": false}}`, "port", hAdmin)
		}, "DOWN", "port " + aPort + " is administratively down (admin_state_up is false)"},
		{"port up", func() {
			ts.must(200, "PUT", "/v2.0/ports/"+aPort, `{"port": {"admin_state_up": true}}`, "port", hAdmin)
		},
			"ACTIVE", ""},
		// The uplink's name in a reason is the admin's too.
		{"neighbour unresolved", func() {
			dp.set(func(d *recordingDataPlane) {
				d.mirrors = map[string]broker.Status{mA: {State: broker.StateDown, Reason: "neighbour 198.51.100.1 on up0 is unresolved"}}
			})
		}, "DOWN", "neighbour 198.51.100.1 on <uplink> is unresolved"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.change()
			sync()
			e := mirrorEntries(t, ts.do("GET", "/v2.0/taas/stats", "", hA))[mA]
			if e["status"] != tc.status || e["status_reason"] != tc.reason || e["encapsulated_packets"] != 5.0 {
				t.Errorf("mirror after %s = %v, want %s %q with its counters", tc.name, e, tc.status, tc.reason)
			}
			want := strings.ReplaceAll(tc.reason, "<uplink>", "up0")
			if e := mirrorEntries(t, ts.do("GET", "/v2.0/taas/stats", "", hAdmin))[mA]; e["status_reason"] != want {
				t.Errorf("admin's mirror after %s = %v, want reason %q", tc.name, e, want)
			}
		})
	}
}

// TestStatsMirrorNotApplied: a mirror no reconciler pass has seen yet is
// DOWN with a reason, not missing and not ACTIVE.
func TestStatsMirrorNotApplied(t *testing.T) {
	ts := startServer(t, Config{})
	srv, err := New(Config{Store: ts.st, Logger: ts.srv.log})
	if err != nil {
		t.Fatal(err)
	}
	got := srv.mirrorStats([]store.TapMirror{{ID: "m"}}, nil, nil)
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	const want = `[{"id":"m","encapsulated_packets":0,"encapsulated_bytes":0,"truncated_packets":0,"drops":{},` +
		`"status":"DOWN","status_reason":"not yet handed to the data plane"}]`
	if string(b) != want {
		t.Errorf("mirrorStats before any pass = %s, want %s", b, want)
	}
}

func TestHideNames(t *testing.T) {
	names := []string{"up0", "eth0.100"}
	for _, tc := range []struct{ in, want string }{
		{"uplink up0 is down", "uplink <uplink> is down"},
		{"neighbour 198.51.100.1 on up0 is unresolved", "neighbour 198.51.100.1 on <uplink> is unresolved"},
		{"uplink up0 is down (no carrier); uplink eth0.100 is down.", "uplink <uplink> is down (no carrier); uplink <uplink> is down."},
		{"route to 192.0.2.1 leaves through up01, which is not an uplink", "route to 192.0.2.1 leaves through up01, which is not an uplink"},
		{"xup0 up0x eth0 eth0.1000", "xup0 up0x eth0 eth0.1000"},
		{"up0", "<uplink>"},
		{"", ""},
		{"grüße up0…", "grüße <uplink>…"},
	} {
		if got := hideNames(tc.in, names, "<uplink>"); got != tc.want {
			t.Errorf("hideNames(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
