package broker

import (
	"bytes"
	"fmt"
	"math/rand"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
	"github.com/taas-appliance/taas/pcapfilter"
)

// mustFilter compiles expr or fails the test.
func mustFilter(t testing.TB, expr string) *pcapfilter.Filter {
	t.Helper()
	f, err := pcapfilter.Compile(expr)
	if err != nil {
		t.Fatalf("Compile(%q): %v", expr, err)
	}
	return f
}

// ipFrame builds an Ethernet/IPv4 frame dst <- src with tags (TPID, VID
// pairs, outermost first) carrying TCP (udp false) or UDP to port.
func ipFrame(dst, src [6]byte, tags [][2]uint16, udp bool, port uint16) []byte {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(src[:]), DstMAC: net.HardwareAddr(dst[:]), EthernetType: layers.EthernetTypeIPv4}
	ls := []gopacket.SerializableLayer{eth}
	for i, tg := range tags {
		if i == 0 {
			eth.EthernetType = layers.EthernetType(tg[0])
		}
		next := layers.EthernetTypeIPv4
		if i+1 < len(tags) {
			next = layers.EthernetType(tags[i+1][0])
		}
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: tg[1], Type: next})
	}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP,
		SrcIP: net.IPv4(198, 51, 100, 1), DstIP: net.IPv4(198, 51, 100, 2)}
	ls = append(ls, ip)
	if udp {
		ip.Protocol = layers.IPProtocolUDP
		ls = append(ls, &layers.UDP{SrcPort: 40000, DstPort: layers.UDPPort(port)})
	} else {
		ls = append(ls, &layers.TCP{SrcPort: 40000, DstPort: layers.TCPPort(port), SYN: true})
	}
	ls = append(ls, gopacket.Payload(make([]byte, 8)))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, ls...); err != nil {
		panic(err) // fixed layers: a bug
	}
	return slices.Clone(buf.Bytes())
}

// TestClassifyFilters: a filtered flow matches only the frames its
// direction, VLAN set and filter all want, and counts as rejected the
// frames its direction and VLAN set want and its filter does not; a
// service still gets one copy whichever of its flows match.
func TestClassifyFilters(t *testing.T) {
	a, b := macKey(macA), macKey(macB)
	tcp, dns := mustFilter(t, "tcp"), mustFilter(t, "udp port 53")
	flows := []compiledFlow{
		{mac: a, dir: DirOut, slot: 0, svc: 0, filter: tcp},                   // A OUT tcp -> s0
		{mac: a, dir: DirOut, slot: 1, svc: 0, vlans: vset("100")},            // A OUT vlan 100 -> s0
		{mac: a, dir: DirBoth, slot: 2, svc: 1, filter: dns},                  // A BOTH dns -> s1
		{mac: a, dir: DirIn, slot: 3, svc: 2, filter: tcp},                    // A IN tcp -> s2
		{mac: b, dir: DirOut, slot: 4, svc: 3, filter: tcp, vlans: vset("5")}, // B OUT vlan 5 tcp -> s3
	}
	tab := testTable(flows)
	if len(tab.filters) != 2 {
		t.Fatalf("table has %d filters, want 2 (flows 0, 3 and 4 share one)", len(tab.filters))
	}
	v := func(vid uint16) [][2]uint16 { return [][2]uint16{{0x8100, vid}} }
	qinq := [][2]uint16{{0x88a8, 5}, {0x8100, 7}}
	cases := []struct {
		name          string
		b             []byte
		svcs          []int32 // service slots
		matched, rejd []int32 // flow slots
	}{
		{"A to C tcp", ipFrame(macC, macA, nil, false, 443), []int32{0}, []int32{0}, []int32{2}},
		{"A to C tcp vlan 100: two flows of s0, one copy", ipFrame(macC, macA, v(100), false, 443), []int32{0}, []int32{0, 1}, []int32{2}},
		{"A to C dns vlan 100", ipFrame(macC, macA, v(100), true, 53), []int32{0, 1}, []int32{1, 2}, []int32{0}},
		{"A to C udp 54", ipFrame(macC, macA, nil, true, 54), nil, nil, []int32{0, 2}},
		{"C to A dns", ipFrame(macA, macC, nil, true, 53), []int32{1}, []int32{2}, []int32{3}},
		{"C to A tcp", ipFrame(macA, macC, nil, false, 80), []int32{2}, []int32{3}, []int32{2}},
		{"A to A tcp", ipFrame(macA, macA, nil, false, 80), []int32{0, 2}, []int32{0, 3}, []int32{2}},
		{"broadcast from C tcp", ipFrame(bcast, macC, nil, false, 80), []int32{2}, []int32{3}, []int32{2}},
		{"B to C tcp vlan 5", ipFrame(macC, macB, v(5), false, 80), []int32{3}, []int32{4}, nil},
		{"B to C tcp qinq outer 5", ipFrame(macC, macB, qinq, false, 80), []int32{3}, []int32{4}, nil},
		{"B to C udp vlan 5", ipFrame(macC, macB, v(5), true, 80), nil, nil, []int32{4}},
		{"B to C udp vlan 6: not the flow's VLAN, not rejected", ipFrame(macC, macB, v(6), true, 80), nil, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ctr := classifyOne(t, tab, tc.b)
			if !slices.Equal(got, tc.svcs) {
				t.Fatalf("Classify(%s) services = %v, want %v", tc.name, got, tc.svcs)
			}
			for slot := range flows {
				fc := &ctr.flows[slot]
				wm, wr := uint64(0), uint64(0)
				if slices.Contains(tc.matched, int32(slot)) {
					wm = 1
				}
				if slices.Contains(tc.rejd, int32(slot)) {
					wr = 1
				}
				if fc.pkts.Load() != wm || fc.rejected.Load() != wr {
					t.Errorf("Classify(%s) flow %d matched %d rejected %d, want %d and %d",
						tc.name, slot, fc.pkts.Load(), fc.rejected.Load(), wm, wr)
				}
			}
		})
	}
}

// TestApplyFilterErrors: a filter the compiler refuses (stored by a version
// that accepted it) is the compiler's message, with the expression; a good
// one is compiled once and shared; the cache forgets what the plan drops.
func TestApplyFilterErrors(t *testing.T) {
	b := &Broker{filters: map[string]compiledFilter{}}
	if f, err := b.filter(""); f != nil || err != nil {
		t.Fatalf(`filter("") = %v, %v, want nil, nil`, f, err)
	}
	_, err := b.filter("tcp and")
	if err == nil || !strings.Contains(err.Error(), `filter "tcp and"`) {
		t.Fatalf(`filter("tcp and") = %v, want the compiler's refusal`, err)
	}
	_, want := pcapfilter.Compile("tcp and")
	if !strings.Contains(err.Error(), want.Error()) {
		t.Errorf(`filter("tcp and") = %q, want the compiler's message %q`, err, want)
	}
	f1, err1 := b.filter("tcp port 443")
	f2, err2 := b.filter("tcp port 443")
	if err1 != nil || err2 != nil || f1 == nil || f1 != f2 {
		t.Fatalf("filter twice = %p %v, %p %v: want one Filter", f1, err1, f2, err2)
	}
	b.pruneFilters(&Plan{Flows: []Flow{{Filter: "tcp port 443"}}})
	if len(b.filters) != 1 {
		t.Fatalf("after prune: %d filters cached, want 1", len(b.filters))
	}
}

// filterPort is the source port of the filter differential test: a MAC
// of the corpus, so that "ether host" expressions see it.
var filterPort = packettest.MustMAC("02:00:00:00:00:01")

// portFrames returns packettest.RandomFrames made the port's: a frame that
// is neither from nor to the port, nor to a group address, is sent from
// it. Duplicates are left out, so that a frame's bytes name it.
func portFrames(n int, seed int64) [][]byte {
	var frames [][]byte
	seen := map[string]bool{}
	for _, fr := range packettest.RandomFrames(rand.New(rand.NewSource(seed)), n) {
		if !bytes.Equal(fr[0:6], filterPort) && !bytes.Equal(fr[6:12], filterPort) && fr[0]&1 == 0 {
			copy(fr[6:12], filterPort)
		}
		if !seen[string(fr)] {
			seen[string(fr)] = true
			frames = append(frames, fr)
		}
	}
	return frames
}

// TestBrokerFiltersMatchTcpdump is issue 11's differential test, end to
// end on both paths: for every expression of the corpus, a BOTH flow of
// the port with that filter, each into a service of its own monitor; the
// random frames of the port, each with 0, 1 and 2 VLAN tags, go into the
// capture interface, and each monitor must receive exactly the frames
// tcpdump accepts (on the untagged frames), each once and byte for byte,
// and its flow count them matched and the others rejected. The flows go
// in batches of filterBatch (one plan each): as many services as the fast
// table holds copies for every subset of (see compileFast).
func TestBrokerFiltersMatchTcpdump(t *testing.T) {
	testutil.RequireRoot(t, rootWhy)
	const nFrames, filterBatch = 150, 6
	exprs := packettest.FilterCorpus(t)
	frames := portFrames(nFrames, 11)
	start := time.Now()
	accepts := make([][]bool, len(exprs))
	for i, e := range exprs {
		accepts[i] = packettest.TcpdumpAccepts(t, e, frames)
	}
	t.Logf("%d expressions, %d frames (x3 tag variants), tcpdump took %v", len(exprs), len(frames), time.Since(start))
	// variant names every frame sent: frame index and tag variant.
	type variant struct{ frame, tags int }
	sent := map[string]variant{}
	for i, fr := range frames {
		for v, tf := range packettest.TagVariants(fr) {
			sent[string(tf)] = variant{i, v}
		}
	}
	keep := func(b []byte) bool { _, ok := sent[string(b)]; return ok }

	forEachPath(t, func(t *testing.T, fast bool) {
		start := time.Now()
		tp := newTopoKeep(t, filterBatch, 1, keep)
		b := newBroker(t, Config{FastPath: fast})
		p := &Plan{}
		for j := range filterBatch {
			p.Services = append(p.Services, Service{ID: fmt.Sprintf("s%d", j), Iface: tp.mons[j]})
		}
		for first := 0; first < len(exprs); first += filterBatch {
			batch := exprs[first:min(first+filterBatch, len(exprs))]
			p.Version++
			p.Flows = nil
			for j, e := range batch {
				p.Flows = append(p.Flows, Flow{ID: fmt.Sprintf("f%d", first+j), ServiceID: p.Services[j].ID,
					SourcePortID: "port", Iface: tp.capIf, MAC: mac6(filterPort), Direction: DirBoth, Filter: e})
			}
			wantActive(t, apply(t, b, p))
			// Every filter of the corpus runs on the fast path (protochain
			// too, unrolled): no batch falls back to AF_XDP.
			if why := capturePathReason(b, tp.capIf); fast && why != "" {
				t.Fatalf("filters %q: capture on the AF_XDP path: %s", batch, why)
			}
			wantPath(t, b, tp.capIf, fast)
			tp.reset()
			for _, fr := range frames {
				tp.send(t, packettest.TagVariants(fr)...)
			}
			wants := make([]int, len(batch))
			for j := range batch {
				for _, ok := range accepts[first+j] {
					if ok {
						wants[j] += 3
					}
				}
				tp.caps[j].WaitN(wants[j], 10*time.Second)
			}
			// Then a quiet time for every monitor at once: what comes
			// later than that is a copy too many.
			time.Sleep(200 * time.Millisecond)
			for j, e := range batch {
				want := wants[j]
				got := map[variant]int{}
				for _, f := range tp.caps[j].Quiet(50*time.Millisecond, 3*time.Second) {
					got[sent[string(f)]]++
				}
				bad := 0
				for i := range frames {
					for v := range 3 {
						w := 0
						if accepts[first+j][i] {
							w = 1
						}
						if n := got[variant{i, v}]; n != w && bad < 5 {
							bad++
							t.Errorf("filter %q: frame %d with %d tags arrived %d times, tcpdump says %d:\n%x", e, i, v, n, w, packettest.TagVariants(frames[i])[v])
						}
					}
				}
				fs := flowStats(b, p.Flows[j].ID)
				if fs.MatchedPackets != uint64(want) || fs.RejectedPackets != uint64(3*len(frames)-want) {
					t.Errorf("filter %q: flow matched %d rejected %d, want %d and %d", e, fs.MatchedPackets, fs.RejectedPackets,
						want, 3*len(frames)-want)
				}
			}
		}
		batches := (len(exprs) + filterBatch - 1) / filterBatch
		t.Logf("%d batches of flows, %d frames each, in %v", batches, 3*len(frames), time.Since(start))
	})
}

// TestBrokerFilterOneCopyPerService: a frame that a filtered and an
// unfiltered flow of one service both want reaches the service once; of
// two services, only the filtered one's monitor misses what its filter
// rejects. The filter reads the crafted frames' sequence number where it
// is once the tags are removed (odd numbers), so tagged frames check that
// it sees them untagged.
func TestBrokerFilterOneCopyPerService(t *testing.T) {
	forEachPath(t, testBrokerFilterOneCopyPerService)
}

func testBrokerFilterOneCopyPerService(t *testing.T, fast bool) {
	tp := newTopo(t, 2, 1)
	b := newBroker(t, Config{FastPath: fast})
	const odd = "ether[25] & 1 = 1" // the low byte of the sequence number
	a := mac6(hwA)
	svcs := []Service{{ID: "s0", Iface: tp.mons[0]}, {ID: "s1", Iface: tp.mons[1]}}
	tags := [][]packettest.Tag{nil, {{TPID: 0x8100, VID: 7}}, {{TPID: 0x88a8, VID: 8}, {TPID: 0x8100, VID: 9}}}
	for i, tc := range []struct {
		name       string
		flows      []Flow
		mon0, mon1 []uint32
		// matched and rejected of each flow, in order
		matched, rejected []uint64
	}{
		{
			name: "filtered and unfiltered flows of one service",
			flows: []Flow{{ID: "f", ServiceID: "s0", MAC: a, Direction: DirOut, Filter: odd},
				{ID: "g", ServiceID: "s0", MAC: a, Direction: DirBoth}},
			mon0: []uint32{1, 2, 3, 4, 5, 6}, matched: []uint64{3, 6}, rejected: []uint64{3, 0},
		},
		{
			name: "two services, one filtered",
			flows: []Flow{{ID: "f", ServiceID: "s0", MAC: a, Direction: DirOut, Filter: odd},
				{ID: "g", ServiceID: "s1", MAC: a, Direction: DirBoth}},
			mon0: []uint32{1, 3, 5}, mon1: []uint32{1, 2, 3, 4, 5, 6}, matched: []uint64{3, 6}, rejected: []uint64{3, 0},
		},
		{
			name: "two filtered flows of one service",
			flows: []Flow{{ID: "f", ServiceID: "s0", MAC: a, Direction: DirOut, Filter: odd},
				{ID: "g", ServiceID: "s0", MAC: a, Direction: DirBoth, Filter: "ether[25] < 3"}},
			mon0: []uint32{1, 2, 3, 5}, matched: []uint64{3, 2}, rejected: []uint64{3, 4},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := &Plan{Version: uint64(i + 1), Services: svcs}
			for _, f := range tc.flows {
				f.ID = fmt.Sprintf("%d-%s", i, f.ID)
				f.Iface, f.SourcePortID = tp.capIf, "pa"
				plan.Flows = append(plan.Flows, f)
			}
			wantActive(t, apply(t, b, plan))
			wantPath(t, b, tp.capIf, fast)
			tp.reset()
			sent := map[uint32][]byte{}
			for seq := uint32(1); seq <= 6; seq++ {
				tg := tags[seq%3]
				sent[seq] = packettest.Frame(hwB, hwA, tg, seq, 60+4*len(tg))
				tp.send(t, sent[seq])
			}
			expect(t, tp.caps[0], tp.mons[0], sent, tc.mon0...)
			expect(t, tp.caps[1], tp.mons[1], sent, tc.mon1...)
			for j, f := range plan.Flows {
				if fs := flowStats(b, f.ID); fs.MatchedPackets != tc.matched[j] || fs.RejectedPackets != tc.rejected[j] {
					t.Errorf("flow %s: matched %d rejected %d, want %d and %d", f.ID, fs.MatchedPackets, fs.RejectedPackets,
						tc.matched[j], tc.rejected[j])
				}
			}
		})
	}
}

// TestBrokerSnaplen: a service with a snaplen receives the first snaplen
// bytes of longer frames and shorter ones whole; a service without one on
// another monitor gets the frames whole.
func TestBrokerSnaplen(t *testing.T) { forEachPath(t, testBrokerSnaplen) }

func testBrokerSnaplen(t *testing.T, fast bool) {
	tp := newTopo(t, 2, 1)
	b := newBroker(t, Config{FastPath: fast})
	const snap = 100
	plan := &Plan{Version: 1, Services: []Service{{ID: "s0", Iface: tp.mons[0], Snaplen: snap}, {ID: "s1", Iface: tp.mons[1]}},
		Flows: []Flow{{ID: "f0", ServiceID: "s0", SourcePortID: "pa", Iface: tp.capIf, MAC: mac6(hwA), Direction: DirOut},
			{ID: "f1", ServiceID: "s1", SourcePortID: "pa", Iface: tp.capIf, MAC: mac6(hwA), Direction: DirOut}}}
	wantActive(t, apply(t, b, plan))
	wantPath(t, b, tp.capIf, fast)
	sent, cut := map[uint32][]byte{}, map[uint32][]byte{}
	var seqs []uint32
	for i, size := range []int{60, snap - 1, snap, snap + 1, 1000, 1500} {
		seq := uint32(i + 1)
		tg := []packettest.Tag(nil)
		if i%2 == 1 {
			tg = []packettest.Tag{{TPID: 0x8100, VID: 5}}
		}
		sent[seq] = packettest.Frame(hwB, hwA, tg, seq, size)
		cut[seq] = sent[seq][:min(len(sent[seq]), snap)]
		seqs = append(seqs, seq)
		tp.send(t, sent[seq])
	}
	expect(t, tp.caps[0], tp.mons[0]+" (snaplen)", cut, seqs...)
	expect(t, tp.caps[1], tp.mons[1], sent, seqs...)
	for _, f := range tp.caps[0].Frames() {
		if len(f) > snap {
			t.Errorf("monitor with snaplen %d got a %d-byte frame", snap, len(f))
		}
	}
}

// TestBrokerFilterRefused: a stored filter this version's compiler
// refuses makes its flow ERROR with the compiler's message; the other
// flows of the plan go on.
func TestBrokerFilterRefused(t *testing.T) {
	tp := newTopo(t, 1, 1)
	b := newBroker(t, Config{})
	plan := &Plan{Version: 1, Services: []Service{{ID: "s", Iface: tp.mons[0]}},
		Flows: []Flow{
			{ID: "bad", ServiceID: "s", SourcePortID: "pa", Iface: tp.capIf, MAC: mac6(hwA), Direction: DirOut, Filter: "vlan 5"},
			{ID: "good", ServiceID: "s", SourcePortID: "pb", Iface: tp.capIf, MAC: mac6(hwB), Direction: DirOut, Filter: "ether[25] = 1"},
		}}
	r := apply(t, b, plan)
	_, cerr := pcapfilter.Compile("vlan 5")
	if st := r.Flows["bad"]; st.State != StateError || cerr == nil || !strings.Contains(st.Reason, cerr.Error()) {
		t.Errorf("flow bad: %v %q, want ERROR with the compiler's message %v", st.State, st.Reason, cerr)
	}
	if st := r.Flows["good"]; st.State != StateActive {
		t.Fatalf("flow good: %v %q, want ACTIVE", st.State, st.Reason)
	}
	sent := map[uint32][]byte{1: packettest.Frame(hwC, hwA, nil, 1, 60), 2: packettest.Frame(hwC, hwB, nil, 1, 60)}
	tp.send(t, sent[1], sent[2])
	expect(t, tp.caps[0], tp.mons[0], map[uint32][]byte{1: sent[2]}, 1)
}

// TestSnaplenFitsMonitor: a monitor too small for a capture's frames is
// fine for a service whose snaplen cuts the copies to fit it on the AF_XDP
// path, but not on the fast path: the kernel checks a redirected frame's
// size before the monitor's snaplen program cuts it (outputRefusal).
func TestSnaplenFitsMonitor(t *testing.T) {
	b := &Broker{cfg: Config{FrameSize: 2048}}
	mon := linkState{exists: true, up: true, mtu: 100} // carries 118-byte frames
	look := func(string) linkState { return linkState{exists: true, up: true, mtu: 1500} }
	for _, tc := range []struct {
		snap      int
		wantState State
	}{{0, StateError}, {200, StateError}, {118, StateActive}, {64, StateActive}} {
		if st := b.mtuStatus("mon", tc.snap, mon, []string{"cap"}, look); st.State != tc.wantState {
			t.Errorf("mtuStatus(snaplen %d) = %v %q, want %v", tc.snap, st.State, st.Reason, tc.wantState)
		}
	}
	o := &output{name: "mon", role: roleMonitor}
	o.maxLen.Store(118)
	for _, snaps := range [][]uint32{{64, 100}, {64, 0}, {0, 0}} {
		tab := buildTable(1, []compiledFlow{{mac: macKey(macA), dir: DirOut, slot: 0, svc: 0, snap: snaps[0]},
			{mac: macKey(macA), dir: DirOut, slot: 1, svc: 1, snap: snaps[1]}}, func(int32) *output { return o }, 2, 2)
		why := outputRefusal("cap", 1514, tab)
		if !strings.Contains(why, "monitor mon carries frames up to 118 bytes, capture cap brings up to 1514") {
			t.Errorf("outputRefusal(snaplens %v) = %q, want the monitor too small", snaps, why)
		}
		if why := outputRefusal("cap", 118, tab); why != "" {
			t.Errorf("outputRefusal(snaplens %v, 118-byte frames) = %q, want none", snaps, why)
		}
	}
}

// TestSnaplenSmallMonitor: with a monitor too small for the capture's
// frames and a snaplen that fits it, the copies arrive cut whatever the
// configuration asks: the capture keeps the AF_XDP path, whose workers cut
// before they send (the kernel would drop the whole frame redirected to
// the monitor before xdp_snap could cut it, counted delivered).
func TestSnaplenSmallMonitor(t *testing.T) {
	for _, fast := range []bool{false, true} {
		t.Run(fmt.Sprintf("fastpath=%v", fast), func(t *testing.T) {
			tp := newTopo(t, 1, 1)
			testutil.Run(t, "ip", "link", "set", tp.mons[0], "mtu", "200")
			testutil.Run(t, "ip", "netns", "exec", tp.p+"mon0", "ip", "link", "set", tp.mons[0]+"p", "mtu", "200")
			b := newBroker(t, Config{FastPath: fast})
			plan := &Plan{Version: 1, Services: []Service{{ID: "s0", Iface: tp.mons[0], Snaplen: 128}},
				Flows: []Flow{{ID: "f", ServiceID: "s0", SourcePortID: "pa", Iface: tp.capIf, MAC: mac6(hwA), Direction: DirOut}}}
			wantActive(t, apply(t, b, plan))
			wantPath(t, b, tp.capIf, false)
			if fast {
				why := capturePathReason(b, tp.capIf)
				t.Logf("path_reason %q", why)
				if !strings.Contains(why, "monitor "+tp.mons[0]+" carries frames up to 218 bytes") {
					t.Errorf("path_reason %q, want monitor %s too small", why, tp.mons[0])
				}
			}
			sent := map[uint32][]byte{}
			for seq := uint32(1); seq <= 4; seq++ {
				f := packettest.Frame(hwB, hwA, nil, seq, 1000)
				sent[seq] = f[:128]
				tp.send(t, f)
			}
			expect(t, tp.caps[0], "small monitor", sent, 1, 2, 3, 4)
			for _, s := range b.Stats().Services {
				if s.DeliveredPackets != 4 || s.DeliveredBytes != 4*128 {
					t.Errorf("service %s delivered %d packets %d bytes, want 4 and %d", s.ID, s.DeliveredPackets, s.DeliveredBytes, 4*128)
				}
			}
		})
	}
}

// TestSnaplenServiceBytes: a service with a snaplen counts the bytes its
// monitor receives, the copies cut, on both paths (the fast path carries
// each service's snaplen in its copies entry).
func TestSnaplenServiceBytes(t *testing.T) { forEachPath(t, testSnaplenServiceBytes) }

func testSnaplenServiceBytes(t *testing.T, fast bool) {
	tp := newTopo(t, 2, 1)
	b := newBroker(t, Config{FastPath: fast})
	plan := &Plan{Version: 1, Services: []Service{{ID: "cut", Iface: tp.mons[0], Snaplen: 100}, {ID: "whole", Iface: tp.mons[1]}},
		Flows: []Flow{
			{ID: "f0", ServiceID: "cut", SourcePortID: "pa", Iface: tp.capIf, MAC: mac6(hwA), Direction: DirOut},
			{ID: "f1", ServiceID: "whole", SourcePortID: "pa", Iface: tp.capIf, MAC: mac6(hwA), Direction: DirOut},
		}}
	wantActive(t, apply(t, b, plan))
	wantPath(t, b, tp.capIf, fast)
	cut, whole := map[uint32][]byte{}, map[uint32][]byte{}
	for i, size := range []int{60, 100, 101, 1000} {
		seq := uint32(i + 1)
		f := packettest.Frame(hwB, hwA, nil, seq, size)
		cut[seq], whole[seq] = f[:min(len(f), 100)], f
		tp.send(t, f)
	}
	expect(t, tp.caps[0], "cut", cut, 1, 2, 3, 4)
	expect(t, tp.caps[1], "whole", whole, 1, 2, 3, 4)
	want := map[string]uint64{}
	for seq := range cut {
		want["cut"] += uint64(len(cut[seq]))
		want["whole"] += uint64(len(whole[seq]))
	}
	for _, s := range b.Stats().Services {
		t.Logf("service %s delivered %d packets %d bytes", s.ID, s.DeliveredPackets, s.DeliveredBytes)
		if s.DeliveredPackets != 4 || s.DeliveredBytes != want[s.ID] {
			t.Errorf("service %s delivered %d packets %d bytes, want 4 and %d", s.ID, s.DeliveredPackets, s.DeliveredBytes, want[s.ID])
		}
	}
}
