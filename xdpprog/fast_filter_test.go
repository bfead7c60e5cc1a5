package xdpprog

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/net/bpf"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

// l4Frame is an IPv4 frame dst <- src carrying TCP or UDP (proto) to port
// and 20 bytes of payload.
func l4Frame(t testing.TB, dst, src [6]byte, proto layers.IPProtocol, port int) []byte {
	t.Helper()
	return l4FrameLen(t, dst, src, proto, port, 20)
}

// l4FrameLen is l4Frame with payload bytes of payload, numbered.
func l4FrameLen(t testing.TB, dst, src [6]byte, proto layers.IPProtocol, port, payload int) []byte {
	t.Helper()
	data := make([]byte, payload)
	for i := range data {
		data[i] = byte(i)
	}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: net.IP{198, 51, 100, 1}, DstIP: net.IP{198, 51, 100, 2}}
	var l4 gopacket.SerializableLayer
	switch proto {
	case layers.IPProtocolTCP:
		l4 = &layers.TCP{SrcPort: 40000, DstPort: layers.TCPPort(port), DataOffset: 5}
	case layers.IPProtocolUDP:
		l4 = &layers.UDP{SrcPort: 40000, DstPort: layers.UDPPort(port)}
	default:
		l4 = &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0)}
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true},
		&layers.Ethernet{DstMAC: dst[:], SrcMAC: src[:], EthernetType: layers.EthernetTypeIPv4}, ip, l4,
		gopacket.Payload(data))
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// filterTable is a table with filtered and unfiltered flows, copies to out:
//
//   - out of A: flow 10 unfiltered (service 0), flow 11 "tcp port 443"
//     (service 1), flow 12 "port 443" (service 1 too);
//   - into B: flow 13 "tcp port 443" (service 2);
//   - out of C: flow 14 unfiltered (service 3), no filter at all.
//
// Service i counts in slot 20+i.
func filterTable(t testing.TB, out int) *FastTable {
	tab := &FastTable{Ports: map[[6]byte]uint32{macA: 1, macB: 2, macC: 3},
		Filters: [][]bpf.Instruction{libpcap(t, "tcp port 443"), libpcap(t, "port 443")},
		Decisions: map[FastKey]Decision{
			{Src: 1}: {Services: 0b0001, Flows: []uint16{10, 11, 12}, FlowServices: []uint8{0, 1, 1}, FlowFilters: []int{-1, 0, 1}},
			{Dst: 2}: {Flows: []uint16{13}, FlowServices: []uint8{2}, FlowFilters: []int{0}},
			{Src: 3}: {Services: 0b1000, Flows: []uint16{14}},
		},
		Copies: map[uint64]Copies{}}
	for _, m := range []uint64{0b0001, 0b0011, 0b0100, 0b0101, 0b0111, 0b1000, 0b1100} {
		var cp Copies
		for i := range 4 {
			if m&(1<<i) != 0 {
				cp.Outputs = append(cp.Outputs, out)
				cp.Services = append(cp.Services, DecisionService{Slot: uint16(20 + i)})
			}
		}
		tab.Copies[m] = cp
	}
	return tab
}

// TestFastFilters runs frames through a table with filtered flows with
// BPF_PROG_TEST_RUN: each flow counts matched or rejected, a service gets
// one copy however many of its flows matched, a frame every flow rejects
// is fast_filtered, and unfiltered decisions go on as before. lo (ifindex
// 1) stands in for the monitors.
func TestFastFilters(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	c, err := Load(Config{})
	testutil.SkipIfNotSupported(t, err)
	t.Cleanup(func() { c.Close() })
	if err := c.SetFast(filterTable(t, 1)); err != nil {
		t.Fatal(err)
	}
	tcp, udp, icmp := layers.IPProtocolTCP, layers.IPProtocolUDP, layers.IPProtocolICMPv4
	cases := []struct {
		name  string
		frame []byte
		want  Outcome
		// flows matched and rejected, services copied
		matched, rejected, svcs []uint16
	}{
		{"tcp 443 out of A", l4Frame(t, macOther, macA, tcp, 443), FastRedirected, []uint16{10, 11, 12}, nil, []uint16{20, 21}},
		{"udp 443 out of A", l4Frame(t, macOther, macA, udp, 443), FastRedirected, []uint16{10, 12}, []uint16{11}, []uint16{20, 21}},
		{"icmp out of A", l4Frame(t, macOther, macA, icmp, 0), FastRedirected, []uint16{10}, []uint16{11, 12}, []uint16{20}},
		{"tcp 443 into B", l4Frame(t, macB, macOther, tcp, 443), FastRedirected, []uint16{13}, nil, []uint16{22}},
		{"tcp 80 into B", l4Frame(t, macB, macOther, tcp, 80), FastFiltered, nil, []uint16{13}, nil},
		{"tcp 443 A to B", l4Frame(t, macB, macA, tcp, 443), FastRedirected, []uint16{10, 11, 12, 13}, nil, []uint16{20, 21, 22}},
		{"udp 53 A to B", l4Frame(t, macB, macA, udp, 53), FastRedirected, []uint16{10}, []uint16{11, 12, 13}, []uint16{20}},
		{"tcp 443 C to B", l4Frame(t, macB, macC, tcp, 443), FastRedirected, []uint16{14, 13}, nil, []uint16{22, 23}},
		{"udp C to B", l4Frame(t, macB, macC, udp, 443), FastRedirected, []uint16{14}, []uint16{13}, []uint16{23}},
		{"tcp 443 out of C, unfiltered", l4Frame(t, macOther, macC, tcp, 443), FastRedirected, []uint16{14}, nil, []uint16{23}},
		{"nobody's", l4Frame(t, macOther, macOther, tcp, 443), Unmatched, nil, nil, nil},
	}
	for _, tc := range cases {
		flows := map[uint16]FastFlowCounter{}
		for s := uint16(10); s <= 14; s++ {
			flows[s], _ = c.FastFlow(s)
		}
		svcs := map[uint16]FastServiceCounter{}
		for s := uint16(20); s <= 23; s++ {
			svcs[s], _ = c.FastService(s)
		}
		if o, err := c.Run(tc.frame); err != nil || o != tc.want {
			t.Errorf("Run(%s) = %v, %v; want %v", tc.name, o, err, tc.want)
		}
		for s, before := range flows {
			after, _ := c.FastFlow(s)
			m, r := 0, 0
			for _, x := range tc.matched {
				if x == s {
					m = 1
				}
			}
			for _, x := range tc.rejected {
				if x == s {
					r = 1
				}
			}
			if got := (FastFlowCounter{Packets: after.Packets - before.Packets, Bytes: after.Bytes - before.Bytes,
				Rejected: after.Rejected - before.Rejected}); got != (FastFlowCounter{Packets: uint64(m),
				Bytes: uint64(m * len(tc.frame)), Rejected: uint64(r)}) {
				t.Errorf("%s: flow %d counted %+v, want %d matched, %d rejected", tc.name, s, got, m, r)
			}
		}
		for s, before := range svcs {
			after, _ := c.FastService(s)
			n := 0
			for _, x := range tc.svcs {
				if x == s {
					n = 1
				}
			}
			if got := after.Packets - before.Packets; got != uint64(n) {
				t.Errorf("%s: service %d counted %d copies, want %d", tc.name, s, got, n)
			}
		}
	}
	cnt, err := c.Counters()
	if err != nil {
		t.Fatal(err)
	}
	var sum uint64
	cnt.Each(func(name string, v uint64) {
		if name != "seen" && name != "seen_bytes" && name != "passed" && name != "dropped" && name != "live_failed" {
			sum += v
		}
	})
	if cnt.Seen != sum || cnt.FastFiltered != 1 || cnt.FastRedirected != 9 {
		t.Errorf("counters %+v: want seen == the sum of the outcomes, 1 fast_filtered, 9 fast_redirected", cnt)
	}

	// A frame larger than the UMEM chunk is oversize before any filter
	// runs, as on the unfiltered path.
	small, err := Load(Config{MaxFrame: 100})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { small.Close() })
	if err := small.SetFast(filterTable(t, 1)); err != nil {
		t.Fatal(err)
	}
	if o, err := small.Run(l4FrameLen(t, macOther, macA, tcp, 443, 100)); err != nil || o != Oversize {
		t.Errorf("Run(oversize tcp 443 out of A) = %v, %v; want oversize", o, err)
	}
	if f, _ := small.FastFlow(11); f != (FastFlowCounter{}) {
		t.Errorf("oversize frame: flow 11 counted %+v, want nothing", f)
	}

	// A failed tail call, into the filters or back to xdp_resume, sends
	// nothing and counts the frame fast_failed.
	fr := l4Frame(t, macOther, macA, tcp, 443)
	for _, slot := range []uint32{c.fast.gen, resumeSlot} {
		var prog *ebpf.Program
		if err := c.objs.FastProgs.Lookup(slot, &prog); err != nil {
			t.Fatal(err)
		}
		if err := c.objs.FastProgs.Delete(slot); err != nil {
			t.Fatal(err)
		}
		before, _ := c.FastService(20)
		if o, err := c.Run(fr); err != nil || o != FastFailed {
			t.Errorf("Run without fast_progs[%d] = %v, %v; want fast_failed", slot, o, err)
		}
		if after, _ := c.FastService(20); after != before {
			t.Errorf("without fast_progs[%d]: service 20 counted %+v -> %+v, want no copy", slot, before, after)
		}
		if err := c.objs.FastProgs.Update(slot, prog, ebpf.UpdateAny); err != nil {
			t.Fatal(err)
		}
		prog.Close()
		if o, err := c.Run(fr); err != nil || o != FastRedirected {
			t.Errorf("Run with fast_progs[%d] back = %v, %v; want fast_redirected", slot, o, err)
		}
	}
}

// TestFastFiltersRefused checks the tables SetFast refuses before writing
// anything: limits wrap ErrFastLimit (the broker keeps the AF_XDP path).
func TestFastFiltersRefused(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	c, err := Load(Config{})
	testutil.SkipIfNotSupported(t, err)
	t.Cleanup(func() { c.Close() })
	many := filterTable(t, 1)
	for len(many.Filters) <= MaxFastFilters {
		many.Filters = append(many.Filters, many.Filters[0])
	}
	ancillary := filterTable(t, 1)
	ancillary.Filters[1] = []bpf.Instruction{bpf.LoadExtension{Num: bpf.ExtProto}, bpf.RetA{}}
	huge := longFilterTable(t)
	holes := filterTable(t, 1)
	delete(holes.Copies, 0b0111) // tcp 443 from A to B
	badIndex := filterTable(t, 1)
	badIndex.Decisions[FastKey{Dst: 2}] = Decision{Flows: []uint16{13}, FlowServices: []uint8{2}, FlowFilters: []int{2}}
	cases := []struct {
		name  string
		tab   *FastTable
		limit bool
	}{
		{"too many filters", many, true},
		{"an ancillary load", ancillary, true},
		{"a program the kernel refuses", huge, true},
		{"a reachable mask without copies", holes, false},
		{"a filter index out of range", badIndex, false},
	}
	for _, tc := range cases {
		err := c.SetFast(tc.tab)
		if msg := fmt.Sprint(err); len(msg) < 300 {
			t.Logf("SetFast(%s) = %s", tc.name, msg)
		}
		if err == nil || errors.Is(err, ErrFastLimit) != tc.limit {
			t.Errorf("SetFast(%s) = %v, want an error (ErrFastLimit: %v)", tc.name, err, tc.limit)
		}
	}
	if c.FastOn() {
		t.Error("fast path on after refused tables")
	}
}

// TestFastFilterSwapNeverMisses runs the program on one frame without
// pause while SetFast swaps between tables whose filters sit at other
// indexes (and one without filters): a decision of one generation run
// with another's filters would reject the frame, so every run must be
// redirected.
func TestFastFilterSwapNeverMisses(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	c, err := Load(Config{})
	testutil.SkipIfNotSupported(t, err)
	t.Cleanup(func() { c.Close() })
	tcp, udp := libpcap(t, "tcp"), libpcap(t, "udp")
	table := func(filters [][]bpf.Instruction, filter int) *FastTable {
		d := Decision{Flows: []uint16{0}, FlowServices: []uint8{0}, FlowFilters: []int{filter}}
		if filter < 0 {
			d = Decision{Services: 1, Flows: []uint16{0}}
		}
		return &FastTable{Ports: map[[6]byte]uint32{macA: 1}, Filters: filters,
			Decisions: map[FastKey]Decision{{Src: 1}: d},
			Copies:    map[uint64]Copies{1: {Outputs: []int{1}, Services: []DecisionService{{Slot: 0}}}}}
	}
	tables := []*FastTable{table([][]bpf.Instruction{udp, tcp}, 1), table([][]bpf.Instruction{tcp, udp}, 0), table(nil, -1)}
	if err := c.SetFast(tables[0]); err != nil {
		t.Fatal(err)
	}
	checkSwaps(t, c, l4Frame(t, macOther, macA, layers.IPProtocolTCP, 443), 50, tables...)
	if err := c.SetFast(nil); err != nil {
		t.Fatal(err)
	}
	if c.fast.progs != [2]*ebpf.Program{} {
		t.Errorf("filter programs %v after SetFast(nil), want none", c.fast.progs)
	}
}

// TestFastFiltersVeth sends frames through a capture veth whose program
// decides filtered and unfiltered flows and copies to two monitor veths
// (really redirected, in native and generic mode): a filtered flow's
// monitor gets the frames its filter accepts, cut to the monitor's
// snaplen whether the copy goes alone (fast_tx) or in an output set
// (fast_sets); a shorter frame goes whole; a new table moves the snaplen
// to the other monitor.
func TestFastFiltersVeth(t *testing.T) {
	testutil.RequireRoot(t, needVeth)
	for _, mode := range []Mode{Native, Generic} {
		t.Run(mode.String(), func(t *testing.T) { testFastFiltersVeth(t, mode) })
	}
}

func testFastFiltersVeth(t *testing.T, mode Mode) {
	v := vethInNetns(t, 1)
	monIndex, got := outputVeths(t, v, []string{"m1", "m2"}, func(fr []byte) bool {
		return len(fr) >= 14 && ([6]byte(fr[6:12]) == macA || [6]byte(fr[6:12]) == macC)
	})
	c := attachCapture(t, v, mode)
	inj := packettest.NewInjector(t, v.ns, v.a)
	// Out of A: flow 0 "tcp port 443" to service 0 (monitor 1), flow 1
	// unfiltered to service 1 (monitor 2). Out of C: flow 2 "tcp port 443"
	// to service 0 alone.
	m1, m2 := monIndex[0], monIndex[1]
	tab := &FastTable{Ports: map[[6]byte]uint32{macA: 1, macC: 2},
		Filters: [][]bpf.Instruction{libpcap(t, "tcp port 443")},
		Decisions: map[FastKey]Decision{
			{Src: 1}: {Services: 0b10, Flows: []uint16{0, 1}, FlowServices: []uint8{0, 1}, FlowFilters: []int{0, -1}},
			{Src: 2}: {Flows: []uint16{2}, FlowServices: []uint8{0}, FlowFilters: []int{0}},
		},
		Copies: map[uint64]Copies{
			0b01: {Outputs: []int{m1}, Services: []DecisionService{{Slot: 0}}},
			0b10: {Outputs: []int{m2}, Services: []DecisionService{{Slot: 1}}},
			0b11: {Outputs: []int{m1, m2}, Services: []DecisionService{{Slot: 0}, {Slot: 1}}},
		},
		Snaplens: map[int]uint32{m1: 64}}
	tcp, udp := layers.IPProtocolTCP, layers.IPProtocolUDP
	frames := []struct {
		name   string
		frame  []byte
		m1, m2 int // bytes each monitor gets, 0: none
	}{
		{"tcp 443 out of A: both, the set", l4FrameLen(t, macOther, macA, tcp, 443, 300), 64, 354},
		{"udp out of A: monitor 2", l4FrameLen(t, macOther, macA, udp, 443, 300), 0, 342},
		{"tcp 443 out of C: monitor 1 alone", l4FrameLen(t, macOther, macC, tcp, 443, 300), 64, 0},
		{"short tcp 443 out of C", l4FrameLen(t, macOther, macC, tcp, 443, 6), 60, 0},
		{"udp out of C: filtered", l4FrameLen(t, macOther, macC, udp, 443, 300), 0, 0},
	}
	for round, snaps := range []map[int]uint32{{m1: 64}, {m2: 80}} {
		tab.Snaplens = snaps
		if err := testutil.InNetns(v.ns, func() error { return c.SetFast(tab) }); err != nil {
			t.Fatal(err)
		}
		for _, g := range got {
			g.Reset()
		}
		var want [2][][]byte
		for _, fr := range frames {
			if err := inj.Send(fr.frame); err != nil {
				t.Fatal(err)
			}
			for i, n := range []int{fr.m1, fr.m2} {
				if n == 0 {
					continue
				}
				if round == 1 { // the snaplen moved to monitor 2
					n = len(fr.frame)
					if i == 1 {
						n = min(n, 80)
					}
				}
				want[i] = append(want[i], fr.frame[:n])
			}
		}
		for i, g := range got {
			copies := g.WaitN(len(want[i]), 5*time.Second)
			copies = append(copies, g.Quiet(200*time.Millisecond, 2*time.Second)[len(copies):]...)
			if len(copies) != len(want[i]) {
				t.Fatalf("round %d: monitor %d got %d copies, want %d", round, i+1, len(copies), len(want[i]))
			}
			for j := range copies {
				if !bytes.Equal(copies[j], want[i][j]) {
					t.Errorf("round %d: monitor %d's copy %d =\n%x\nwant\n%x", round, i+1, j, copies[j], want[i][j])
				}
			}
		}
	}
	cnt, err := c.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if cnt.FastFiltered != 2 || cnt.FastRedirected != 8 || cnt.FastFailed != 0 {
		t.Errorf("counters %+v: want 2 fast_filtered, 8 fast_redirected", cnt)
	}
	if f, _ := c.FastFlow(2); f.Packets != 4 || f.Rejected != 2 {
		t.Errorf("flow 2 counted %+v, want 4 matched, 2 rejected", f)
	}
}

// TestFastFiltersRefusedOnce checks that a refused filter set is refused
// again from memory: the broker brings it back with every plan while the
// capture stays on the AF_XDP path, and the verifier may take tens of
// seconds over a large one. A set over MaxFilterInstructions never reaches
// the verifier.
func TestFastFiltersRefusedOnce(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	c, err := Load(Config{})
	testutil.SkipIfNotSupported(t, err)
	t.Cleanup(func() { c.Close() })
	big := longFilterTable(t)
	start := time.Now()
	first := c.SetFast(big)
	t.Logf("first refusal in %v: %v", time.Since(start), first)
	if !errors.Is(first, ErrFastLimit) || !strings.Contains(first.Error(), "eBPF instructions, at most") {
		t.Fatalf("SetFast(%d long filters) = %v, want the instruction budget's ErrFastLimit", len(big.Filters), first)
	}
	start = time.Now()
	again := c.SetFast(big)
	t.Logf("second refusal in %v", time.Since(start))
	if errors.Unwrap(again) != c.fast.refusedErr || c.fast.refusedErr == nil {
		t.Fatalf("second SetFast = %v, want the remembered refusal %v", again, c.fast.refusedErr)
	}
	// A table that fits still loads after a refusal.
	if err := c.SetFast(filterTable(t, 1)); err != nil {
		t.Fatalf("SetFast(a table that fits) after a refusal: %v", err)
	}
}

// longFilterTable is filterTable(t, 1) with MaxFastFilters filters, the
// added ones MaxFilterLen instructions long: each is fine alone, together
// they are more than a filter program may hold.
func longFilterTable(t testing.TB) *FastTable {
	tab := filterTable(t, 1)
	long := make([]bpf.Instruction, MaxFilterLen)
	for i := range long {
		long[i] = bpf.LoadAbsolute{Off: uint32(i % 64), Size: 2}
	}
	long[len(long)-1] = bpf.RetA{}
	for len(tab.Filters) < MaxFastFilters {
		tab.Filters = append(tab.Filters, long)
	}
	return tab
}
