package broker

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
	"github.com/taas-appliance/taas/xdpprog"
)

// mirrorLab is a capture topology (topo, no monitor) plus the way to a
// collector behind a router (testutil.CollectorPath).
type mirrorLab struct {
	*topo
	*testutil.CollectorPath
}

func newMirrorLab(t *testing.T, monitors int) *mirrorLab {
	t.Helper()
	tp := newTopo(t, monitors, 1)
	return &mirrorLab{topo: tp, CollectorPath: testutil.NewCollectorPath(t, tp.p)}
}

// mirrorPlan mirrors port A on the lab's capture interface to remote, IN
// with tunnel id in and OUT with tunnel id out.
func (l *mirrorLab) mirrorPlan(version uint64, typ TunnelType, remote netip.Addr, in, out uint32) *Plan {
	return &Plan{Version: version, Uplinks: []string{l.Uplink}, Mirrors: []Mirror{{ID: "m", PortID: "pa", Iface: l.capIf,
		MAC: mac6(hwA), Type: typ, RemoteIP: remote, Tunnels: []Tunnel{{Direction: DirIn, ID: in}, {Direction: DirOut, ID: out}}}}}
}

// outPlan mirrors port A's OUT frames to the collector's IPv4 address,
// tunnel id out.
func (l *mirrorLab) outPlan(version uint64, typ TunnelType, out uint32) *Plan {
	p := l.mirrorPlan(version, typ, l.Col4, 0, out)
	p.Mirrors[0].Tunnels = p.Mirrors[0].Tunnels[1:]
	return p
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
// collector behind a router in each encapsulation, over IPv4 and IPv6, on
// both paths, and checks with tshark what arrives: outer addresses, the
// tunnel id of each direction, ERSPAN's direction bit and increasing
// sequence numbers, and the inner frame byte-identical to the mirrored
// one; each copy is also byte for byte what xdpprog's encoder makes of
// the frame with the sequence number and timestamp it carries, so both
// paths put the same bytes on the wire. For VXLAN the collector's kernel
// also decapsulates, and tcpdump on its VXLAN devices sees the frames as
// sent. The mirror has IN and OUT tunnels through one uplink, and the
// capture stays on the fast path on its fast runs.
func TestMirrorEncapsulation(t *testing.T) { forEachPath(t, testMirrorEncapsulation) }

func testMirrorEncapsulation(t *testing.T, fast bool) {
	l := newMirrorLab(t, 0)
	b := newBroker(t, Config{FastPath: fast})
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
		if tc.v6 {
			name = tc.typ.String() + "/ipv6"
		}
		t.Run(name, func(t *testing.T) {
			version++
			l.checkMirror(t, b, version, fast, tc.typ, tc.v6, []Tunnel{{Direction: DirIn, ID: tc.in}, {Direction: DirOut, ID: tc.out}})
		})
	}
}

// checkWire checks that each copy the uplink sent (frames, as the router
// received them) is byte for byte what xdpprog's encoder makes of the
// mirrored frame, with the ERSPAN sequence number and timestamp the copy
// carries.
func (l *mirrorLab) checkWire(t *testing.T, typ TunnelType, v6 bool, idOf map[Direction]uint32, sent map[uint32][]byte,
	dirOf map[uint32]Direction, frames [][]byte) {
	t.Helper()
	src, remote, ip := l.Src4, l.Col4, 14+20
	if v6 {
		src, remote, ip = l.Src6, l.Col6, 14+40
	}
	oh := overhead(typ, v6)
	enc, _ := encapOf(typ)
	for i, f := range frames {
		seq, _ := packettest.Seq(f[oh:])
		d := dirOf[seq]
		hdr, err := xdpprog.NewTunnelHeader(xdpprog.TunnelSpec{Encap: enc, ID: idOf[d], PortMAC: mac6(hwA),
			SrcMAC: l.UplinkMAC, DstMAC: l.RouterMAC, Src: src, Dst: remote, MTU: 1500})
		if err != nil {
			t.Fatal(err)
		}
		var greSeq, ts uint32
		if typ == TunnelERSPANv1 || typ == TunnelERSPANv3 {
			greSeq = binary.BigEndian.Uint32(f[ip+4:])
		}
		if typ == TunnelERSPANv3 {
			ts = binary.BigEndian.Uint32(f[ip+12:])
		}
		want := make([]byte, len(f)+xdpprog.MaxTunnelOverhead)
		n, _ := hdr.Encapsulate(want, sent[seq], greSeq, ts)
		if !bytes.Equal(f, want[:n]) {
			t.Errorf("copy %d (frame %d): not the encoder's bytes:\n got %x\nwant %x", i, seq, f, want[:n])
		}
	}
}

// checkMirror mirrors port A's frames with tunnels (the remote is the
// collector's IPv4 or IPv6 address) and checks every copy the collector
// gets (see TestMirrorEncapsulation).
func (l *mirrorLab) checkMirror(t *testing.T, b *Broker, version uint64, fast bool, typ TunnelType, v6 bool, tunnels []Tunnel) {
	t.Helper()
	remote, src := l.Col4, l.Src4
	if v6 {
		remote, src = l.Col6, l.Src6
	}
	plan := &Plan{Version: version, Uplinks: []string{l.Uplink}, Mirrors: []Mirror{{ID: "m", PortID: "pa", Iface: l.capIf,
		MAC: mac6(hwA), Type: typ, RemoteIP: remote, Tunnels: tunnels}}}
	waitStatus(t, b, plan, "mirror ACTIVE", mirrorActive)
	wantPath(t, b, l.capIf, fast)
	idOf := map[Direction]uint32{}
	for _, tn := range tunnels {
		idOf[tn.Direction] = tn.ID
	}
	var decap []func(int, func([]byte) bool) string
	var decapDirs []Direction
	if typ == TunnelVXLAN {
		for _, tn := range tunnels {
			vx := fmt.Sprintf("%svx%d", l.p, tn.ID%100)
			testutil.Run(t, "ip", "-n", l.CollectorNS, "link", "add", vx, "type", "vxlan", "id", strconv.Itoa(int(tn.ID)),
				"dstport", "4789", "local", remote.String())
			testutil.Run(t, "ip", "-n", l.CollectorNS, "link", "set", vx, "up")
			t.Cleanup(func() { _ = exec.Command("ip", "-n", l.CollectorNS, "link", "del", vx).Run() })
			decap = append(decap, packettest.Tcpdump(t, l.CollectorNS, vx, "ether proto 0x88b5 or (vlan and ether proto 0x88b5)"))
			decapDirs = append(decapDirs, tn.Direction)
		}
	}
	stop := packettest.Tcpdump(t, l.CollectorNS, l.CollectorIf, "ip proto 47 or ip6 proto 47 or udp dst port 4789")
	oh := overhead(typ, v6)
	// What the router receives is what the uplink sent (the router then
	// rewrites the Ethernet header and the TTL).
	wire := packettest.NewCapture(t, l.RouterNS, l.RouterIf, encapTest(oh))
	// OUT frames (from A), IN frames (to A, and A's broadcast, which is OUT
	// only), one tagged; frames of no direction of A.
	sent := map[uint32][]byte{}
	dirOf := map[uint32]Direction{}
	var want []uint32
	frame := func(seq uint32, dst, src []byte, tags []packettest.Tag, size int, d Direction) {
		f := packettest.Frame(dst, src, tags, seq, size)
		sent[seq] = f
		if _, ok := idOf[d]; ok {
			dirOf[seq] = d
			want = append(want, seq)
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
	file := stop(len(want), encapTest(oh))
	l.checkWire(t, typ, v6, idOf, sent, dirOf, wire.WaitN(len(want), 10*time.Second))

	raw := packettest.ReadPcap(t, file)
	rows := packettest.TsharkFields(t, file, "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "gre.key", "gre.sequence_number",
		"erspan.version", "erspan.spanid", "erspan.direction", "erspan.timestamp", "vxlan.vni", "eth.src", "eth.dst")
	if len(rows) != len(raw) {
		t.Fatalf("tshark decoded %d frames of %d", len(rows), len(raw))
	}
	lastSeq := map[Direction]int{DirIn: -1, DirOut: -1}
	var got []uint32
	for i, f := range raw {
		row := rows[i]
		if !encapTest(oh)(f) {
			// The span namespace's own multicast (IPv6 router
			// solicitations...) is IN for port A too.
			continue
		}
		inner := f[oh:]
		seq, _ := packettest.Seq(inner)
		d, ok := dirOf[seq]
		if !ok {
			t.Fatalf("frame %d: inner frame %d was not to be mirrored: %x", i, seq, inner)
		}
		got = append(got, seq)
		if !bytes.Equal(inner, sent[seq]) {
			t.Errorf("frame %d (seq %d): inner frame differs:\n got %x\nwant %x", i, seq, inner, sent[seq])
		}
		srcF, dstF := row["ip.src"], row["ip.dst"]
		if v6 {
			srcF, dstF = row["ipv6.src"], row["ipv6.dst"]
		}
		if srcF != src.String() || dstF != remote.String() {
			t.Errorf("frame %d: outer %s -> %s, want %s -> %s", i, srcF, dstF, src, remote)
		}
		var gotID string
		switch typ {
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
		if n, err := strconv.ParseUint(gotID, 0, 32); err != nil || uint32(n) != idOf[d] {
			t.Errorf("frame %d (seq %d, %v): tunnel id %q, want %d (tshark: %v)", i, seq, d, gotID, idOf[d], row)
		}
		if typ == TunnelERSPANv3 {
			// D is the switch port's view: OUT (sent by the VM) entered
			// the port, ingress 0; IN (to the VM) left it, egress 1.
			if got, want := row["erspan.direction"], map[Direction]string{DirIn: "1", DirOut: "0"}[d]; got != want &&
				got != map[string]string{"0": "False", "1": "True"}[want] {
				t.Errorf("frame %d (%v): erspan direction %q, want %s", i, d, got, want)
			}
		}
		// tshark found the outer and the inner Ethernet headers.
		if macs := strings.Split(row["eth.src"], ","); len(macs) != 2 || macs[1] != macString(sent[seq][6:12]) {
			t.Errorf("frame %d: tshark's Ethernet sources %q, want the inner %s second", i, row["eth.src"], macString(sent[seq][6:12]))
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("collector got mirrored frames %v, want %v in order", got, want)
	}
	for i, stopVX := range decap {
		var wantVX []uint32
		for _, s := range want {
			if dirOf[s] == decapDirs[i] {
				wantVX = append(wantVX, s)
			}
		}
		var gotVX []uint32
		for _, f := range packettest.ReadPcap(t, stopVX(len(wantVX), packettest.IsTest)) {
			seq, _ := packettest.Seq(f)
			if !bytes.Equal(f, sent[seq]) {
				t.Errorf("vxlan device of %v: frame %d differs:\n got %x\nwant %x", decapDirs[i], seq, f, sent[seq])
			}
			gotVX = append(gotVX, seq)
		}
		if fmt.Sprint(gotVX) != fmt.Sprint(wantVX) {
			t.Errorf("kernel vxlan device of %v decapsulated %v, want %v", decapDirs[i], gotVX, wantVX)
		}
	}
	st := mirrorStats(b, "m")
	t.Logf("%d encapsulated, %d bytes, %d truncated, drops %v", st.EncapPackets, st.EncapBytes, st.TruncatedPackets, st.Drops)
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
// port unbound. The mirror copies OUT only: its frames have one copy
// each.
func TestMirrorFaults(t *testing.T) { forEachPath(t, testMirrorFaults) }

func testMirrorFaults(t *testing.T, fast bool) {
	l := newMirrorLab(t, 0)
	b := newBroker(t, Config{FastPath: fast})
	col := packettest.NewCapture(t, l.CollectorNS, l.CollectorIf, greV4Test)
	plan := l.outPlan(1, TunnelGRE, 2)
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
		wantPath(t, b, l.capIf, fast)
		if st := mirrorStats(b, "m"); st.Status != "ACTIVE" || st.Reason != "" || st.Uplink != l.Uplink {
			t.Fatalf("%s: stats say %s %q via %q, want ACTIVE via %s", what, st.Status, st.Reason, st.Uplink, l.Uplink)
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
	testutil.Run(t, "ip", "-n", l.RouterNS, "link", "set", l.RouterIf, "address", newMAC)
	testutil.Run(t, "ip", "-n", l.RouterNS, "neigh", "flush", "dev", l.RouterIf)
	// The kernel takes a new MAC for a neighbour only once the entry is
	// older than its locktime (1 s): the router asks again until answered.
	for try := 0; try < 5; try++ {
		if exec.Command("ip", "netns", "exec", l.RouterNS, "ping", "-c", "1", "-W", "1", l.Gw4.Prev().String()).Run() == nil {
			break
		}
	}
	statusOnEvent(t, b, plan, "new next-hop MAC", func(r Report) bool { return mirrorActive(r) && nextHopMAC(b, "m") == newMAC })
	roundTrip("new next-hop MAC")

	// Route removed: no route, or one through an interface that is no
	// uplink (the host's default route).
	drainEvents(b)
	testutil.Run(t, "ip", "route", "del", l.Col4.String()+"/32")
	down("route removed", "no route", "not an uplink")
	l.AddRoute4(t)
	up("route re-added")

	// Uplink set down: the kernel removes the routes through it.
	drainEvents(b)
	testutil.Run(t, "ip", "link", "set", l.Uplink, "down")
	down("uplink down", "is down")
	testutil.Run(t, "ip", "link", "set", l.Uplink, "up")
	testutil.WaitOperUp(t, "", l.Uplink)
	l.AddRoute4(t)
	up("uplink up")

	// The uplink loses its carrier (the router's end goes down).
	drainEvents(b)
	testutil.Run(t, "ip", "-n", l.RouterNS, "link", "set", l.RouterIf, "down")
	down("uplink carrier lost", "no carrier", "is down", "unresolved")
	testutil.Run(t, "ip", "-n", l.RouterNS, "link", "set", l.RouterIf, "up")
	testutil.WaitOperUp(t, "", l.Uplink)
	l.AddRoute4(t)
	up("uplink carrier back")

	// Remote unreachable: its next hop does not answer, until the router
	// takes that address too.
	drainEvents(b)
	testutil.Run(t, "ip", "route", "replace", l.Col4.String()+"/32", "via", l.Spare4.String(), "dev", l.Uplink)
	down("next hop unreachable", "unresolved")
	testutil.Run(t, "ip", "-n", l.RouterNS, "addr", "add", l.Spare4.String()+"/29", "dev", l.RouterIf)
	up("next hop answers")

	// A session id ERSPAN cannot carry (10 bits): ERROR, not sent.
	bad := l.outPlan(2, TunnelERSPANv1, 2000)
	r = apply(t, b, bad)
	if st := r.Mirrors["m"]; st.State != StateError || !strings.Contains(st.Reason, "2000") {
		t.Fatalf("erspan session 2000: mirror %v %q, want ERROR naming the id", st.State, st.Reason)
	}

	// Port unbound.
	unbound := l.outPlan(3, TunnelGRE, 2)
	unbound.Mirrors[0].Iface = ""
	r = apply(t, b, unbound)
	if st := r.Mirrors["m"]; st.State != StateDown || !strings.Contains(st.Reason, "no interface binding") {
		t.Fatalf("port unbound: mirror %v %q, want DOWN, no interface binding", st.State, st.Reason)
	}
}

// TestMirrorTruncates gives the uplink and the capture an MTU of 600: a
// frame of 610 bytes does not fit the uplink once encapsulated. Its copy
// arrives cut to fit, the inner frame's first bytes intact, ERSPAN's
// truncated bit set, counted truncated and not dropped, on both paths.
// A capture that brings frames larger than the uplink carries takes the
// AF_XDP path: the kernel checks a redirected copy against the uplink's
// MTU before the tunnel's program can cut it.
func TestMirrorTruncates(t *testing.T) { forEachPath(t, testMirrorTruncates) }

func testMirrorTruncates(t *testing.T, fast bool) {
	l := newMirrorLab(t, 0)
	b := newBroker(t, Config{FastPath: fast})
	const mtu = 600
	testutil.Run(t, "ip", "link", "set", l.Uplink, "mtu", strconv.Itoa(mtu))
	testutil.Run(t, "ip", "link", "set", l.capIf, "mtu", strconv.Itoa(mtu))
	var version uint64
	for _, typ := range []TunnelType{TunnelERSPANv1, TunnelGRE} {
		t.Run(typ.String(), func(t *testing.T) {
			version++
			plan := l.outPlan(version, typ, 2)
			waitStatus(t, b, plan, "mirror ACTIVE", mirrorActive)
			wantPath(t, b, l.capIf, fast)
			stop := packettest.Tcpdump(t, l.CollectorNS, l.CollectorIf, "ip proto 47")
			before := mirrorStats(b, "m")
			small, big := packettest.Frame(hwB, hwA, nil, 1, 100), packettest.Frame(hwB, hwA, nil, 2, 610)
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
	if !fast {
		return
	}
	drainEvents(b)
	testutil.Run(t, "ip", "link", "set", l.capIf, "mtu", "1500")
	version++
	plan := l.outPlan(version, TunnelGRE, 2)
	statusOnEvent(t, b, plan, "capture MTU 1500", func(Report) bool {
		for _, is := range b.Stats().Interfaces {
			if is.Name == l.capIf {
				return is.Path == PathAFXDP && strings.Contains(is.PathReason, "uplink "+l.Uplink)
			}
		}
		return false
	})
}

// TestMirrorUplinkLoop routes the collector through the capture interface
// itself, declared an uplink: the loop guard refuses it, ERROR.
func TestMirrorUplinkLoop(t *testing.T) {
	l := newMirrorLab(t, 0)
	b := newBroker(t, Config{})
	testutil.Run(t, "ip", "route", "replace", l.Col4.String()+"/32", "dev", l.capIf)
	plan := l.mirrorPlan(1, TunnelGRE, l.Col4, 1, 2)
	plan.Uplinks = append(plan.Uplinks, l.capIf)
	r := apply(t, b, plan)
	if st := r.Mirrors["m"]; st.State != StateError || !strings.Contains(st.Reason, "loop refused") {
		t.Fatalf("mirror through the capture interface: %v %q, want ERROR, loop refused", st.State, st.Reason)
	}
	if st := mirrorStats(b, "m"); st.Status != "ERROR" {
		t.Fatalf("stats say %s, want ERROR", st.Status)
	}
}

// TestMirrorBesideFlows puts a tap flow and a tap mirror of the same port
// on one capture, on both paths: one frame goes to the monitor and,
// encapsulated, to the collector (on the fast path one broadcast over a
// monitor and a tunnel). Once the mirror is gone the capture keeps its
// path and the uplink's socket closes.
func TestMirrorBesideFlows(t *testing.T) { forEachPath(t, testMirrorBesideFlows) }

func testMirrorBesideFlows(t *testing.T, fast bool) {
	l := newMirrorLab(t, 1)
	b := newBroker(t, Config{FastPath: fast})
	col := packettest.NewCapture(t, l.CollectorNS, l.CollectorIf, greV4Test)
	plan := &Plan{Version: 1, Uplinks: []string{l.Uplink},
		Services: []Service{{ID: "s", Iface: l.mons[0]}},
		Flows:    []Flow{{ID: "f", ServiceID: "s", SourcePortID: "pa", Iface: l.capIf, MAC: mac6(hwA), Direction: DirOut}},
		Mirrors: []Mirror{{ID: "m", PortID: "pa", Iface: l.capIf, MAC: mac6(hwA), Type: TunnelGRE, RemoteIP: l.Col4,
			Tunnels: []Tunnel{{Direction: DirOut, ID: 9}}}}}
	r := waitStatus(t, b, plan, "mirror ACTIVE", mirrorActive)
	wantActive(t, r)
	wantPath(t, b, l.capIf, fast)
	f := packettest.Frame(hwB, hwA, nil, 7, 60)
	l.send(t, f)
	expect(t, l.caps[0], "monitor", map[uint32][]byte{7: f}, 7)
	if got := col.WaitN(1, 5*time.Second); len(got) != 1 || !bytes.Equal(got[0][42:], f) {
		t.Fatalf("collector got %d copies, want 1 of frame 7", len(got))
	}
	if st := mirrorStats(b, "m"); st.EncapPackets != 1 || st.EncapBytes != uint64(42+len(f)) {
		t.Fatalf("mirror counted %d copies, %d bytes; want 1, %d", st.EncapPackets, st.EncapBytes, 42+len(f))
	}

	plan2 := &Plan{Version: 2, Services: plan.Services, Flows: plan.Flows, Uplinks: plan.Uplinks}
	wantActive(t, apply(t, b, plan2))
	wantPath(t, b, l.capIf, fast)
	b.mu.Lock()
	open := len(b.uplinks)
	b.mu.Unlock()
	if open != 0 {
		t.Fatalf("%d uplink sockets open without a mirror, want 0", open)
	}
	l.caps[0].Reset()
	col.Reset()
	f = packettest.Frame(hwB, hwA, nil, 8, 60)
	l.send(t, f)
	expect(t, l.caps[0], "monitor without the mirror", map[uint32][]byte{8: f}, 8)
	if got := col.Quiet(200*time.Millisecond, time.Second); len(got) != 0 {
		t.Fatalf("collector got %d copies after the mirror was removed", len(got))
	}
}

// TestMirrorHandoff: a capture whose mirror is on the fast path goes on
// encapsulating to the collector with no broker running after a Handoff,
// and after the next broker took it over, on either path.
func TestMirrorHandoff(t *testing.T) {
	l := newMirrorLab(t, 0)
	dir := testutil.BPFFS(t)
	col := packettest.NewCapture(t, l.CollectorNS, l.CollectorIf, greV4Test)
	plan := l.outPlan(1, TunnelGRE, 2)
	seq := uint32(0)
	roundTrip := func(what string) {
		t.Helper()
		col.Reset()
		seq++
		f := packettest.Frame(hwB, hwA, nil, seq, 60)
		l.send(t, f)
		got := col.WaitN(1, 5*time.Second)
		if len(got) != 1 || !bytes.Equal(got[0][42:], f) {
			t.Fatalf("%s: collector got %d copies, want frame %d", what, len(got), seq)
		}
	}
	b1 := newBroker(t, Config{FastPath: true, PinDir: dir})
	waitStatus(t, b1, plan, "mirror ACTIVE", mirrorActive)
	wantPath(t, b1, l.capIf, true)
	roundTrip("fast path")
	if err := b1.Handoff(); err != nil {
		t.Fatal(err)
	}
	roundTrip("with no broker, after a handoff")

	b2 := newBroker(t, Config{FastPath: true, PinDir: dir})
	waitStatus(t, b2, plan, "mirror ACTIVE after the takeover", mirrorActive)
	wantPath(t, b2, l.capIf, true)
	roundTrip("after the takeover")
	if err := b2.Handoff(); err != nil {
		t.Fatal(err)
	}
	b3 := newBroker(t, Config{PinDir: dir})
	waitStatus(t, b3, plan, "mirror ACTIVE on the AF_XDP path", mirrorActive)
	wantPath(t, b3, l.capIf, false)
	roundTrip("taken over by the AF_XDP path")
}

// TestMirrorSeqAcrossPaths: an ERSPAN mirror's sequence numbers go on
// from one path to the other when its capture changes path (here: its
// MTU grows past the uplink's and shrinks back), with no jump at rest.
func TestMirrorSeqAcrossPaths(t *testing.T) {
	l := newMirrorLab(t, 0)
	b := newBroker(t, Config{FastPath: true})
	wire := packettest.NewCapture(t, l.RouterNS, l.RouterIf, encapTest(overhead(TunnelERSPANv1, false)))
	plan := l.outPlan(1, TunnelERSPANv1, 2)
	waitStatus(t, b, plan, "mirror ACTIVE", mirrorActive)
	var seqs []uint32
	n := uint32(0)
	send := func(what string, fast bool) {
		t.Helper()
		wantPath(t, b, l.capIf, fast)
		wire.Reset()
		for i := 0; i < 3; i++ {
			n++
			l.send(t, packettest.Frame(hwB, hwA, nil, n, 60))
		}
		got := wire.WaitN(3, 5*time.Second)
		if len(got) != 3 {
			t.Fatalf("%s: router got %d copies, want 3", what, len(got))
		}
		for _, f := range got {
			seqs = append(seqs, binary.BigEndian.Uint32(f[14+20+4:])) // GRE sequence number
		}
	}
	send("fast path", true)
	drainEvents(b)
	testutil.Run(t, "ip", "link", "set", l.capIf, "mtu", "1600")
	statusOnEvent(t, b, plan, "capture MTU 1600", mirrorActive)
	send("AF_XDP path", false)
	drainEvents(b)
	testutil.Run(t, "ip", "link", "set", l.capIf, "mtu", "1500")
	statusOnEvent(t, b, plan, "capture MTU 1500", mirrorActive)
	send("fast path again", true)
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("sequence numbers %v: want consecutive across the path changes", seqs)
		}
	}
	t.Logf("sequence numbers %v", seqs)
}

// TestMirrorNotUnicast gives mirrors remote IPs whose route is not a
// unicast one, or whose next hop's neighbour entry is not a resolved
// unicast MAC: each is DOWN with a reason naming why, and the kernel is not
// asked to resolve a broadcast (its NOARP entry would carry ff:ff:ff:ff:ff:ff
// and the copies would flood the uplink's segment).
func TestMirrorNotUnicast(t *testing.T) {
	l := newMirrorLab(t, 0)
	b := newBroker(t, Config{})
	bcast := l.Src4.As4()
	bcast[3] |= 7 // the uplink's /29
	other4, other6 := l.Col4.Next(), l.Col6.Next()
	// route replaces the route to dst (a host route) and removes it when
	// the test ends: a blackhole is no uplink's, and outlives it.
	route := func(typ string, dst netip.Addr, via ...string) {
		ip := []string{"route"}
		if dst.Is6() {
			ip = []string{"-6", "route"}
		}
		pfx := netip.PrefixFrom(dst, dst.BitLen()).String()
		args := append(append(slices.Clone(ip), "replace"), typ, pfx)
		testutil.Run(t, "ip", append(args, via...)...)
		t.Cleanup(func() { _ = exec.Command("ip", append(append(ip, "del"), pfx)...).Run() })
	}
	neigh := func(mac, nud string) {
		testutil.Run(t, "ip", "neigh", "replace", l.Spare4.String(), "lladdr", mac, "dev", l.Uplink, "nud", nud)
	}
	// MCAST-TEST-NET (RFC 6676), routed to the uplink so that the answer
	// does not depend on the host's routes.
	mcast := netip.MustParseAddr("233.252.0.1")
	cases := []struct {
		name   string
		setup  func()
		remote netip.Addr
		want   string
	}{
		{"subnet-directed broadcast", func() {}, netip.AddrFrom4(bcast), "is broadcast, not unicast"},
		{"multicast", func() { route("unicast", mcast, "dev", l.Uplink) }, mcast, "is multicast, not unicast"},
		{"local", func() {}, l.Src4, "is local, not unicast"},
		{"blackhole", func() { route("blackhole", other4) }, other4, "is blackhole, not unicast"},
		{"unreachable", func() { route("unreachable", other4) }, other4, "is unreachable, not unicast"},
		{"prohibit", func() { route("prohibit", other4) }, other4, "is prohibit, not unicast"},
		{"ipv6 blackhole", func() { route("blackhole", other6) }, other6, "is blackhole, not unicast"},
		{"ipv6 prohibit", func() { route("prohibit", other6) }, other6, "is prohibit, not unicast"},
		{"noarp next hop", func() {
			route("unicast", other4, "via", l.Spare4.String(), "dev", l.Uplink)
			neigh("ff:ff:ff:ff:ff:ff", "noarp")
		}, other4, "is NOARP"},
		{"group MAC next hop", func() {
			route("unicast", other4, "via", l.Spare4.String(), "dev", l.Uplink)
			neigh("01:00:5e:00:00:01", "permanent")
		}, other4, "group MAC"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup()
			r := apply(t, b, l.mirrorPlan(uint64(i+1), TunnelGRE, tc.remote, 1, 2))
			st := r.Mirrors["m"]
			if st.State != StateDown || !strings.Contains(st.Reason, tc.want) {
				t.Fatalf("mirror to %s: %v %q, want DOWN, %q", tc.remote, st.State, st.Reason, tc.want)
			}
			t.Logf("%s: %s", tc.remote, st.Reason)
		})
	}
	if out := testutil.Run(t, "ip", "neigh", "show", netip.AddrFrom4(bcast).String(), "dev", l.Uplink); out != "" {
		t.Errorf("the broadcast address has a neighbour entry: %s", out)
	}
}

// TestMirrorTwoTunnelsOneUplink mirrors port A (IN and OUT ids) and port B
// (IN and OUT ids) to one collector through one uplink, and sends frames
// that go to one tunnel (A to C, C to A, B to C), to two (A to B, B to A,
// A to itself, a broadcast or multicast), and to none. On the fast path
// the capture stays fast even for the frames that take two tunnels
// through the uplink (xdpprog's tun_order deals a frame's copies out to
// its tunnels), and no frame goes to the AF_XDP sockets; on both paths the
// collector gets every copy once with its tunnel's key (tshark), the inner
// frame byte-identical, and the mirrors count exactly the copies sent.
func TestMirrorTwoTunnelsOneUplink(t *testing.T) { forEachPath(t, testMirrorTwoTunnelsOneUplink) }

func testMirrorTwoTunnelsOneUplink(t *testing.T, fast bool) {
	l := newMirrorLab(t, 0)
	// The span namespace's IPv6 (router solicitations, MLD) is multicast,
	// IN for both ports: no such frames, so that the counts are exact.
	testutil.Run(t, "ip", "netns", "exec", l.span, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
		"net.ipv6.conf.default.disable_ipv6=1", "net.ipv6.conf."+l.p+"capp.disable_ipv6=1")
	// The router holds only ~32 packets for a neighbour it is still
	// resolving: the burst below would lose copies to a slow ARP.
	colMAC := testutil.LinkMAC(t, l.CollectorNS, l.CollectorIf)
	testutil.Run(t, "ip", "-n", l.RouterNS, "neigh", "replace", l.Col4.String(), "lladdr", macString(colMAC[:]),
		"dev", l.p+"rc", "nud", "permanent")
	b := newBroker(t, Config{FastPath: fast})
	plan := l.mirrorPlan(1, TunnelGRE, l.Col4, 101, 102)
	plan.Mirrors = append(plan.Mirrors, Mirror{ID: "m2", PortID: "pb", Iface: l.capIf, MAC: mac6(hwB), Type: TunnelGRE,
		RemoteIP: l.Col4, Tunnels: []Tunnel{{Direction: DirIn, ID: 201}, {Direction: DirOut, ID: 202}}})
	waitStatus(t, b, plan, "mirrors ACTIVE", func(r Report) bool {
		return r.Mirrors["m"].State == StateActive && r.Mirrors["m2"].State == StateActive
	})
	wantPath(t, b, l.capIf, fast)

	// keysOf are the tunnel keys of a frame: OUT when the port sent it, IN
	// when it is to the port or a group address the port did not send.
	keysOf := func(dst, src net.HardwareAddr) []uint32 {
		var keys []uint32
		for _, p := range []struct {
			mac     net.HardwareAddr
			in, out uint32
		}{{hwA, 101, 102}, {hwB, 201, 202}} {
			if bytes.Equal(src, p.mac) {
				keys = append(keys, p.out)
			}
			if bytes.Equal(dst, p.mac) || (dst[0]&1 == 1 && !bytes.Equal(src, p.mac)) {
				keys = append(keys, p.in)
			}
		}
		return keys
	}
	hwD := packettest.MustMAC("02:00:00:00:00:0d")
	type copyOf struct{ seq, key uint32 }
	sent := map[uint32][]byte{}
	var want []copyOf
	twoTunnels, withCopies := 0, 0
	copies := map[uint32]uint64{} // per key
	seq := uint32(0)
	send := func(dst, src net.HardwareAddr) {
		seq++
		f := packettest.Frame(dst, src, nil, seq, 60+int(seq%4)*50)
		sent[seq] = f
		keys := keysOf(dst, src)
		for _, k := range keys {
			want = append(want, copyOf{seq, k})
			copies[k]++
		}
		if len(keys) > 0 {
			withCopies++
		}
		if len(keys) > 1 {
			twoTunnels++
		}
		l.send(t, f)
	}
	before := mirrorStats(b, "m").EncapPackets + mirrorStats(b, "m2").EncapPackets
	sockets, kernel := ifaceCounter(b, l.capIf, "xdp_redirected"), ifaceCounter(b, l.capIf, "xdp_fast_redirected")
	// Not tcpdump: its ring holds about 32 frames (2 MB of 64 KB slots, the
	// collector's veth having offloads), too few for a burst on a busy
	// machine. The frames go into a pcap for tshark instead.
	col := packettest.NewCapture(t, l.CollectorNS, l.CollectorIf, func(f []byte) bool { return len(f) > 23 && f[12] == 8 && f[13] == 0 && f[23] == 47 })
	for _, fr := range [][2]net.HardwareAddr{
		{hwB, hwA}, {hwA, hwB}, {hwC, hwA}, {hwA, hwC}, {hwC, hwB}, {hwA, hwA}, {hwB, hwB},
		{hwBcast, hwA}, {hwBcast, hwC}, {hwMcast, hwB}, {hwD, hwC},
	} {
		send(fr[0], fr[1])
	}
	// A burst, so that the capture's NAPI polls and the uplink's DEVMAP
	// queue hold the copies of several frames at once.
	for i := range 40 {
		if i%2 == 0 {
			send(hwB, hwA)
		} else {
			send(hwA, hwB)
		}
	}
	send(hwA, hwC) // last: its copy comes after every other
	col.WaitN(len(want), 10*time.Second)
	raw := col.Quiet(200*time.Millisecond, 3*time.Second)
	file := writePcap(t, raw)
	rows := packettest.TsharkFields(t, file, "gre.key", "ip.dst")
	if len(rows) != len(raw) {
		t.Fatalf("tshark decoded %d frames of %d", len(rows), len(raw))
	}
	var got []copyOf
	for i, f := range raw {
		if !encapTest(42)(f) {
			t.Errorf("frame %d: not a copy of a test frame: %x", i, f)
			continue
		}
		inner := f[42:]
		s, _ := packettest.Seq(inner)
		key, err := strconv.ParseUint(rows[i]["gre.key"], 0, 32)
		if err != nil || rows[i]["ip.dst"] != l.Col4.String() {
			t.Errorf("frame %d (seq %d): tshark says key %q to %q, want a key to %s", i, s, rows[i]["gre.key"], rows[i]["ip.dst"], l.Col4)
		}
		if !bytes.Equal(inner, sent[s]) {
			t.Errorf("frame %d (seq %d): inner frame differs:\n got %x\nwant %x", i, s, inner, sent[s])
		}
		got = append(got, copyOf{s, uint32(key)})
	}
	order := func(a, b copyOf) int {
		if a.seq != b.seq {
			return int(a.seq) - int(b.seq)
		}
		return int(a.key) - int(b.key)
	}
	slices.SortFunc(got, order)
	slices.SortFunc(want, order)
	if !slices.Equal(got, want) {
		t.Fatalf("collector got copies (seq, key)\n%v\nwant each once\n%v", got, want)
	}
	m, m2 := mirrorStats(b, "m"), mirrorStats(b, "m2")
	if n := m.EncapPackets + m2.EncapPackets - before; n != uint64(len(want)) {
		t.Errorf("mirrors encapsulated %d copies, want %d", n, len(want))
	}
	for _, st := range []MirrorStats{m, m2} {
		for reason, n := range st.Drops {
			if n != 0 {
				t.Errorf("mirror %s dropped %d copies: %s", st.ID, n, reason)
			}
		}
	}
	wantPath(t, b, l.capIf, fast)
	if fast {
		s, k := ifaceCounter(b, l.capIf, "xdp_redirected")-sockets, ifaceCounter(b, l.capIf, "xdp_fast_redirected")-kernel
		if s != 0 || k != uint64(withCopies) {
			t.Errorf("capture sent %d frames to the AF_XDP sockets and %d through the DEVMAP, want 0 and %d", s, k, withCopies)
		}
	}
	t.Logf("%d frames, %d with copies, %d of them to two tunnels through the uplink; copies per key %v",
		seq, withCopies, twoTunnels, copies)
}

// writePcap writes frames into a pcap file in t's temporary directory.
func writePcap(t *testing.T, frames [][]byte) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "frames.pcap")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	w := pcapgo.NewWriter(f)
	err = w.WriteFileHeader(65535, layers.LinkTypeEthernet)
	for _, fr := range frames {
		if err == nil {
			err = w.WritePacket(gopacket.CaptureInfo{Timestamp: time.Now(), CaptureLength: len(fr), Length: len(fr)}, fr)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("write %s: %v", file, err)
	}
	return file
}

// TestMirrorSnaplen: a tap mirror with a snaplen carries the first
// snaplen bytes of longer frames, shorter ones whole, on both paths.
func TestMirrorSnaplen(t *testing.T) { forEachPath(t, testMirrorSnaplen) }

func testMirrorSnaplen(t *testing.T, fast bool) {
	const snap = 100
	if h, err := xdpprog.NewTunnelHeader(xdpprog.TunnelSpec{Encap: xdpprog.EncapGRE, Src: netip.MustParseAddr("198.51.100.1"),
		Dst: netip.MustParseAddr("198.51.100.2"), MTU: 1500, Snaplen: snap}); err != nil || h.MaxFrame() > snap {
		t.Skip("xdpprog's tunnels truncate to the snaplen once branch filt-xdp is merged")
	}
	l := newMirrorLab(t, 0)
	b := newBroker(t, Config{FastPath: fast})
	plan := l.outPlan(1, TunnelGRE, 2)
	plan.Mirrors[0].Snaplen = snap
	waitStatus(t, b, plan, "mirror ACTIVE", mirrorActive)
	wantPath(t, b, l.capIf, fast)
	oh := overhead(TunnelGRE, false)
	stop := packettest.Tcpdump(t, l.CollectorNS, l.CollectorIf, "ip proto 47")
	var sent [][]byte
	for i, size := range []int{60, snap, snap + 1, 1000} {
		sent = append(sent, packettest.Frame(hwB, hwA, nil, uint32(i+1), size))
	}
	l.send(t, sent...)
	var got [][]byte
	for _, f := range packettest.ReadPcap(t, stop(len(sent), encapTest(oh))) {
		if encapTest(oh)(f) {
			got = append(got, f[oh:])
		}
	}
	if len(got) != len(sent) {
		t.Fatalf("collector got %d copies, want %d", len(got), len(sent))
	}
	for i, f := range got {
		if want := sent[i][:min(len(sent[i]), snap)]; !bytes.Equal(f, want) {
			t.Errorf("copy %d: inner frame\n got %x\nwant %x", i, f, want)
		}
	}
}
