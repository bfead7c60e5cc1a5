package packettest

import (
	"encoding/binary"
)

// ChainFrames returns untagged IPv6 frames whose protocol sits behind n =
// 0..max extension headers, for the protochain filters (libpcap's loop
// takes one backward jump per header): for each n and each of TCP (to port
// 443) and UDP (to port 53), a chain that cycles through hop-by-hop,
// routing, destination options and fragment headers, starting at a
// different one for each n. Addresses are from 2001:db8::/32.
//
// No AH: libpcap's protochain (1.10) sets X to the AH header's length
// rather than adding it, so it rereads the IPv6 header, and on some frames
// loops for ever: tcpdump never returns.
func ChainFrames(max int) [][]byte {
	// IPv6 next-header values and the bytes of each header.
	const (
		hopByHop, routing, fragment, destOpts, tcp, udp = 0, 43, 44, 60, 6, 17
	)
	exts := []byte{hopByHop, routing, destOpts, fragment}
	var frames [][]byte
	for n := 0; n <= max; n++ {
		for _, proto := range []byte{tcp, udp} {
			l4 := make([]byte, 20)
			binary.BigEndian.PutUint16(l4[0:], 40000)
			if proto == tcp {
				binary.BigEndian.PutUint16(l4[2:], 443)
				l4[12], l4[13] = 5<<4, 0x02 // data offset 5, SYN
			} else {
				l4 = l4[:8]
				binary.BigEndian.PutUint16(l4[2:], 53)
				binary.BigEndian.PutUint16(l4[4:], 8)
			}
			// IPv6: the chain, built back to front.
			payload, next := l4, proto
			for i := n - 1; i >= 0; i-- {
				ext := exts[(n+i)%len(exts)]
				payload = append(extHeader(ext, next), payload...)
				next = ext
			}
			ip6 := make([]byte, 40, 40+len(payload))
			ip6[0] = 0x60
			binary.BigEndian.PutUint16(ip6[4:], uint16(len(payload)))
			ip6[6], ip6[7] = next, 64
			copy(ip6[8:], []byte{0x20, 0x01, 0x0d, 0xb8, 15: 1})
			copy(ip6[24:], []byte{0x20, 0x01, 0x0d, 0xb8, 15: 2})
			frames = append(frames, chainEther(0x86dd, append(ip6, payload...)))
		}
	}
	return frames
}

// extHeader is one 8-byte extension header of type ext whose next header
// is next (a PadN option for the option headers).
func extHeader(ext, next byte) []byte {
	switch ext {
	case 0, 60: // hop-by-hop, destination options: PadN of 4 bytes
		return []byte{next, 0, 1, 4, 0, 0, 0, 0}
	default: // routing (type 0, no segments left), fragment (offset 0)
		return []byte{next, 0, 0, 0, 0, 0, 0, 7}
	}
}

// chainEther puts an Ethernet header (02:00:00:00:00:02 <-
// 02:00:00:00:00:01) of EtherType typ before payload.
func chainEther(typ uint16, payload []byte) []byte {
	fr := []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, byte(typ >> 8), byte(typ)}
	return append(fr, payload...)
}
