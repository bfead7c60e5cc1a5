package broker

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

// mirrorLab is a capture topology (topo, no monitor) plus the way to a
// collector: the uplink P+"up" in the test's namespace, its peer P+"upr"
// in a router namespace, and the collector P+"col" in a namespace behind
// the router, so that the next hop is not the collector. Addresses are
// TEST-NET (a random /29 of 198.51.100.0/24 on the uplink link, a /30 of
// 192.0.2.0/24 behind the router, 2001:db8::/32 for IPv6) and every packet
// stays inside the veths the test made; the routes to the collector in the
// test's namespace go with the uplink when the test ends.
type mirrorLab struct {
	*topo
	uplink, rtNS, colNS, rtIf, colIf string
	// gw4 and gw6 are the router's addresses on the uplink link, spare4 one
	// nobody holds (an unreachable next hop).
	gw4, gw6, spare4 netip.Addr
	// col4 and col6 are the collector's addresses.
	col4, col6 netip.Addr
}

func newMirrorLab(t *testing.T, monitors int) *mirrorLab {
	t.Helper()
	tp := newTopo(t, monitors, 1)
	p := tp.p
	l := &mirrorLab{topo: tp, uplink: p + "up", rtNS: testutil.Netns(t, p+"rt"), colNS: testutil.Netns(t, p+"co"),
		rtIf: p + "upr", colIf: p + "col"}
	testutil.Veth(t, l.uplink, l.rtIf, testutil.VethOpts{NetnsB: l.rtNS})
	testutil.Veth(t, p+"rc", l.colIf, testutil.VethOpts{NetnsA: l.rtNS, NetnsB: l.colNS})
	n := rand.IntN(32)
	up := func(host int) string { return fmt.Sprintf("198.51.100.%d", 8*n+host) }
	co := func(host int) string { return fmt.Sprintf("192.0.2.%d", 4*(n+32)+host) }
	up6 := func(host int) string { return fmt.Sprintf("2001:db8:%x:a::%d", n+1, host) }
	co6 := func(host int) string { return fmt.Sprintf("2001:db8:%x:b::%d", n+1, host) }
	l.gw4, l.spare4 = netip.MustParseAddr(up(2)), netip.MustParseAddr(up(3))
	l.gw6 = netip.MustParseAddr(up6(2))
	l.col4, l.col6 = netip.MustParseAddr(co(2)), netip.MustParseAddr(co6(2))
	rt := []string{"-n", l.rtNS}
	cmds := [][]string{
		{"addr", "add", up(1) + "/29", "dev", l.uplink},
		{"-6", "addr", "add", up6(1) + "/64", "dev", l.uplink, "nodad"},
		append(rt, "addr", "add", up(2)+"/29", "dev", l.rtIf),
		append(rt, "-6", "addr", "add", up6(2)+"/64", "dev", l.rtIf, "nodad"),
		append(rt, "addr", "add", co(1)+"/30", "dev", p+"rc"),
		append(rt, "-6", "addr", "add", co6(1)+"/64", "dev", p+"rc", "nodad"),
		{"-n", l.colNS, "addr", "add", co(2) + "/30", "dev", l.colIf},
		{"-n", l.colNS, "-6", "addr", "add", co6(2) + "/64", "dev", l.colIf, "nodad"},
	}
	for _, c := range cmds {
		testutil.Run(t, "ip", c...)
	}
	testutil.Run(t, "ip", "netns", "exec", l.rtNS, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	l.addRoutes(t)
	testutil.WaitOperUp(t, "", l.uplink)
	return l
}

// addRoutes routes the collector's addresses through the router.
func (l *mirrorLab) addRoutes(t *testing.T) {
	t.Helper()
	l.addRoute4(t)
	testutil.Run(t, "ip", "-6", "route", "replace", l.col6.String()+"/128", "via", l.gw6.String(), "dev", l.uplink)
}

// addRoute4 routes the collector's IPv4 address through the router, as a
// routing daemon would after the uplink comes back.
func (l *mirrorLab) addRoute4(t *testing.T) {
	t.Helper()
	testutil.Run(t, "ip", "route", "replace", l.col4.String()+"/32", "via", l.gw4.String(), "dev", l.uplink)
}

// mirrorPlan mirrors port A on the lab's capture interface to remote, IN
// with tunnel id in and OUT with tunnel id out.
func (l *mirrorLab) mirrorPlan(version uint64, typ TunnelType, remote netip.Addr, in, out uint32) *Plan {
	return &Plan{Version: version, Uplinks: []string{l.uplink}, Mirrors: []Mirror{{ID: "m", PortID: "pa", Iface: l.capIf,
		MAC: mac6(hwA), Type: typ, RemoteIP: remote, Tunnels: []Tunnel{{Direction: DirIn, ID: in}, {Direction: DirOut, ID: out}}}}}
}

func mirrorActive(r Report) bool { return r.Mirrors["m"].State == StateActive }

// overhead is the outer headers' length of an encapsulation, as the
// RFCs and the ERSPAN draft define them: Ethernet, IP, then GRE with key
// (GRE), GRE with sequence number + ERSPAN II (8) or III (12), or UDP +
// VXLAN.
func overhead(typ TunnelType, v6 bool) int {
	ip := 20
	if v6 {
		ip = 40
	}
	switch typ {
	case TunnelGRE:
		return 14 + ip + 8
	case TunnelERSPANv1:
		return 14 + ip + 8 + 8
	case TunnelERSPANv3:
		return 14 + ip + 8 + 12
	}
	return 14 + ip + 8 + 8
}

// TestMirrorEncapsulation mirrors a port's IN and OUT frames to a
// collector behind a router in each encapsulation, over IPv4 and IPv6, and
// checks with tshark what arrives: outer addresses, the tunnel id of each
// direction, ERSPAN's direction bit and increasing sequence numbers, and
// the inner frame byte-identical to the mirrored one. For VXLAN the
// collector's kernel also decapsulates, and tcpdump on its VXLAN devices
// sees the frames as sent.
func TestMirrorEncapsulation(t *testing.T) {
	l := newMirrorLab(t, 0)
	b := newBroker(t, Config{})
	var version uint64
	for _, tc := range []struct {
		typ     TunnelType
		v6      bool
		in, out uint32
	}{
		{TunnelGRE, false, 1001, 1002},
		{TunnelERSPANv1, false, 11, 12},
		{TunnelERSPANv3, false, 21, 22},
		{TunnelVXLAN, false, 5001, 5002},
		{TunnelGRE, true, 2001, 2002},
		{TunnelERSPANv1, true, 31, 32},
		{TunnelERSPANv3, true, 41, 42},
		{TunnelVXLAN, true, 6001, 6002},
	} {
		name := tc.typ.String() + "/ipv4"
		remote, src := l.col4, "198.51.100."
		if tc.v6 {
			name, remote, src = tc.typ.String()+"/ipv6", l.col6, "2001:db8:"
		}
		t.Run(name, func(t *testing.T) {
			version++
			plan := l.mirrorPlan(version, tc.typ, remote, tc.in, tc.out)
			waitStatus(t, b, plan, "mirror ACTIVE", mirrorActive)
			var decap []func(int, func([]byte) bool) string
			if tc.typ == TunnelVXLAN {
				for _, vni := range []uint32{tc.in, tc.out} {
					vx := fmt.Sprintf("%svx%d", l.p, vni%100)
					testutil.Run(t, "ip", "-n", l.colNS, "link", "add", vx, "type", "vxlan", "id", strconv.Itoa(int(vni)),
						"dstport", "4789", "local", remote.String())
					testutil.Run(t, "ip", "-n", l.colNS, "link", "set", vx, "up")
					t.Cleanup(func() { _ = exec.Command("ip", "-n", l.colNS, "link", "del", vx).Run() })
					decap = append(decap, packettest.Tcpdump(t, l.colNS, vx, "ether proto 0x88b5 or (vlan and ether proto 0x88b5)"))
				}
			}
			stop := packettest.Tcpdump(t, l.colNS, l.colIf, "ip proto 47 or ip6 proto 47 or udp dst port 4789")
			// OUT frames (from A), IN frames (to A, and A's broadcast, which
			// is OUT only), one tagged; frames of no direction of A.
			sent := map[uint32][]byte{}
			dirOf := map[uint32]Direction{}
			var order []uint32
			frame := func(seq uint32, dst, src []byte, tags []packettest.Tag, size int, d Direction) {
				f := packettest.Frame(dst, src, tags, seq, size)
				sent[seq], order = f, append(order, seq)
				if d != 0 {
					dirOf[seq] = d
				}
				l.send(t, f)
			}
			for i := uint32(0); i < 4; i++ {
				frame(100+i, hwB, hwA, nil, 60+int(i)*100, DirOut)
				frame(200+i, hwA, hwB, nil, 60, DirIn)
			}
			frame(300, hwB, hwA, []packettest.Tag{{TPID: 0x8100, VID: 42}}, 128, DirOut)
			frame(301, hwBcast, hwA, nil, 60, DirOut)
			frame(302, hwBcast, hwB, nil, 60, DirIn)
			frame(303, hwC, hwB, nil, 60, 0)
			file := stop(len(dirOf), encapTest(overhead(tc.typ, tc.v6)))

			raw := packettest.ReadPcap(t, file)
			rows := packettest.TsharkFields(t, file, "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "gre.key", "gre.sequence_number",
				"erspan.version", "erspan.spanid", "erspan.direction", "vxlan.vni", "eth.src", "eth.dst")
			if len(rows) != len(raw) {
				t.Fatalf("tshark decoded %d frames of %d", len(rows), len(raw))
			}
			lastSeq := map[Direction]int{DirIn: -1, DirOut: -1}
			var got []uint32
			for i, f := range raw {
				row := rows[i]
				oh := overhead(tc.typ, tc.v6)
				if len(f) < oh {
					t.Fatalf("frame %d: %d bytes, shorter than the %d-byte outer headers", i, len(f), oh)
				}
				inner := f[oh:]
				seq, ok := packettest.Seq(inner)
				if !ok {
					// The span namespace's own multicast (IPv6 router
					// solicitations...) is IN for port A too.
					continue
				}
				d := dirOf[seq]
				if d == 0 {
					t.Fatalf("frame %d: inner frame %d was not to be mirrored: %x", i, seq, inner)
				}
				got = append(got, seq)
				if !bytes.Equal(inner, sent[seq]) {
					t.Errorf("frame %d (seq %d): inner frame differs:\n got %x\nwant %x", i, seq, inner, sent[seq])
				}
				srcF, dstF := row["ip.src"], row["ip.dst"]
				if tc.v6 {
					srcF, dstF = row["ipv6.src"], row["ipv6.dst"]
				}
				if !strings.HasPrefix(srcF, src) || dstF != remote.String() {
					t.Errorf("frame %d: outer %s -> %s, want %s... -> %s", i, srcF, dstF, src, remote)
				}
				id := tc.in
				if d == DirOut {
					id = tc.out
				}
				var gotID string
				switch tc.typ {
				case TunnelGRE:
					gotID = row["gre.key"]
				case TunnelVXLAN:
					gotID = row["vxlan.vni"]
				default:
					gotID = row["erspan.spanid"]
					n, err := strconv.Atoi(row["gre.sequence_number"])
					if err != nil || n <= lastSeq[d] {
						t.Errorf("frame %d: sequence number %q, after %d", i, row["gre.sequence_number"], lastSeq[d])
					}
					lastSeq[d] = n
				}
				if n, err := strconv.ParseUint(gotID, 0, 32); err != nil || uint32(n) != id {
					t.Errorf("frame %d (seq %d, %v): tunnel id %q, want %d (tshark: %v)", i, seq, d, gotID, id, row)
				}
				if tc.typ == TunnelERSPANv3 {
					// D: 0 ingress (into the port), 1 egress (out of it).
					wantD := map[Direction]string{DirIn: "0", DirOut: "1"}[d]
					if got := row["erspan.direction"]; got != wantD && got != map[string]string{"0": "False", "1": "True"}[wantD] {
						t.Errorf("frame %d (%v): erspan direction %q, want %s", i, d, got, wantD)
					}
				}
				// tshark found the inner Ethernet header where the frame is.
				macs := strings.Split(row["eth.src"], ",")
				if len(macs) < 2 || macs[len(macs)-1] != macString(sent[seq][6:12]) {
					t.Errorf("frame %d: tshark's Ethernet sources %q, want the inner %s last", i, row["eth.src"], macString(sent[seq][6:12]))
				}
			}
			var wantSeqs []uint32
			for _, s := range order {
				if dirOf[s] != 0 {
					wantSeqs = append(wantSeqs, s)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(wantSeqs) {
				t.Fatalf("collector got mirrored frames %v, want %v in order", got, wantSeqs)
			}
			for i, stopVX := range decap {
				d := []Direction{DirIn, DirOut}[i]
				n := 0
				for _, dd := range dirOf {
					if dd == d {
						n++
					}
				}
				frames := packettest.ReadPcap(t, stopVX(n, packettest.IsTest))
				var got []uint32
				for _, f := range frames {
					seq, _ := packettest.Seq(f)
					if !bytes.Equal(f, sent[seq]) {
						t.Errorf("vxlan device of %v: frame %d differs:\n got %x\nwant %x", d, seq, f, sent[seq])
					}
					got = append(got, seq)
				}
				var wantSeqs []uint32
				for _, s := range order {
					if dirOf[s] == d {
						wantSeqs = append(wantSeqs, s)
					}
				}
				if fmt.Sprint(got) != fmt.Sprint(wantSeqs) {
					t.Errorf("kernel vxlan device of VNI %d decapsulated %v, want %v", []uint32{tc.in, tc.out}[i], got, wantSeqs)
				}
			}
			st := mirrorStats(b, "m")
			t.Logf("%s: %d encapsulated, %d bytes, %d truncated, drops %v", name, st.EncapPackets, st.EncapBytes, st.TruncatedPackets, st.Drops)
		})
	}
}

func macString(b []byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5])
}

func mirrorStats(b *Broker, id string) MirrorStats {
	for _, m := range b.Stats().Mirrors {
		if m.ID == id {
			return m
		}
	}
	return MirrorStats{}
}

// mirrorCounter reads one counter of mirror id: "encapsulated",
// "truncated" or a drop reason.
func mirrorCounter(b *Broker, id, what string) uint64 {
	m := mirrorStats(b, id)
	switch what {
	case "encapsulated":
		return m.EncapPackets
	case "truncated":
		return m.TruncatedPackets
	}
	return m.Drops[what]
}

// greV4Test is a Capture keep function for GRE-over-IPv4 copies (42 bytes
// of outer headers) of crafted frames.
func greV4Test(f []byte) bool { return encapTest(42)(f) && f[23] == 47 }

// encapTest returns a Capture keep function for copies of crafted frames
// behind oh bytes of outer headers.
func encapTest(oh int) func([]byte) bool {
	return func(f []byte) bool { return len(f) > oh && packettest.IsTest(f[oh:]) }
}

// nextHopMAC is the next hop's MAC the last Apply built mirror id's
// headers with.
func nextHopMAC(b *Broker, id string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.mirrors[id].res.dstMAC
	return macString(m[:])
}

// TestMirrorFaults breaks the way to the collector in each way the issue
// lists and checks that the mirror's status says so and recovers, applying
// only when the broker reports a change (as the reconciler does): the
// neighbour resolved at the start, the next hop changing its MAC, the
// route removed and re-added, the uplink set down and up, its carrier
// lost, the remote unreachable (a next hop nobody answers for), and the
// port unbound.
func TestMirrorFaults(t *testing.T) {
	l := newMirrorLab(t, 0)
	b := newBroker(t, Config{})
	col := packettest.NewCapture(t, l.colNS, l.colIf, greV4Test)
	plan := l.mirrorPlan(1, TunnelGRE, l.col4, 1, 2)
	seq := uint32(0)
	// roundTrip sends one OUT frame of A and waits for its copy at the
	// collector: through the router, which takes only frames sent to its
	// own MAC.
	roundTrip := func(what string) {
		t.Helper()
		col.Reset()
		seq++
		l.send(t, packettest.Frame(hwB, hwA, nil, seq, 60))
		got := col.WaitN(1, 5*time.Second)
		if len(got) == 0 {
			t.Fatalf("%s: no copy of frame %d at the collector", what, seq)
		}
		if s, _ := packettest.Seq(got[len(got)-1][42:]); s != seq {
			t.Fatalf("%s: collector got frame %d, want %d", what, s, seq)
		}
	}
	// down applies on events until the mirror is DOWN with a reason
	// containing one of want, checks Stats agrees, and that a frame sent
	// meanwhile is counted mirror_down.
	down := func(what string, want ...string) {
		t.Helper()
		r := statusOnEvent(t, b, plan, what, func(r Report) bool { return r.Mirrors["m"].State == StateDown })
		reason := r.Mirrors["m"].Reason
		if !slices.ContainsFunc(want, func(w string) bool { return strings.Contains(reason, w) }) {
			t.Fatalf("%s: reason %q, want one of %q", what, reason, want)
		}
		if st := mirrorStats(b, "m"); st.Status != "DOWN" || st.Reason != reason {
			t.Fatalf("%s: stats say %s %q, report DOWN %q", what, st.Status, st.Reason, reason)
		}
		t.Logf("%s: DOWN: %s", what, reason)
		before := mirrorCounter(b, "m", "mirror_down")
		seq++
		l.send(t, packettest.Frame(hwB, hwA, nil, seq, 60))
		waitCounter(t, what+": mirror_down", func() uint64 { return mirrorCounter(b, "m", "mirror_down") }, before+1)
	}
	up := func(what string) {
		t.Helper()
		statusOnEvent(t, b, plan, what, mirrorActive)
		if st := mirrorStats(b, "m"); st.Status != "ACTIVE" || st.Reason != "" || st.Uplink != l.uplink {
			t.Fatalf("%s: stats say %s %q via %q, want ACTIVE via %s", what, st.Status, st.Reason, st.Uplink, l.uplink)
		}
		roundTrip(what)
	}

	// The first Apply finds the next hop unresolved and has the kernel
	// resolve it; the resolver reports the answer.
	r := apply(t, b, plan)
	if st := r.Mirrors["m"]; st.State != StateDown || !strings.Contains(st.Reason, "unresolved") {
		t.Fatalf("first Apply: mirror %v %q, want DOWN, neighbour unresolved", st.State, st.Reason)
	}
	up("neighbour resolved")

	// The next hop changes its MAC and says so (an ARP request from it).
	newMAC := "02:00:5e:10:00:99"
	testutil.Run(t, "ip", "-n", l.rtNS, "link", "set", l.rtIf, "address", newMAC)
	testutil.Run(t, "ip", "-n", l.rtNS, "neigh", "flush", "dev", l.rtIf)
	testutil.Run(t, "ip", "netns", "exec", l.rtNS, "ping", "-c", "1", "-W", "2", l.gw4.Prev().String())
	statusOnEvent(t, b, plan, "new next-hop MAC", func(r Report) bool { return mirrorActive(r) && nextHopMAC(b, "m") == newMAC })
	roundTrip("new next-hop MAC")

	// Route removed: no route, or one through an interface that is no
	// uplink (the host's default route).
	drainEvents(b)
	testutil.Run(t, "ip", "route", "del", l.col4.String()+"/32")
	down("route removed", "no route", "not an uplink")
	l.addRoute4(t)
	up("route re-added")

	// Uplink set down: the kernel removes the routes through it.
	drainEvents(b)
	testutil.Run(t, "ip", "link", "set", l.uplink, "down")
	down("uplink down", "is down")
	testutil.Run(t, "ip", "link", "set", l.uplink, "up")
	testutil.WaitOperUp(t, "", l.uplink)
	l.addRoute4(t)
	up("uplink up")

	// The uplink loses its carrier (the router's end goes down).
	drainEvents(b)
	testutil.Run(t, "ip", "-n", l.rtNS, "link", "set", l.rtIf, "down")
	down("uplink carrier lost", "no carrier", "is down", "unresolved")
	testutil.Run(t, "ip", "-n", l.rtNS, "link", "set", l.rtIf, "up")
	testutil.WaitOperUp(t, "", l.uplink)
	l.addRoute4(t)
	up("uplink carrier back")

	// Remote unreachable: its next hop does not answer, until the router
	// takes that address too.
	drainEvents(b)
	testutil.Run(t, "ip", "route", "replace", l.col4.String()+"/32", "via", l.spare4.String(), "dev", l.uplink)
	down("next hop unreachable", "unresolved")
	testutil.Run(t, "ip", "-n", l.rtNS, "addr", "add", l.spare4.String()+"/29", "dev", l.rtIf)
	up("next hop answers")

	// A session id ERSPAN cannot carry (10 bits): ERROR, not sent.
	bad := l.mirrorPlan(2, TunnelERSPANv1, l.col4, 1, 2000)
	r = apply(t, b, bad)
	if st := r.Mirrors["m"]; st.State != StateError || !strings.Contains(st.Reason, "2000") {
		t.Fatalf("erspan session 2000: mirror %v %q, want ERROR naming the id", st.State, st.Reason)
	}

	// Port unbound.
	unbound := l.mirrorPlan(3, TunnelGRE, l.col4, 1, 2)
	unbound.Mirrors[0].Iface = ""
	r = apply(t, b, unbound)
	if st := r.Mirrors["m"]; st.State != StateDown || !strings.Contains(st.Reason, "no interface binding") {
		t.Fatalf("port unbound: mirror %v %q, want DOWN, no interface binding", st.State, st.Reason)
	}
}

// TestMirrorTruncates lowers the uplink's MTU below what the mirrored
// frames need: the copies arrive cut to fit, the inner frame's first bytes
// intact, ERSPAN's truncated bit set, each counted truncated and none
// dropped.
func TestMirrorTruncates(t *testing.T) {
	l := newMirrorLab(t, 0)
	b := newBroker(t, Config{})
	const mtu = 600
	testutil.Run(t, "ip", "link", "set", l.uplink, "mtu", strconv.Itoa(mtu))
	for i, typ := range []TunnelType{TunnelERSPANv1, TunnelGRE} {
		t.Run(typ.String(), func(t *testing.T) {
			plan := l.mirrorPlan(uint64(i+1), typ, l.col4, 1, 2)
			waitStatus(t, b, plan, "mirror ACTIVE", mirrorActive)
			stop := packettest.Tcpdump(t, l.colNS, l.colIf, "ip proto 47")
			before := mirrorStats(b, "m")
			small, big := packettest.Frame(hwB, hwA, nil, 1, 100), packettest.Frame(hwB, hwA, nil, 2, 1000)
			l.send(t, small, big)
			file := stop(2, encapTest(overhead(typ, false)))
			oh := overhead(typ, false)
			all := packettest.ReadPcap(t, file)
			decoded := packettest.TsharkFields(t, file, "ip.len", "erspan.truncated")
			if len(decoded) != len(all) {
				t.Fatalf("tshark decoded %d frames of %d", len(decoded), len(all))
			}
			var frames [][]byte
			var rows []map[string]string
			for i, f := range all {
				if encapTest(oh)(f) {
					frames, rows = append(frames, f), append(rows, decoded[i])
				}
			}
			if len(frames) != 2 {
				t.Fatalf("collector got %d copies, want 2", len(frames))
			}
			if !bytes.Equal(frames[0][oh:], small) {
				t.Errorf("small frame: inner differs:\n got %x\nwant %x", frames[0][oh:], small)
			}
			if len(frames[1]) != 14+mtu || !bytes.Equal(frames[1][oh:], big[:14+mtu-oh]) {
				t.Errorf("big frame: %d bytes on the wire, want %d, the inner frame's first %d bytes", len(frames[1]), 14+mtu, 14+mtu-oh)
			}
			if typ == TunnelERSPANv1 {
				var trunc []string
				for _, r := range rows {
					trunc = append(trunc, r["erspan.truncated"])
				}
				if fmt.Sprint(trunc) != "[0 1]" {
					t.Errorf("erspan truncated bits %v, want 0 then 1", trunc)
				}
			}
			after := mirrorStats(b, "m")
			if got := after.TruncatedPackets - before.TruncatedPackets; got != 1 {
				t.Errorf("truncated_packets grew by %d, want 1", got)
			}
			for k, v := range after.Drops {
				if v != before.Drops[k] {
					t.Errorf("drop %s grew by %d, want 0", k, v-before.Drops[k])
				}
			}
		})
	}
}

// TestMirrorUplinkLoop routes the collector through the capture interface
// itself, declared an uplink: the loop guard refuses it, ERROR.
func TestMirrorUplinkLoop(t *testing.T) {
	l := newMirrorLab(t, 0)
	b := newBroker(t, Config{})
	testutil.Run(t, "ip", "route", "replace", l.col4.String()+"/32", "dev", l.capIf)
	plan := l.mirrorPlan(1, TunnelGRE, l.col4, 1, 2)
	plan.Uplinks = append(plan.Uplinks, l.capIf)
	r := apply(t, b, plan)
	if st := r.Mirrors["m"]; st.State != StateError || !strings.Contains(st.Reason, "loop refused") {
		t.Fatalf("mirror through the capture interface: %v %q, want ERROR, loop refused", st.State, st.Reason)
	}
	if st := mirrorStats(b, "m"); st.Status != "ERROR" {
		t.Fatalf("stats say %s, want ERROR", st.Status)
	}
}

// TestMirrorBesideFlows puts a tap flow and a tap mirror on one capture
// with the fast path allowed: the capture takes the AF_XDP path for the
// mirror ("tap mirror"), the monitor and the collector both get their
// copies, and once the mirror is gone the capture goes back to the fast
// path and the uplink's socket closes.
func TestMirrorBesideFlows(t *testing.T) {
	l := newMirrorLab(t, 1)
	b := newBroker(t, Config{FastPath: true})
	col := packettest.NewCapture(t, l.colNS, l.colIf, greV4Test)
	plan := l.mirrorPlan(1, TunnelGRE, l.col4, 1, 2)
	plan.Services = []Service{{ID: "s", Iface: l.mons[0]}}
	plan.Flows = []Flow{{ID: "f", ServiceID: "s", SourcePortID: "pa", Iface: l.capIf, MAC: mac6(hwA), Direction: DirOut}}
	r := waitStatus(t, b, plan, "mirror ACTIVE", mirrorActive)
	wantActive(t, r)
	for _, is := range b.Stats().Interfaces {
		if is.Name == l.capIf && (is.Path != PathUserspace || is.PathReason != "tap mirror") {
			t.Fatalf("capture path %q (%q), want userspace (tap mirror)", is.Path, is.PathReason)
		}
	}
	f := packettest.Frame(hwB, hwA, nil, 7, 60)
	l.send(t, f)
	expect(t, l.caps[0], "monitor", map[uint32][]byte{7: f}, 7)
	if got := col.WaitN(1, 5*time.Second); len(got) != 1 || !bytes.Equal(got[0][42:], f) {
		t.Fatalf("collector got %d copies, want 1 of frame 7", len(got))
	}

	plan2 := &Plan{Version: 2, Services: plan.Services, Flows: plan.Flows, Uplinks: plan.Uplinks}
	wantActive(t, apply(t, b, plan2))
	wantPath(t, b, l.capIf, true)
	b.mu.Lock()
	open := len(b.uplinks)
	b.mu.Unlock()
	if open != 0 {
		t.Fatalf("%d uplink sockets open without a mirror, want 0", open)
	}
	l.caps[0].Reset()
	f = packettest.Frame(hwB, hwA, nil, 8, 60)
	l.send(t, f)
	expect(t, l.caps[0], "monitor on the fast path", map[uint32][]byte{8: f}, 8)
}
