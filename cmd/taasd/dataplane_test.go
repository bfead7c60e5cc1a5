package main

// End-to-end tests of issue 3 as a user would try it: taasd with
// --dataplane xdp on a real SQLite file, driven over HTTP on loopback;
// ports bound to veth interfaces in test namespaces; crafted frames
// injected on the capture side; copies read by tcpdump and by AF_PACKET in
// the monitor namespace and compared byte for byte.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

const e2eRootWhy = "CAP_NET_ADMIN, CAP_BPF and CAP_SYS_ADMIN for namespaces, veth pairs, XDP and AF_XDP"

// defaultNetwork is the shared network taasd creates on first start.
const defaultNetwork = "6a1c2c7e-4f1e-4d8a-9c55-3b1f0a7d2e10"

// xdpDaemon is one in-process run of the daemon.
type xdpDaemon struct {
	url  string
	stop func()
	// token is sent as X-Auth-Token when not empty (see as).
	token string
	// client makes the calls; nil is http.DefaultClient.
	client *http.Client
}

// as is d calling with token.
func (d *xdpDaemon) as(token string) *xdpDaemon {
	c := *d
	c.token = token
	return &c
}

// startXDPDaemon runs taasd with the xdp data plane on db until stop (or the
// end of the test).
func startXDPDaemon(t *testing.T, db string) *xdpDaemon {
	t.Helper()
	return startXDPDaemonWith(t, config{DB: db, Auth: "noauth"})
}

// startXDPDaemonWith is startXDPDaemon with cfg's database, auth, tokens
// and file.
func startXDPDaemonWith(t *testing.T, cfg config) *xdpDaemon {
	t.Helper()
	addr := testutil.FreeLoopbackAddr(t)
	cfg.Listen, cfg.Dataplane, cfg.LogLevel = addr, "xdp", "debug"
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, logger, nil) }()
	d := &xdpDaemon{url: "http://" + addr}
	stopped := false
	d.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("taasd: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("taasd did not stop within 30s")
		}
	}
	t.Cleanup(d.stop)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(d.url + "/")
		if err == nil {
			resp.Body.Close()
			return d
		}
		select {
		case err := <-done:
			t.Fatalf("taasd exited at start: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("taasd not serving on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// call sends a JSON request and decodes the JSON answer into out (when not
// nil), failing the test unless the status is want.
func (d *xdpDaemon) call(t *testing.T, method, path string, body any, want int, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, d.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if d.token != "" {
		req.Header.Set("X-Auth-Token", d.token)
	}
	c := d.client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s = %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
}

func (d *xdpDaemon) createPort(t *testing.T, name, mac, iface string) string {
	t.Helper()
	return d.createPortIn(t, "", name, mac, iface)
}

// createPortIn creates a bound port in project (the caller's when empty):
// the admin's work.
func (d *xdpDaemon) createPortIn(t *testing.T, project, name, mac, iface string) string {
	t.Helper()
	p := map[string]any{"name": name, "network_id": defaultNetwork, "mac_address": mac,
		"binding:profile": map[string]string{"interface": iface}}
	if project != "" {
		p["project_id"] = project
	}
	var out struct{ Port struct{ ID string } }
	d.call(t, "POST", "/v2.0/ports", map[string]any{"port": p}, 201, &out)
	return out.Port.ID
}

func (d *xdpDaemon) createService(t *testing.T, name, portID string) string {
	t.Helper()
	var out struct {
		TapService struct{ ID string } `json:"tap_service"`
	}
	d.call(t, "POST", "/v2.0/taas/tap_services", map[string]any{"tap_service": map[string]any{"name": name, "port_id": portID}}, 201, &out)
	return out.TapService.ID
}

func (d *xdpDaemon) createFlow(t *testing.T, name, svcID, portID, dir string, vlanFilter any) string {
	t.Helper()
	var out struct {
		TapFlow struct{ ID string } `json:"tap_flow"`
	}
	d.call(t, "POST", "/v2.0/taas/tap_flows", map[string]any{"tap_flow": map[string]any{"name": name, "tap_service_id": svcID,
		"source_port": portID, "direction": dir, "vlan_filter": vlanFilter}}, 201, &out)
	return out.TapFlow.ID
}

// waitStatus polls a tap service or flow until its status is want.
func (d *xdpDaemon) waitStatus(t *testing.T, kind, id, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var out map[string]map[string]any
		d.call(t, "GET", "/v2.0/taas/"+kind+"s/"+id, nil, 200, &out)
		got, _ := out[kind]["status"].(string)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s: status %s, want %s", kind, id, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// taasStats is the part of GET /v2.0/taas/stats the tests read.
type taasStats struct {
	TaasStats struct {
		PlanVersion uint64 `json:"plan_version"`
		Interfaces  []struct {
			Name       string `json:"name"`
			Role       string `json:"role"`
			Path       string `json:"path"`
			PathReason string `json:"path_reason"`
		} `json:"interfaces"`
		TapFlows []struct {
			ID              string `json:"id"`
			MatchedPackets  uint64 `json:"matched_packets"`
			RejectedPackets uint64 `json:"rejected_packets"`
			StatusReason    string `json:"status_reason"`
		} `json:"tap_flows"`
		TapServices []struct {
			ID               string `json:"id"`
			DeliveredPackets uint64 `json:"delivered_packets"`
			StatusReason     string `json:"status_reason"`
		} `json:"tap_services"`
	} `json:"taas_stats"`
}

func (d *xdpDaemon) stats(t *testing.T) taasStats {
	t.Helper()
	var st taasStats
	d.call(t, "GET", "/v2.0/taas/stats", nil, 200, &st)
	return st
}

// metricsText returns the body of GET url/metrics (no token).
func metricsText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// waitApplied waits until the data plane has applied a plan: after a
// restart the statuses in the store are still those of the last run.
func (d *xdpDaemon) waitApplied(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for d.stats(t).TaasStats.PlanVersion == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the data plane applied no plan within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func seqsOf(frames [][]byte) []uint32 {
	var s []uint32
	for _, f := range frames {
		n, _ := packettest.Seq(f)
		s = append(s, n)
	}
	slices.Sort(s)
	return s
}

// e2eTopo is the end-to-end tests' topology: capture interface capIf,
// whose peer in a span namespace is where frames are injected, and monitor
// interface monIf, whose peer in namespace monNS is where copies are
// captured. Everything goes when the test ends.
type e2eTopo struct {
	monNS, capIf, monIf string
	inject              *packettest.Injector
	capture             *packettest.Capture
}

func newE2ETopo(t *testing.T) e2eTopo {
	t.Helper()
	return newE2ETopoKeep(t, packettest.IsTest)
}

// newE2ETopoKeep is newE2ETopo whose monitor capture records the frames
// keep selects.
func newE2ETopoKeep(t *testing.T, keep func([]byte) bool) e2eTopo {
	t.Helper()
	p := testutil.Prefix(t)
	span, monNS := testutil.Netns(t, p+"span"), testutil.Netns(t, p+"mon")
	tp := e2eTopo{monNS: monNS, capIf: p + "cap", monIf: p + "mon"}
	testutil.Veth(t, tp.capIf, tp.capIf+"p", testutil.VethOpts{NetnsB: span})
	testutil.Veth(t, tp.monIf, tp.monIf+"p", testutil.VethOpts{NetnsB: monNS})
	tp.inject = packettest.NewInjector(t, span, tp.capIf+"p")
	testutil.WaitOperUp(t, span, tp.capIf+"p")
	tp.capture = packettest.NewCapture(t, monNS, tp.monIf+"p", keep)
	return tp
}

func TestDataplaneEndToEnd(t *testing.T) {
	testutil.RequireRoot(t, e2eRootWhy)
	tp := newE2ETopo(t)
	monNS, capIf, monIf, inject, capture := tp.monNS, tp.capIf, tp.monIf, tp.inject, tp.capture

	db := filepath.Join(t.TempDir(), "taas.db")
	d := startXDPDaemon(t, db)
	vmA, vmB := "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b"
	hwA, hwB := packettest.MustMAC(vmA), packettest.MustMAC(vmB)
	srcPort := d.createPort(t, "vm-a", vmA, capIf)
	monPort := d.createPort(t, "monitor", "fa:16:3e:00:00:99", monIf)
	svc := d.createService(t, "svc", monPort)
	flow := d.createFlow(t, "out-vlan", svc, srcPort, "OUT", "0,10-20")
	d.waitStatus(t, "tap_service", svc, "ACTIVE")
	d.waitStatus(t, "tap_flow", flow, "ACTIVE")

	// Frames of vm-a: OUT untagged, OUT VLAN 15, OUT VLAN 30 (filtered),
	// IN (not this flow's direction).
	sent := map[uint32][]byte{
		1: packettest.Frame(hwB, hwA, nil, 1, 60),
		2: packettest.Frame(hwB, hwA, []packettest.Tag{{TPID: 0x8100, VID: 15}}, 2, 64),
		3: packettest.Frame(hwB, hwA, []packettest.Tag{{TPID: 0x8100, VID: 30}}, 3, 64),
		4: packettest.Frame(hwA, hwB, nil, 4, 60),
	}
	stopDump := packettest.Tcpdump(t, monNS, monIf+"p", "ether proto 0x88b5 or (vlan and ether proto 0x88b5)")
	for s := uint32(1); s <= 4; s++ {
		if err := inject.Send(sent[s]); err != nil {
			t.Fatal(err)
		}
	}
	capture.WaitN(2, 10*time.Second)
	got := capture.Quiet(200*time.Millisecond, 3*time.Second)
	var dumped [][]byte // tcpdump puts VLAN tags back
	for _, f := range packettest.ReadPcap(t, stopDump(2, packettest.IsTest)) {
		if packettest.IsTest(f) {
			dumped = append(dumped, f)
		}
	}
	for name, frames := range map[string][][]byte{"AF_PACKET": got, "tcpdump": dumped} {
		if s := seqsOf(frames); !slices.Equal(s, []uint32{1, 2}) {
			t.Fatalf("%s at the monitor saw frames %v, want [1 2]", name, s)
		}
		for _, f := range frames {
			n, _ := packettest.Seq(f)
			if !bytes.Equal(f, sent[n]) {
				t.Errorf("%s: frame %d differs:\n got %x\nwant %x", name, n, f, sent[n])
			}
		}
	}

	// The counters, through the API's JSON and Prometheus.
	stats := d.stats(t)
	metrics := metricsText(t, d.url)
	if want := fmt.Sprintf("taas_tap_flow_matched_packets_total{tap_flow_id=%q,tap_flow_name=%q} 2\n", flow, "out-vlan"); !strings.Contains(metrics, want) {
		t.Errorf("GET /metrics lacks %q", want)
	}

	// Monitor link down: DOWN with the reason; up: ACTIVE and traffic again,
	// without a restart.
	testutil.Run(t, "ip", "link", "set", monIf, "down")
	d.waitStatus(t, "tap_service", svc, "DOWN")
	d.waitStatus(t, "tap_flow", flow, "DOWN")
	stats = d.stats(t)
	if ss := stats.TaasStats.TapServices; len(ss) != 1 || ss[0].StatusReason != fmt.Sprintf("interface %s is down", monIf) {
		t.Errorf("taas_stats tap_services after monitor down = %+v, want reason %q", ss, fmt.Sprintf("interface %s is down", monIf))
	}
	testutil.Run(t, "ip", "link", "set", monIf, "up")
	d.waitStatus(t, "tap_service", svc, "ACTIVE")
	d.waitStatus(t, "tap_flow", flow, "ACTIVE")
	capture.Reset()
	sent[5] = packettest.Frame(hwB, hwA, nil, 5, 60)
	if err := inject.Send(sent[5]); err != nil {
		t.Fatal(err)
	}
	if s := seqsOf(capture.WaitN(1, 10*time.Second)); !slices.Equal(s, []uint32{5}) {
		t.Fatalf("after monitor down/up the monitor saw %v, want [5]", s)
	}

	// Restart: the data plane is rebuilt from the store alone.
	d.stop()
	d = startXDPDaemon(t, db)
	d.waitApplied(t)
	d.waitStatus(t, "tap_flow", flow, "ACTIVE")
	capture.Reset()
	sent[6] = packettest.Frame(hwB, hwA, nil, 6, 60)
	if err := inject.Send(sent[6]); err != nil {
		t.Fatal(err)
	}
	if s := seqsOf(capture.WaitN(1, 10*time.Second)); !slices.Equal(s, []uint32{6}) {
		t.Fatalf("after a restart the monitor saw %v, want [6]", s)
	}

	// Deleting the flow stops the copies; the service stays.
	d.call(t, "DELETE", "/v2.0/taas/tap_flows/"+flow, nil, 204, nil)
	// The reconciler applies the deletion after the API answers; the
	// capture interface leaves the data plane's stats when it has.
	deadline := time.Now().Add(20 * time.Second)
	for captured := true; captured; {
		captured = false
		for _, is := range d.stats(t).TaasStats.Interfaces {
			captured = captured || is.Name == capIf
		}
		if captured && time.Now().After(deadline) {
			t.Fatalf("%s still captured 20s after its only flow was deleted", capIf)
		}
		time.Sleep(20 * time.Millisecond)
	}
	capture.Reset()
	if err := inject.Send(packettest.Frame(hwB, hwA, nil, 7, 60)); err != nil {
		t.Fatal(err)
	}
	if got := capture.Quiet(500*time.Millisecond, 3*time.Second); len(got) != 0 {
		t.Fatalf("after deleting the flow the monitor saw %v", seqsOf(got))
	}
}

// TestDataplaneWithOpenstackCLI is the issue as a user tries it: the real
// Debian `openstack` client creates the ports, the tap service and an IN
// flow with a VLAN filter against taasd --dataplane xdp, shows the flow
// ACTIVE, and the copies arrive at the monitor.
func TestDataplaneWithOpenstackCLI(t *testing.T) {
	testutil.RequireRoot(t, e2eRootWhy)
	bin, err := exec.LookPath("openstack")
	if err != nil {
		t.Skip("openstack CLI not installed (apt-get install python3-openstackclient python3-neutron-taas; .ci/run does)")
	}
	tp := newE2ETopo(t)
	capIf, monIf, inject, capture := tp.capIf, tp.monIf, tp.inject, tp.capture
	d := startXDPDaemon(t, filepath.Join(t.TempDir(), "taas.db"))

	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "OS_") {
			env = append(env, e)
		}
	}
	cli := func(args ...string) map[string]any {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--os-auth-type", "none", "--os-endpoint", d.url}, append(args, "-f", "json")...)...)
		cmd.Env = env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		var v map[string]any
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("openstack %s: %v in %s", strings.Join(args, " "), err, out)
		}
		return v
	}
	cli("port", "create", "--network", "appliance", "--disable-port-security", "--mac-address", "fa:16:3e:00:00:0a",
		"--binding-profile", "interface="+capIf, "vm-a")
	cli("port", "create", "--network", "appliance", "--binding-profile", "interface="+monIf, "monitor")
	cli("tap", "service", "create", "--name", "ids", "--port", "monitor")
	flow := cli("tap", "flow", "create", "--name", "vm-a-in", "--port", "vm-a", "--tap-service", "ids",
		"--direction", "IN", "--vlan-filter", "10-20")
	id, _ := flow["ID"].(string)
	if id == "" {
		t.Fatalf("tap flow create printed %v", flow)
	}
	d.waitStatus(t, "tap_flow", id, "ACTIVE")
	if got := cli("tap", "flow", "show", id); got["Status"] != "ACTIVE" {
		t.Fatalf("openstack tap flow show = %v, want Status ACTIVE", got)
	}

	hwA, hwB := packettest.MustMAC("fa:16:3e:00:00:0a"), packettest.MustMAC("fa:16:3e:00:00:0b")
	tag := func(v uint16) []packettest.Tag { return []packettest.Tag{{TPID: 0x8100, VID: v}} }
	sent := map[uint32][]byte{
		1: packettest.Frame(hwA, hwB, tag(15), 1, 64),                                     // IN, VLAN 15
		2: packettest.Frame(hwA, hwB, nil, 2, 60),                                         // IN, untagged: filtered
		3: packettest.Frame(hwB, hwA, tag(15), 3, 64),                                     // OUT: not this flow
		4: packettest.Frame(packettest.MustMAC("ff:ff:ff:ff:ff:ff"), hwB, tag(20), 4, 64), // broadcast IN
	}
	for s := uint32(1); s <= 4; s++ {
		if err := inject.Send(sent[s]); err != nil {
			t.Fatal(err)
		}
	}
	capture.WaitN(2, 10*time.Second)
	got := capture.Quiet(200*time.Millisecond, 3*time.Second)
	if s := seqsOf(got); !slices.Equal(s, []uint32{1, 4}) {
		t.Fatalf("monitor saw frames %v, want [1 4]", s)
	}
	for _, f := range got {
		n, _ := packettest.Seq(f)
		if !bytes.Equal(f, sent[n]) {
			t.Errorf("frame %d differs:\n got %x\nwant %x", n, f, sent[n])
		}
	}
}
