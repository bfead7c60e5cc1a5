package broker

import "sync/atomic"

// Counters live with the goroutine that bumps them: each worker has its own
// counterSet indexed by stable flow and service slots, and Stats sums them.
// A worker replaces its set with a larger copy when a plan brings new slots
// (at a plan swap, never per frame); a reader that still holds the old set
// sees the values it had when copied, so totals never go backwards.

type flowCounter struct {
	pkts, bytes atomic.Uint64
	// rejected counts the frames the flow's direction and VLAN selection
	// wanted and its filter rejected.
	rejected atomic.Uint64
}

type serviceCounter struct {
	pkts, bytes atomic.Uint64
	drops       [numServiceDrops]atomic.Uint64
}

// serviceDrop is why a copy for a service was not sent.
type serviceDrop uint8

const (
	// dropNoTxFrame: the monitor's UMEM had no free frame (its completions
	// lag, gotcha 4).
	dropNoTxFrame serviceDrop = iota
	// dropTxRingFull: the monitor's TX ring was full.
	dropTxRingFull
	// dropMonitorDown: the service's monitor interface is missing or down.
	dropMonitorDown
	// dropRedirectFailed: the fast path's bpf_redirect_map refused the copy.
	dropRedirectFailed
	// dropMonitorMTU: the copy is larger than the monitor's MTU carries;
	// the kernel would drop it after the send (issue 9), so it is not sent.
	dropMonitorMTU
	// dropKernel: the copy was handed to the kernel, which dropped it on
	// the way out of the monitor (its kernel_tx_dropped); only b.retired
	// holds these, and Stats takes them out of the delivered count.
	dropKernel
	numServiceDrops
)

var serviceDropNames = [numServiceDrops]string{"no_free_tx_frame", "tx_ring_full", "monitor_down", "redirect_failed", "monitor_mtu", "kernel_dropped"}

func (d serviceDrop) String() string { return serviceDropNames[d] }

// tunnelCounter counts one tunnel of a tap mirror (one direction of it):
// encapsulated copies sent and their bytes on the wire, outer headers
// included, how many were cut to the mirror's snaplen or to fit the
// uplink, and drops.
type tunnelCounter struct {
	pkts, bytes, truncated atomic.Uint64
	drops                  [numTunnelDrops]atomic.Uint64
}

// tunnelDrop is why a tap mirror's copy was not sent.
type tunnelDrop uint8

const (
	// tdNoTxFrame: the uplink's UMEM had no free frame.
	tdNoTxFrame tunnelDrop = iota
	// tdTxRingFull: the uplink's TX ring was full.
	tdTxRingFull
	// tdMirrorDown: the mirror could not send: no route, an unresolved
	// neighbour, its uplink down (the mirror's status says which).
	tdMirrorDown
	// tdRedirectFailed: on the fast path, the kernel refused the redirect
	// to the uplink or could not encapsulate the copy.
	tdRedirectFailed
	// tdEncapFailed: on the AF_XDP path, the uplink's TX frame could not
	// hold the encapsulated copy (compileMirrors prevents it).
	tdEncapFailed
	numTunnelDrops
)

var tunnelDropNames = [numTunnelDrops]string{"no_free_tx_frame", "tx_ring_full", "mirror_down", "redirect_failed", "encap_failed"}

func (d tunnelDrop) String() string { return tunnelDropNames[d] }

// counterSet is one worker's per-flow, per-service and per-tunnel counters.
type counterSet struct {
	flows []flowCounter
	svcs  []serviceCounter
	tuns  []tunnelCounter
}

// grown returns a set with room for the slots, copying c's values, or c when
// it is large enough.
func (c *counterSet) grown(flowSlots, svcSlots int32) *counterSet {
	return c.grownTo(flowSlots, svcSlots, 0)
}

// grownTo is grown with tunnel slots too.
func (c *counterSet) grownTo(flowSlots, svcSlots, tunSlots int32) *counterSet {
	if int(flowSlots) <= len(c.flows) && int(svcSlots) <= len(c.svcs) && int(tunSlots) <= len(c.tuns) {
		return c
	}
	n := &counterSet{
		flows: make([]flowCounter, max(int(flowSlots), len(c.flows))*2),
		svcs:  make([]serviceCounter, max(int(svcSlots), len(c.svcs))*2),
		tuns:  make([]tunnelCounter, max(int(tunSlots), len(c.tuns))*2),
	}
	n.add(c)
	return n
}

// add adds src's counters into c, which must be at least as large.
func (c *counterSet) add(src *counterSet) {
	for i := range src.flows {
		c.flows[i].pkts.Add(src.flows[i].pkts.Load())
		c.flows[i].bytes.Add(src.flows[i].bytes.Load())
		c.flows[i].rejected.Add(src.flows[i].rejected.Load())
	}
	for i := range src.svcs {
		c.svcs[i].pkts.Add(src.svcs[i].pkts.Load())
		c.svcs[i].bytes.Add(src.svcs[i].bytes.Load())
		for d := range src.svcs[i].drops {
			c.svcs[i].drops[d].Add(src.svcs[i].drops[d].Load())
		}
	}
	for i := range src.tuns {
		c.tuns[i].pkts.Add(src.tuns[i].pkts.Load())
		c.tuns[i].bytes.Add(src.tuns[i].bytes.Load())
		c.tuns[i].truncated.Add(src.tuns[i].truncated.Load())
		for d := range src.tuns[i].drops {
			c.tuns[i].drops[d].Add(src.tuns[i].drops[d].Load())
		}
	}
}

// flowAt and svcAt return the counters of a slot, growing c to hold it;
// only for sets that no worker bumps (b.retired, Stats' scratch).
func (c *counterSet) flowAt(s int32) *flowCounter {
	c.ensure(s+1, 0)
	return &c.flows[s]
}

func (c *counterSet) svcAt(s int32) *serviceCounter {
	c.ensure(0, s+1)
	return &c.svcs[s]
}

func (c *counterSet) tunAt(s int32) *tunnelCounter {
	c.ensureTo(0, 0, s+1)
	return &c.tuns[s]
}

func (c *counterSet) ensure(flowSlots, svcSlots int32) { c.ensureTo(flowSlots, svcSlots, 0) }

func (c *counterSet) ensureTo(flowSlots, svcSlots, tunSlots int32) {
	if g := c.grownTo(flowSlots, svcSlots, tunSlots); g != c {
		*c = counterSet{flows: g.flows, svcs: g.svcs, tuns: g.tuns}
	}
}

// workerCounter names a worker's per-frame counters that are not per flow.
type workerCounter uint8

const (
	wcFrames workerCounter = iota
	wcBytes
	wcBatches
	wcUnwanted // classified, wanted by no flow (the XDP filter is a superset)
	wcRunt
	wcTruncatedTag
	wcPollErrors
	numWorkerCounters
)

var workerCounterNames = [numWorkerCounters]string{
	"frames", "bytes", "batches", "unwanted", "runt", "truncated_tag", "poll_errors",
}

// workerCounterUnits says what each worker counter counts: a batch is one
// pass over the RX ring, a poll error one failed poll(2).
var workerCounterUnits = [numWorkerCounters]Unit{
	wcBytes: UnitBytes, wcBatches: UnitOperations, wcPollErrors: UnitOperations,
}

// workerCounterIsDrop says which worker counters count lost frames.
var workerCounterIsDrop = [numWorkerCounters]bool{
	wcUnwanted: false, wcRunt: true, wcTruncatedTag: true,
}

// outputCounter names an output's counters.
type outputCounter uint8

const (
	ocCopies outputCounter = iota // frames put on the TX ring
	ocBytes
	ocNoTxFrame
	ocTxRingFull
	ocKickErrors // sendto(2) calls that failed: operations, not frames
	ocMonitorDown
	ocBatches
	ocMonitorMTU // copies larger than the monitor carries, not sent
	numOutputCounters
)

var outputCounterNames = [numOutputCounters]string{
	"copies", "copy_bytes", "no_free_tx_frame", "tx_ring_full", "kick_errors", "monitor_down", "tx_batches", "monitor_mtu",
}

// outputCounterIsDrop says which output counters count lost copies.
// kick_errors is not one: a failed kick loses no frame by itself (what is
// on the TX ring goes with the next kick, or counts as monitor_down).
var outputCounterIsDrop = [numOutputCounters]bool{
	ocNoTxFrame: true, ocTxRingFull: true, ocMonitorDown: true, ocMonitorMTU: true,
}

// outputCounterUnits says what each output counter counts: a TX batch is
// one pass that queued copies and kicked, a kick error one failed kick.
var outputCounterUnits = [numOutputCounters]Unit{
	ocBytes: UnitBytes, ocBatches: UnitOperations, ocKickErrors: UnitOperations,
}
