package broker

import (
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
}

// tableService is where a local service's copies go: a monitor, or (tun
// not nil) a tap mirror's tunnel through an uplink. slot is the service's
// counter slot, or the tunnel's.
type tableService struct {
	slot int32
	out  int32
	tun  *tunnel
}

type portRules struct {
	mac     uint64
	out, in []flowRule
}

// flowRule is one flow as seen from one direction of one port.
type flowRule struct {
	flow  int32            // local flow index, for dedupe
	slot  int32            // stable counter slot
	svc   int32            // local service index
	vlans *xdpprog.VLANSet // nil: every VID
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
	tun   *tunnel
}

// buildTable compiles the flows of one capture interface. outputOf gives
// the output of a service slot (nil when its monitor is not available).
func buildTable(version uint64, flows []compiledFlow, outputOf func(svcSlot int32) *output, flowSlots, svcSlots int32) *table {
	t := &table{version: version, ports: map[uint64]*portRules{}, flowSlots: flowSlots, svcSlots: svcSlots}
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
			ts := tableService{slot: f.svc, out: -1}
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
		r := flowRule{flow: int32(i), slot: f.slot, svc: si, vlans: f.vlans}
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
// stamps dedupe flows and services per frame without a map or a clear.
type classifier struct {
	gen       uint32
	flowStamp []uint32
	svcStamp  []uint32
	// hits are the local service indices the current frame goes to.
	hits []int32
}

// resize makes the stamp arrays fit t; it allocates only when t is larger
// than every table seen before, at a plan swap, never per frame.
func (c *classifier) resize(t *table) {
	if len(c.flowStamp) < t.nFlows {
		c.flowStamp = make([]uint32, t.nFlows*2)
		c.gen = 0
		clear(c.svcStamp)
	}
	if len(c.svcStamp) < len(t.services) {
		c.svcStamp = make([]uint32, len(t.services)*2)
		c.hits = make([]int32, 0, len(t.services)*2)
		c.gen = 0
		clear(c.flowStamp)
	}
}

// classify returns the local service indices frame h (of n bytes) goes to,
// each at most once, and counts a match on every flow that wants it (once
// per flow however many of its rules match). The slice is valid until the
// next call.
func (c *classifier) classify(t *table, h *frameHeader, n uint64, ctr *counterSet) []int32 {
	c.gen++
	if c.gen == 0 {
		clear(c.flowStamp)
		clear(c.svcStamp)
		c.gen = 1
	}
	c.hits = c.hits[:0]
	if p := t.ports[h.src]; p != nil {
		for i := range p.out {
			c.match(&p.out[i], h.vid, n, ctr)
		}
	}
	if !isMulticast48(h.dst) {
		if p := t.ports[h.dst]; p != nil {
			for i := range p.in {
				c.match(&p.in[i], h.vid, n, ctr)
			}
		}
		return c.hits
	}
	for _, p := range t.inPorts {
		if p.mac == h.src {
			continue // a port's own broadcast is OUT, not IN (DESIGN.md)
		}
		for i := range p.in {
			c.match(&p.in[i], h.vid, n, ctr)
		}
	}
	return c.hits
}

func (c *classifier) match(r *flowRule, vid uint16, n uint64, ctr *counterSet) {
	if !r.wants(vid) || c.flowStamp[r.flow] == c.gen {
		return
	}
	c.flowStamp[r.flow] = c.gen
	if r.slot >= 0 { // a tunnel counts on its own, when sent
		fc := &ctr.flows[r.slot]
		fc.pkts.Add(1)
		fc.bytes.Add(n)
	}
	if c.svcStamp[r.svc] != c.gen {
		c.svcStamp[r.svc] = c.gen
		c.hits = append(c.hits, r.svc)
	}
}
