package broker

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/taas-appliance/taas/internal/testutil"
	"github.com/taas-appliance/taas/pcapfilter"
	"github.com/taas-appliance/taas/xdpprog"
)

// fastCase is one input of the fast table's fuzz targets: flows (some
// with filters) tabulated into a fast table, a frame, and what the one
// classifier makes of the frame.
type fastCase struct {
	flows []compiledFlow
	tbl   *table
	ft    *xdpprog.FastTable
	frame []byte
	h     frameHeader
	// hits are classify's local services; flows and rejected the flow
	// slots it counts matched and rejected; svcs the services it copies
	// to (Down: no usable monitor), outs the outputs of the usable ones.
	hits            []int32
	flows_, rejects []uint16
	svcs            []xdpprog.DecisionService
	outs            []int
}

// fastFuzzSeeds adds the seeds of the fast table's fuzz targets.
func fastFuzzSeeds(f *testing.F) {
	f.Add([]byte{0, 3, 0, 0, 0, 1, 2, 0, 10, 20, 1}, byte(0), byte(1), uint16(0))
	f.Add([]byte{1, 1, 5, 5, 0, 1, 2, 5, 9, 3}, byte(4), byte(2), uint16(5))
	f.Add([]byte{2, 2, 0, 0, 1, 0, 0, 1, 1, 2}, byte(5), byte(0), uint16(1))
	// Filtered flows: tcp, udp port 53, tcp port 443 into services 1, 2, 0.
	f.Add([]byte{0, 3, 0, 0, 1 | 1<<2, 0, 1, 2, 0, 2 | 2<<2, 1, 2, 5, 5, 3 << 2, 0, 3, 1, 0, 1}, byte(0), byte(1), uint16(0))
	f.Add([]byte{0, 3, 0, 0, 1 | 1<<2, 0, 3, 1, 0, 1 | 2<<2, 0, 2, 1, 0, 1}, byte(4), byte(0), uint16(2<<12|5))
}

// fastFuzz builds the cases of the fast table's fuzz targets. Service
// slots 0 and 2 copy to monitor mon (usable), 1 to monitor 11 (down), 3
// has no monitor.
type fastFuzz struct {
	pool     [][6]byte
	outputOf func(s int32) *output
	filters  []*pcapfilter.Filter
	payloads []struct {
		udp  bool
		port uint16
	}
}

func newFastFuzz(f *testing.F, mon int) *fastFuzz {
	m0, m1 := &output{name: "m0", ifindex: mon}, &output{name: "m11", ifindex: 11}
	m0.up.Store(true)
	return &fastFuzz{
		pool: [][6]byte{
			{0xfa, 0x16, 0x3e, 0, 0, 1}, {0xfa, 0x16, 0x3e, 0, 0, 2}, {0xfa, 0x16, 0x3e, 0, 0, 3},
			{0x02, 0, 0, 0, 0, 9}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, {0x01, 0x00, 0x5e, 0, 0, 1},
		},
		outputOf: func(s int32) *output { return []*output{m0, m1, m0, nil}[s] },
		filters:  []*pcapfilter.Filter{nil, mustFilter(f, "tcp"), mustFilter(f, "udp port 53"), mustFilter(f, "tcp port 443")},
		payloads: []struct {
			udp  bool
			port uint16
		}{{false, 443}, {false, 80}, {true, 53}, {true, 54}},
	}
}

// build decodes a fuzz input. Flows: 5 bytes each: mac index, direction,
// vlan lo, vlan hi (lo > hi: every VID), service slot (low 2 bits) and
// filter (the next 2). The frame: dst and src from the pool, one tag with
// VID vid%4096 unless 0, TCP or UDP by vid's top bits.
func (z *fastFuzz) build(t *testing.T, spec []byte, src, dst byte, vid uint16) *fastCase {
	c := &fastCase{}
	for i := 0; i+5 <= len(spec) && len(c.flows) < 12; i += 5 {
		fl := compiledFlow{mac: macKey(z.pool[int(spec[i])%3]), dir: Direction(spec[i+1]%3 + 1),
			slot: int32(len(c.flows)), svc: int32(spec[i+4] % 4), filter: z.filters[spec[i+4]>>2%4]}
		if lo, hi := uint16(spec[i+2]), uint16(spec[i+3]); lo <= hi {
			fl.vlans = new(xdpprog.VLANSet)
			fl.vlans.AddRange(lo, hi)
		}
		c.flows = append(c.flows, fl)
	}
	tbl := buildTable(1, c.flows, z.outputOf, 12, 4)
	c.tbl = tbl
	vlans := make([]*xdpprog.VLANSet, len(c.flows))
	for i, fl := range c.flows {
		vlans[i] = fl.vlans
	}
	var err error
	c.ft, err = compileFast(tbl, vlans, func(i int) uint16 { return uint16(c.flows[i].slot) },
		func(s int32) uint16 { return uint16(tbl.services[s].slot) },
		func(s int32) fastOutput {
			if o := tbl.services[s].out; o >= 0 {
				return fastOutput{ifindex: tbl.outputs[o].ifindex, usable: tbl.outputs[o].up.Load()}
			}
			return fastOutput{}
		})
	if err != nil {
		t.Fatal(err)
	}

	var tags [][2]uint16
	if vid%4096 != 0 {
		tags = [][2]uint16{{0x8100, vid % 4096}}
	}
	pl := z.payloads[vid>>12%4]
	c.frame = ipFrame(z.pool[int(dst)%len(z.pool)], z.pool[int(src)%len(z.pool)], tags, pl.udp, pl.port)
	if r := parseFrame(c.frame, &c.h); r != parseOK {
		t.Fatalf("parseFrame(%x) = %v", c.frame, r)
	}
	var cl classifier
	cl.resize(tbl)
	ctr := (&counterSet{}).grown(12, 4)
	c.hits = cl.classify(tbl, &c.h, c.frame, ctr)
	for i := range c.flows {
		if ctr.flows[i].pkts.Load() > 0 {
			c.flows_ = append(c.flows_, uint16(c.flows[i].slot))
		}
		if ctr.flows[i].rejected.Load() > 0 {
			c.rejects = append(c.rejects, uint16(c.flows[i].slot))
		}
	}
	for _, s := range c.hits {
		ts := tbl.services[s]
		usable := ts.out >= 0 && tbl.outputs[ts.out].up.Load()
		c.svcs = append(c.svcs, xdpprog.DecisionService{Slot: uint16(ts.slot), Down: !usable})
		if usable {
			c.outs = append(c.outs, tbl.outputs[ts.out].ifindex)
		}
	}
	return c
}

// FuzzCompileFastMatchesClassify checks the fast table against the one
// classifier it is tabulated from: for flows (some with filters) and a
// frame from the fuzz input, looking the frame up as the XDP program does
// (its decisions by VLAN class and port ids, their service masks ORed, a
// filtered flow's service added when its filter accepts the frame, the
// copies of the mask) gives exactly the flows classify counts matched and
// rejected, the services it returns, and one output per service whose
// monitor is usable.
func FuzzCompileFastMatchesClassify(f *testing.F) {
	fastFuzzSeeds(f)
	z := newFastFuzz(f, 10)
	f.Fuzz(func(t *testing.T, spec []byte, src, dst byte, vid uint16) {
		c := z.build(t, spec, src, dst, vid)
		ft, h := c.ft, c.h

		// The program's lookup (xdp.c, fast()).
		class, srcID := ft.VIDClass[h.vid], ft.Ports[unpackMAC(h.src)]
		var keys []xdpprog.FastKey
		switch dst := ft.Ports[unpackMAC(h.dst)]; {
		case isMulticast48(h.dst):
			keys = append(keys, xdpprog.FastKey{VIDClass: class, Src: srcID, Dst: xdpprog.MulticastPort})
		case srcID != 0 && srcID == dst:
			keys = append(keys, xdpprog.FastKey{VIDClass: class, Src: srcID, Dst: srcID})
		default:
			if srcID != 0 {
				keys = append(keys, xdpprog.FastKey{VIDClass: class, Src: srcID})
			}
			if dst != 0 {
				keys = append(keys, xdpprog.FastKey{VIDClass: class, Dst: dst})
			}
		}
		var mask uint64
		var gotFlows, gotRejected []uint16
		for _, k := range keys {
			d, ok := ft.Decisions[k]
			if !ok {
				continue
			}
			mask |= d.Services
			if d.FlowFilters == nil {
				gotFlows = append(gotFlows, d.Flows...)
				continue
			}
			if len(d.FlowFilters) != len(d.Flows) || len(d.FlowServices) != len(d.Flows) {
				t.Fatalf("decision %+v: %d flows, %d filters, %d services", k, len(d.Flows), len(d.FlowFilters), len(d.FlowServices))
			}
			for i, fi := range d.FlowFilters {
				// The program runs ft.Filters[fi]; compileFast takes
				// them from the table's filters, in order.
				if fi >= 0 && !c.tbl.filters[fi].Match(c.frame) {
					gotRejected = append(gotRejected, d.Flows[i])
					continue
				}
				gotFlows = append(gotFlows, d.Flows[i])
				mask |= 1 << d.FlowServices[i]
			}
		}
		if len(ft.Filters) != len(c.tbl.filters) {
			t.Fatalf("fast table has %d filters, the table %d", len(ft.Filters), len(c.tbl.filters))
		}
		if !sameSlots(gotRejected, c.rejects) {
			t.Fatalf("frame %+v, flows %+v: table rejects flows %v, classify %v", h, c.flows, gotRejected, c.rejects)
		}
		if mask == 0 {
			// No decision, or every flow rejects the frame.
			if len(c.flows_) > 0 || len(c.hits) > 0 {
				t.Fatalf("frame %+v: mask 0 for keys %+v, classify matches flows %v services %v", h, keys, c.flows_, c.hits)
			}
			return
		}
		cp, ok := ft.Copies[mask]
		if !ok {
			t.Fatalf("frame %+v: no copies for keys %+v (mask %#x)", h, keys, mask)
		}
		sortSvcs := func(s []xdpprog.DecisionService) []xdpprog.DecisionService {
			s = slices.Clone(s)
			slices.SortFunc(s, func(a, b xdpprog.DecisionService) int { return int(a.Slot) - int(b.Slot) })
			return s
		}
		gotSvcs, wantSvcs := sortSvcs(cp.Services), sortSvcs(c.svcs)
		if !sameSlots(gotFlows, c.flows_) || !slices.Equal(gotSvcs, wantSvcs) || !sameSlots(cp.Outputs, c.outs) {
			t.Fatalf("frame %+v, flows %+v: table gives flows %v services %v outputs %v, classify flows %v services %v outputs %v",
				h, c.flows, gotFlows, gotSvcs, cp.Outputs, c.flows_, wantSvcs, c.outs)
		}
	})
}

// sameSlots reports whether a and b hold the same values, in any order.
func sameSlots[E int | uint16](a, b []E) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

// fastProg is one loaded (not attached) XDP program per fuzzing process.
var fastProg struct {
	once sync.Once
	c    *xdpprog.Capture
	err  error
}

// FuzzFastRunMatchesClassify loads the fast table of a fuzz input (see
// FuzzCompileFastMatchesClassify) into the real XDP program and runs the
// frame through it (BPF_PROG_TEST_RUN): the flows it counts matched and
// rejected, and the services it copies to (or counts down), are exactly
// classify's. lo (ifindex 1) stands in for the usable monitor.
func FuzzFastRunMatchesClassify(f *testing.F) {
	fastFuzzSeeds(f)
	z := newFastFuzz(f, 1)
	f.Fuzz(func(t *testing.T, spec []byte, src, dst byte, vid uint16) {
		if os.Geteuid() != 0 {
			t.Skip("requires root: CAP_BPF to load and test-run the XDP program")
		}
		c := z.build(t, spec, src, dst, vid)
		fp := &fastProg
		fp.once.Do(func() { fp.c, fp.err = xdpprog.Load(xdpprog.Config{}) })
		testutil.SkipIfNotSupported(t, fp.err)
		prog := fp.c
		if err := prog.SetFast(c.ft); err != nil {
			t.Fatalf("SetFast: %v", err)
		}
		flows := make([]xdpprog.FastFlowCounter, 12)
		svcs := make([]xdpprog.FastServiceCounter, 4)
		read := func() {
			for s := range flows {
				flows[s], _ = prog.FastFlow(uint16(s))
			}
			for s := range svcs {
				svcs[s], _ = prog.FastService(uint16(s))
			}
		}
		read()
		flowsBefore, svcsBefore := slices.Clone(flows), slices.Clone(svcs)
		o, err := prog.Run(c.frame)
		if err != nil {
			t.Fatal(err)
		}
		read()
		var gotFlows, gotRejected []uint16
		for s := range flows {
			if flows[s].Packets != flowsBefore[s].Packets {
				gotFlows = append(gotFlows, uint16(s))
			}
			if flows[s].Rejected != flowsBefore[s].Rejected {
				gotRejected = append(gotRejected, uint16(s))
			}
		}
		var gotSvcs []xdpprog.DecisionService
		for s := range svcs {
			switch {
			case svcs[s].Packets != svcsBefore[s].Packets:
				gotSvcs = append(gotSvcs, xdpprog.DecisionService{Slot: uint16(s)})
			case svcs[s].Down != svcsBefore[s].Down:
				gotSvcs = append(gotSvcs, xdpprog.DecisionService{Slot: uint16(s), Down: true})
			}
		}
		wantSvcs := slices.Clone(c.svcs)
		slices.SortFunc(wantSvcs, func(a, b xdpprog.DecisionService) int { return int(a.Slot) - int(b.Slot) })
		if !sameSlots(gotFlows, c.flows_) || !sameSlots(gotRejected, c.rejects) || !slices.Equal(gotSvcs, wantSvcs) {
			t.Fatalf("frame %x (%v), flows %+v: the program matches flows %v, rejects %v, copies to %v; classify %v, %v, %v",
				c.frame, o, c.flows, gotFlows, gotRejected, gotSvcs, c.flows_, c.rejects, wantSvcs)
		}
	})
}

// The fast table grows with the ports, not with their pairs: 1000 ports
// each with a BOTH flow into one service fit (a table by source and
// destination pair would need a million decisions).
func TestCompileFastIsLinearInPorts(t *testing.T) {
	const ports = 1000
	var flows []compiledFlow
	for i := 0; i < ports; i++ {
		flows = append(flows, compiledFlow{mac: 0xfa163e000000 + uint64(i), dir: DirBoth, slot: int32(i)})
	}
	mon := &output{name: "m", ifindex: 10}
	mon.up.Store(true)
	tbl := buildTable(1, flows, func(int32) *output { return mon }, ports, 1)
	ft, err := compileFast(tbl, make([]*xdpprog.VLANSet, ports), func(i int) uint16 { return uint16(i) },
		func(int32) uint16 { return 0 }, func(int32) fastOutput { return fastOutput{ifindex: 10, usable: true} })
	if err != nil {
		t.Fatal(err)
	}
	if len(ft.Decisions) > 4*ports+1 || len(ft.Copies) != 1 {
		t.Errorf("compileFast(%d BOTH ports, one service) = %d decisions, %d copies; want at most %d, 1",
			ports, len(ft.Decisions), len(ft.Copies), 4*ports+1)
	}
}

// TestCompileFastSnaplens: the snaplens of the fast table are those of
// the monitors, by ifindex; two services of one monitor that disagree
// keep the capture on the AF_XDP path (a monitor's DEVMAP entry cuts every
// copy it sends alike), and so does a monitor with a snaplen that is also
// a tunnel's uplink (one egress program per interface); the error names
// the monitor.
func TestCompileFastSnaplens(t *testing.T) {
	m10, m11 := &output{name: "m10", ifindex: 10}, &output{name: "m11", ifindex: 11}
	u10, u11 := &output{name: "m10", role: roleUplink, ifindex: 10}, &output{name: "m11", role: roleUplink, ifindex: 11}
	for _, o := range []*output{m10, m11, u10, u11} {
		o.up.Store(true)
	}
	a := macKey(macA)
	for _, tc := range []struct {
		name    string
		snaps   []uint32 // of services 0..2: 0 and 1 on m10, 2 on m11
		uplink  *output  // a tap mirror's tunnel's, nil: none
		want    map[int]uint32
		wantErr string
	}{
		{"none", []uint32{0, 0, 0}, nil, nil, ""},
		{"one monitor", []uint32{0, 0, 128}, nil, map[int]uint32{11: 128}, ""},
		{"agreeing services", []uint32{64, 64, 0}, nil, map[int]uint32{10: 64}, ""},
		{"disagreeing services", []uint32{64, 100, 0}, nil, nil, "monitor m10 serves tap services with snaplens 64 and 100"},
		{"one service whole", []uint32{64, 0, 0}, nil, nil, "monitor m10 serves tap services with snaplens 64 and 0"},
		{"uplink of a whole monitor", []uint32{0, 0, 128}, u10, map[int]uint32{11: 128}, ""},
		{"uplink of a monitor with a snaplen", []uint32{0, 0, 128}, u11, nil,
			"monitor m11, whose tap services cut copies to a snaplen, is also a tap mirror's uplink"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var flows []compiledFlow
			for s, snap := range tc.snaps {
				flows = append(flows, compiledFlow{mac: a, dir: DirOut, slot: int32(s), svc: int32(s), snap: snap})
			}
			if tc.uplink != nil {
				flows = append(flows, compiledFlow{mac: a, dir: DirIn, slot: -1, svc: -1,
					tun: &tunnel{slot: 0, hdr: &xdpprog.TunnelHeader{}, out: tc.uplink}})
			}
			tbl := buildTable(1, flows, func(s int32) *output { return []*output{m10, m10, m11}[s] }, 3, 3)
			ft, err := compileFast(tbl, make([]*xdpprog.VLANSet, len(flows)), func(i int) uint16 {
				if flows[i].slot < 0 {
					return noFlowSlot
				}
				return uint16(i)
			}, func(s int32) uint16 { return uint16(s) }, func(s int32) fastOutput {
				if tbl.services[s].tun != nil {
					return fastOutput{ifindex: xdpprog.TunnelOutput(0), usable: true}
				}
				return fastOutput{ifindex: tbl.outputs[tbl.services[s].out].ifindex, usable: true}
			})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("compileFast(snaplens %v) error %v, want %q", tc.snaps, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("compileFast(snaplens %v): %v", tc.snaps, err)
			}
			if !maps.Equal(ft.Snaplens, tc.want) {
				t.Fatalf("compileFast(snaplens %v) Snaplens = %v, want %v", tc.snaps, ft.Snaplens, tc.want)
			}
		})
	}
}

// TestTableRefusal: the reason a capture stays on the AF_XDP path names a
// refused filter by its expression and the tap flows that have it, not by
// its index in the table; other refusals keep their words.
func TestTableRefusal(t *testing.T) {
	b := &Broker{flowSlots: map[string]int32{"web-a": 0, "dns": 1, "web-b": 2, "all": 3}}
	web, dns := mustFilter(t, "tcp port 443"), mustFilter(t, "udp port 53")
	flows := []compiledFlow{
		{mac: macKey(macA), dir: DirOut, slot: 0, svc: 0, filter: web},
		{mac: macKey(macA), dir: DirIn, slot: 1, svc: 0, filter: dns},
		{mac: macKey(macB), dir: DirOut, slot: 2, svc: 0, filter: web},
		{mac: macKey(macB), dir: DirIn, slot: 3, svc: 0},
	}
	tbl := buildTable(1, flows, func(int32) *output { return nil }, 4, 1)
	why := errors.New("instruction 7 (ldh [12]): backward jump")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("set fast: %w", &xdpprog.FilterError{Filter: slices.Index(tbl.filters, web), Err: why}),
			`filter "tcp port 443" of tap flows web-a, web-b does not fit the fast path (the AF_XDP path runs it): instruction 7 (ldh [12]): backward jump`},
		{&xdpprog.FilterError{Filter: slices.Index(tbl.filters, dns), Err: why},
			`filter "udp port 53" of tap flow dns does not fit the fast path (the AF_XDP path runs it): instruction 7 (ldh [12]): backward jump`},
		{fmt.Errorf("70 filters, at most 64: %w", xdpprog.ErrFastLimit),
			"fast table does not fit: 70 filters, at most 64: " + xdpprog.ErrFastLimit.Error()},
	} {
		if got := b.tableRefusal(tc.err, tbl, flows); got != tc.want {
			t.Errorf("tableRefusal(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
