package perf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Frame size limits, in bytes of L2 frame without FCS (a "64 B" frame on the
// wire is 60 bytes here). Live frames fit in one page with XDP headroom and
// skb_shared_info, so frames above 3498 bytes cannot be generated.
const (
	MinFrameSize = 60
	MaxFrameSize = 3498
	// MaxFlows is the size of the generator's flows map (pktgen.c MAX_FLOWS).
	MaxFlows = 4096
)

// Traffic describes the frames the generator sends. The zero value is one
// untagged 60-byte UDP flow between two locally administered MACs.
type Traffic struct {
	// Size is the L2 frame length without FCS; 0 means 60.
	Size int
	// SrcMACs and DstMACs are used round-robin, one per frame; empty means
	// 02:00:00:00:00:01 and 02:00:00:00:00:02. A list that holds a port's MAC
	// among others exercises direction OUT (source) or IN (destination) for
	// a fraction of the frames.
	SrcMACs, DstMACs []net.HardwareAddr
	// VLANs is the 802.1Q VID range, used round-robin; the zero range sends
	// untagged frames (unless OuterTag is set).
	VLANs VIDRange
	// OuterTag adds an 802.1ad (0x88a8) outer tag with VIDs from Outer
	// round-robin, outside the 802.1Q tag when VLANs is set.
	OuterTag bool
	Outer    VIDRange
	// Flows is the number of distinct UDP source ports (1024 + i), used
	// round-robin; 0 means 1.
	Flows int
	// Mark, when not 0, is written into the last byte of every frame: a
	// Sink set to the same mark counts these frames and no others.
	Mark byte
	// Mix sends mixed traffic, for filter benchmarks: the frames cycle
	// through the MixKinds (TCP and UDP to well-known ports), each kind
	// once for every round of the other lists, so that every source MAC
	// sends every kind and 1 frame in 10 is TCP to port 443. Frames need
	// room for an IPv4 and a TCP header and the mark (55 bytes untagged).
	Mix bool
}

// MixKind is one kind of frame of mixed traffic: an L4 protocol and a
// destination port.
type MixKind struct {
	Proto layers.IPProtocol
	Port  uint16
}

// MixKinds are the kinds of mixed traffic, in the order they are sent:
// the first alone is `tcp port 443` (source ports are 1024 + flow, never
// 443).
var MixKinds = []MixKind{
	{layers.IPProtocolTCP, 443}, {layers.IPProtocolUDP, 53}, {layers.IPProtocolTCP, 80},
	{layers.IPProtocolUDP, 9}, {layers.IPProtocolTCP, 22}, {layers.IPProtocolUDP, 123},
	{layers.IPProtocolTCP, 8080}, {layers.IPProtocolUDP, 514}, {layers.IPProtocolTCP, 25},
	{layers.IPProtocolUDP, 5060},
}

// mixRewrite is how many bytes from the IPv4 header on differ between the
// kinds of mixed traffic: the IPv4 header and a TCP header (a UDP header
// and the first payload bytes for UDP). pktgen.c MIX_LEN.
const mixRewrite = 40

// VIDRange is an inclusive VLAN ID range; the zero value means "no tag".
type VIDRange struct{ Lo, Hi uint16 }

// Count is the number of VIDs in r, 0 for the zero range.
func (r VIDRange) Count() int {
	if r == (VIDRange{}) {
		return 0
	}
	return int(r.Hi) - int(r.Lo) + 1
}

// ParseVIDRange parses "100" or "100-199" (VIDs 1-4094). The empty string is
// the zero range.
func ParseVIDRange(s string) (VIDRange, error) {
	if s == "" {
		return VIDRange{}, nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	l, err := parseVID(lo)
	if err != nil {
		return VIDRange{}, fmt.Errorf("vlan range %q: %w", s, err)
	}
	h, err := parseVID(hi)
	if err != nil {
		return VIDRange{}, fmt.Errorf("vlan range %q: %w", s, err)
	}
	if h < l {
		return VIDRange{}, fmt.Errorf("vlan range %q: end below start", s)
	}
	return VIDRange{l, h}, nil
}

func parseVID(s string) (uint16, error) {
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil {
		return 0, fmt.Errorf("vid %q: not a number", s)
	}
	if v < 1 || v > 4094 {
		return 0, fmt.Errorf("vid %d: outside 1-4094", v)
	}
	return uint16(v), nil
}

// ParseMACList parses a comma-separated list of MAC addresses.
func ParseMACList(s string) ([]net.HardwareAddr, error) {
	if s == "" {
		return nil, nil
	}
	var macs []net.HardwareAddr
	for _, f := range strings.Split(s, ",") {
		m, err := net.ParseMAC(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("mac list: %w", err)
		}
		if len(m) != 6 {
			return nil, fmt.Errorf("mac list: %q is not a 48-bit MAC", f)
		}
		macs = append(macs, m)
	}
	return macs, nil
}

var (
	defaultSrc = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	defaultDst = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
)

// withDefaults returns t with its zero fields replaced by their defaults.
func (t Traffic) withDefaults() Traffic {
	if t.Size == 0 {
		t.Size = MinFrameSize
	}
	if len(t.SrcMACs) == 0 {
		t.SrcMACs = []net.HardwareAddr{defaultSrc}
	}
	if len(t.DstMACs) == 0 {
		t.DstMACs = []net.HardwareAddr{defaultDst}
	}
	if t.Flows == 0 {
		t.Flows = 1
	}
	if t.OuterTag && t.Outer == (VIDRange{}) {
		t.Outer = VIDRange{1, 1}
	}
	return t
}

// Validate reports the first invalid field of t.
func (t Traffic) Validate() error {
	t = t.withDefaults()
	if t.Size < MinFrameSize || t.Size > MaxFrameSize {
		return fmt.Errorf("frame size %d: outside %d-%d", t.Size, MinFrameSize, MaxFrameSize)
	}
	if t.Flows < 0 || t.Flows > MaxFlows {
		return fmt.Errorf("flows %d: outside 1-%d", t.Flows, MaxFlows)
	}
	for _, r := range []VIDRange{t.VLANs, t.Outer} {
		if r.Count() > 0 && (r.Lo < 1 || r.Hi > 4094 || r.Hi < r.Lo) {
			return fmt.Errorf("vlan range %d-%d: outside 1-4094", r.Lo, r.Hi)
		}
	}
	if n := t.entries(); n > MaxFlows {
		return fmt.Errorf("%d distinct frames: more than %d", n, MaxFlows)
	}
	if need := t.l3Offset() + mixRewrite + 1; t.Mix && t.Size < need {
		return fmt.Errorf("mixed traffic: frame size %d, below the %d bytes its headers and mark need", t.Size, need)
	}
	return nil
}

// entries is how many distinct frames t cycles through: enough for every
// list to come round, up to the longest one, and with Mix that many for
// each kind.
func (t Traffic) entries() int {
	return t.round() * t.kinds()
}

// round is how many entries it takes every list but the kinds to come round.
func (t Traffic) round() int {
	return max(t.Flows, len(t.SrcMACs), len(t.DstMACs), t.VLANs.Count(), t.Outer.Count(), 1)
}

func (t Traffic) kinds() int {
	if t.Mix {
		return len(MixKinds)
	}
	return 1
}

// l3Offset is where the IPv4 header starts, after the tags.
func (t Traffic) l3Offset() int {
	off := 14
	if t.OuterTag {
		off += 4
	}
	if t.VLANs.Count() > 0 {
		off += 4
	}
	return off
}

// frameLayout is where the fields that vary per flow sit in the template.
type frameLayout struct {
	outer, inner, sport uint32 // byte offsets of the outer TCI, inner TCI, UDP source port; 0 = absent
	// l3 is the IPv4 header's offset with Mix (mixRewrite bytes from there
	// differ per kind), 0 without.
	l3 uint32
}

// template builds the first frame of t (entry 0) and the layout of the
// fields the XDP program rewrites for the others.
func (t Traffic) template() ([]byte, frameLayout, error) {
	t = t.withDefaults()
	if err := t.Validate(); err != nil {
		return nil, frameLayout{}, err
	}
	return t.build(t.entry(0))
}

// build builds the frame of entry e (t has its defaults and is valid) and
// the layout of its fields.
func (t Traffic) build(e entry) ([]byte, frameLayout, error) {
	var (
		ls  []gopacket.SerializableLayer
		lay frameLayout
		off uint32 = 12 // EtherType of the Ethernet header
	)
	eth := &layers.Ethernet{SrcMAC: e.src, DstMAC: e.dst, EthernetType: layers.EthernetTypeIPv4}
	ls = append(ls, eth)
	next := &eth.EthernetType
	if t.OuterTag {
		*next = layers.EthernetTypeQinQ
		tag := &layers.Dot1Q{VLANIdentifier: e.outer, Type: layers.EthernetTypeIPv4}
		ls = append(ls, tag)
		lay.outer = off + 2
		off += 4
		next = &tag.Type
	}
	if t.VLANs.Count() > 0 {
		*next = layers.EthernetTypeDot1Q
		tag := &layers.Dot1Q{VLANIdentifier: e.inner, Type: layers.EthernetTypeIPv4}
		ls = append(ls, tag)
		lay.inner = off + 2
		off += 4
	}
	kind := MixKind{layers.IPProtocolUDP, 9} // discard
	if t.Mix {
		kind = e.kind
		lay.l3 = off + 2
	}
	ip := &layers.IPv4{
		Version: 4, TTL: 64, Protocol: kind.Proto,
		SrcIP: net.IPv4(10, 254, 0, 1), DstIP: net.IPv4(10, 254, 0, 2),
	}
	var l4 interface {
		gopacket.SerializableLayer
		SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
	}
	hdr := int(off) + 2 + 20
	if kind.Proto == layers.IPProtocolTCP {
		// PSH: a receiver's GRO flushes such a segment at once instead of
		// holding it for the next, which would reorder the frames (and
		// merge some) on links with GRO on.
		l4 = &layers.TCP{SrcPort: layers.TCPPort(e.sport), DstPort: layers.TCPPort(kind.Port), Seq: 1, ACK: true, PSH: true, Ack: 1, Window: 512}
		hdr += 20
	} else {
		l4 = &layers.UDP{SrcPort: layers.UDPPort(e.sport), DstPort: layers.UDPPort(kind.Port)}
		hdr += 8
	}
	if err := l4.SetNetworkLayerForChecksum(ip); err != nil {
		return nil, frameLayout{}, fmt.Errorf("build frame: %w", err)
	}
	lay.sport = off + 2 + 20
	payload := make([]byte, max(t.Size-hdr, 0))
	for i := range payload {
		payload[i] = byte(i)
	}
	if t.Mark != 0 {
		payload[len(payload)-1] = t.Mark // every header stack leaves >= 1 payload byte (Validate)
	}
	ls = append(ls, ip, l4, gopacket.Payload(payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		return nil, frameLayout{}, fmt.Errorf("build frame: %w", err)
	}
	b := buf.Bytes()
	if kind.Proto == layers.IPProtocolUDP {
		// UDP checksum stays 0 (allowed for IPv4): the XDP program changes
		// the source port per flow without recomputing anything.
		binary.BigEndian.PutUint16(b[lay.sport+6:], 0)
	}
	if len(b) != t.Size {
		return nil, frameLayout{}, errors.New("build frame: size mismatch")
	}
	if t.Flows == 1 || t.Mix {
		lay.sport = 0 // nothing to rewrite, or rewritten with the rest
	}
	return b, lay, nil
}

type entry struct {
	src, dst     net.HardwareAddr
	outer, inner uint16
	sport        uint16
	kind         MixKind // with Mix
}

// entry is the i-th distinct frame of t (t has its defaults).
func (t Traffic) entry(i int) entry {
	e := entry{
		src:   t.SrcMACs[i%len(t.SrcMACs)],
		dst:   t.DstMACs[i%len(t.DstMACs)],
		sport: uint16(1024 + i%t.Flows),
	}
	if n := t.VLANs.Count(); n > 0 {
		e.inner = t.VLANs.Lo + uint16(i%n)
	}
	if n := t.Outer.Count(); n > 0 {
		e.outer = t.Outer.Lo + uint16(i%n)
	}
	if t.Mix {
		e.kind = MixKinds[i/t.round()%len(MixKinds)]
	}
	return e
}

// mixBytes is the mixRewrite bytes from the IPv4 header on of entry i
// (t has its defaults and Mix).
func (t Traffic) mixBytes(i int) ([]byte, error) {
	f, lay, err := t.build(t.entry(i))
	if err != nil {
		return nil, err
	}
	return f[lay.l3 : lay.l3+mixRewrite], nil
}

// Frames returns every distinct frame t cycles through, in the order the
// generator sends them. Tests compare captures against it.
func (t Traffic) Frames() ([][]byte, error) {
	tpl, lay, err := t.template()
	if err != nil {
		return nil, err
	}
	t = t.withDefaults()
	out := make([][]byte, t.entries())
	for i := range out {
		f := append([]byte(nil), tpl...)
		e := t.entry(i)
		copy(f[0:6], e.dst)
		copy(f[6:12], e.src)
		if lay.outer != 0 {
			binary.BigEndian.PutUint16(f[lay.outer:], e.outer)
		}
		if lay.inner != 0 {
			binary.BigEndian.PutUint16(f[lay.inner:], e.inner)
		}
		if lay.sport != 0 {
			binary.BigEndian.PutUint16(f[lay.sport:], e.sport)
		}
		if lay.l3 != 0 {
			b, err := t.mixBytes(i)
			if err != nil {
				return nil, err
			}
			copy(f[lay.l3:], b)
		}
		out[i] = f
	}
	return out, nil
}
