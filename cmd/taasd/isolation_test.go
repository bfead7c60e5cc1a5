package main

// End-to-end tests of issue 9 with real frames: tenant isolation in token
// mode, and the loop guard on a real veth pair.

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

// TestDataplaneTenantIsolation: in token mode with declared interfaces, an
// attacker project tries every way issue 9 found into another project's
// traffic (the VM's MAC, the capture and monitor interfaces, a host
// netdev, the owner's port ids). Each is refused, and with the owner's
// flow ACTIVE, the owner's monitor receives every frame of the VM and the
// attacker's monitor none.
func TestDataplaneTenantIsolation(t *testing.T) {
	testutil.RequireRoot(t, e2eRootWhy)
	tp := newE2ETopo(t)
	p := testutil.Prefix(t)
	atkNS, atkIf := testutil.Netns(t, p+"atk"), p+"atk"
	testutil.Veth(t, atkIf, atkIf+"p", testutil.VethOpts{NetnsB: atkNS})
	atkCapture := packettest.NewCapture(t, atkNS, atkIf+"p", packettest.IsTest)

	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("tadmin ops admin\ntowner proj-a member,reader\ntatk proj-b member,reader\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fc, err := parseConfig(fmt.Sprintf("[[interfaces]]\nname = %q\nrole = \"capture\"\n"+
		"[[interfaces]]\nname = %q\nrole = \"monitor\"\n[[interfaces]]\nname = %q\nrole = \"monitor\"\n", tp.capIf, tp.monIf, atkIf))
	if err != nil {
		t.Fatal(err)
	}
	d := startXDPDaemonWith(t, config{DB: filepath.Join(dir, "taas.db"), Auth: "token", Tokens: tokens, File: fc})
	admin, owner, atk := d.as("tadmin"), d.as("towner"), d.as("tatk")

	// The admin registers the VM's port and each project's monitor port.
	const vmMAC = "fa:16:3e:00:00:0a"
	vm := admin.createPortIn(t, "proj-a", "vm-a", vmMAC, tp.capIf)
	ownerMon := admin.createPortIn(t, "proj-a", "mon-a", "fa:16:3e:00:00:a1", tp.monIf)
	atkMon := admin.createPortIn(t, "proj-b", "mon-b", "fa:16:3e:00:00:b1", atkIf)
	svc := owner.createService(t, "ids-a", ownerMon)
	// The owner's flow has a filter (issue 11), which every test frame
	// passes; the attacker must neither see it nor find the flow by it.
	const ownerFilter = "ether proto 0x88b5"
	var ownerFlow struct {
		TapFlow struct{ ID string } `json:"tap_flow"`
	}
	owner.call(t, "POST", "/v2.0/taas/tap_flows", map[string]any{"tap_flow": map[string]any{"name": "vm-a",
		"tap_service_id": svc, "source_port": vm, "direction": "BOTH", "filter": ownerFilter}}, 201, &ownerFlow)
	flow := ownerFlow.TapFlow.ID
	owner.waitStatus(t, "tap_flow", flow, "ACTIVE")
	atkSvc := atk.createService(t, "ids-b", atkMon)
	atk.waitStatus(t, "tap_service", atkSvc, "ACTIVE")

	// The attacker's attempts.
	var atkNet struct{ Network struct{ ID string } }
	atk.call(t, "POST", "/v2.0/networks", map[string]any{"network": map[string]any{"name": "b-net"}}, 201, &atkNet)
	port := func(network string, attrs map[string]any) map[string]any {
		m := map[string]any{"network_id": network}
		for k, v := range attrs {
			m[k] = v
		}
		return map[string]any{"port": m}
	}
	bind := func(iface string) map[string]any { return map[string]any{"interface": iface} }
	for _, a := range []struct {
		what   string
		d      *xdpDaemon
		method string
		path   string
		body   any
		status int
	}{
		{"the VM's MAC on the capture interface", atk, "POST", "/v2.0/ports",
			port(defaultNetwork, map[string]any{"mac_address": vmMAC, "binding:profile": bind(tp.capIf)}), 403},
		{"the VM's MAC on the shared network", atk, "POST", "/v2.0/ports", port(defaultNetwork, map[string]any{"mac_address": vmMAC}), 403},
		{"a port on the owner's monitor", atk, "POST", "/v2.0/ports", port(defaultNetwork, map[string]any{"binding:profile": bind(tp.monIf)}), 403},
		{"a port on a host netdev", atk, "POST", "/v2.0/ports", port(defaultNetwork, map[string]any{"binding:profile": bind("lo")}), 403},
		{"rebinding its monitor port onto the capture", atk, "PUT", "/v2.0/ports/" + atkMon,
			map[string]any{"port": map[string]any{"binding:profile": bind(tp.capIf)}}, 403},
		{"the owner's VM port as a source", atk, "POST", "/v2.0/taas/tap_flows", map[string]any{"tap_flow": map[string]any{
			"tap_service_id": atkSvc, "source_port": vm, "direction": "BOTH"}}, 404},
		{"the owner's monitor port for a service", atk, "POST", "/v2.0/taas/tap_services",
			map[string]any{"tap_service": map[string]any{"port_id": ownerMon}}, 404},
		{"the owner's service", atk, "GET", "/v2.0/taas/tap_services/" + svc, nil, 404},
		// Not even the admin binds outside [[interfaces]].
		{"an admin binding to a host netdev", admin, "POST", "/v2.0/ports", port(defaultNetwork, map[string]any{"binding:profile": bind("lo")}), 400},
		{"an admin binding a second port with the VM's MAC", admin, "POST", "/v2.0/ports",
			port(atkNet.Network.ID, map[string]any{"project_id": "proj-b", "mac_address": vmMAC, "binding:profile": bind(tp.capIf)}), 409},
	} {
		a.d.call(t, a.method, a.path, a.body, a.status, nil)
		t.Logf("attacker: %s: %d", a.what, a.status)
	}
	// What a member may do: a port of its own with the VM's MAC on its own
	// network, unbound, and a flow from it, which stays DOWN.
	var decoy struct{ Port struct{ ID string } }
	atk.call(t, "POST", "/v2.0/ports", port(atkNet.Network.ID, map[string]any{"name": "decoy", "mac_address": vmMAC}), 201, &decoy)
	atkFlow := atk.createFlow(t, "decoy", atkSvc, decoy.Port.ID, "BOTH", nil)
	atk.waitStatus(t, "tap_flow", atkFlow, "DOWN")

	// The VM's frames, both directions.
	hwVM, hwPeer := packettest.MustMAC(vmMAC), packettest.MustMAC("fa:16:3e:00:00:0b")
	const n = 100
	for i := uint32(1); i <= n; i++ {
		dst, src := hwPeer, hwVM
		if i%2 == 0 {
			dst, src = hwVM, hwPeer
		}
		if err := tp.inject.Send(packettest.Frame(dst, src, nil, i, 60)); err != nil {
			t.Fatal(err)
		}
	}
	tp.capture.WaitN(n, 10*time.Second)
	ownerGot := tp.capture.Quiet(200*time.Millisecond, 3*time.Second)
	atkGot := atkCapture.Quiet(500*time.Millisecond, 3*time.Second)
	t.Logf("of %d frames of the VM: owner's monitor %d, attacker's monitor %d", n, len(ownerGot), len(atkGot))
	if len(ownerGot) != n {
		t.Errorf("owner's monitor received %d frames, want %d", len(ownerGot), n)
	}
	if len(atkGot) != 0 {
		t.Errorf("attacker's monitor received %d frames (%v), want 0", len(atkGot), seqsOf(atkGot))
	}

	// What the attacker sees of it: its own resources, no interface.
	var st taasStats
	atk.call(t, "GET", "/v2.0/taas/stats", nil, 200, &st)
	if len(st.TaasStats.Interfaces) != 0 {
		t.Errorf("attacker's taas_stats names interfaces %v", st.TaasStats.Interfaces)
	}
	for _, s := range st.TaasStats.TapServices {
		if s.ID != atkSvc {
			t.Errorf("attacker's taas_stats has tap service %s", s.ID)
		}
	}
	for _, f := range st.TaasStats.TapFlows {
		if f.ID != atkFlow || f.MatchedPackets != 0 {
			t.Errorf("attacker's taas_stats has tap flow %+v", f)
		}
	}
	for who, c := range map[string]*xdpDaemon{"attacker": atk, "owner": owner} {
		var found struct {
			TapFlows []struct{ ID string } `json:"tap_flows"`
		}
		c.call(t, "GET", "/v2.0/taas/tap_flows?filter="+url.QueryEscape(ownerFilter), nil, 200, &found)
		if want := map[string]int{"attacker": 0, "owner": 1}[who]; len(found.TapFlows) != want {
			t.Errorf("%s's tap_flows?filter=%q = %+v, want %d", who, ownerFilter, found.TapFlows, want)
		}
	}
	for tok, want := range map[string]int{"": 401, "tatk": 403, "towner": 403, "tadmin": 200} {
		req, _ := http.NewRequest("GET", d.url+"/metrics", nil)
		if tok != "" {
			req.Header.Set("X-Auth-Token", tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET /metrics with token %q = %d, want %d", tok, resp.StatusCode, want)
		}
	}
}

// TestDataplaneLoopGuard: the API refuses a monitor that is the veth peer
// of a capture; when the pair appears only after the API call, the data
// plane refuses it at plan time (ERROR with the reason), and one injected
// frame stays one frame.
func TestDataplaneLoopGuard(t *testing.T) {
	testutil.RequireRoot(t, e2eRootWhy)
	p := testutil.Prefix(t)
	d := startXDPDaemon(t, filepath.Join(t.TempDir(), "taas.db"))
	const vmMAC = "fa:16:3e:00:00:0a"

	// At the API: the pair exists.
	xa, xb := p+"xa", p+"xb"
	testutil.Veth(t, xa, xb, testutil.VethOpts{})
	src := d.createPort(t, "src-x", vmMAC, xa)
	svc := d.createService(t, "svc-x", d.createPort(t, "mon-x", "fa:16:3e:00:00:0b", xb))
	var out map[string]map[string]string
	d.call(t, "POST", "/v2.0/taas/tap_flows", map[string]any{"tap_flow": map[string]any{"tap_service_id": svc,
		"source_port": src, "direction": "OUT"}}, 400, &out)
	want := fmt.Sprintf("monitor interface %s is the veth peer of capture interface %s", xb, xa)
	if msg := out["NeutronError"]["message"]; !strings.Contains(msg, want) {
		t.Errorf("flow into the capture's veth peer: %q, want it to say %q", msg, want)
	}

	// At plan time: the pair appears after the API accepted the flow.
	la, lb := p+"la", p+"lb"
	lsrc := d.createPort(t, "src-l", "fa:16:3e:00:00:1a", la)
	lsvc := d.createService(t, "svc-l", d.createPort(t, "mon-l", "fa:16:3e:00:00:1b", lb))
	lflow := d.createFlow(t, "flow-l", lsvc, lsrc, "OUT", nil)
	d.waitStatus(t, "tap_flow", lflow, "DOWN")
	testutil.Veth(t, la, lb, testutil.VethOpts{})
	d.waitStatus(t, "tap_service", lsvc, "ERROR")
	d.waitStatus(t, "tap_flow", lflow, "ERROR")
	wantReason := fmt.Sprintf("loop refused: monitor interface %s is the veth peer of capture interface %s", lb, la)
	reason := ""
	for _, s := range d.stats(t).TaasStats.TapServices {
		if s.ID == lsvc {
			reason = s.StatusReason
		}
	}
	if reason != wantReason {
		t.Errorf("tap service %s: status_reason %q, want %q", lsvc, reason, wantReason)
	}

	// One frame of the source into the capture, from its peer.
	got := injectOne(t, lb, la, "fa:16:3e:00:00:1a")
	t.Logf("one injected frame: %s received %d frames in 1 s (the unguarded loop made about 2.9 M/s)", la, got)
	// The frame itself, and the odd IPv6 neighbour or MLD frame the kernel
	// sends on a new link; a loop makes millions.
	if got < 1 || got > 50 {
		t.Errorf("%s received %d frames after one injected frame, want 1 (and the kernel's few)", la, got)
	}
}

// injectOne sends one frame from srcMAC out of peer, the veth peer of
// capture, and returns how many frames capture receives in the next
// second; then it deletes the pair, which bounds the traffic even if a
// loop guard failed.
func injectOne(t *testing.T, peer, capture, srcMAC string) uint64 {
	t.Helper()
	testutil.WaitOperUp(t, "", peer)
	before := rxPackets(t, capture)
	inj := packettest.NewInjector(t, "", peer)
	if err := inj.Send(packettest.Frame(packettest.MustMAC("fa:16:3e:00:00:99"), packettest.MustMAC(srcMAC), nil, 1, 60)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	got := rxPackets(t, capture) - before
	testutil.Run(t, "ip", "link", "del", capture)
	return got
}

// rxPackets is the kernel's rx_packets counter of a netdev of this
// namespace.
func rxPackets(t *testing.T, ifname string) uint64 {
	t.Helper()
	b, err := os.ReadFile("/sys/class/net/" + ifname + "/statistics/rx_packets")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDataplaneLoopGuardEnslaved checks the loop guard when a loop closes
// after the plan, with no link appearing or going down: the peers of the
// capture and of the monitor veth become ports of one bridge. Enslaving a
// link changes its master only, which the link watch did not follow, so
// the monitor stayed open on a loop.
func TestDataplaneLoopGuardEnslaved(t *testing.T) {
	testutil.RequireRoot(t, e2eRootWhy)
	p := testutil.Prefix(t)
	d := startXDPDaemon(t, filepath.Join(t.TempDir(), "taas.db"))
	ca, cb, ma, mb, br := p+"ca", p+"cb", p+"ma", p+"mb", p+"br"
	testutil.Veth(t, ca, cb, testutil.VethOpts{})
	testutil.Veth(t, ma, mb, testutil.VethOpts{})
	testutil.Run(t, "ip", "link", "add", br, "type", "bridge")
	t.Cleanup(func() { testutil.Run(t, "ip", "link", "del", br) })
	testutil.Run(t, "ip", "link", "set", br, "up")
	const vmMAC = "fa:16:3e:00:00:2a"
	src := d.createPort(t, "src-e", vmMAC, ca)
	svc := d.createService(t, "svc-e", d.createPort(t, "mon-e", "fa:16:3e:00:00:2b", ma))
	flow := d.createFlow(t, "flow-e", svc, src, "OUT", nil)
	d.waitStatus(t, "tap_service", svc, "ACTIVE")

	testutil.Run(t, "ip", "link", "set", cb, "master", br)
	testutil.Run(t, "ip", "link", "set", mb, "master", br)
	d.waitStatus(t, "tap_service", svc, "ERROR")
	d.waitStatus(t, "tap_flow", flow, "ERROR")

	// One frame of the source into the capture, from its peer.
	got := injectOne(t, cb, ca, vmMAC)
	t.Logf("one injected frame: %s received %d frames in 1 s", ca, got)
	if got < 1 || got > 50 {
		t.Errorf("%s received %d frames after one injected frame, want 1 (and the kernel's few)", ca, got)
	}
}
