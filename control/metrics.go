package control

import (
	"context"
	"runtime"
	"slices"
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
	return metricsHandler(&statsCollector{dp: dp, names: names}, more...)
}

func metricsHandler(stats *statsCollector, more ...prometheus.Collector) fiber.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		stats,
	)
	reg.MustRegister(more...)
	return adaptor.HTTPHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
}

// Metric descriptions. Names follow Prometheus conventions: a _total suffix
// on counters, labels for interface, role, reason and resource id.
var (
	ifaceLabels = []string{"iface", "role"}

	descPlanVersion = statDesc("taas_plan_version", "Version of the plan the data plane last applied.", nil)
	descLinkUp      = statDesc("taas_interface_up", "1 when the interface exists and is up.", ifaceLabels)
	descQueues      = statDesc("taas_interface_queues", "Queues with an AF_XDP socket.", ifaceLabels)
	descPath        = statDesc("taas_interface_path",
		"1 for the data path the capture interface's frames take (fast: decided and copied in the XDP program; afxdp: through the AF_XDP workers), 0 for the other.",
		[]string{"iface", "path"})
	// RX and TX count whole frames without FCS on every interface (a
	// capture's RX from its XDP program, the rest from the netdev): see
	// broker.IfaceStats and docs/counters.md.
	descRxPackets = statDesc("taas_interface_rx_packets_total",
		"Frames the interface received (a capture: every frame its XDP program saw).", ifaceLabels)
	descRxBytes = statDesc("taas_interface_rx_bytes_total",
		"Bytes of the frames the interface received, each whole without FCS (tcpdump's length).", ifaceLabels)
	descTxPackets = statDesc("taas_interface_tx_packets_total", "Frames the kernel sent on the interface.", ifaceLabels)
	descTxBytes   = statDesc("taas_interface_tx_bytes_total",
		"Bytes of the frames the kernel sent on the interface, each whole without FCS (tcpdump's length).", ifaceLabels)
	descIfaceDrops = statDesc("taas_interface_drops_total",
		"Frames lost on the interface's data path, by reason (XDP program, AF_XDP socket, TX).",
		append(ifaceLabels, "reason"))
	descIfaceEvents = statDesc("taas_interface_events_total",
		"Frames the interface's data path counted that are not losses (redirected, received, sent...), by counter.",
		append(ifaceLabels, "counter"))
	descIfaceEventBytes = statDesc("taas_interface_event_bytes_total",
		"Bytes the interface's data path counted (received by the workers, copied), by counter.",
		append(ifaceLabels, "counter"))
	descIfaceOps = statDesc("taas_interface_operations_total",
		"Operations of the interface's data path (batches, kicks, polls and their errors), by counter.",
		append(ifaceLabels, "counter"))
	// descIfaceUnit is where each unit of broker.CounterUnit goes.
	descIfaceUnit = [...]*prometheus.Desc{broker.UnitFrames: descIfaceEvents, broker.UnitBytes: descIfaceEventBytes,
		broker.UnitOperations: descIfaceOps}
	svcLabels        = []string{"tap_service_id", "tap_service_name"}
	flowLabels       = []string{"tap_flow_id", "tap_flow_name"}
	descSvcPackets   = statDesc("taas_tap_service_delivered_packets_total", "Copies sent to the tap service's monitor.", svcLabels)
	descSvcBytes     = statDesc("taas_tap_service_delivered_bytes_total", "Bytes of copies sent to the tap service's monitor.", svcLabels)
	descSvcDrops     = statDesc("taas_tap_service_drops_total", "Copies for the tap service that were not sent, by reason.", append(svcLabels, "reason"))
	descFlowPkts     = statDesc("taas_tap_flow_matched_packets_total", "Frames the tap flow matched.", flowLabels)
	descFlowBytes    = statDesc("taas_tap_flow_matched_bytes_total", "Bytes of frames the tap flow matched.", flowLabels)
	descFlowRejected = statDesc("taas_tap_flow_rejected_packets_total",
		"Frames the tap flow's source, direction and VLAN selected but its filter rejected (0 without a filter).",
		flowLabels)

	mirrorLabels    = []string{"tap_mirror_id", "tap_mirror_name"}
	descMirrorPkts  = statDesc("taas_tap_mirror_encapsulated_packets_total", "Encapsulated copies the tap mirror sent.", mirrorLabels)
	descMirrorBytes = statDesc("taas_tap_mirror_encapsulated_bytes_total",
		"Bytes of the tap mirror's encapsulated copies on the wire, outer headers included.", mirrorLabels)
	descMirrorTrunc = statDesc("taas_tap_mirror_truncated_packets_total",
		"Encapsulated copies of the tap mirror cut to the mirror's snaplen or to fit the uplink (and sent).", mirrorLabels)
	descMirrorDrops = statDesc("taas_tap_mirror_drops_total", "Copies for the tap mirror that were not sent, by reason.",
		append(mirrorLabels, "reason"))
	descMirrorStatus = prometheus.NewDesc("taas_tap_mirror_status",
		"1 for the tap mirror's current status (ACTIVE, DOWN or ERROR; the reason is in taas/stats), 0 for the others.",
		[]string{"tap_mirror_id", "status"}, nil)
)

// fleetDescs holds, for each description of the data plane's counters,
// its twin with a last label "node", which a fleet's /metrics uses
// (issue 14): a single appliance's series keep the labels they had.
var fleetDescs = map[*prometheus.Desc]*prometheus.Desc{}

// statDesc is prometheus.NewDesc for the data plane's counters, with its
// fleet twin.
func statDesc(name, help string, labels []string) *prometheus.Desc {
	d := prometheus.NewDesc(name, help, labels, nil)
	fleetDescs[d] = prometheus.NewDesc(name, help, append(slices.Clone(labels), "node"), nil)
	return d
}

// statsCollector turns one broker.Stats snapshot into metrics per scrape,
// or, in a fleet, one per node.
type statsCollector struct {
	dp    DataPlane
	names func() Names // nil: names left empty
	// fleet, when set, gives every node's snapshot (Server.snapshots),
	// and every series gets a node label.
	fleet func() []nodeStats
}

var statDescs = []*prometheus.Desc{descPlanVersion, descLinkUp, descQueues, descPath, descRxPackets, descRxBytes,
	descTxPackets, descTxBytes, descIfaceDrops, descIfaceEvents, descIfaceEventBytes, descIfaceOps, descSvcPackets, descSvcBytes, descSvcDrops,
	descFlowPkts, descFlowBytes, descFlowRejected, descMirrorPkts, descMirrorBytes, descMirrorTrunc, descMirrorDrops}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range statDescs {
		if c.fleet != nil {
			d = fleetDescs[d]
		}
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	var names Names
	if c.names != nil {
		names = c.names()
	}
	if c.fleet == nil {
		c.collect(ch, c.dp.Stats(), names, "")
		return
	}
	for _, ns := range c.fleet() {
		c.collect(ch, ns.Stats, names, ns.Node)
	}
}

// collect sends the series of one node's snapshot st; node is the value
// of their node label, "" for none (a single appliance).
func (c *statsCollector) collect(ch chan<- prometheus.Metric, st broker.Stats, names Names, node string) {
	metric := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels []string) {
		if c.fleet != nil {
			d, labels = fleetDescs[d], append(labels, node)
		}
		ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) { metric(d, prometheus.GaugeValue, v, labels) }
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		metric(d, prometheus.CounterValue, float64(v), labels)
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

// MetricsHandler is MetricsHandlerNamed over the server's data plane,
// with the names of MetricNames; in a fleet, every node's counters as
// each last published them (this node's live), each series labelled with
// its node (issue 14).
func (s *Server) MetricsHandler(more ...prometheus.Collector) fiber.Handler {
	c := &statsCollector{dp: s.cfg.DataPlane, names: s.MetricNames}
	if s.cfg.Fleet {
		c.fleet = func() []nodeStats {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			snaps, err := s.snapshots(ctx)
			if err != nil {
				// This node's counters still go out.
				s.log.Warn("read the fleet's stats for /metrics", "err", err)
				return []nodeStats{{Node: s.fleet.rules.self, Stats: s.cfg.DataPlane.Stats()}}
			}
			return snaps
		}
	}
	return metricsHandler(c, more...)
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
