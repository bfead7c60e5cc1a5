package pcapfilter

import (
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcap"
)

// tagged returns frame with tags (TPIDs, outermost first) inserted after
// the MAC addresses.
func tagged(frame []byte, tpids ...uint16) []byte {
	out := append([]byte(nil), frame[:12]...)
	for i, tp := range tpids {
		out = append(out, byte(tp>>8), byte(tp), 0, byte(10+i))
	}
	return append(out, frame[12:]...)
}

func tcpFrame(t *testing.T, dport uint16, syn bool) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP,
		SrcIP: net.IP{198, 51, 100, 1}, DstIP: net.IP{198, 51, 100, 2}}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: layers.TCPPort(dport), SYN: syn}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, tcp, gopacket.Payload(make([]byte, 10))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestMatchTagged checks Match on the frame with 0, 1 and 2 tags against
// libpcap's own filter on the untagged frame.
func TestMatchTagged(t *testing.T) {
	frames := [][]byte{tcpFrame(t, 443, true), tcpFrame(t, 80, false)}
	for _, expr := range []string{
		"tcp port 443", "tcp port 80", "ip6 protochain 6", "ip protochain 6", "len > 60", "less 60",
		"tcp[tcpflags] & tcp-syn != 0", "ether[10:4] = 0x00010800", "ether[ether[0]+9:4] = 0x00010800",
		"host 198.51.100.2", "net 198.51.100.0/24 and not icmp", "ether[12:2] = 0x0800",
	} {
		f, err := Compile(expr)
		if err != nil {
			t.Errorf("Compile(%q): %v", expr, err)
			continue
		}
		oracle, err := pcap.NewBPF(layers.LinkTypeEthernet, snaplen, expr)
		if err != nil {
			t.Fatal(err)
		}
		for _, fr := range frames {
			want := oracle.Matches(gopacket.CaptureInfo{CaptureLength: len(fr), Length: len(fr)}, fr)
			for _, tf := range [][]byte{fr, tagged(fr, 0x8100), tagged(fr, 0x88a8, 0x8100)} {
				if got := f.Match(tf); got != want {
					t.Errorf("%q: Match(%d-byte frame) = %v, want %v", expr, len(tf), got, want)
				}
			}
		}
	}
}

func TestCompileRefuses(t *testing.T) {
	for _, expr := range []string{"", "  ", "vlan 10", "host example.com", "tcp port 443\x00", "foo", "proto foo",
		"inbound", "tcp and udp", "tcp port"} {
		f, err := Compile(expr)
		if _, ok := err.(*Error); !ok || f != nil {
			t.Errorf("Compile(%q) = %v, %v, want an *Error", expr, f, err)
			continue
		}
		t.Logf("%q: %v", expr, err)
	}
}
