package control

import (
	"context"
	"runtime"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/taas-appliance/taas/broker"
)

// MetricsHandler serves the data plane's counters in the Prometheus text
// format (GET /metrics), with the Go runtime's and the process's. Each
// scrape reads one DataPlane.Stats snapshot; nothing is kept between
// scrapes, so the broker's counters stay the only source of truth. More
// collectors, such as Server.ConnMetrics and Server.MirrorMetrics, are
// served with them.
func MetricsHandler(dp DataPlane, more ...prometheus.Collector) fiber.Handler {
	return MetricsHandlerNamed(dp, nil, more...)
}

// Names are the names of the tap services, flows and mirrors by id, which
// the metrics carry next to the ids (tap_service_name...): the data
// plane's counters know only ids.
type Names struct {
	Services, Flows, Mirrors map[string]string
}

// MetricsHandlerNamed is MetricsHandler whose per-resource series carry
// the names names returns at each scrape (Server.MetricNames); nil names
// leave the name labels empty.
func MetricsHandlerNamed(dp DataPlane, names func() Names, more ...prometheus.Collector) fiber.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&statsCollector{dp: dp, names: names},
	)
	reg.MustRegister(more...)
	return adaptor.HTTPHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
}

// Metric descriptions. Names follow Prometheus conventions: a _total suffix
// on counters, labels for interface, role, reason and resource id.
var (
	ifaceLabels = []string{"iface", "role"}

	descPlanVersion = prometheus.NewDesc("taas_plan_version", "Version of the plan the data plane last applied.", nil, nil)
	descLinkUp      = prometheus.NewDesc("taas_interface_up", "1 when the interface exists and is up.", ifaceLabels, nil)
	descQueues      = prometheus.NewDesc("taas_interface_queues", "Queues with an AF_XDP socket.", ifaceLabels, nil)
	descPath        = prometheus.NewDesc("taas_interface_path",
		"1 for the data path the capture interface's frames take (fast: decided and copied in the XDP program; afxdp: through the AF_XDP workers), 0 for the other.",
		[]string{"iface", "path"}, nil)
	// RX and TX count whole frames without FCS on every interface (a
	// capture's RX from its XDP program, the rest from the netdev): see
	// broker.IfaceStats and docs/counters.md.
	descRxPackets = prometheus.NewDesc("taas_interface_rx_packets_total",
		"Frames the interface received (a capture: every frame its XDP program saw).", ifaceLabels, nil)
	descRxBytes = prometheus.NewDesc("taas_interface_rx_bytes_total",
		"Bytes of the frames the interface received, each whole without FCS (tcpdump's length).", ifaceLabels, nil)
	descTxPackets = prometheus.NewDesc("taas_interface_tx_packets_total", "Frames the kernel sent on the interface.", ifaceLabels, nil)
	descTxBytes   = prometheus.NewDesc("taas_interface_tx_bytes_total",
		"Bytes of the frames the kernel sent on the interface, each whole without FCS (tcpdump's length).", ifaceLabels, nil)
	descIfaceDrops = prometheus.NewDesc("taas_interface_drops_total",
		"Frames lost on the interface's data path, by reason (XDP program, AF_XDP socket, TX).",
		append(ifaceLabels, "reason"), nil)
	descIfaceEvents = prometheus.NewDesc("taas_interface_events_total",
		"Frames the interface's data path counted that are not losses (redirected, received, sent...), by counter.",
		append(ifaceLabels, "counter"), nil)
	descIfaceEventBytes = prometheus.NewDesc("taas_interface_event_bytes_total",
		"Bytes the interface's data path counted (received by the workers, copied), by counter.",
		append(ifaceLabels, "counter"), nil)
	descIfaceOps = prometheus.NewDesc("taas_interface_operations_total",
		"Operations of the interface's data path (batches, kicks, polls and their errors), by counter.",
		append(ifaceLabels, "counter"), nil)
	// descIfaceUnit is where each unit of broker.CounterUnit goes.
	descIfaceUnit = [...]*prometheus.Desc{broker.UnitFrames: descIfaceEvents, broker.UnitBytes: descIfaceEventBytes,
		broker.UnitOperations: descIfaceOps}
	svcLabels        = []string{"tap_service_id", "tap_service_name"}
	flowLabels       = []string{"tap_flow_id", "tap_flow_name"}
	descSvcPackets   = prometheus.NewDesc("taas_tap_service_delivered_packets_total", "Copies sent to the tap service's monitor.", svcLabels, nil)
	descSvcBytes     = prometheus.NewDesc("taas_tap_service_delivered_bytes_total", "Bytes of copies sent to the tap service's monitor.", svcLabels, nil)
	descSvcDrops     = prometheus.NewDesc("taas_tap_service_drops_total", "Copies for the tap service that were not sent, by reason.", append(svcLabels, "reason"), nil)
	descFlowPkts     = prometheus.NewDesc("taas_tap_flow_matched_packets_total", "Frames the tap flow matched.", flowLabels, nil)
	descFlowBytes    = prometheus.NewDesc("taas_tap_flow_matched_bytes_total", "Bytes of frames the tap flow matched.", flowLabels, nil)
	descFlowRejected = prometheus.NewDesc("taas_tap_flow_rejected_packets_total",
		"Frames the tap flow's source, direction and VLAN selected but its filter rejected (0 without a filter).",
		flowLabels, nil)

	mirrorLabels    = []string{"tap_mirror_id", "tap_mirror_name"}
	descMirrorPkts  = prometheus.NewDesc("taas_tap_mirror_encapsulated_packets_total", "Encapsulated copies the tap mirror sent.", mirrorLabels, nil)
	descMirrorBytes = prometheus.NewDesc("taas_tap_mirror_encapsulated_bytes_total",
		"Bytes of the tap mirror's encapsulated copies on the wire, outer headers included.", mirrorLabels, nil)
	descMirrorTrunc = prometheus.NewDesc("taas_tap_mirror_truncated_packets_total",
		"Encapsulated copies of the tap mirror cut to the mirror's snaplen or to fit the uplink (and sent).", mirrorLabels, nil)
	descMirrorDrops = prometheus.NewDesc("taas_tap_mirror_drops_total", "Copies for the tap mirror that were not sent, by reason.",
		append(mirrorLabels, "reason"), nil)
	descMirrorStatus = prometheus.NewDesc("taas_tap_mirror_status",
		"1 for the tap mirror's current status (ACTIVE, DOWN or ERROR; the reason is in taas/stats), 0 for the others.",
		[]string{"tap_mirror_id", "status"}, nil)
)

// statsCollector turns one broker.Stats snapshot into metrics per scrape.
type statsCollector struct {
	dp    DataPlane
	names func() Names // nil: names left empty
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPlanVersion, descLinkUp, descQueues, descPath, descRxPackets, descRxBytes,
		descTxPackets, descTxBytes, descIfaceDrops, descIfaceEvents, descIfaceEventBytes, descIfaceOps, descSvcPackets, descSvcBytes, descSvcDrops,
		descFlowPkts, descFlowBytes, descFlowRejected, descMirrorPkts, descMirrorBytes, descMirrorTrunc, descMirrorDrops} {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.dp.Stats()
	var names Names
	if c.names != nil {
		names = c.names()
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descPlanVersion, float64(st.PlanVersion))
	for _, is := range st.Interfaces {
		up := 0.0
		if is.LinkUp {
			up = 1
		}
		gauge(descLinkUp, up, is.Name, is.Role)
		gauge(descQueues, float64(is.Queues), is.Name, is.Role)
		if is.Path != "" {
			// Both series, so that an alert on path="afxdp" == 1 sees
			// the interface come back to the fast path.
			for _, p := range []string{broker.PathFast, broker.PathAFXDP} {
				on := 0.0
				if is.Path == p {
					on = 1
				}
				gauge(descPath, on, is.Name, p)
			}
		}
		counter(descRxPackets, is.RxPackets, is.Name, is.Role)
		counter(descRxBytes, is.RxBytes, is.Name, is.Role)
		counter(descTxPackets, is.TxPackets, is.Name, is.Role)
		counter(descTxBytes, is.TxBytes, is.Name, is.Role)
		for reason, v := range is.Drops {
			counter(descIfaceDrops, v, is.Name, is.Role, reason)
		}
		for name, v := range is.Counters {
			// A name the data plane does not declare (none should be)
			// is served as frames rather than dropped.
			u, _ := broker.CounterUnit(name)
			counter(descIfaceUnit[u], v, is.Name, is.Role, name)
		}
	}
	for _, s := range st.Services {
		name := names.Services[s.ID]
		counter(descSvcPackets, s.DeliveredPackets, s.ID, name)
		counter(descSvcBytes, s.DeliveredBytes, s.ID, name)
		for reason, v := range s.Drops {
			counter(descSvcDrops, v, s.ID, name, reason)
		}
	}
	for _, f := range st.Flows {
		name := names.Flows[f.ID]
		counter(descFlowPkts, f.MatchedPackets, f.ID, name)
		counter(descFlowBytes, f.MatchedBytes, f.ID, name)
		counter(descFlowRejected, f.RejectedPackets, f.ID, name)
	}
	for _, m := range st.Mirrors {
		name := names.Mirrors[m.ID]
		counter(descMirrorPkts, m.EncapPackets, m.ID, name)
		counter(descMirrorBytes, m.EncapBytes, m.ID, name)
		counter(descMirrorTrunc, m.TruncatedPackets, m.ID, name)
		for reason, v := range m.Drops {
			counter(descMirrorDrops, v, m.ID, name, reason)
		}
	}
}

// MetricNames reads the names of every tap service, flow and mirror, for
// MetricsHandlerNamed; on a store error the names stay empty (the
// counters still go out).
func (s *Server) MetricNames() Names {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n := Names{Services: map[string]string{}, Flows: map[string]string{}, Mirrors: map[string]string{}}
	if svcs, err := s.st.ListTapServices(ctx, ""); err == nil {
		for _, x := range svcs {
			n.Services[x.ID] = x.Name
		}
	}
	if flows, err := s.st.ListTapFlows(ctx, ""); err == nil {
		for _, x := range flows {
			n.Flows[x.ID] = x.Name
		}
	}
	if mirrors, err := s.st.ListTapMirrors(ctx, ""); err == nil {
		for _, x := range mirrors {
			n.Mirrors[x.ID] = x.Name
		}
	}
	return n
}

// BuildInfo is taas_build_info: 1, with taasd's version and the Go
// release that built it as labels.
func BuildInfo(version string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "taas_build_info",
		Help:        "1, labelled with taasd's version and the Go release that built it.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()}})
	g.Set(1)
	return g
}

// mirrorStatusCollector serves taas_tap_mirror_status from the
// reconciler's last pass (without a store read per scrape): the data plane
// does not see the mirrors the plan keeps out (a port administratively
// down, a row it cannot use).
type mirrorStatusCollector struct {
	rec *Reconciler
}

// mirrorStates are the values of taas_tap_mirror_status's status label.
// Every one gets a series per mirror (1 for the current, 0 for the
// others), so that an alert on status="DOWN" == 1 sees a mirror come back.
var mirrorStates = []broker.State{broker.StateActive, broker.StateDown, broker.StateError}

func (c mirrorStatusCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descMirrorStatus }

func (c mirrorStatusCollector) Collect(ch chan<- prometheus.Metric) {
	for id, st := range c.rec.MirrorStatuses() {
		for _, s := range mirrorStates {
			v := 0.0
			if st.State == s {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descMirrorStatus, prometheus.GaugeValue, v, id, s.String())
		}
	}
}
