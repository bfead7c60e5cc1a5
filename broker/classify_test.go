package broker

import (
	"encoding/binary"
	"fmt"
	"slices"
	"testing"

	"github.com/taas-appliance/taas/pcapfilter"
	"github.com/taas-appliance/taas/xdpprog"
)

var (
	macA  = [6]byte{0x02, 0, 0, 0, 0, 0x0a}
	macB  = [6]byte{0x02, 0, 0, 0, 0, 0x0b}
	macC  = [6]byte{0x02, 0, 0, 0, 0, 0x0c}
	bcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	mcast = [6]byte{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}
)

// frame builds an Ethernet frame dst <- src with the given tags (TPID,
// VID pairs) and a payload of n bytes.
func frame(dst, src [6]byte, tags [][2]uint16, n int) []byte {
	b := append(dst[:], src[:]...)
	b = slices.Clone(b)
	for _, t := range tags {
		b = binary.BigEndian.AppendUint16(b, t[0])
		b = binary.BigEndian.AppendUint16(b, t[1])
	}
	b = binary.BigEndian.AppendUint16(b, 0x0800)
	return append(b, make([]byte, n)...)
}

func TestParseFrame(t *testing.T) {
	cases := []struct {
		name string
		b    []byte
		want parseResult
		vid  uint16
	}{
		{"untagged", frame(macB, macA, nil, 46), parseOK, 0},
		{"dot1q", frame(macB, macA, [][2]uint16{{0x8100, 100}}, 42), parseOK, 100},
		{"pcp bits ignored", frame(macB, macA, [][2]uint16{{0x8100, 0xe000 | 7}}, 42), parseOK, 7},
		{"qinq outer wins", frame(macB, macA, [][2]uint16{{0x88a8, 300}, {0x8100, 10}}, 38), parseOK, 300},
		{"runt", make([]byte, 13), parseRunt, 0},
		{"empty", nil, parseRunt, 0},
		{"header only", frame(macB, macA, nil, 0)[:14], parseOK, 0},
		{"truncated tag", frame(macB, macA, [][2]uint16{{0x8100, 5}}, 0)[:17], parseTruncatedTag, 0},
		{"truncated inner tag", frame(macB, macA, [][2]uint16{{0x88a8, 5}, {0x8100, 6}}, 0)[:21], parseTruncatedTag, 0},
		{"tag just fits", frame(macB, macA, [][2]uint16{{0x8100, 5}}, 0)[:18], parseOK, 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h frameHeader
			got := parseFrame(tc.b, &h)
			if got != tc.want || (got == parseOK && h.vid != tc.vid) {
				t.Fatalf("parseFrame(%x) = %v vid %d, want %v vid %d", tc.b, got, h.vid, tc.want, tc.vid)
			}
			if got == parseOK && (h.dst != mac48(tc.b[0:6]) || h.src != mac48(tc.b[6:12])) {
				t.Fatalf("parseFrame(%x) MACs %x %x", tc.b, h.dst, h.src)
			}
		})
	}
}

func TestParseVLANFilter(t *testing.T) {
	cases := []struct {
		in      string
		has     []uint16
		hasNot  []uint16
		nilSet  bool
		wantErr bool
	}{
		{in: "", nilSet: true},
		{in: "0", has: []uint16{0}, hasNot: []uint16{1}},
		{in: "10,20-30", has: []uint16{10, 20, 25, 30}, hasNot: []uint16{0, 11, 19, 31}},
		{in: "4095", has: []uint16{4095}, hasNot: []uint16{0}},
		{in: "4096", hasNot: []uint16{0, 4095}},
		{in: "99999999999999999999999", hasNot: []uint16{0, 4095}},
		{in: "30-20", hasNot: []uint16{20, 25, 30}},
		{in: "4000-5000", has: []uint16{4000, 4095}, hasNot: []uint16{3999}},
		{in: "1,,2", wantErr: true},
		{in: "a", wantErr: true},
		{in: "1-", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "1-2-3", wantErr: true},
	}
	for _, tc := range cases {
		s, err := ParseVLANFilter(tc.in)
		if (err != nil) != tc.wantErr {
			t.Fatalf("ParseVLANFilter(%q) error %v, want error %v", tc.in, err, tc.wantErr)
		}
		if err != nil {
			continue
		}
		if (s == nil) != tc.nilSet {
			t.Fatalf("ParseVLANFilter(%q) = %v, want nil %v", tc.in, s, tc.nilSet)
		}
		for _, v := range tc.has {
			if !s.Has(v) {
				t.Errorf("ParseVLANFilter(%q) lacks %d", tc.in, v)
			}
		}
		for _, v := range tc.hasNot {
			if s != nil && s.Has(v) {
				t.Errorf("ParseVLANFilter(%q) has %d", tc.in, v)
			}
		}
	}
}

// testTable compiles flows for one capture interface, with one fake output
// per service slot.
func testTable(flows []compiledFlow) *table {
	var fs, ss int32
	for _, f := range flows {
		fs = max(fs, f.slot+1)
		ss = max(ss, f.svc+1)
	}
	outs := map[int32]*output{}
	return buildTable(1, flows, func(s int32) *output {
		if outs[s] == nil {
			outs[s] = &output{}
		}
		return outs[s]
	}, fs, ss)
}

func vset(s string) *xdpprog.VLANSet {
	v, err := ParseVLANFilter(s)
	if err != nil {
		panic(err)
	}
	return v
}

func TestClassify(t *testing.T) {
	a, b := macKey(macA), macKey(macB)
	flows := []compiledFlow{
		{mac: a, dir: DirOut, slot: 0, svc: 0},                  // A OUT -> s0
		{mac: a, dir: DirIn, slot: 1, svc: 1},                   // A IN -> s1
		{mac: a, dir: DirBoth, slot: 2, svc: 0},                 // A BOTH -> s0 (dedupe with flow 0)
		{mac: b, dir: DirIn, slot: 3, svc: 2, vlans: vset("0")}, // B IN, untagged only -> s2
		{mac: b, dir: DirOut, slot: 4, svc: 3, vlans: vset("100-200")},
	}
	tab := testTable(flows)
	cases := []struct {
		name      string
		b         []byte
		wantSvcs  []int32 // service slots
		wantFlows []int32
	}{
		{"A to C: out of A", frame(macC, macA, nil, 46), []int32{0}, []int32{0, 2}},
		{"C to A: into A", frame(macA, macC, nil, 46), []int32{1, 0}, []int32{1, 2}},
		{"A to B: out of A, into B", frame(macB, macA, nil, 46), []int32{0, 2}, []int32{0, 2, 3}},
		{"A to B tagged: B IN wants untagged only", frame(macB, macA, [][2]uint16{{0x8100, 5}}, 42), []int32{0}, []int32{0, 2}},
		{"broadcast from C: IN of A and B", frame(bcast, macC, nil, 46), []int32{1, 0, 2}, []int32{1, 2, 3}},
		{"multicast from A: not IN of A", frame(mcast, macA, nil, 46), []int32{0, 2}, []int32{0, 2, 3}},
		{"B out vlan 150", frame(macC, macB, [][2]uint16{{0x8100, 150}}, 42), []int32{3}, []int32{4}},
		{"B out qinq outer 150", frame(macC, macB, [][2]uint16{{0x88a8, 150}, {0x8100, 7}}, 42), []int32{3}, []int32{4}},
		{"B out vlan 99", frame(macC, macB, [][2]uint16{{0x8100, 99}}, 42), nil, nil},
		{"C to C: nobody", frame(macC, macC, nil, 46), nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ctr := classifyOne(t, tab, tc.b)
			want := slices.Sorted(slices.Values(tc.wantSvcs))
			if !slices.Equal(got, want) {
				t.Fatalf("Classify(%s) services = %v, want %v", tc.name, got, want)
			}
			for slot := range ctr.flows {
				n := ctr.flows[slot].pkts.Load()
				want := uint64(0)
				if slices.Contains(tc.wantFlows, int32(slot)) {
					want = 1
				}
				if n != want {
					t.Errorf("Classify(%s) flow slot %d matched %d, want %d", tc.name, slot, n, want)
				}
				if want == 1 && ctr.flows[slot].bytes.Load() != uint64(len(tc.b)) {
					t.Errorf("flow slot %d bytes %d, want %d", slot, ctr.flows[slot].bytes.Load(), len(tc.b))
				}
			}
		})
	}
}

// A frame reaches each service once however many flows match, frame after
// frame (the generation stamps must reset per frame, including across a
// wraparound).
func TestClassifyDedupeAcrossGenerations(t *testing.T) {
	a := macKey(macA)
	tab := testTable([]compiledFlow{{mac: a, dir: DirOut, slot: 0, svc: 0}, {mac: a, dir: DirBoth, slot: 1, svc: 0}})
	var c classifier
	c.resize(tab)
	c.gen = ^uint32(0) - 2
	ctr := (&counterSet{}).grown(tab.flowSlots, tab.svcSlots)
	b := frame(macC, macA, nil, 46)
	var h frameHeader
	parseFrame(b, &h)
	for i := 0; i < 6; i++ {
		if hits := c.classify(tab, &h, b, ctr); len(hits) != 1 {
			t.Fatalf("frame %d (gen %d): %d hits, want 1", i, c.gen, len(hits))
		}
	}
	if n := ctr.flows[0].pkts.Load(); n != 6 {
		t.Fatalf("flow 0 matched %d, want 6", n)
	}
}

func TestXDPFilter(t *testing.T) {
	a, b := macKey(macA), macKey(macB)
	f := xdpFilter([]compiledFlow{{mac: a, dir: DirOut, vlans: vset("5")}, {mac: b, dir: DirIn, vlans: vset("7-8")}})
	if f.MACs[macA] != xdpprog.WantSrc || f.MACs[macB] != xdpprog.WantDst || !f.Multicast {
		t.Fatalf("xdpFilter = %+v", f)
	}
	if f.VLANs == nil || !f.VLANs.Has(5) || !f.VLANs.Has(8) || f.VLANs.Has(0) || f.VLANs.Len() != 3 {
		t.Fatalf("xdpFilter VLANs = %v", f.VLANs)
	}
	f = xdpFilter([]compiledFlow{{mac: a, dir: DirOut, vlans: vset("5")}, {mac: a, dir: DirOut}})
	if f.VLANs != nil || f.Multicast {
		t.Fatalf("xdpFilter with a null vlan_filter = %+v, want all VLANs, no multicast", f)
	}
}

// TestClassifyAllocs: parsing and classifying allocate nothing, with and
// without filters.
func TestClassifyAllocs(t *testing.T) {
	a, b := macKey(macA), macKey(macB)
	for _, tc := range []struct {
		name   string
		flows  []compiledFlow
		frames [][]byte
	}{
		{"unfiltered", []compiledFlow{{mac: a, dir: DirBoth, slot: 0, svc: 0}, {mac: b, dir: DirIn, slot: 1, svc: 1, vlans: vset("1-10")}},
			[][]byte{frame(macB, macA, nil, 46), frame(bcast, macC, [][2]uint16{{0x8100, 3}}, 42), make([]byte, 10)}},
		{"filtered", []compiledFlow{{mac: a, dir: DirBoth, slot: 0, svc: 0, filter: mustFilter(t, "tcp port 443")},
			{mac: a, dir: DirOut, slot: 1, svc: 1, filter: mustFilter(t, "udp")}},
			[][]byte{ipFrame(macB, macA, nil, false, 443), ipFrame(macB, macA, [][2]uint16{{0x8100, 3}}, true, 53)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := testTable(tc.flows)
			var c classifier
			c.resize(tab)
			ctr := (&counterSet{}).grown(tab.flowSlots, tab.svcSlots)
			allocs := testing.AllocsPerRun(1000, func() {
				var h frameHeader
				for _, f := range tc.frames {
					if parseFrame(f, &h) == parseOK {
						c.classify(tab, &h, f, ctr)
					}
				}
			})
			if allocs != 0 {
				t.Fatalf("parse+classify allocates %v times per run, want 0", allocs)
			}
		})
	}
}

// BenchmarkClassify is the cost of parsing and classifying one frame that
// one flow matches, without a filter and with one ("tcp port 443",
// accepting the frame).
func BenchmarkClassify(b *testing.B) {
	for _, tc := range []struct {
		name   string
		filter *pcapfilter.Filter
		frame  []byte
	}{
		{"unfiltered", nil, frame(macB, macA, nil, 46)},
		{"filtered", mustFilter(b, "tcp port 443"), ipFrame(macC, macA, nil, false, 443)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tab := testTable([]compiledFlow{{mac: macKey(macA), dir: DirBoth, slot: 0, svc: 0, filter: tc.filter},
				{mac: macKey(macB), dir: DirIn, slot: 1, svc: 1}})
			var c classifier
			c.resize(tab)
			ctr := (&counterSet{}).grown(tab.flowSlots, tab.svcSlots)
			f := tc.frame
			b.ReportAllocs()
			b.SetBytes(int64(len(f)))
			for b.Loop() {
				var h frameHeader
				if parseFrame(f, &h) == parseOK {
					c.classify(tab, &h, f, ctr)
				}
			}
			if ctr.flows[0].pkts.Load() == 0 {
				b.Fatal("the flow matched nothing")
			}
		})
	}
}

// FuzzClassify feeds arbitrary bytes to the frame parser and classifier:
// they must never panic, and a frame reaches each service at most once.
func FuzzClassify(f *testing.F) {
	f.Add(frame(macB, macA, nil, 46))
	f.Add(frame(bcast, macC, [][2]uint16{{0x8100, 3}}, 0))
	f.Add(frame(macA, macB, [][2]uint16{{0x88a8, 3}, {0x8100, 4}}, 0)[:20])
	f.Add([]byte{1, 2, 3})
	tab := testTable([]compiledFlow{
		{mac: macKey(macA), dir: DirBoth, slot: 0, svc: 0},
		{mac: macKey(macA), dir: DirIn, slot: 1, svc: 0, vlans: vset("3")},
		{mac: macKey(macB), dir: DirIn, slot: 2, svc: 1, vlans: vset("1-10")},
	})
	f.Fuzz(func(t *testing.T, b []byte) {
		var c classifier
		c.resize(tab)
		ctr := (&counterSet{}).grown(tab.flowSlots, tab.svcSlots)
		var h frameHeader
		r := parseFrame(b, &h)
		if r != parseOK {
			if len(b) >= 22 && r == parseTruncatedTag {
				t.Fatalf("parseFrame(%x) truncated at %d bytes", b, len(b))
			}
			return
		}
		hits := c.classify(tab, &h, b, ctr)
		seen := map[int32]bool{}
		for _, s := range hits {
			if seen[s] {
				t.Fatalf("classify(%x) hits service %d twice", b, s)
			}
			seen[s] = true
		}
	})
}

// FuzzParseVLANFilter: never panics; a parsed set agrees with a direct
// reading of the list.
func FuzzParseVLANFilter(f *testing.F) {
	for _, s := range []string{"", "0", "1,2-3", "4096", "30-20", "4000-9999", "1,,2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		set, dead, err := parseVLANFilter(s)
		if err != nil || set == nil {
			return
		}
		if set.Len() > 4096 {
			t.Fatalf("ParseVLANFilter(%q) has %d VIDs", s, set.Len())
		}
		// The status agrees with the set: DOWN exactly when it is empty.
		if st := vlanStatus(s, set, dead); (st.State == StateDown) != (set.Len() == 0) {
			t.Fatalf("vlanStatus(%q) = %+v with %d VIDs", s, st, set.Len())
		}
	})
}

// TestMemory: the UMEM figures are those of the sockets Apply opens.
func TestMemory(t *testing.T) {
	for _, tc := range []struct {
		name             string
		cfg              Config
		capture, monitor int
	}{
		{"defaults: a full fill and RX ring each", Config{}, 8192 * 2048, 4096 * 2048},
		{"smaller rings, larger frames", Config{FrameSize: 4096, RxRingSize: 1024}, 2048 * 4096, 4096 * 4096},
		{"NumFrames for both", Config{NumFrames: 1024}, 1024 * 2048, 1024 * 2048},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.cfg.Memory()
			if m.CaptureSocket != tc.capture || m.OutputSocket != tc.monitor {
				t.Errorf("%+v.Memory() = %+v, want capture %d, output %d", tc.cfg, m, tc.capture, tc.monitor)
			}
			c := tc.cfg
			c.setDefaults()
			if got := c.captureSocket().UMEMSize(); got != m.CaptureSocket {
				t.Errorf("capture socket UMEM %d, Memory says %d", got, m.CaptureSocket)
			}
			if got := c.outputSocket().UMEMSize(); got != m.OutputSocket {
				t.Errorf("output socket UMEM %d, Memory says %d", got, m.OutputSocket)
			}
			if got, want := m.Locked(2, 1), 2*tc.capture+tc.monitor; got != want {
				t.Errorf("Locked(2, 1) = %d, want %d", got, want)
			}
		})
	}
}

// TestClassifyTunnels puts a tap mirror's tunnels (IN, OUT, BOTH of port
// A) beside a flow of A: each tunnel gets a frame at most once, with the
// flows' direction semantics, apart from the service of the flow, and
// tunnels count no flow matches.
func TestClassifyTunnels(t *testing.T) {
	a := macKey(macA)
	tin, tout, tboth := &tunnel{slot: 0}, &tunnel{slot: 1}, &tunnel{slot: 2}
	flows := []compiledFlow{
		{mac: a, dir: DirOut, slot: 0, svc: 0},
		{mac: a, dir: DirIn, slot: -1, tun: tin},
		{mac: a, dir: DirOut, slot: -1, tun: tout},
		{mac: a, dir: DirBoth, slot: -1, tun: tboth},
	}
	tab := testTable(flows[:1])
	tab = buildTable(1, flows, func(int32) *output { return tab.outputs[0] }, 1, 1)
	if tab.tunSlots != 3 || !tab.tunnels {
		t.Fatalf("table: %d tunnel slots (tunnels %v), want 3", tab.tunSlots, tab.tunnels)
	}
	for _, tc := range []struct {
		name     string
		b        []byte
		wantSvcs []string // "s0" or the tunnels
	}{
		{"A to B: OUT", frame(macB, macA, nil, 46), []string{"s0", "out", "both"}},
		{"B to A: IN", frame(macA, macB, nil, 46), []string{"in", "both"}},
		{"A to A: IN and OUT, BOTH once", frame(macA, macA, nil, 46), []string{"s0", "in", "out", "both"}},
		{"broadcast from B: IN", frame(bcast, macB, nil, 46), []string{"in", "both"}},
		{"broadcast from A: OUT only", frame(bcast, macA, nil, 46), []string{"s0", "out", "both"}},
		{"B to C: none", frame(macC, macB, nil, 46), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c classifier
			c.resize(tab)
			ctr := (&counterSet{}).grownTo(tab.flowSlots, tab.svcSlots, tab.tunSlots)
			var h frameHeader
			if r := parseFrame(tc.b, &h); r != parseOK {
				t.Fatalf("parseFrame = %v", r)
			}
			var got []string
			for _, s := range c.classify(tab, &h, tc.b, ctr) {
				switch tab.services[s].tun {
				case nil:
					got = append(got, fmt.Sprintf("s%d", tab.services[s].slot))
				case tin:
					got = append(got, "in")
				case tout:
					got = append(got, "out")
				case tboth:
					got = append(got, "both")
				}
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tc.wantSvcs))
			if !slices.Equal(got, want) {
				t.Fatalf("Classify(%s) = %v, want %v", tc.name, got, want)
			}
			wantFlow := uint64(0)
			if slices.Contains(tc.wantSvcs, "s0") {
				wantFlow = 1
			}
			if n := ctr.flows[0].pkts.Load(); n != wantFlow {
				t.Errorf("Classify(%s): flow matched %d, want %d", tc.name, n, wantFlow)
			}
		})
	}
}

// classifyOne classifies frame b against tab with fresh counters: the
// service slots it goes to, sorted, and the counters.
func classifyOne(t *testing.T, tab *table, b []byte) ([]int32, *counterSet) {
	t.Helper()
	var c classifier
	c.resize(tab)
	ctr := (&counterSet{}).grown(tab.flowSlots, tab.svcSlots)
	var h frameHeader
	if r := parseFrame(b, &h); r != parseOK {
		t.Fatalf("parseFrame = %v", r)
	}
	var got []int32
	for _, s := range c.classify(tab, &h, b, ctr) {
		got = append(got, tab.services[s].slot)
	}
	slices.Sort(got)
	return got, ctr
}
