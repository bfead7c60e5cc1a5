package broker

import (
	"github.com/taas-appliance/taas/pcapfilter"
	"github.com/taas-appliance/taas/xdpprog"
)

// table is one capture interface's compiled view of a plan: immutable once
// built, stored in the capture's atomic.Pointer and loaded by its workers
// once per batch.
type table struct {
	version uint64
	// ports maps a source port's packed MAC to its rules.
	ports map[uint64]*portRules
	// inPorts are the ports with at least one IN flow: a broadcast or
	// multicast frame goes to their IN flows unless the port sent it.
	inPorts []*portRules
	// nFlows and services size the workers' dedupe arrays; flow and service
	// indices in rules are local to this table.
	nFlows int
	// services[i] is local service i: its stable counter slot and output.
	services []tableService
	// outputs are the distinct outputs of services, and nOutputs their
	// count; tableService.out indexes it (-1: no output).
	outputs []*output
	// outMax[i] is outputs[i].maxLen when the table was built: an MTU
	// change comes with a link event and a new table.
	outMax []uint32
	// flowSlots, svcSlots and tunSlots are the sizes the workers' counter
	// arrays need.
	flowSlots, svcSlots, tunSlots int32
	// tunnels says whether a service is a tunnel: the workers then read
	// the clock once per batch for ERSPAN III timestamps.
	tunnels bool
	// filters are the distinct filters of the table's flows (flowRule.filter
	// and flows index them), each evaluated at most once per frame.
	filters []*pcapfilter.Filter
	// flows[i] is local flow i's service and filter, for compileFast.
	flows []tableFlow
}

// tableFlow is what compileFast needs of a local flow beside its counter
// slot: its local service and the index of its filter in table.filters
// (-1: none).
type tableFlow struct {
	svc, filter int32
}

// tableService is where a local service's copies go: a monitor, or (tun
// not nil) a tap mirror's tunnel through an uplink. slot is the service's
// counter slot, or the tunnel's. snap truncates a monitor's copies to so
// many bytes (0: whole frames); a tunnel's header truncates its own.
type tableService struct {
	slot int32
	out  int32
	tun  *tunnel
	snap uint32
}

// copyLen is the length of a monitor's copy of an n-byte frame: its
// snaplen when shorter.
func (s *tableService) copyLen(n int) uint32 {
	if s.snap > 0 && uint32(n) > s.snap {
		return s.snap
	}
	return uint32(n)
}

type portRules struct {
	mac     uint64
	out, in []flowRule
}

// flowRule is one flow as seen from one direction of one port.
type flowRule struct {
	flow   int32            // local flow index, for dedupe
	slot   int32            // stable counter slot
	svc    int32            // local service index
	filter int32            // index in table.filters, -1: every frame
	vlans  *xdpprog.VLANSet // nil: every VID
}

func (r *flowRule) wants(vid uint16) bool { return r.vlans == nil || r.vlans.Has(vid) }

// compiledFlow is a flow of the plan with its parsed VLAN set, as Apply
// hands it to buildTable. A tap mirror's tunnel is compiled as a flow of
// its own (tun set, slot -1: no flow counters) into a service of its own:
// the same direction semantics, and a frame goes to each tunnel at most
// once.
type compiledFlow struct {
	mac   uint64
	dir   Direction
	slot  int32
	svc   int32 // service slot
	vlans *xdpprog.VLANSet
	// filter is the flow's compiled filter, nil for every frame. Flows
	// with one expression share one Filter (Broker.filter caches them).
	filter *pcapfilter.Filter
	// snap is the service's snaplen (0: whole frames).
	snap uint32
	tun  *tunnel
}

// buildTable compiles the flows of one capture interface. outputOf gives
// the output of a service slot (nil when its monitor is not available).
func buildTable(version uint64, flows []compiledFlow, outputOf func(svcSlot int32) *output, flowSlots, svcSlots int32) *table {
	t := &table{version: version, ports: map[uint64]*portRules{}, flowSlots: flowSlots, svcSlots: svcSlots}
	filterIndex := map[*pcapfilter.Filter]int32{}
	type svcKey struct {
		svc int32
		tun *tunnel
	}
	svcIndex := map[svcKey]int32{}
	outIndex := map[*output]int32{}
	for i, f := range flows {
		key := svcKey{svc: f.svc, tun: f.tun}
		if f.tun != nil {
			key.svc = -1
		}
		si, ok := svcIndex[key]
		if !ok {
			si = int32(len(t.services))
			svcIndex[key] = si
			ts := tableService{slot: f.svc, out: -1, snap: f.snap}
			o := (*output)(nil)
			if f.tun != nil {
				ts.slot, ts.tun, o = f.tun.slot, f.tun, f.tun.out
				t.tunSlots = max(t.tunSlots, f.tun.slot+1)
				t.tunnels = true
			} else {
				o = outputOf(f.svc)
			}
			if o != nil {
				oi, ok := outIndex[o]
				if !ok {
					oi = int32(len(t.outputs))
					outIndex[o] = oi
					t.outputs = append(t.outputs, o)
					t.outMax = append(t.outMax, o.maxLen.Load())
				}
				ts.out = oi
			}
			t.services = append(t.services, ts)
		}
		p := t.ports[f.mac]
		if p == nil {
			p = &portRules{mac: f.mac}
			t.ports[f.mac] = p
		}
		r := flowRule{flow: int32(i), slot: f.slot, svc: si, filter: -1, vlans: f.vlans}
		if f.filter != nil {
			fi, ok := filterIndex[f.filter]
			if !ok {
				fi = int32(len(t.filters))
				filterIndex[f.filter] = fi
				t.filters = append(t.filters, f.filter)
			}
			r.filter = fi
		}
		t.flows = append(t.flows, tableFlow{svc: si, filter: r.filter})
		if f.dir&DirOut != 0 {
			p.out = append(p.out, r)
		}
		if f.dir&DirIn != 0 {
			if len(p.in) == 0 {
				t.inPorts = append(t.inPorts, p)
			}
			p.in = append(p.in, r)
		}
	}
	t.nFlows = len(flows)
	return t
}

// xdpFilter is the early filter of the table's interface: a superset of
// what the table wants (xdpprog.Filter).
func xdpFilter(flows []compiledFlow) xdpprog.Filter {
	f := xdpprog.Filter{MACs: map[[6]byte]xdpprog.Want{}}
	var vlans xdpprog.VLANSet
	all := false
	for _, fl := range flows {
		var m [6]byte
		for i := range m {
			m[i] = byte(fl.mac >> (40 - 8*i))
		}
		if fl.dir&DirOut != 0 {
			f.MACs[m] |= xdpprog.WantSrc
		}
		if fl.dir&DirIn != 0 {
			f.MACs[m] |= xdpprog.WantDst
			f.Multicast = true
		}
		if fl.vlans == nil {
			all = true
		} else {
			for i := range vlans {
				vlans[i] |= fl.vlans[i]
			}
		}
	}
	if !all {
		f.VLANs = &vlans
	}
	return f
}

// classifier is a worker's per-frame classification state: generation
// stamps dedupe flows and services per frame, and remember each filter's
// verdict on the frame, without a map or a clear.
type classifier struct {
	gen       uint32
	flowStamp []uint32
	svcStamp  []uint32
	// filtStamp[i] == gen when filtPass[i] is filter i's verdict on the
	// current frame.
	filtStamp []uint32
	filtPass  []bool
	// hits are the local service indices the current frame goes to.
	hits []int32
	// liveFlows are the live captures' masks by flow slot (nil: none
	// runs), and liveMask the OR of those of the flows the current frame
	// matched (live.go).
	liveFlows []uint8
	liveMask  uint8
}

// resize makes the stamp arrays fit t; it allocates only when t is larger
// than every table seen before, at a plan swap, never per frame.
func (c *classifier) resize(t *table) {
	grow := func(s []uint32, n int) []uint32 {
		if len(s) < n {
			c.gen = 0 // every stamp array is cleared below
			return make([]uint32, n*2)
		}
		return s
	}
	c.flowStamp = grow(c.flowStamp, t.nFlows)
	c.svcStamp = grow(c.svcStamp, len(t.services))
	c.filtStamp = grow(c.filtStamp, len(t.filters))
	if len(c.filtPass) < len(c.filtStamp) {
		c.filtPass = make([]bool, len(c.filtStamp))
	}
	if cap(c.hits) < len(t.services) {
		c.hits = make([]int32, 0, len(t.services)*2)
	}
	if c.gen == 0 {
		clear(c.flowStamp)
		clear(c.svcStamp)
		clear(c.filtStamp)
	}
}

// classify returns the local service indices frame b (parsed into h) goes
// to, each at most once, and counts a match on every flow that wants it
// (once per flow however many of its rules match), or a rejection on a
// flow whose direction and VLAN want it and whose filter does not. The
// slice is valid until the next call.
//
// With b nil (compileFast tabulating a representative header), filters
// are not run: a filtered flow is stamped in flowStamp but neither counted
// nor its service returned.
func (c *classifier) classify(t *table, h *frameHeader, b []byte, ctr *counterSet) []int32 {
	c.gen++
	if c.gen == 0 {
		clear(c.flowStamp)
		clear(c.svcStamp)
		clear(c.filtStamp)
		c.gen = 1
	}
	c.hits = c.hits[:0]
	c.liveMask = 0
	if p := t.ports[h.src]; p != nil {
		for i := range p.out {
			c.match(t, &p.out[i], h.vid, b, ctr)
		}
	}
	if !isMulticast48(h.dst) {
		if p := t.ports[h.dst]; p != nil {
			for i := range p.in {
				c.match(t, &p.in[i], h.vid, b, ctr)
			}
		}
		return c.hits
	}
	for _, p := range t.inPorts {
		if p.mac == h.src {
			continue // a port's own broadcast is OUT, not IN (DESIGN.md)
		}
		for i := range p.in {
			c.match(t, &p.in[i], h.vid, b, ctr)
		}
	}
	return c.hits
}

func (c *classifier) match(t *table, r *flowRule, vid uint16, b []byte, ctr *counterSet) {
	if !r.wants(vid) || c.flowStamp[r.flow] == c.gen {
		return
	}
	c.flowStamp[r.flow] = c.gen
	if r.filter >= 0 { // the only cost a flow without a filter pays
		if b == nil {
			return // tabulating: compileFast reads the stamp
		}
		if !c.pass(t, r.filter, b) {
			ctr.flows[r.slot].rejected.Add(1) // tunnels have no filter
			return
		}
	}
	if r.slot >= 0 { // a tunnel counts on its own, when sent
		fc := &ctr.flows[r.slot]
		fc.pkts.Add(1)
		fc.bytes.Add(uint64(len(b)))
		c.liveMask |= mask(c.liveFlows, r.slot)
	}
	if c.svcStamp[r.svc] != c.gen {
		c.svcStamp[r.svc] = c.gen
		c.hits = append(c.hits, r.svc)
	}
}

// pass is filter fi's verdict on frame b, run at most once per frame
// however many flows share the filter.
func (c *classifier) pass(t *table, fi int32, b []byte) bool {
	if c.filtStamp[fi] != c.gen {
		c.filtStamp[fi] = c.gen
		c.filtPass[fi] = t.filters[fi].Match(b)
	}
	return c.filtPass[fi]
}
