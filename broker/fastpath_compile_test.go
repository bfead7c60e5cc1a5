package broker

import (
	"slices"
	"testing"

	"github.com/taas-appliance/taas/pcapfilter"
	"github.com/taas-appliance/taas/xdpprog"
)

// FuzzCompileFastMatchesClassify checks the fast table against the one
// classifier it is tabulated from: for flows (some with filters) and a
// frame from the fuzz input, looking the frame up as the XDP program does
// (its decisions by VLAN class and port ids, their service masks ORed, a
// filtered flow's service added when its filter accepts the frame, the
// copies of the mask) gives exactly the flows classify counts matched and
// rejected, the services it returns, and one output per service whose
// monitor is usable.
func FuzzCompileFastMatchesClassify(f *testing.F) {
	f.Add([]byte{0, 3, 0, 0, 0, 1, 2, 0, 10, 20, 1}, byte(0), byte(1), uint16(0))
	f.Add([]byte{1, 1, 5, 5, 0, 1, 2, 5, 9, 3}, byte(4), byte(2), uint16(5))
	f.Add([]byte{2, 2, 0, 0, 1, 0, 0, 1, 1, 2}, byte(5), byte(0), uint16(1))
	// Filtered flows: tcp, udp port 53, tcp port 443 into services 1, 2, 0.
	f.Add([]byte{0, 3, 0, 0, 1 | 1<<2, 0, 1, 2, 0, 2 | 2<<2, 1, 2, 5, 5, 3 << 2, 0, 3, 1, 0, 1}, byte(0), byte(1), uint16(0))
	f.Add([]byte{0, 3, 0, 0, 1 | 1<<2, 0, 3, 1, 0, 1 | 2<<2, 0, 2, 1, 0, 1}, byte(4), byte(0), uint16(2<<12|5))
	pool := [][6]byte{
		{0xfa, 0x16, 0x3e, 0, 0, 1}, {0xfa, 0x16, 0x3e, 0, 0, 2}, {0xfa, 0x16, 0x3e, 0, 0, 3},
		{0x02, 0, 0, 0, 0, 9}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, {0x01, 0x00, 0x5e, 0, 0, 1},
	}
	// Service slot 0 and 2 copy to monitor 10, 1 to monitor 11 (down), 3
	// has no monitor.
	mon10, mon11 := &output{name: "m10", ifindex: 10}, &output{name: "m11", ifindex: 11}
	mon10.up.Store(true)
	outputOf := func(s int32) *output { return []*output{mon10, mon11, mon10, nil}[s] }
	// Filters of the flows, and what the frame carries (vid's top bits).
	filters := []*pcapfilter.Filter{nil, mustFilter(f, "tcp"), mustFilter(f, "udp port 53"), mustFilter(f, "tcp port 443")}
	payloads := []struct {
		udp  bool
		port uint16
	}{{false, 443}, {false, 80}, {true, 53}, {true, 54}}
	f.Fuzz(func(t *testing.T, spec []byte, src, dst byte, vid uint16) {
		// Flows: 5 bytes each: mac index, direction, vlan lo, vlan hi (lo >
		// hi: every VID), service slot (low 2 bits) and filter (the next 2).
		var flows []compiledFlow
		for i := 0; i+5 <= len(spec) && len(flows) < 12; i += 5 {
			fl := compiledFlow{mac: macKey(pool[int(spec[i])%3]), dir: Direction(spec[i+1]%3 + 1),
				slot: int32(len(flows)), svc: int32(spec[i+4] % 4), filter: filters[spec[i+4]>>2%4]}
			if lo, hi := uint16(spec[i+2]), uint16(spec[i+3]); lo <= hi {
				fl.vlans = new(xdpprog.VLANSet)
				fl.vlans.AddRange(lo, hi)
			}
			flows = append(flows, fl)
		}
		tbl := buildTable(1, flows, outputOf, 12, 4)
		vlans := make([]*xdpprog.VLANSet, len(flows))
		for i, fl := range flows {
			vlans[i] = fl.vlans
		}
		ft, err := compileFast(tbl, vlans, func(i int) uint16 { return uint16(flows[i].slot) },
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
		pl := payloads[vid>>12%4]
		fr := ipFrame(pool[int(dst)%len(pool)], pool[int(src)%len(pool)], tags, pl.udp, pl.port)
		var h frameHeader
		if r := parseFrame(fr, &h); r != parseOK {
			t.Fatalf("parseFrame(%x) = %v", fr, r)
		}
		var cl classifier
		cl.resize(tbl)
		ctr := (&counterSet{}).grown(12, 4)
		hits := cl.classify(tbl, &h, fr, ctr)
		var wantFlows, wantRejected []uint16
		for i := range flows {
			if ctr.flows[i].pkts.Load() > 0 {
				wantFlows = append(wantFlows, uint16(flows[i].slot))
			}
			if ctr.flows[i].rejected.Load() > 0 {
				wantRejected = append(wantRejected, uint16(flows[i].slot))
			}
		}
		var wantSvcs []xdpprog.DecisionService
		var wantOuts []int
		for _, s := range hits {
			ts := tbl.services[s]
			usable := ts.out >= 0 && tbl.outputs[ts.out].up.Load()
			wantSvcs = append(wantSvcs, xdpprog.DecisionService{Slot: uint16(ts.slot), Down: !usable})
			if usable {
				wantOuts = append(wantOuts, tbl.outputs[ts.out].ifindex)
			}
		}

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
				if fi >= 0 && !tbl.filters[fi].Match(fr) {
					gotRejected = append(gotRejected, d.Flows[i])
					continue
				}
				gotFlows = append(gotFlows, d.Flows[i])
				mask |= 1 << d.FlowServices[i]
			}
		}
		if len(ft.Filters) != len(tbl.filters) {
			t.Fatalf("fast table has %d filters, the table %d", len(ft.Filters), len(tbl.filters))
		}
		slices.Sort(gotRejected)
		slices.Sort(wantRejected)
		if !slices.Equal(gotRejected, wantRejected) {
			t.Fatalf("frame %+v, flows %+v: table rejects flows %v, classify %v", h, flows, gotRejected, wantRejected)
		}
		if mask == 0 {
			// No decision, or every flow rejects the frame.
			if len(wantFlows) > 0 || len(hits) > 0 {
				t.Fatalf("frame %+v: mask 0 for keys %+v, classify matches flows %v services %v", h, keys, wantFlows, hits)
			}
			return
		}
		cp, ok := ft.Copies[mask]
		if !ok {
			t.Fatalf("frame %+v: no copies for keys %+v (mask %#x)", h, keys, mask)
		}
		sortSvcs := func(s []xdpprog.DecisionService) {
			slices.SortFunc(s, func(a, b xdpprog.DecisionService) int { return int(a.Slot) - int(b.Slot) })
		}
		gotSvcs := slices.Clone(cp.Services)
		gotOuts := slices.Clone(cp.Outputs)
		slices.Sort(gotFlows)
		slices.Sort(wantFlows)
		sortSvcs(gotSvcs)
		sortSvcs(wantSvcs)
		slices.Sort(gotOuts)
		slices.Sort(wantOuts)
		if !slices.Equal(gotFlows, wantFlows) || !slices.Equal(gotSvcs, wantSvcs) || !slices.Equal(gotOuts, wantOuts) {
			t.Fatalf("frame %+v, flows %+v: table gives flows %v services %v outputs %v, classify flows %v services %v outputs %v",
				h, flows, gotFlows, gotSvcs, gotOuts, wantFlows, wantSvcs, wantOuts)
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
