package main

// Issue 14's fleet end to end: three taasd binaries (nodes a, b and c,
// each --dataplane xdp) on one PostgreSQL database, each in a network
// namespace of its own, as on a machine of its own, with the same
// declared interfaces cap0 and mon0 (veth pairs to namespaces that inject
// and capture frames); everything is created through node a's API and
// checked against the node each port is on; frames injected on a
// capture reach its node's monitor; kill -9 of a node shows its
// resources DOWN through the others' APIs while the others' flows lose
// nothing, and its restart brings them back.

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

// nodePort creates, through d, a port on network bound to iface on node.
func (d *xdpDaemon) nodePort(t *testing.T, network, name, mac, iface, node string) string {
	t.Helper()
	var out struct{ Port struct{ ID string } }
	d.call(t, "POST", "/v2.0/ports", map[string]any{"port": map[string]any{"name": name, "network_id": network,
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
// capture and checks that tp's monitor gets them all.
func (tp e2eTopo) sendFrames(t *testing.T, src, dst net.HardwareAddr, first uint32, n int) {
	t.Helper()
	tp.capture.Reset()
	for i := range n {
		if err := tp.inject.Send(packettest.Frame(dst, src, nil, first+uint32(i), 64)); err != nil {
			t.Fatal(err)
		}
	}
	if got := tp.capture.WaitN(n, 10*time.Second); len(got) != n {
		t.Fatalf("%d of %d frames (seq %d on) reached the monitor", len(got), n, first)
	}
}

// fleetNodeConf declares every fleet node's interfaces: the same names on
// each, as on machines cabled alike.
const fleetNodeConf = `
[[interfaces]]
name = "cap0"
role = "capture"

[[interfaces]]
name = "mon0"
role = "monitor"
`

// newNodeTopo makes node's namespace, as a machine of its own, with its
// capture cap0 (frames injected from a namespace behind it) and its
// monitor mon0 (captured in a namespace behind it).
func newNodeTopo(t *testing.T, node string) (string, e2eTopo) {
	t.Helper()
	p := testutil.Prefix(t) + node
	ns, span, monNS := testutil.Netns(t, p), testutil.Netns(t, p+"span"), testutil.Netns(t, p+"mon")
	tp := e2eTopo{monNS: monNS, capIf: "cap0", monIf: "mon0"}
	testutil.Veth(t, "cap0", "cap0p", testutil.VethOpts{NetnsA: ns, NetnsB: span})
	testutil.Veth(t, "mon0", "mon0p", testutil.VethOpts{NetnsA: ns, NetnsB: monNS})
	tp.inject = packettest.NewInjector(t, span, "cap0p")
	testutil.WaitOperUp(t, span, "cap0p")
	tp.capture = packettest.NewCapture(t, monNS, "mon0p", packettest.IsTest)
	return ns, tp
}

func TestFleet(t *testing.T) {
	testutil.RequireRoot(t, e2eRootWhy)
	db := testutil.StartPostgresCluster(t).CreateDB(t)
	bin := testutil.BuildTaasd(t)
	conf := filepath.Join(t.TempDir(), "taasd.toml")
	if err := os.WriteFile(conf, []byte(fleetNodeConf), 0o600); err != nil {
		t.Fatal(err)
	}
	const timeout = 3 * time.Second
	topo := map[string]e2eTopo{}
	// Node c names the database in libpq's keyword form: a fleet node as
	// well (it was taken for a single appliance, which heartbeats not).
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	dbs := map[string]string{"a": db, "b": db, "c": fmt.Sprintf("host=%s user=%s sslmode=disable dbname=%s",
		u.Query().Get("host"), u.Query().Get("user"), strings.TrimPrefix(u.Path, "/"))}
	start := func(node string) (*testutil.Taasd, *xdpDaemon) {
		ns, tp := newNodeTopo(t, node)
		topo[node] = tp
		d := testutil.StartTaasdIn(t, ns, bin, "--config", conf, "--db", dbs[node], "--node", node, "--node-timeout", "3",
			"--dataplane", "xdp", "--pin-dir", "", "--log-level", "debug")
		return d, &xdpDaemon{url: d.URL, client: d.Client()}
	}
	_, apiA := start("a")
	b, apiB := start("b")
	_, apiC := start("c")
	apis := map[string]*xdpDaemon{"a": apiA, "b": apiB, "c": apiC}

	// A second taasd under a live node's name refuses to start.
	second := exec.Command(bin, "--db", db, "--node", "b", "--listen", testutil.FreeLoopbackAddr(t))
	second.WaitDelay = 30 * time.Second
	if out, err := second.CombinedOutput(); err == nil || !strings.Contains(string(out), "node b is in use: another taasd") {
		t.Errorf("a second taasd --node b = %v:\n%s", err, out)
	}

	// Everything through node a's API. b's and c's VMs have one MAC,
	// each on the cap0 of its own node (two networks: a MAC is unique on
	// a network).
	vm, peer := "fa:16:3e:00:01:0b", "fa:16:3e:00:01:99"
	hwVM, hwPeer := packettest.MustMAC(vm), packettest.MustMAC(peer)
	var net2 struct{ Network struct{ ID string } }
	apiA.call(t, "POST", "/v2.0/networks", map[string]any{"network": map[string]any{"name": "rack-c"}}, 201, &net2)
	srcB := apiA.nodePort(t, defaultNetwork, "vm-b", vm, "cap0", "b")
	monB := apiA.nodePort(t, defaultNetwork, "mon-b", "fa:16:3e:00:01:9b", "mon0", "b")
	srcC := apiA.nodePort(t, net2.Network.ID, "vm-c", vm, "cap0", "c")
	monC := apiA.nodePort(t, net2.Network.ID, "mon-c", "fa:16:3e:00:01:9c", "mon0", "c")
	// b's own bindings are checked against b's interfaces, not a's.
	apiA.call(t, "POST", "/v2.0/ports", map[string]any{"port": map[string]any{"network_id": defaultNetwork,
		"binding:host_id": "b", "binding:profile": map[string]string{"interface": "eth9"}}}, 400, nil)
	created := time.Now()
	flowB := apiA.createFlow(t, "flow-b", apiA.createService(t, "svc-b", monB), srcB, "BOTH", nil)
	svcC := apiA.createService(t, "svc-c", monC)
	flowC := apiA.createFlow(t, "flow-c", svcC, srcC, "BOTH", nil)
	apiC.waitFlow(t, flowB, "ACTIVE", "", 20*time.Second)
	t.Logf("flow on node b created through a: ACTIVE through c %v after the create's request", time.Since(created).Round(time.Millisecond))
	for _, api := range apis {
		api.waitFlow(t, flowB, "ACTIVE", "", 20*time.Second)
		api.waitFlow(t, flowC, "ACTIVE", "", 20*time.Second)
	}
	// A flow across two nodes is DOWN, naming both.
	cross := apiC.createFlow(t, "cross", svcC, srcB, "BOTH", nil)
	apiA.waitFlow(t, cross, "DOWN", "source port "+srcB+" is on node b and tap service "+svcC+"'s port on node c", 20*time.Second)

	topo["b"].sendFrames(t, hwVM, hwPeer, 1, 3)
	topo["c"].sendFrames(t, hwVM, hwPeer, 11, 3)
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

	// kill -9 node b: its flow goes DOWN through a and c, c's stays ACTIVE
	// and loses no frame meanwhile (one every 10 ms, at most 2000).
	tc := topo["c"]
	tc.capture.Reset()
	sending, sent := make(chan struct{}), make(chan int, 1)
	go func() {
		n := 0
		defer func() { sent <- n }()
		for ; n < 2000; n++ {
			select {
			case <-sending:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if err := tc.inject.Send(packettest.Frame(hwPeer, hwVM, nil, 1000+uint32(n), 64)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	b.Kill(t)
	killed := time.Now()
	took := apiA.waitFlow(t, flowB, "DOWN", "node b not seen since ", timeout+5*time.Second)
	t.Logf("node b killed: its flow DOWN through a after %v (node timeout %v, heartbeat 1s)", took.Round(time.Millisecond), timeout)
	apiC.waitFlow(t, flowB, "DOWN", "node b not seen since ", 5*time.Second)
	apiA.waitFlow(t, flowC, "ACTIVE", "", time.Second)
	close(sending)
	n := <-sent
	if got := tc.capture.WaitN(n, 10*time.Second); len(got) != n {
		t.Errorf("node c's monitor got %d of the %d frames sent while node b died", len(got), n)
	}
	t.Logf("node c delivered %d frames while node b died and was judged gone", n)

	// Restarted, node b takes its plan and its flow is ACTIVE again.
	b.Restart(t)
	took = apiA.waitFlow(t, flowB, "ACTIVE", "", 20*time.Second)
	t.Logf("node b restarted %v after the kill: its flow ACTIVE through a %v after it answered",
		time.Since(killed).Round(time.Millisecond), took.Round(time.Millisecond))
	topo["b"].sendFrames(t, hwVM, hwPeer, 31, 3)
}
