package broker

// The frame parser decodes only what classification needs: destination and
// source MAC and the outer VID. It reads at most 22 bytes of a frame and
// never allocates.

// parseResult says whether a frame could be classified.
type parseResult uint8

const (
	parseOK parseResult = iota
	// parseRunt: shorter than an Ethernet header (14 bytes).
	parseRunt
	// parseTruncatedTag: the frame ends inside a VLAN tag (outer, or the
	// inner tag of a QinQ frame), as xdpprog counts it.
	parseTruncatedTag
)

// EtherTypes of the VLAN tags the parser understands.
const (
	etherTypeDot1Q  = 0x8100
	etherTypeDot1AD = 0x88a8
)

// frameHeader is what classification needs of a frame. MACs are packed into
// the low 48 bits of a uint64, first byte most significant.
type frameHeader struct {
	dst, src uint64
	vid      uint16
}

// parseFrame decodes b's Ethernet header and outer VLAN tag into h. The VID
// is that of the outermost 802.1Q or 802.1ad tag, 0 when untagged
// (DESIGN.md). Like the XDP program, a QinQ frame whose inner tag is cut
// short is truncated, not classified.
func parseFrame(b []byte, h *frameHeader) parseResult {
	if len(b) < 14 {
		return parseRunt
	}
	h.dst = mac48(b[0:6])
	h.src = mac48(b[6:12])
	h.vid = 0
	if !isVLAN(b[12], b[13]) {
		return parseOK
	}
	if len(b) < 18 {
		return parseTruncatedTag
	}
	h.vid = (uint16(b[14])<<8 | uint16(b[15])) & 0x0fff
	if isVLAN(b[16], b[17]) && len(b) < 22 {
		return parseTruncatedTag
	}
	return parseOK
}

func isVLAN(hi, lo byte) bool {
	t := uint16(hi)<<8 | uint16(lo)
	return t == etherTypeDot1Q || t == etherTypeDot1AD
}

// mac48 packs a 6-byte MAC into a uint64.
func mac48(b []byte) uint64 {
	_ = b[5]
	return uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 | uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5])
}

// macKey packs a MAC array into a uint64, as mac48 does.
func macKey(m [6]byte) uint64 { return mac48(m[:]) }

// isMulticast48 reports whether a packed MAC is a group address (broadcast
// included): the I/G bit of its first byte.
func isMulticast48(m uint64) bool { return m&(1<<40) != 0 }
