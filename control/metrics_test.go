package control

import (
	"io"
	"net/http/httptest"
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
			Drops: map[string]uint64{"xdp_oversize": 3}, Counters: map[string]uint64{"xdp_redirected": 9}}},
		Services: []broker.ServiceStats{{ID: "svc-1", DeliveredPackets: 5, DeliveredBytes: 300,
			Drops: map[string]uint64{"no_free_tx_frame": 1}}},
		Flows: []broker.FlowStats{{ID: "flow-1", MatchedPackets: 6, MatchedBytes: 360}},
	}
}

func TestMetricsHandler(t *testing.T) {
	app := fiber.New()
	app.Get("/metrics", MetricsHandler(fixedStats{}))
	resp, err := app.Test(httptest.NewRequest("GET", "/metrics", nil), -1)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics = %d: %s", resp.StatusCode, body)
	}
	for _, want := range []string{
		"taas_plan_version 7",
		`taas_interface_up{iface="cap0",role="capture"} 1`,
		`taas_interface_queues{iface="cap0",role="capture"} 2`,
		`taas_interface_fast_path{iface="cap0"} 1`,
		`taas_interface_rx_packets_total{iface="cap0",role="capture"} 11`,
		`taas_interface_drops_total{iface="cap0",reason="xdp_oversize",role="capture"} 3`,
		`taas_interface_events_total{counter="xdp_redirected",iface="cap0",role="capture"} 9`,
		`taas_tap_service_delivered_packets_total{tap_service_id="svc-1"} 5`,
		`taas_tap_service_delivered_bytes_total{tap_service_id="svc-1"} 300`,
		`taas_tap_service_drops_total{reason="no_free_tx_frame",tap_service_id="svc-1"} 1`,
		`taas_tap_flow_matched_packets_total{tap_flow_id="flow-1"} 6`,
		`taas_tap_flow_matched_bytes_total{tap_flow_id="flow-1"} 360`,
		"go_goroutines",
	} {
		if !strings.Contains(string(body), want+"\n") && !strings.Contains(string(body), want+" ") {
			t.Errorf("GET /metrics lacks %q", want)
		}
	}
}
