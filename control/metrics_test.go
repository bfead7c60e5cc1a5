package control

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/taas-appliance/taas/broker"
)

// fixedStats is a data plane whose counters are fixed, so the exposition
// can be checked line by line; the root end-to-end test scrapes a real
// broker through taasd.
type fixedStats struct{ NullDataPlane }

func (fixedStats) Stats() broker.Stats {
	return broker.Stats{
		PlanVersion: 7,
		Interfaces: []broker.IfaceStats{{Name: "cap0", Role: "capture", LinkUp: true, Queues: 2, RxPackets: 11, Path: "fast",
			Drops: map[string]uint64{"xdp_oversize": 3}, Counters: map[string]uint64{"xdp_redirected": 9, "bytes": 4096, "xsk_kicks": 3, "batches": 2}}},
		Services: []broker.ServiceStats{{ID: "svc-1", DeliveredPackets: 5, DeliveredBytes: 300,
			Drops: map[string]uint64{"no_free_tx_frame": 1}}},
		Flows: []broker.FlowStats{{ID: "flow-1", MatchedPackets: 6, MatchedBytes: 360, RejectedPackets: 12}},
		Mirrors: []broker.MirrorStats{{ID: "mirror-1", Status: "ACTIVE", Uplink: "up0", EncapPackets: 8, EncapBytes: 1040,
			TruncatedPackets: 2, Drops: map[string]uint64{"mirror_down": 4}}},
	}
}

// scrape serves h at /metrics through app.Test and returns the body.
func scrape(t *testing.T, h fiber.Handler) string {
	t.Helper()
	app := fiber.New()
	app.Get("/metrics", h)
	resp, err := app.Test(httptest.NewRequest("GET", "/metrics", nil), -1)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics = %d: %s", resp.StatusCode, body)
	}
	return string(body)
}

func TestMetricsHandler(t *testing.T) {
	names := func() Names {
		return Names{Services: map[string]string{"svc-1": "web-ids"}, Flows: map[string]string{"flow-1": "web-in"},
			Mirrors: map[string]string{"mirror-1": "to-lab"}}
	}
	body := scrape(t, MetricsHandlerNamed(fixedStats{}, names, BuildInfo("v1.2.3")))
	for _, want := range []string{
		`taas_build_info{goversion="` + runtime.Version() + `",version="v1.2.3"} 1`,
		"taas_plan_version 7",
		`taas_interface_up{iface="cap0",role="capture"} 1`,
		`taas_interface_queues{iface="cap0",role="capture"} 2`,
		`taas_interface_path{iface="cap0",path="fast"} 1`,
		`taas_interface_path{iface="cap0",path="afxdp"} 0`,
		`taas_interface_rx_packets_total{iface="cap0",role="capture"} 11`,
		`taas_interface_drops_total{iface="cap0",reason="xdp_oversize",role="capture"} 3`,
		`taas_interface_events_total{counter="xdp_redirected",iface="cap0",role="capture"} 9`,
		`taas_interface_event_bytes_total{counter="bytes",iface="cap0",role="capture"} 4096`,
		`taas_interface_operations_total{counter="xsk_kicks",iface="cap0",role="capture"} 3`,
		`taas_interface_operations_total{counter="batches",iface="cap0",role="capture"} 2`,
		`taas_tap_service_delivered_packets_total{tap_service_id="svc-1",tap_service_name="web-ids"} 5`,
		`taas_tap_service_delivered_bytes_total{tap_service_id="svc-1",tap_service_name="web-ids"} 300`,
		`taas_tap_service_drops_total{reason="no_free_tx_frame",tap_service_id="svc-1",tap_service_name="web-ids"} 1`,
		`taas_tap_flow_matched_packets_total{tap_flow_id="flow-1",tap_flow_name="web-in"} 6`,
		`taas_tap_flow_matched_bytes_total{tap_flow_id="flow-1",tap_flow_name="web-in"} 360`,
		`taas_tap_flow_rejected_packets_total{tap_flow_id="flow-1",tap_flow_name="web-in"} 12`,
		`taas_tap_mirror_encapsulated_packets_total{tap_mirror_id="mirror-1",tap_mirror_name="to-lab"} 8`,
		`taas_tap_mirror_encapsulated_bytes_total{tap_mirror_id="mirror-1",tap_mirror_name="to-lab"} 1040`,
		`taas_tap_mirror_truncated_packets_total{tap_mirror_id="mirror-1",tap_mirror_name="to-lab"} 2`,
		"# HELP taas_tap_mirror_truncated_packets_total Encapsulated copies of the tap mirror cut to the mirror's snaplen or to fit the uplink (and sent).",
		`taas_tap_mirror_drops_total{reason="mirror_down",tap_mirror_id="mirror-1",tap_mirror_name="to-lab"} 4`,
		"go_goroutines",
	} {
		if !strings.Contains(body, want+"\n") && !strings.Contains(body, want+" ") {
			t.Errorf("GET /metrics lacks %q", want)
		}
	}
	// One unit per metric (issue 13): bytes and operations are not frames.
	for _, bad := range []string{`taas_interface_events_total{counter="bytes"`, `taas_interface_events_total{counter="xsk_kicks"`,
		`taas_interface_events_total{counter="batches"`, "taas_interface_fast_path"} {
		if strings.Contains(body, bad) {
			t.Errorf("GET /metrics has %q", bad)
		}
	}
}

// TestMirrorMetrics: taas_tap_mirror_status has a series per mirror and
// status, 1 for the reconciler's current one, and follows a link going
// down and back without a restart; mirrors the plan keeps out (a port
// administratively down) have theirs too.
func TestMirrorMetrics(t *testing.T) {
	dp := newRecorder()
	dp.ifaceUp["cap0"] = true
	ts := startServer(t, Config{DataPlane: dp})
	ctx := context.Background()
	up := ts.createPort("src", "cap0", "")
	down := ts.createPort("off", "cap0", "")
	m := ts.createMirror(up, `{"IN": 1}`, "198.51.100.1", "gre")
	held := ts.createMirror(down, `{"IN": 2}`, "198.51.100.1", "gre")
	ts.must(200, "PUT", "/v2.0/ports/"+down, `{"port": {"admin_state_up": false}}`, "port")
	h := MetricsHandler(dp, ts.srv.MirrorMetrics())
	series := func(id, status string) string {
		return fmt.Sprintf("taas_tap_mirror_status{status=%q,tap_mirror_id=%q} ", status, id)
	}
	for _, tc := range []struct {
		name   string
		linkUp bool
		want   []string
	}{
		{"link up", true, []string{series(m, "ACTIVE") + "1", series(m, "DOWN") + "0", series(m, "ERROR") + "0",
			series(held, "DOWN") + "1", series(held, "ACTIVE") + "0"}},
		{"link down", false, []string{series(m, "ACTIVE") + "0", series(m, "DOWN") + "1", series(held, "DOWN") + "1"}},
		{"link back", true, []string{series(m, "ACTIVE") + "1", series(m, "DOWN") + "0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dp.set(func(d *recordingDataPlane) { d.ifaceUp["cap0"] = tc.linkUp })
			if err := ts.srv.Reconciler().Sync(ctx); err != nil {
				t.Fatal(err)
			}
			body := scrape(t, h)
			for _, want := range tc.want {
				if !strings.Contains(body, want+"\n") {
					t.Errorf("GET /metrics lacks %q", want)
				}
			}
		})
	}
}

// TestMetricNames: the names the metrics carry are the store's, for every
// project's resources.
func TestMetricNames(t *testing.T) {
	ts := startServer(t, Config{})
	src := ts.createPort("src", "cap0", "")
	svc := ts.createService("web-ids", ts.createPort("mon", "mon0", ""))
	flow := ts.createFlow("web-in", svc, src, "IN", nil)
	mirror := ts.createMirror(src, `{"IN": 7}`, "198.51.100.7", "gre")
	ts.must(200, "PUT", mirrors+"/"+mirror, `{"tap_mirror": {"name": "to-lab"}}`, "tap_mirror")
	n := ts.srv.MetricNames()
	if n.Services[svc] != "web-ids" || n.Flows[flow] != "web-in" || n.Mirrors[mirror] != "to-lab" {
		t.Errorf("MetricNames = %+v", n)
	}
}
