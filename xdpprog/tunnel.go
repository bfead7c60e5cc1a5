package xdpprog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"time"
)

// Tunnel encapsulation of a tap mirror's copies (issue 10, "Remote
// delivery"). The same outer headers come from two places, byte for byte
// (TestTunnelXDPMatchesGo):
//
//   - Encapsulate, for the AF_XDP workers: prebuilt headers copied in front
//     of the frame, then the per-frame fields patched;
//   - xdp_tunnel in xdp.c, the DEVMAP egress program of a tunnel output of
//     the fast path (SetTunnel), which does the same with
//     bpf_xdp_adjust_head from the headers NewTunnelHeader built.
//
// The wire format, per Encap (outer Ethernet, then IPv4 or IPv6):
//
//   - IPv4: version 4, IHL 5, DSCP/ECN 0, id 0, DF, TTL 64, header checksum;
//     IPv6: traffic class 0, flow label 0, hop limit 64. Protocol 47 (GRE)
//     or 17 (UDP).
//   - EncapGRE: Ethernet over GRE (RFC 2784/2890, transparent Ethernet
//     bridging 0x6558): flags K only (no checksum, no sequence number), key
//     = ID. 8 bytes.
//   - EncapERSPAN2: ERSPAN Type II: GRE with flags S only and protocol
//     0x88BE, the sequence number seq (as Linux's erspan device sends it:
//     no key), then 8 bytes: Ver 1, VLAN and COS of the frame's outer
//     802.1Q/802.1ad tag (0 untagged), En 3 when tagged ("VLAN tag preserved
//     in frame": the tags are kept) else 0, T set when the copy was
//     truncated, session id = ID (10 bits), Index 0.
//   - EncapERSPAN3: ERSPAN Type III: GRE flags S, protocol 0x22EB, seq, then
//     12 bytes: Ver 2, VLAN and COS as above, BSO 0, T, session id = ID;
//     the timestamp ts; SGT 0, P 0, FT 0 (Ethernet), hardware id 0, D
//     (the switch port's view: 0 ingress, the frame's source MAC is
//     PortMAC, sent by the VM; 1 egress, any other), Gra 0
//     (100 µs: ts counts 100 µs units of the Unix time, mod 2^32, see
//     ERSPANTimestamp; Linux's erspan device uses the same), O 0 (no
//     optional subheader).
//   - EncapVXLAN: UDP to port 4789 from a source port fixed per tunnel
//     (VXLANSourcePort: both paths give the same bytes; different tunnels
//     spread over ECMP), then flags I, VNI = ID (24 bits). The UDP checksum
//     is 0 over IPv4 (RFC 7348) and computed over IPv6, so that a receiver
//     needs no udp6zerocsumrx; the XDP program sums the frame with
//     bpf_csum_diff. On a 1518-byte frame the sum costs about 130 ns per
//     copy in Go and 250 ns in XDP (BenchmarkEncapsulate,
//     BenchmarkTunnelProgram: vxlan/ipv6 beside vxlan/ipv4), worth a
//     collector that needs no setting.
//
// A copy whose outer IP packet would exceed MTU is truncated to fit (the
// ERSPAN T bit set) and reported, never dropped; so is a frame longer than
// the tap mirror's snaplen (TunnelSpec.Snaplen), cut to it.

// Encap is a tunnel's wire format.
type Encap uint8

const (
	// EncapGRE is Ethernet over GRE, key = ID (the API's "gre").
	EncapGRE Encap = iota + 1
	// EncapERSPAN2 is ERSPAN Type II, session id = ID (the API's "erspanv1").
	EncapERSPAN2
	// EncapERSPAN3 is ERSPAN Type III, session id = ID ("erspanv3").
	EncapERSPAN3
	// EncapVXLAN is VXLAN, VNI = ID ("vxlan").
	EncapVXLAN
)

var encapNames = []string{EncapGRE: "gre", EncapERSPAN2: "erspanv1", EncapERSPAN3: "erspanv3", EncapVXLAN: "vxlan"}

// String is the API's mirror_type spelling.
func (e Encap) String() string {
	if e == 0 {
		return "Encap(0)"
	}
	return enumString("Encap", encapNames, uint8(e))
}

// TunnelSpec says where and how one tunnel sends its copies.
type TunnelSpec struct {
	Encap Encap
	// ID is the GRE key, the ERSPAN session id (< 1024) or the VXLAN VNI
	// (< 2^24).
	ID uint32
	// PortMAC is the mirrored port's MAC. ERSPAN III's direction bit is
	// the switch port's view (the ERSPAN draft's, Linux's and OVS's): a
	// frame whose source is PortMAC entered the switch port from the VM
	// (ingress), any other left it towards the VM (egress).
	PortMAC [6]byte
	// SrcMAC and DstMAC are the uplink's MAC and the next hop's MAC.
	SrcMAC, DstMAC [6]byte
	// Src and Dst are the outer addresses, both IPv4 or both IPv6; Src is
	// the address the kernel would use towards Dst.
	Src, Dst netip.Addr
	// MTU is the uplink's MTU in bytes: an outer IP packet never exceeds
	// it. At least 576 over IPv4 and 1280 over IPv6, at most 65535.
	MTU int
	// Snaplen truncates the inner frame to so many bytes before the
	// headers go on (the tap mirror's snaplen), with the ERSPAN T bit set
	// as for the MTU; 0: whole frames, up to what the MTU allows. At least
	// MinSnaplen, at most 65535.
	Snaplen int
}

// Sizes of the outer headers.
const (
	ethLen     = 14
	ipv4Len    = 20
	ipv6Len    = 40
	greLen     = 8 // base header and one of key or sequence number
	erspan2Len = 8
	erspan3Len = 12
	udpLen     = 8
	vxlanLen   = 8
	// MaxTunnelOverhead is the largest Overhead of any TunnelHeader:
	// Ethernet, IPv6, GRE and ERSPAN III.
	MaxTunnelOverhead = ethLen + ipv6Len + greLen + erspan3Len
	// VXLANPort is the UDP destination port of VXLAN (IANA).
	VXLANPort = 4789
)

// TunnelHeader is a tunnel's prebuilt outer headers. It is immutable and
// safe for concurrent use.
type TunnelHeader struct {
	spec TunnelSpec
	hdr  [MaxTunnelOverhead]byte
	n    int // Overhead
	l4   int // offset of the GRE or UDP header
	// maxFrame is the longest frame carried whole: MTU - (n - ethLen),
	// or the snaplen when shorter.
	maxFrame int
	// csum is the ones'-complement sum, not folded, of what the IPv6 UDP
	// checksum of VXLAN covers and does not change per frame: addresses,
	// next header, ports, the VXLAN header.
	csum uint32
}

// ErrTunnelSpec wraps every reason NewTunnelHeader refuses a spec.
var ErrTunnelSpec = errors.New("invalid tunnel")

// NewTunnelHeader validates s and builds its outer headers.
func NewTunnelHeader(s TunnelSpec) (*TunnelHeader, error) {
	bad := func(format string, a ...any) (*TunnelHeader, error) {
		return nil, fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrTunnelSpec)
	}
	switch s.Encap {
	case EncapGRE:
	case EncapERSPAN2, EncapERSPAN3:
		if s.ID >= 1<<10 {
			return bad("erspan session id %d: want 0..1023", s.ID)
		}
	case EncapVXLAN:
		if s.ID >= 1<<24 {
			return bad("vxlan vni %d: want 0..16777215", s.ID)
		}
	default:
		return bad("encapsulation %d: want gre, erspanv1, erspanv3 or vxlan", s.Encap)
	}
	v4 := s.Src.Is4() && s.Dst.Is4()
	v6 := s.Src.Is6() && s.Dst.Is6() && !s.Src.Is4In6() && !s.Dst.Is4In6()
	if !v4 && !v6 {
		return bad("outer addresses %v and %v: want both IPv4 or both IPv6", s.Src, s.Dst)
	}
	minMTU := 576
	if v6 {
		minMTU = 1280
	}
	if s.MTU < minMTU || s.MTU > 65535 {
		return bad("mtu %d: want %d..65535", s.MTU, minMTU)
	}
	if s.Snaplen != 0 && (s.Snaplen < MinSnaplen || s.Snaplen > 65535) {
		return bad("snaplen %d: want 0 or %d..65535", s.Snaplen, MinSnaplen)
	}
	h := &TunnelHeader{spec: s}
	b := h.hdr[:]
	copy(b[0:6], s.DstMAC[:])
	copy(b[6:12], s.SrcMAC[:])
	proto := byte(47)
	if s.Encap == EncapVXLAN {
		proto = 17
	}
	ip := ethLen
	if v4 {
		binary.BigEndian.PutUint16(b[12:], 0x0800)
		b[ip] = 0x45
		binary.BigEndian.PutUint16(b[ip+6:], 0x4000) // DF
		b[ip+8] = 64
		b[ip+9] = proto
		s4, d4 := s.Src.As4(), s.Dst.As4()
		copy(b[ip+12:], s4[:])
		copy(b[ip+16:], d4[:])
		h.l4 = ip + ipv4Len
	} else {
		binary.BigEndian.PutUint16(b[12:], 0x86dd)
		b[ip] = 0x60
		b[ip+6] = proto
		b[ip+7] = 64
		s16, d16 := s.Src.As16(), s.Dst.As16()
		copy(b[ip+8:], s16[:])
		copy(b[ip+24:], d16[:])
		h.l4 = ip + ipv6Len
	}
	l4 := b[h.l4:]
	switch s.Encap {
	case EncapGRE:
		binary.BigEndian.PutUint16(l4[0:], 0x2000) // K
		binary.BigEndian.PutUint16(l4[2:], 0x6558)
		binary.BigEndian.PutUint32(l4[4:], s.ID)
		h.n = h.l4 + greLen
	case EncapERSPAN2:
		binary.BigEndian.PutUint16(l4[0:], 0x1000) // S
		binary.BigEndian.PutUint16(l4[2:], 0x88be)
		binary.BigEndian.PutUint32(l4[8:], 1<<28|s.ID)
		h.n = h.l4 + greLen + erspan2Len
	case EncapERSPAN3:
		binary.BigEndian.PutUint16(l4[0:], 0x1000) // S
		binary.BigEndian.PutUint16(l4[2:], 0x22eb)
		binary.BigEndian.PutUint32(l4[8:], 2<<28|s.ID)
		h.n = h.l4 + greLen + erspan3Len
	case EncapVXLAN:
		binary.BigEndian.PutUint16(l4[0:], VXLANSourcePort(s.ID))
		binary.BigEndian.PutUint16(l4[2:], VXLANPort)
		l4[8] = 0x08 // I
		binary.BigEndian.PutUint32(l4[12:], s.ID<<8)
		h.n = h.l4 + udpLen + vxlanLen
		if v6 {
			// Pseudo-header addresses and next header, the UDP ports,
			// the VXLAN header; lengths are added per frame.
			h.csum = sum16(b[ip+8:ip+40], 17) + sum16(l4[0:4], 0) + sum16(l4[8:16], 0)
		}
	}
	h.maxFrame = s.MTU - (h.n - ethLen)
	if s.Snaplen > 0 && s.Snaplen < h.maxFrame {
		h.maxFrame = s.Snaplen
	}
	return h, nil
}

// VXLANSourcePort is the UDP source port of VXLAN tunnel vni: fixed per
// tunnel, in the dynamic range 49152..65535.
func VXLANSourcePort(vni uint32) uint16 {
	return 49152 + uint16((vni*0x9e3779b1)>>18)
}

// ERSPANTimestamp is t as an ERSPAN III timestamp of granularity 0: 100 µs
// units of the Unix time, wrapping at 2^32 (about every 5 days).
func ERSPANTimestamp(t time.Time) uint32 {
	return uint32(t.UnixNano() / int64(100*time.Microsecond))
}

// Spec returns the spec h was built from.
func (h *TunnelHeader) Spec() TunnelSpec { return h.spec }

// Overhead is the length of the outer headers, outer Ethernet included.
func (h *TunnelHeader) Overhead() int { return h.n }

// MaxFrame is the longest frame a copy carries whole (what the MTU allows,
// or the snaplen); longer ones are truncated to it.
func (h *TunnelHeader) MaxFrame() int { return h.maxFrame }

// Encapsulate writes the outer headers and frame, truncated to MaxFrame,
// into dst and returns the length written, at most MTU+14, and whether the
// frame was truncated. len(dst) >= Overhead()+len(frame) is enough; when
// dst is too short for the (truncated) copy, nothing is written and n is 0.
// seq is the ERSPAN sequence number (ignored by GRE and VXLAN), ts the
// ERSPAN III timestamp (see ERSPANTimestamp). It never allocates.
func (h *TunnelHeader) Encapsulate(dst, frame []byte, seq uint32, ts uint32) (n int, truncated bool) {
	l := len(frame)
	if l > h.maxFrame {
		l, truncated = h.maxFrame, true
	}
	n = h.n + l
	if len(dst) < n {
		return 0, false
	}
	copy(dst, h.hdr[:h.n])
	copy(dst[h.n:n], frame[:l])
	h.patch(dst[:n], seq, ts, truncated)
	return n, truncated
}

// patch fills in the per-frame fields of the copy b (headers, then the
// possibly truncated frame): lengths, checksums, the ERSPAN fields. xdp.c's
// tunnel_patch does the same; keep them equal.
func (h *TunnelHeader) patch(b []byte, seq, ts uint32, truncated bool) {
	frame := b[h.n:]
	ip := b[ethLen:]
	ipLen := len(b) - ethLen
	if h.l4 == ethLen+ipv4Len {
		binary.BigEndian.PutUint16(ip[2:], uint16(ipLen))
		binary.BigEndian.PutUint16(ip[10:], ^fold(sum16(ip[:ipv4Len], 0)))
	} else {
		binary.BigEndian.PutUint16(ip[4:], uint16(ipLen-ipv6Len))
	}
	l4 := b[h.l4:]
	switch h.spec.Encap {
	case EncapERSPAN2, EncapERSPAN3:
		binary.BigEndian.PutUint32(l4[4:], seq)
		w := binary.BigEndian.Uint32(l4[8:])
		if len(frame) >= 16 && isVLAN(binary.BigEndian.Uint16(frame[12:])) {
			tci := uint32(binary.BigEndian.Uint16(frame[14:]))
			w |= (tci&0x0fff)<<16 | (tci>>13)<<13
			if h.spec.Encap == EncapERSPAN2 {
				w |= 3 << 11 // En: VLAN tag preserved in frame
			}
		}
		if truncated {
			w |= 1 << 10
		}
		binary.BigEndian.PutUint32(l4[8:], w)
		if h.spec.Encap == EncapERSPAN3 {
			binary.BigEndian.PutUint32(l4[12:], ts)
			// D is the switch port's view: what the port's VM sent
			// entered the port (ingress, 0), the rest left it (egress).
			if len(frame) < 12 || [6]byte(frame[6:12]) != h.spec.PortMAC {
				l4[19] |= 0x08 // D: egress
			}
		}
	case EncapVXLAN:
		udp := uint16(len(l4))
		binary.BigEndian.PutUint16(l4[4:], udp)
		if h.l4 == ethLen+ipv6Len {
			s := h.csum + 2*uint32(udp) + sum16(frame, 0)
			c := ^fold(s)
			if c == 0 {
				c = 0xffff // RFC 768: a computed 0 is sent as all ones
			}
			binary.BigEndian.PutUint16(l4[6:], c)
		}
	}
}

func isVLAN(etherType uint16) bool { return etherType == 0x8100 || etherType == 0x88a8 }

// sum16 adds the big-endian 16-bit words of b (an odd last byte padded with
// zero) to s and returns a value congruent to the ones'-complement sum,
// below 2^18: fold it. It adds 64-bit words with end-around carry (2^16 is
// 1 modulo 0xffff), 8 bytes per addition.
func sum16(b []byte, s uint32) uint32 {
	acc, carry := uint64(s), uint64(0)
	for len(b) >= 32 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[8:]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[16:]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[24:]), carry)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b), carry)
		b = b[8:]
	}
	acc, carry = bits.Add64(acc, 0, carry)
	acc += carry // end-around: a carry out of bit 63 wraps to bit 0
	rest := uint64(0)
	for len(b) >= 2 {
		rest += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		rest += uint64(b[0]) << 8
	}
	acc = acc>>32 + acc&0xffffffff + rest // below 2^34
	acc = acc>>16 + acc&0xffff
	return uint32(acc)
}

// fold folds a ones'-complement sum into 16 bits.
func fold(s uint32) uint16 {
	s = s>>16 + s&0xffff
	s += s >> 16
	return uint16(s)
}
