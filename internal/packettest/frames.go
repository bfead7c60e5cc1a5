package packettest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Tag is one VLAN tag of a crafted frame: TPID 0x8100 (802.1Q) or 0x88a8
// (802.1ad) and the VID.
type Tag struct {
	TPID uint16
	VID  uint16
}

// EtherType of crafted frames: IEEE 802 local experimental, which no stack
// on the test machine sends, so captures can tell test frames apart.
const EtherType = 0x88b5

// marker opens the payload of every crafted frame.
var marker = []byte("TAASTEST")

// Frame crafts an Ethernet frame dst <- src with tags (outermost first),
// EtherType 0x88b5 and a payload carrying marker and seq, padded to size
// bytes in all (at least 14 + 4*len(tags) + 12).
func Frame(dst, src net.HardwareAddr, tags []Tag, seq uint32, size int) []byte {
	var ls []gopacket.SerializableLayer
	eth := &layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: EtherType}
	ls = append(ls, eth)
	for i, tg := range tags {
		if i == 0 {
			eth.EthernetType = layers.EthernetType(tg.TPID)
		}
		next := layers.EthernetType(EtherType)
		if i+1 < len(tags) {
			next = layers.EthernetType(tags[i+1].TPID)
		}
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: tg.VID, Type: next})
	}
	payload := binary.BigEndian.AppendUint32(append([]byte(nil), marker...), seq)
	head := 14 + 4*len(tags)
	if pad := size - head - len(payload); pad > 0 {
		payload = append(payload, make([]byte, pad)...)
	}
	ls = append(ls, gopacket.Payload(payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{}, ls...); err != nil {
		panic(fmt.Sprintf("craft frame: %v", err)) // only fixed layers above: a bug
	}
	return append([]byte(nil), buf.Bytes()...)
}

// Seq returns the sequence number of a frame crafted by Frame, and whether
// it is one (with up to two tags).
func Seq(frame []byte) (uint32, bool) {
	for _, off := range []int{14, 18, 22} {
		if len(frame) >= off+len(marker)+4 && frame[off-2] == EtherType>>8 && frame[off-1] == EtherType&0xff &&
			bytes.Equal(frame[off:off+len(marker)], marker) {
			return binary.BigEndian.Uint32(frame[off+len(marker):]), true
		}
	}
	return 0, false
}

// IsTest is a Capture keep function that records only crafted frames.
func IsTest(frame []byte) bool {
	_, ok := Seq(frame)
	return ok
}

// MustMAC parses a MAC address or panics: for constants in tests.
func MustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}
