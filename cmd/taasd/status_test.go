package main

// Issue 9 as a user sees it through the API: statuses and reasons of tap
// flows whose vlan_filter matches nothing, of a service whose monitor's
// MTU is too small, and of a flow whose capture interface is renamed.

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/testutil"
)

// waitReason polls GET /v2.0/taas/stats until the tap service or flow id
// has status want and a status_reason containing reason.
func (d *xdpDaemon) waitReason(t *testing.T, kind, id, want, reason string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		type entry struct {
			ID           string `json:"id"`
			Status       string `json:"status"`
			StatusReason string `json:"status_reason"`
		}
		var out struct {
			TaasStats struct {
				Services []entry `json:"tap_services"`
				Flows    []entry `json:"tap_flows"`
			} `json:"taas_stats"`
		}
		d.call(t, "GET", "/v2.0/taas/stats", nil, 200, &out)
		entries := out.TaasStats.Flows
		if kind == "tap_service" {
			entries = out.TaasStats.Services
		}
		got := "not listed"
		for _, e := range entries {
			if e.ID != id {
				continue
			}
			if e.Status == want && strings.Contains(e.StatusReason, reason) {
				return
			}
			got = fmt.Sprintf("%s %q", e.Status, e.StatusReason)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s: %s, want %s with a reason containing %q", kind, id, got, want, reason)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestStatusTruthful(t *testing.T) {
	testutil.RequireRoot(t, e2eRootWhy)
	tp := newE2ETopo(t)
	d := startXDPDaemon(t, filepath.Join(t.TempDir(), "taas.db"))
	src := d.createPort(t, "vm-a", "fa:16:3e:00:00:0a", tp.capIf)
	mon := d.createPort(t, "monitor", "fa:16:3e:00:00:99", tp.monIf)
	svc := d.createService(t, "svc", mon)
	ok := d.createFlow(t, "ok", svc, src, "OUT", nil)
	d.waitStatus(t, "tap_flow", ok, "ACTIVE")

	t.Run("vlan_filter matching nothing", func(t *testing.T) {
		for _, f := range []string{"4096", "10-5", "99999999999"} {
			id := d.createFlow(t, "never "+f, svc, src, "IN", f)
			d.waitReason(t, "tap_flow", id, "DOWN", fmt.Sprintf("vlan_filter %s matches no VLAN id (0-4095)", f))
		}
		id := d.createFlow(t, "partly", svc, src, "IN", "10-5,20")
		d.waitReason(t, "tap_flow", id, "ACTIVE", "vlan_filter part 10-5 matches no VLAN id (0-4095)")
	})

	t.Run("monitor MTU", func(t *testing.T) {
		setMTU := func(mtu int) {
			testutil.Run(t, "ip", "link", "set", tp.monIf, "mtu", fmt.Sprint(mtu))
			testutil.Run(t, "ip", "-n", tp.monNS, "link", "set", tp.monIf+"p", "mtu", fmt.Sprint(mtu))
		}
		setMTU(1000)
		t.Cleanup(func() { setMTU(1500) })
		d.waitReason(t, "tap_service", svc, "ERROR", fmt.Sprintf("monitor %s (MTU 1000) cannot carry the copies of capture %s", tp.monIf, tp.capIf))
		d.waitReason(t, "tap_flow", ok, "ERROR", "MTU 1000")
		setMTU(1500)
		d.waitStatus(t, "tap_service", svc, "ACTIVE")
		d.waitStatus(t, "tap_flow", ok, "ACTIVE")
	})

	t.Run("capture renamed", func(t *testing.T) {
		renamed := tp.capIf + "x"
		t.Cleanup(func() { _ = exec.Command("ip", "link", "del", renamed).Run() })
		testutil.Run(t, "ip", "link", "set", tp.capIf, "down")
		testutil.Run(t, "ip", "link", "set", tp.capIf, "name", renamed)
		testutil.Run(t, "ip", "link", "set", renamed, "up")
		d.waitReason(t, "tap_flow", ok, "DOWN", fmt.Sprintf("interface %s does not exist: renamed to %s", tp.capIf, renamed))
		if out := testutil.Run(t, "ip", "link", "show", renamed); strings.Contains(out, "xdp") {
			t.Fatalf("XDP still attached to the renamed link:\n%s", out)
		}
		testutil.Run(t, "ip", "link", "set", renamed, "down")
		testutil.Run(t, "ip", "link", "set", renamed, "name", tp.capIf)
		testutil.Run(t, "ip", "link", "set", tp.capIf, "up")
		d.waitStatus(t, "tap_flow", ok, "ACTIVE")
		if out := testutil.Run(t, "ip", "link", "show", tp.capIf); !strings.Contains(out, "xdp") {
			t.Fatalf("no XDP on %s once it has its name back:\n%s", tp.capIf, out)
		}
	})
}
