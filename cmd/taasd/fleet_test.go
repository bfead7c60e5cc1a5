package main

// Issue 14's fleet end to end: three taasd binaries (nodes a, b and c,
// each --dataplane xdp) on one PostgreSQL database, each realising the
// ports bound to it (binding:host_id) on veth pairs of its own; frames
// injected on a capture reach its node's monitor; kill -9 of a node shows
// its resources DOWN through the others' APIs, and its restart brings
// them back.

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

// nodePort creates, through d, a port bound to iface on node.
func (d *xdpDaemon) nodePort(t *testing.T, name, mac, iface, node string) string {
	t.Helper()
	var out struct{ Port struct{ ID string } }
	d.call(t, "POST", "/v2.0/ports", map[string]any{"port": map[string]any{"name": name, "network_id": defaultNetwork,
		"mac_address": mac, "binding:host_id": node, "binding:profile": map[string]string{"interface": iface}}}, 201, &out)
	return out.Port.ID
}

// waitFlow polls the tap flow id through d until its status is want and
// its reason holds reason, and returns how long that took.
func (d *xdpDaemon) waitFlow(t *testing.T, id, want, reason string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var got, why string
	for time.Since(start) < within {
		var out struct {
			TapFlow struct {
				Status       string `json:"status"`
				StatusReason string `json:"status_reason"`
			} `json:"tap_flow"`
		}
		d.call(t, "GET", "/v2.0/taas/tap_flows/"+id, nil, 200, &out)
		got, why = out.TapFlow.Status, out.TapFlow.StatusReason
		if got == want && strings.Contains(why, reason) {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: tap flow %s is %s %q after %v, want %s %q", d.url, id, got, why, within, want, reason)
	return 0
}

// sendFrames injects n test frames from src (seq from first) at tp's
// capture and waits until tp's monitor has them all.
func (tp e2eTopo) sendFrames(t *testing.T, src, dst net.HardwareAddr, first uint32, n int) {
	t.Helper()
	tp.capture.Reset()
	for i := range n {
		if err := tp.inject.Send(packettest.Frame(dst, src, nil, first+uint32(i), 64)); err != nil {
			t.Fatal(err)
		}
	}
	tp.capture.WaitN(n, 10*time.Second)
}

func TestFleet(t *testing.T) {
	testutil.RequireRoot(t, e2eRootWhy)
	db := testutil.StartPostgresCluster(t).CreateDB(t)
	bin := testutil.BuildTaasd(t)
	topoA, topoB := newE2ETopo(t), newE2ETopo(t)
	const timeout = 3 * time.Second
	start := func(node string) (*testutil.Taasd, *xdpDaemon) {
		d := testutil.StartTaasd(t, bin, "--db", db, "--node", node, "--node-timeout", "3", "--dataplane", "xdp",
			"--pin-dir", "", "--log-level", "debug")
		return d, &xdpDaemon{url: d.URL}
	}
	_, apiA := start("a")
	b, apiB := start("b")
	_, apiC := start("c")

	// A second taasd under a live node's name refuses to start.
	second := exec.Command(bin, "--db", db, "--node", "b", "--listen", testutil.FreeLoopbackAddr(t))
	second.WaitDelay = 30 * time.Second
	if out, err := second.CombinedOutput(); err == nil || !strings.Contains(string(out), "node b is in use: another taasd") {
		t.Errorf("a second taasd --node b = %v:\n%s", err, out)
	}

	vmA, vmB, peer := "fa:16:3e:00:01:0a", "fa:16:3e:00:01:0b", "fa:16:3e:00:01:99"
	hwA, hwB, hwPeer := packettest.MustMAC(vmA), packettest.MustMAC(vmB), packettest.MustMAC(peer)
	// Everything through node a's API.
	srcB := apiA.nodePort(t, "vm-b", vmB, topoB.capIf, "b")
	monB := apiA.nodePort(t, "mon-b", "fa:16:3e:00:01:9b", topoB.monIf, "b")
	srcA := apiA.nodePort(t, "vm-a", vmA, topoA.capIf, "a")
	monA := apiA.nodePort(t, "mon-a", "fa:16:3e:00:01:9a", topoA.monIf, "a")
	created := time.Now()
	flowB := apiA.createFlow(t, "flow-b", apiA.createService(t, "svc-b", monB), srcB, "BOTH", nil)
	apiC.waitFlow(t, flowB, "ACTIVE", "", 20*time.Second)
	t.Logf("flow on node b created through a: ACTIVE through c %v after the create's request", time.Since(created).Round(time.Millisecond))
	svcA := apiA.createService(t, "svc-a", monA)
	flowA := apiA.createFlow(t, "flow-a", svcA, srcA, "BOTH", nil)
	apiB.waitFlow(t, flowA, "ACTIVE", "", 20*time.Second)
	// A flow across two nodes is DOWN, naming both.
	cross := apiC.createFlow(t, "cross", svcA, srcB, "BOTH", nil)
	apiA.waitFlow(t, cross, "DOWN", "source port "+srcB+" is on node b and tap service "+svcA+"'s port on node a", 20*time.Second)

	topoB.sendFrames(t, hwB, hwPeer, 1, 3)
	topoA.sendFrames(t, hwA, hwPeer, 11, 3)
	// Node b's counters through node c's taas/stats, with the node.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var st struct {
			TaasStats struct {
				Node  string `json:"node"`
				Flows []struct {
					ID      string `json:"id"`
					Node    string `json:"node"`
					Matched uint64 `json:"matched_packets"`
				} `json:"tap_flows"`
			} `json:"taas_stats"`
		}
		apiC.call(t, "GET", "/v2.0/taas/stats", nil, 200, &st)
		ok := st.TaasStats.Node == "c"
		for _, f := range st.TaasStats.Flows {
			if f.ID == flowB {
				ok = ok && f.Node == "b" && f.Matched >= 3
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node c's taas/stats = %+v, want flow-b's 3 matched frames on node b", st)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// kill -9 node b: its flow goes DOWN through a and c, a's stays
	// ACTIVE and keeps delivering.
	b.Kill(t)
	killed := time.Now()
	took := apiA.waitFlow(t, flowB, "DOWN", "node b not seen since ", timeout+5*time.Second)
	t.Logf("node b killed: its flow DOWN through a after %v (node timeout %v, heartbeat 1s)", took.Round(time.Millisecond), timeout)
	apiC.waitFlow(t, flowB, "DOWN", "node b not seen since ", 5*time.Second)
	apiC.waitFlow(t, flowA, "ACTIVE", "", time.Second)
	topoA.sendFrames(t, hwA, hwPeer, 21, 3)

	// Restarted, node b takes its plan and its flow is ACTIVE again.
	b.Restart(t)
	took = apiA.waitFlow(t, flowB, "ACTIVE", "", 20*time.Second)
	t.Logf("node b restarted %v after the kill: its flow ACTIVE through a %v after it answered",
		time.Since(killed).Round(time.Millisecond), took.Round(time.Millisecond))
	topoB.sendFrames(t, hwB, hwPeer, 31, 3)
}
