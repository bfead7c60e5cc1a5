package xdpprog

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/taas-appliance/taas/internal/packettest"
)

var (
	tunPort   = [6]byte{0x02, 0, 0, 0, 0, 0x0a} // the mirrored port (macA)
	tunUplink = [6]byte{0x02, 0, 0, 0, 0x01, 0x01}
	tunNext   = [6]byte{0x02, 0, 0, 0, 0x01, 0x02}
	tunSrc4   = netip.MustParseAddr("192.0.2.1")
	tunDst4   = netip.MustParseAddr("198.51.100.7")
	tunSrc6   = netip.MustParseAddr("2001:db8::1")
	tunDst6   = netip.MustParseAddr("2001:db8:1::7")
)

// tunnelSpecs are the four formats on both families, MTU 1500.
func tunnelSpecs() []TunnelSpec {
	var specs []TunnelSpec
	for _, fam := range [][2]netip.Addr{{tunSrc4, tunDst4}, {tunSrc6, tunDst6}} {
		for _, e := range []struct {
			encap Encap
			id    uint32
		}{{EncapGRE, 0xdeadbeef}, {EncapERSPAN2, 1023}, {EncapERSPAN3, 517}, {EncapVXLAN, 0xabcdef}} {
			specs = append(specs, TunnelSpec{Encap: e.encap, ID: e.id, PortMAC: tunPort, SrcMAC: tunUplink,
				DstMAC: tunNext, Src: fam[0], Dst: fam[1], MTU: 1500})
		}
	}
	return specs
}

func specName(s TunnelSpec) string {
	fam := "ipv4"
	if s.Src.Is6() {
		fam = "ipv6"
	}
	return s.Encap.String() + "/" + fam
}

// tunnelFrame is one inner frame of the tests: what it is and what the
// outer headers must say of it.
type tunnelFrame struct {
	name    string
	frame   []byte
	fromVM  bool   // its source is the port: ERSPAN III ingress
	vlan    uint16 // outer VID, 0 untagged
	trunc   bool   // longer than the tunnel carries at MTU 1500
	payload []byte // after the EtherType (and tags): what tshark shows as data
}

func tunnelFrames() []tunnelFrame {
	other := packettest.MustMAC("02:00:00:00:00:ee")
	port := packettest.MustMAC("02:00:00:00:00:0a")
	mk := func(name string, dst, src []byte, tags []packettest.Tag, size int, fromVM, trunc bool) tunnelFrame {
		f := packettest.Frame(dst, src, tags, 7, size)
		var vid uint16
		if len(tags) > 0 {
			vid = tags[0].VID
		}
		return tunnelFrame{name: name, frame: f, fromVM: fromVM, vlan: vid, trunc: trunc, payload: f[14+4*len(tags):]}
	}
	return []tunnelFrame{
		mk("from the vm 64", other, port, nil, 60, true, false),
		mk("to the vm tagged", port, other, []packettest.Tag{{TPID: 0x8100, VID: 100}}, 200, false, false),
		mk("from the vm truncated", other, port, nil, 1514, true, true),
	}
}

// TestEncapsulateDecodes writes every format on both families into a pcap
// and has tshark decode it: outer addresses, TTL/hop limit, DF, checksums,
// key / session id / VNI, the sequence number, the ERSPAN III direction bit
// and timestamp, the T bit on a truncated copy, and an inner frame that
// decodes to the same addresses and payload bytes (cut where truncated).
func TestEncapsulateDecodes(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("requires tshark")
	}
	const seq, ts = 0x01020304, 0x0a0b0c0d
	fields := []string{"ip.src", "ip.dst", "ip.ttl", "ip.flags.df", "ip.checksum.status", "ipv6.src", "ipv6.dst",
		"ipv6.hlim", "gre.key", "gre.sequence_number", "erspan.version", "erspan.spanid", "erspan.vlan",
		"erspan.truncated", "erspan.direction", "erspan.timestamp", "erspan.encap", "erspan.gra",
		"vxlan.vni", "udp.srcport", "udp.dstport", "udp.checksum.status", "eth.src", "eth.dst", "data.data"}
	for _, s := range tunnelSpecs() {
		t.Run(specName(s), func(t *testing.T) {
			h, err := NewTunnelHeader(s)
			if err != nil {
				t.Fatal(err)
			}
			frames := tunnelFrames()
			path := filepath.Join(t.TempDir(), "tunnel.pcap")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			w := pcapgo.NewWriter(f)
			if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 2048)
			var lens []int
			for _, fr := range frames {
				n, trunc := h.Encapsulate(buf, fr.frame, seq, ts)
				if trunc != fr.trunc || n > s.MTU+14 {
					t.Fatalf("Encapsulate(%s) = %d, %v; want truncated %v, at most %d", fr.name, n, trunc, fr.trunc, s.MTU+14)
				}
				if inner := buf[h.Overhead():n]; !bytes.Equal(inner, fr.frame[:len(inner)]) {
					t.Fatalf("Encapsulate(%s): inner frame differs", fr.name)
				}
				lens = append(lens, n-h.Overhead())
				ci := gopacketCI(n)
				if err := w.WritePacket(ci, buf[:n]); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			rows := packettest.TsharkFieldsOpts(t, path, []string{"ip.check_checksum:TRUE", "udp.check_checksum:TRUE"}, fields...)
			if len(rows) != len(frames) {
				t.Fatalf("tshark decoded %d packets, want %d", len(rows), len(frames))
			}
			for i, fr := range frames {
				checkDecoded(t, s, fr, lens[i], rows[i], seq, ts)
			}
		})
	}
}

func gopacketCI(n int) (ci gopacket.CaptureInfo) {
	ci.Timestamp = time.Unix(1700000000, 0)
	ci.CaptureLength, ci.Length = n, n
	return ci
}

func checkDecoded(t *testing.T, s TunnelSpec, fr tunnelFrame, inner int, row map[string]string, seq, ts uint32) {
	t.Helper()
	want := map[string]string{
		"eth.src": fmt.Sprintf("%s,%s", mac(s.SrcMAC), mac([6]byte(fr.frame[6:12]))),
		"eth.dst": fmt.Sprintf("%s,%s", mac(s.DstMAC), mac([6]byte(fr.frame[0:6]))),
	}
	if s.Src.Is4() {
		want["ip.src"], want["ip.dst"] = s.Src.String(), s.Dst.String()
		want["ip.ttl"], want["ip.flags.df"], want["ip.checksum.status"] = "64", "1", "1" // 1: good
	} else {
		want["ipv6.src"], want["ipv6.dst"], want["ipv6.hlim"] = s.Src.String(), s.Dst.String(), "64"
	}
	bit := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	switch s.Encap {
	case EncapGRE:
		want["gre.key"] = fmt.Sprintf("0x%08x", s.ID)
		want["gre.sequence_number"] = ""
	case EncapERSPAN2, EncapERSPAN3:
		want["gre.key"] = ""
		want["gre.sequence_number"] = fmt.Sprint(seq)
		want["erspan.spanid"] = fmt.Sprint(s.ID)
		want["erspan.vlan"] = fmt.Sprint(fr.vlan)
		want["erspan.truncated"] = bit(fr.trunc)
		if s.Encap == EncapERSPAN2 {
			want["erspan.version"] = "1"
			want["erspan.encap"] = "0"
			if fr.vlan != 0 {
				want["erspan.encap"] = "3"
			}
		} else {
			want["erspan.version"] = "2"
			want["erspan.direction"] = bit(!fr.fromVM) // 1: egress, towards the VM
			want["erspan.timestamp"] = fmt.Sprint(ts)
			want["erspan.gra"] = "0"
		}
	case EncapVXLAN:
		want["vxlan.vni"] = fmt.Sprint(s.ID)
		want["udp.srcport"] = fmt.Sprint(VXLANSourcePort(s.ID))
		want["udp.dstport"] = "4789"
		if s.Src.Is6() {
			want["udp.checksum.status"] = "1" // good
		}
	}
	payload := fr.payload
	if cut := len(fr.frame) - inner; cut > 0 {
		payload = payload[:len(payload)-cut]
	}
	want["data.data"] = hex.EncodeToString(payload)
	for f, w := range want {
		if got := row[f]; got != w {
			t.Errorf("%s: tshark %s = %q, want %q", fr.name, f, got, w)
		}
	}
}

func mac(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// TestNewTunnelHeaderRefuses checks the validation of a spec.
func TestNewTunnelHeaderRefuses(t *testing.T) {
	ok := TunnelSpec{Encap: EncapGRE, Src: tunSrc4, Dst: tunDst4, MTU: 1500}
	cases := []struct {
		name string
		edit func(*TunnelSpec)
	}{
		{"no encap", func(s *TunnelSpec) { s.Encap = 0 }},
		{"unknown encap", func(s *TunnelSpec) { s.Encap = 5 }},
		{"erspan2 session 1024", func(s *TunnelSpec) { s.Encap, s.ID = EncapERSPAN2, 1024 }},
		{"erspan3 session 1024", func(s *TunnelSpec) { s.Encap, s.ID = EncapERSPAN3, 1024 }},
		{"vxlan vni 2^24", func(s *TunnelSpec) { s.Encap, s.ID = EncapVXLAN, 1<<24 }},
		{"mixed families", func(s *TunnelSpec) { s.Dst = tunDst6 }},
		{"no addresses", func(s *TunnelSpec) { s.Src, s.Dst = netip.Addr{}, netip.Addr{} }},
		{"v4-mapped v6", func(s *TunnelSpec) {
			s.Src, s.Dst = netip.AddrFrom16(tunSrc4.As16()), netip.AddrFrom16(tunDst4.As16())
		}},
		{"mtu 575", func(s *TunnelSpec) { s.MTU = 575 }},
		{"mtu 65536", func(s *TunnelSpec) { s.MTU = 65536 }},
		{"ipv6 mtu 1279", func(s *TunnelSpec) { s.Src, s.Dst, s.MTU = tunSrc6, tunDst6, 1279 }},
		{"snaplen 13", func(s *TunnelSpec) { s.Snaplen = 13 }},
		{"snaplen -1", func(s *TunnelSpec) { s.Snaplen = -1 }},
		{"snaplen 65536", func(s *TunnelSpec) { s.Snaplen = 65536 }},
	}
	if _, err := NewTunnelHeader(ok); err != nil {
		t.Fatalf("NewTunnelHeader(%+v) = %v", ok, err)
	}
	for _, tc := range cases {
		s := ok
		tc.edit(&s)
		if _, err := NewTunnelHeader(s); !errors.Is(err, ErrTunnelSpec) {
			t.Errorf("NewTunnelHeader(%s) = %v, want ErrTunnelSpec", tc.name, err)
		}
	}
}

// TestEncapsulateFitsMTU checks lengths at the edge of the MTU, and that a
// short dst gets nothing.
func TestEncapsulateFitsMTU(t *testing.T) {
	for _, s := range tunnelSpecs() {
		h, err := NewTunnelHeader(s)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		for _, l := range []int{0, 1, 13, 60, h.MaxFrame() - 1, h.MaxFrame(), h.MaxFrame() + 1, 3000} {
			n, trunc := h.Encapsulate(buf, make([]byte, l), 1, 1)
			wantN := h.Overhead() + min(l, h.MaxFrame())
			if n != wantN || trunc != (l > h.MaxFrame()) || n > s.MTU+14 {
				t.Errorf("%s: Encapsulate(%d bytes) = %d, %v; want %d, %v", specName(s), l, n, trunc, wantN, l > h.MaxFrame())
			}
			ipLen := binary.BigEndian.Uint16(buf[16:])
			if s.Src.Is6() {
				ipLen = binary.BigEndian.Uint16(buf[18:]) + ipv6Len
			}
			if int(ipLen) != n-14 {
				t.Errorf("%s: Encapsulate(%d bytes): ip length %d, want %d", specName(s), l, ipLen, n-14)
			}
		}
		if n, _ := h.Encapsulate(buf[:h.Overhead()+59], make([]byte, 60), 1, 1); n != 0 {
			t.Errorf("%s: Encapsulate into a short dst = %d, want 0", specName(s), n)
		}
	}
}

func TestEncapsulateAllocs(t *testing.T) {
	h, err := NewTunnelHeader(tunnelSpecs()[7]) // vxlan over ipv6: the checksum too
	if err != nil {
		t.Fatal(err)
	}
	buf, fr := make([]byte, 2048), make([]byte, 1514)
	if a := testing.AllocsPerRun(100, func() { h.Encapsulate(buf, fr, 1, 2) }); a != 0 {
		t.Errorf("Encapsulate allocates %v times per call, want 0", a)
	}
}

func TestERSPANTimestamp(t *testing.T) {
	if got := ERSPANTimestamp(time.Unix(1, 5e5)); got != 10005 {
		t.Errorf("ERSPANTimestamp(1.0005 s) = %d, want 10005", got)
	}
}

// fuzzTunnels is one program instance per run of FuzzEncapsulate (per
// fuzzing process) with an xdp_tunnel instance (for BPF_PROG_RUN) per
// format and family, loaded on first use; the fuzz target closes them.
type fuzzTunnels struct {
	once  sync.Once
	c     *Capture
	progs map[int]*ebpf.Program // by slot
	err   error
}

func (ft *fuzzTunnels) close() {
	for _, p := range ft.progs {
		p.Close()
	}
	if ft.c != nil {
		ft.c.Close()
	}
}

// run runs xdp_tunnel on frame with h in slot and returns the
// copy and the sequence number it should carry.
func (ft *fuzzTunnels) run(t *testing.T, slot int, h *TunnelHeader, frame []byte) ([]byte, uint32) {
	ft.once.Do(func() {
		ft.progs = map[int]*ebpf.Program{}
		ft.c, ft.err = Load(Config{})
	})
	if ft.err != nil {
		t.Fatal(ft.err)
	}
	if err := ft.c.SetTunnel(slot, h, 1); err != nil {
		t.Fatal(err)
	}
	prog := ft.progs[slot]
	if prog == nil {
		var err error
		if prog, err = ft.c.loadTunnelProg(slot, ebpf.AttachNone); err != nil {
			t.Fatal(err)
		}
		ft.progs[slot] = prog
	}
	var seq uint32
	if err := ft.c.objs.TunnelSeq.Lookup(uint32(slot), &seq); err != nil {
		t.Fatal(err)
	}
	return runTunnel(t, prog, frame), seq
}

// FuzzEncapsulate builds a header from fuzzed fields and encapsulates a
// fuzzed frame: it never panics, writes nothing past n (the guard bytes
// after it stay), and n <= MTU+14. As root, xdp_tunnel must make the same
// bytes of the frame (but ERSPAN III's timestamp) when the kernel takes it
// as test input.
func FuzzEncapsulate(f *testing.F) {
	f.Add(uint8(EncapGRE), uint32(5), false, 1500, []byte("0123456789abcdef"), uint32(1), uint32(2), 100)
	f.Add(uint8(EncapERSPAN3), uint32(5), true, 1280, make([]byte, 1400), uint32(1), uint32(2), 0)
	f.Add(uint8(EncapVXLAN), uint32(1<<24-1), true, 1300, make([]byte, 1400), uint32(1), uint32(2), 0)
	f.Add(uint8(EncapERSPAN2), uint32(1023), false, 576, make([]byte, 13), uint32(1), uint32(2), 10)
	root := os.Geteuid() == 0
	ft := &fuzzTunnels{}
	f.Cleanup(ft.close)
	f.Fuzz(func(t *testing.T, encap uint8, id uint32, v6 bool, mtu int, frame []byte, seq, ts uint32, slack int) {
		s := TunnelSpec{Encap: Encap(encap), ID: id, PortMAC: tunPort, Src: tunSrc4, Dst: tunDst4, MTU: mtu}
		if v6 {
			s.Src, s.Dst = tunSrc6, tunDst6
		}
		h, err := NewTunnelHeader(s)
		if err != nil {
			return
		}
		size := max(0, min(h.Overhead()+len(frame)+slack%64, 1<<17))
		buf := make([]byte, size+16)
		for i := range buf {
			buf[i] = 0xa5
		}
		n, _ := h.Encapsulate(buf[:size], frame, seq, ts)
		if n > s.MTU+14 || n > size {
			t.Fatalf("Encapsulate = %d, MTU %d, dst %d bytes", n, s.MTU, size)
		}
		for i := max(n, size); i < len(buf); i++ {
			if buf[i] != 0xa5 {
				t.Fatalf("Encapsulate = %d wrote byte %d", n, i)
			}
		}
		if n == 0 && size > 0 && buf[0] != 0xa5 {
			t.Fatalf("Encapsulate = 0 wrote into dst")
		}
		if !root || len(frame) < 14 || len(frame) > maxTestRun {
			return
		}
		slot := int(s.Encap-1) * 2
		if v6 {
			slot++
		}
		got, seq := ft.run(t, slot, h, frame)
		want := make([]byte, h.Overhead()+len(frame))
		n, _ = h.Encapsulate(want, frame, seq, 0)
		want = want[:n]
		if off := tsOffset(h); off >= 0 && len(got) >= off+4 {
			copy(want[off:off+4], got[off:off+4])
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("xdp_tunnel gives\n%x\nEncapsulate\n%x", got, want)
		}
	})
}

// TestEncapsulateSnaplen checks a tunnel with a snaplen: shorter frames go
// whole, longer ones are cut to it with the ERSPAN T bit, whatever the MTU
// would carry.
func TestEncapsulateSnaplen(t *testing.T) {
	for _, s := range tunnelSpecs() {
		s.Snaplen = 100
		h, err := NewTunnelHeader(s)
		if err != nil {
			t.Fatal(err)
		}
		if h.MaxFrame() != 100 {
			t.Errorf("%s: MaxFrame() = %d with snaplen 100, want 100", specName(s), h.MaxFrame())
		}
		buf := make([]byte, 4096)
		fr := packettest.Frame(packettest.MustMAC("02:00:00:00:00:0a"), packettest.MustMAC("02:00:00:00:00:ee"), nil, 7, 200)
		for _, l := range []int{60, 100, 101, 200} {
			n, trunc := h.Encapsulate(buf, fr[:l], 1, 1)
			if want := min(l, 100); n != h.Overhead()+want || trunc != (l > 100) || !bytes.Equal(buf[h.Overhead():n], fr[:want]) {
				t.Errorf("%s: Encapsulate(%d bytes) = %d, %v; want %d, %v and the frame's first %d bytes",
					specName(s), l, n, trunc, h.Overhead()+want, l > 100, want)
			}
			if s.Encap == EncapERSPAN2 || s.Encap == EncapERSPAN3 {
				if tbit := binary.BigEndian.Uint32(buf[h.l4+8:])&(1<<10) != 0; tbit != (l > 100) {
					t.Errorf("%s: Encapsulate(%d bytes): T bit %v, want %v", specName(s), l, tbit, l > 100)
				}
			}
		}
	}
}
