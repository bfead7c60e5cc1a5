package broker

import (
	"slices"
	"testing"

	"github.com/taas-appliance/taas/xdpprog"
)

// FuzzCompileFastMatchesClassify checks the fast table against the one
// classifier it is tabulated from: for flows and a frame from the fuzz
// input, looking the frame up as the XDP program does (VLAN class, source
// port id, destination port id or MulticastPort) gives exactly the flows
// classify counts, the services it returns, and one output per service
// whose monitor is usable.
func FuzzCompileFastMatchesClassify(f *testing.F) {
	f.Add([]byte{0, 3, 0, 0, 0, 1, 2, 0, 10, 20, 1}, byte(0), byte(1), uint16(0))
	f.Add([]byte{1, 1, 5, 5, 0, 1, 2, 5, 9, 3}, byte(4), byte(2), uint16(5))
	f.Add([]byte{2, 2, 0, 0, 1, 0, 0, 1, 1, 2}, byte(5), byte(0), uint16(1))
	pool := [][6]byte{
		{0xfa, 0x16, 0x3e, 0, 0, 1}, {0xfa, 0x16, 0x3e, 0, 0, 2}, {0xfa, 0x16, 0x3e, 0, 0, 3},
		{0x02, 0, 0, 0, 0, 9}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, {0x01, 0x00, 0x5e, 0, 0, 1},
	}
	// Service slot 0 and 2 copy to monitor 10, 1 to monitor 11 (down), 3
	// has no monitor.
	mon10, mon11 := &output{name: "m10", ifindex: 10}, &output{name: "m11", ifindex: 11}
	mon10.up.Store(true)
	outputOf := func(s int32) *output { return []*output{mon10, mon11, mon10, nil}[s] }
	f.Fuzz(func(t *testing.T, spec []byte, src, dst byte, vid uint16) {
		// Flows: 5 bytes each: mac index, direction, vlan lo, vlan hi (lo >
		// hi: every VID), service slot.
		var flows []compiledFlow
		for i := 0; i+5 <= len(spec) && len(flows) < 12; i += 5 {
			fl := compiledFlow{mac: macKey(pool[int(spec[i])%3]), dir: Direction(spec[i+1]%3 + 1),
				slot: int32(len(flows)), svc: int32(spec[i+4] % 4)}
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

		h := frameHeader{src: macKey(pool[int(src)%len(pool)]), dst: macKey(pool[int(dst)%len(pool)]), vid: vid % 4096}
		var cl classifier
		cl.resize(tbl)
		hits := cl.classify(tbl, &h, 0, (&counterSet{}).grown(12, 4))
		var wantFlows []uint16
		for i := range flows {
			if cl.flowStamp[i] == cl.gen {
				wantFlows = append(wantFlows, uint16(flows[i].slot))
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

		key := xdpprog.FastKey{VIDClass: ft.VIDClass[h.vid], Src: ft.Ports[unpackMAC(h.src)]}
		if isMulticast48(h.dst) {
			key.Dst = xdpprog.MulticastPort
		} else {
			key.Dst = ft.Ports[unpackMAC(h.dst)]
		}
		d, ok := ft.Decisions[key]
		if !ok {
			if len(wantFlows) > 0 {
				t.Fatalf("frame %+v: no decision for %+v, classify matches flows %v", h, key, wantFlows)
			}
			return
		}
		sortSvcs := func(s []xdpprog.DecisionService) {
			slices.SortFunc(s, func(a, b xdpprog.DecisionService) int { return int(a.Slot) - int(b.Slot) })
		}
		slices.Sort(d.Flows)
		slices.Sort(wantFlows)
		sortSvcs(d.Services)
		sortSvcs(wantSvcs)
		slices.Sort(d.Outputs)
		slices.Sort(wantOuts)
		if !slices.Equal(d.Flows, wantFlows) || !slices.Equal(d.Services, wantSvcs) || !slices.Equal(d.Outputs, wantOuts) {
			t.Fatalf("frame %+v, flows %+v: decision %+v, classify gives flows %v services %v outputs %v",
				h, flows, d, wantFlows, wantSvcs, wantOuts)
		}
	})
}
