package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

// TestDataplaneFilterSnaplen is issue 11 as a user tries it, on both data
// paths: a tap flow created with a filter over the API copies only the
// frames the filter accepts, tagged or not (the filter sees them untagged),
// the others count as rejected in taas/stats and /metrics; the service's
// snaplen cuts the copies, and a PUT of the snaplen reaches the data plane
// without a restart.
func TestDataplaneFilterSnaplen(t *testing.T) {
	testutil.RequireRoot(t, e2eRootWhy)
	for _, path := range []string{"fast", "afxdp"} {
		t.Run(path, func(t *testing.T) {
			tp := newE2ETopo(t)
			if path == "fast" {
				// A veth monitor takes redirected frames only with GRO
				// (or XDP) on its peer.
				testutil.Run(t, "ip", "netns", "exec", tp.monNS, "ethtool", "-K", tp.monIf+"p", "gro", "on")
			}
			d := startXDPDaemon(t, filepath.Join(t.TempDir(), "taas.db"))
			vmA, vmB := "fa:16:3e:00:11:0a", "fa:16:3e:00:11:0b"
			hwA, hwB := packettest.MustMAC(vmA), packettest.MustMAC(vmB)
			src := d.createPort(t, "vm-a", vmA, tp.capIf)
			mon := d.createPort(t, "monitor", "fa:16:3e:00:11:99", tp.monIf)
			var svc struct {
				TapService struct{ ID string } `json:"tap_service"`
			}
			d.call(t, "POST", "/v2.0/taas/tap_services", map[string]any{"tap_service": map[string]any{
				"name": "svc", "port_id": mon, "snaplen": 80}}, 201, &svc)
			// Even sequence numbers: the seq is at offset 22 of the frame
			// without its tags (14 + the 8-byte marker).
			const expr = "ether proto 0x88b5 and ether[22:4] & 1 = 0"
			var flow struct {
				TapFlow struct {
					ID     string
					Filter string
				} `json:"tap_flow"`
			}
			d.call(t, "POST", "/v2.0/taas/tap_flows", map[string]any{"tap_flow": map[string]any{"name": "even",
				"tap_service_id": svc.TapService.ID, "source_port": src, "direction": "OUT", "filter": expr}}, 201, &flow)
			if flow.TapFlow.Filter != expr {
				t.Fatalf("created flow's filter = %q, want %q", flow.TapFlow.Filter, expr)
			}
			d.waitStatus(t, "tap_flow", flow.TapFlow.ID, "ACTIVE")
			// The path: fast when the monitor takes redirects (and the
			// table fits); a filtered flow must not move it off.
			// (taasd reads the monitor's verdict every 500 ms).
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				got := capturePath(t, d, tp.capIf)
				if strings.HasPrefix(got, path) {
					t.Logf("capture %s path: %s", tp.capIf, got)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("capture %s path = %q, want %s", tp.capIf, got, path)
				}
			}

			tags := [][]packettest.Tag{nil, {{TPID: 0x8100, VID: 7}}, {{TPID: 0x88a8, VID: 100}, {TPID: 0x8100, VID: 7}}}
			sent := map[uint32][]byte{}
			for s := uint32(1); s <= 6; s++ {
				sent[s] = packettest.Frame(hwB, hwA, tags[s%3], s, 120)
				if err := tp.inject.Send(sent[s]); err != nil {
					t.Fatal(err)
				}
			}
			tp.capture.WaitN(3, 10*time.Second)
			got := tp.capture.Quiet(200*time.Millisecond, 3*time.Second)
			if s := seqsOf(got); !slices.Equal(s, []uint32{2, 4, 6}) {
				t.Fatalf("monitor saw frames %v, want [2 4 6]", s)
			}
			for _, f := range got {
				n, _ := packettest.Seq(f)
				if !bytes.Equal(f, sent[n][:80]) {
					t.Errorf("frame %d: got %d bytes %x, want its first 80 %x", n, len(f), f, sent[n][:80])
				}
			}
			if fs := d.stats(t).TaasStats.TapFlows; len(fs) != 1 || fs[0].MatchedPackets != 3 || fs[0].RejectedPackets != 3 {
				t.Errorf("taas_stats tap_flows = %+v, want matched 3, rejected 3", fs)
			}
			metrics := metricsText(t, d.url)
			if want := fmt.Sprintf("taas_tap_flow_rejected_packets_total{tap_flow_id=%q,tap_flow_name=%q} 3\n", flow.TapFlow.ID, "even"); !strings.Contains(metrics, want) {
				t.Errorf("GET /metrics lacks %q", want)
			}

			// snaplen null: whole frames again, without a restart (the
			// next plan has it: send until a whole frame arrives).
			d.call(t, "PUT", "/v2.0/taas/tap_services/"+svc.TapService.ID,
				map[string]any{"tap_service": map[string]any{"snaplen": nil}}, 200, nil)
			deadline := time.Now().Add(20 * time.Second)
			for s := uint32(8); ; s += 2 {
				tp.capture.Reset()
				frame := packettest.Frame(hwB, hwA, tags[s%3], s, 120)
				if err := tp.inject.Send(frame); err != nil {
					t.Fatal(err)
				}
				if f := tp.capture.WaitN(1, 5*time.Second); len(f) == 1 && bytes.Equal(f[0], frame) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("20s after snaplen null the monitor still saw cut frames")
				}
			}
		})
	}
}

// capturePath is the data path (fast or afxdp) taas/stats reports for
// the capture interface iface, with its reason.
func capturePath(t *testing.T, d *xdpDaemon, iface string) string {
	t.Helper()
	for _, is := range d.stats(t).TaasStats.Interfaces {
		if is.Name == iface {
			return strings.TrimSpace(is.Path + " " + is.PathReason)
		}
	}
	return "not reported"
}
