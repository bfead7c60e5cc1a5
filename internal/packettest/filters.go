package packettest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// The filter differential tests (issue 11): a corpus of pcap-filter
// expressions, random frames that exercise them, the frames' tagged
// variants, and tcpdump as the oracle. pcapfilter's test checks Match with
// them, the broker's end-to-end test both data paths:
//
//	exprs := packettest.FilterCorpus(t)
//	frames := packettest.RandomFrames(rand.New(rand.NewSource(1)), 500)
//	for _, expr := range exprs {
//		want := packettest.TcpdumpAccepts(t, expr, frames)
//		for i, fr := range frames {
//			for _, tf := range packettest.TagVariants(fr) {
//				// the data path must accept tf exactly when want[i]
//			}
//		}
//	}

// FilterCorpus returns the expressions of pcapfilter/testdata/exprs.txt:
// one per line, blank lines and lines starting with # left out.
func FilterCorpus(t testing.TB) []string {
	t.Helper()
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("filter corpus: cannot locate the source tree")
	}
	file := filepath.Join(filepath.Dir(self), "..", "..", "pcapfilter", "testdata", "exprs.txt")
	f, err := os.Open(file)
	if err != nil {
		t.Fatalf("filter corpus: %v", err)
	}
	defer f.Close()
	var exprs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			exprs = append(exprs, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("filter corpus: %v", err)
	}
	return exprs
}

// Addresses, MACs and ports the corpus names: RandomFrames picks them
// often, so expressions match a fair share of the frames. Documentation
// ranges only (the frames never leave the test's files or namespaces).
var (
	corpusIPv4 = []net.IP{
		net.IPv4(198, 51, 100, 1), net.IPv4(198, 51, 100, 2), net.IPv4(198, 51, 100, 200),
		net.IPv4(203, 0, 113, 7), net.IPv4(203, 0, 113, 250),
	}
	corpusIPv6 = []net.IP{
		net.ParseIP("2001:db8::1"), net.ParseIP("2001:db8::2"), net.ParseIP("2001:db8:1::53"),
		net.ParseIP("ff02::1"),
	}
	corpusMACs = []net.HardwareAddr{
		MustMAC("02:00:00:00:00:01"), MustMAC("02:00:00:00:00:02"), MustMAC("ff:ff:ff:ff:ff:ff"),
		MustMAC("01:00:5e:00:00:01"), MustMAC("33:33:00:00:00:01"),
	}
	corpusPorts = []uint16{22, 53, 80, 123, 443, 1024, 4789, 6081, 8080, 8443}
)

// RandomFrames returns n untagged Ethernet frames, reproducible from rng:
// IPv4 (with and without options, some fragments) and IPv6 (some with
// extension headers) carrying TCP (random flags), UDP, ICMP/ICMPv6 or
// another protocol; ARP; other EtherTypes; some cut short after the
// Ethernet header. Addresses, MACs and ports are often the corpus' own.
// No frame has a VLAN TPID as its EtherType, so TagVariants' frames have
// exactly 0, 1 and 2 tags.
func RandomFrames(rng *rand.Rand, n int) [][]byte {
	frames := make([][]byte, 0, n)
	for len(frames) < n {
		if fr := randomFrame(rng); fr != nil {
			frames = append(frames, fr)
		}
	}
	return frames
}

func pickIPv4(rng *rand.Rand) net.IP {
	if rng.Intn(3) > 0 {
		return corpusIPv4[rng.Intn(len(corpusIPv4))]
	}
	return net.IPv4(198, 51, 100, byte(rng.Intn(256))).To4()
}

func pickIPv6(rng *rand.Rand) net.IP {
	if rng.Intn(3) > 0 {
		return corpusIPv6[rng.Intn(len(corpusIPv6))]
	}
	ip := net.ParseIP("2001:db8::")
	ip[14], ip[15] = byte(rng.Intn(256)), byte(rng.Intn(256))
	return ip
}

func pickMAC(rng *rand.Rand) net.HardwareAddr {
	if rng.Intn(2) == 0 {
		return corpusMACs[rng.Intn(len(corpusMACs))]
	}
	m := make(net.HardwareAddr, 6)
	rng.Read(m)
	return m
}

func pickPort(rng *rand.Rand) uint16 {
	if rng.Intn(4) > 0 {
		return corpusPorts[rng.Intn(len(corpusPorts))]
	}
	return uint16(rng.Intn(65536))
}

// l4 returns a transport layer for proto, or nil for a bare payload.
func l4(rng *rand.Rand, proto layers.IPProtocol, netLayer gopacket.NetworkLayer) gopacket.SerializableLayer {
	switch proto {
	case layers.IPProtocolTCP:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(pickPort(rng)), DstPort: layers.TCPPort(pickPort(rng)),
			Seq: rng.Uint32(), Ack: rng.Uint32(), Window: uint16(rng.Intn(65536))}
		common := []int{0x02, 0x12, 0x10, 0x11, 0x04, 0x18, rng.Intn(256)} // SYN, SYN+ACK, ACK, FIN+ACK, RST, PSH+ACK
		flags := common[rng.Intn(len(common))]
		tcp.FIN, tcp.SYN, tcp.RST, tcp.PSH = flags&1 != 0, flags&2 != 0, flags&4 != 0, flags&8 != 0
		tcp.ACK, tcp.URG, tcp.ECE, tcp.CWR = flags&16 != 0, flags&32 != 0, flags&64 != 0, flags&128 != 0
		_ = tcp.SetNetworkLayerForChecksum(netLayer) // IPv4 and IPv6 are both network layers
		return tcp
	case layers.IPProtocolUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(pickPort(rng)), DstPort: layers.UDPPort(pickPort(rng))}
		if rng.Intn(8) == 0 {
			udp.DstPort = 6081 // Geneve: RandomFrames adds its header and an inner frame
		}
		_ = udp.SetNetworkLayerForChecksum(netLayer)
		return udp
	case layers.IPProtocolICMPv4:
		types := []uint8{0, 3, 8, 11, uint8(rng.Intn(256))}
		return &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(types[rng.Intn(len(types))], uint8(rng.Intn(4)))}
	case layers.IPProtocolICMPv6:
		types := []uint8{1, 128, 129, 133, 135, 136, uint8(rng.Intn(256))}
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(types[rng.Intn(len(types))], 0)}
		_ = icmp.SetNetworkLayerForChecksum(netLayer)
		return icmp
	}
	return nil
}

// randomFrame builds one frame, or nil when gopacket refuses the random
// layers (the caller draws again).
func randomFrame(rng *rand.Rand) []byte {
	eth := &layers.Ethernet{SrcMAC: pickMAC(rng), DstMAC: pickMAC(rng)}
	ls := []gopacket.SerializableLayer{eth}
	protos := []layers.IPProtocol{layers.IPProtocolTCP, layers.IPProtocolTCP, layers.IPProtocolUDP,
		layers.IPProtocolUDP, layers.IPProtocolICMPv4, layers.IPProtocolICMPv6, layers.IPProtocolGRE, 132}
	proto := protos[rng.Intn(len(protos))]
	switch kind := rng.Intn(10); {
	case kind < 5: // IPv4
		if proto == layers.IPProtocolICMPv6 {
			proto = layers.IPProtocolICMPv4
		}
		eth.EthernetType = layers.EthernetTypeIPv4
		ip := &layers.IPv4{Version: 4, TTL: uint8(rng.Intn(256)), Protocol: proto, Id: uint16(rng.Intn(65536)),
			SrcIP: pickIPv4(rng), DstIP: pickIPv4(rng)}
		if rng.Intn(5) == 0 { // options (NOPs): IHL 6 or 7
			for o := 4 + 4*rng.Intn(2); o > 0; o-- {
				ip.Options = append(ip.Options, layers.IPv4Option{OptionType: 1})
			}
		}
		if rng.Intn(6) == 0 { // a fragment: first (MF) or a later one
			ip.Flags = layers.IPv4MoreFragments
			if rng.Intn(2) == 0 {
				ip.FragOffset = uint16(1 + rng.Intn(100))
			}
		}
		ls = append(ls, ip)
		if t := l4(rng, proto, ip); t != nil && ip.FragOffset == 0 {
			ls = append(ls, t)
		}
	case kind < 8: // IPv6, sometimes behind extension headers
		if proto == layers.IPProtocolICMPv4 {
			proto = layers.IPProtocolICMPv6
		}
		eth.EthernetType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, HopLimit: uint8(rng.Intn(256)), SrcIP: pickIPv6(rng), DstIP: pickIPv6(rng)}
		ls = append(ls, ip)
		next := &ip.NextHeader
		for h := rng.Intn(6) - 3; h > 0; h-- { // half without extension headers
			types := []layers.IPProtocol{layers.IPProtocolIPv6HopByHop, layers.IPProtocolIPv6Destination,
				layers.IPProtocolIPv6Routing, layers.IPProtocolIPv6Fragment}
			ext := types[rng.Intn(len(types))]
			*next = ext
			// Every extension header is 8 bytes here: next header, length
			// 0, six bytes (a PadN option for the option headers).
			raw := &rawExt{}
			switch ext {
			case layers.IPProtocolIPv6HopByHop, layers.IPProtocolIPv6Destination:
				raw.body = []byte{1, 4, 0, 0, 0, 0}
			case layers.IPProtocolIPv6Routing:
				raw.body = []byte{0, 0, 0, 0, 0, 0}
			case layers.IPProtocolIPv6Fragment:
				raw.body = []byte{0, 0, 0, 0, 0, byte(rng.Intn(256))}
			}
			ls = append(ls, raw)
			next = &raw.next
		}
		*next = proto
		if t := l4(rng, proto, ip); t != nil {
			ls = append(ls, t)
		}
	case kind < 9: // ARP
		eth.EthernetType = layers.EthernetTypeARP
		ls = append(ls, &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
			HwAddressSize: 6, ProtAddressSize: 4, Operation: uint16(1 + rng.Intn(2)),
			SourceHwAddress: pickMAC(rng), SourceProtAddress: pickIPv4(rng).To4(),
			DstHwAddress: make([]byte, 6), DstProtAddress: pickIPv4(rng).To4()})
	default: // another EtherType (never a VLAN TPID)
		types := []layers.EthernetType{EtherType, 0x88cc, 0x8847, 0x0806}
		eth.EthernetType = types[rng.Intn(len(types))]
	}
	payload := make([]byte, rng.Intn(64))
	rng.Read(payload)
	if udp, ok := ls[len(ls)-1].(*layers.UDP); ok && udp.DstPort == 6081 && rng.Intn(4) > 0 {
		payload = genevePayload(rng)
	}
	ls = append(ls, gopacket.Payload(payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		ls...); err != nil {
		return nil
	}
	fr := append([]byte(nil), buf.Bytes()...)
	if rng.Intn(20) == 0 && len(fr) > 15 { // cut short: loads past the end must reject
		fr = fr[:14+rng.Intn(len(fr)-14)]
	}
	return fr
}

// genevePayload is a Geneve header (version 0, no options, Transparent
// Ethernet Bridging) and an inner Ethernet/IPv4/TCP frame.
func genevePayload(rng *rand.Rand) []byte {
	hdr := []byte{0, 0, 0x65, 0x58, 0, 0, byte(rng.Intn(256)), 0}
	eth := &layers.Ethernet{SrcMAC: pickMAC(rng), DstMAC: pickMAC(rng), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: pickIPv4(rng), DstIP: pickIPv4(rng)}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(pickPort(rng)), DstPort: layers.TCPPort(pickPort(rng)), SYN: true}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, eth, ip, tcp); err != nil {
		return hdr
	}
	return append(hdr, buf.Bytes()...)
}

// rawExt is an 8-byte IPv6 extension header: next header, length 0, body.
type rawExt struct {
	next layers.IPProtocol
	body []byte
}

func (r *rawExt) LayerType() gopacket.LayerType { return gopacket.LayerTypePayload }

func (r *rawExt) SerializeTo(b gopacket.SerializeBuffer, _ gopacket.SerializeOptions) error {
	bytes, err := b.PrependBytes(2 + len(r.body))
	if err != nil {
		return err
	}
	bytes[0], bytes[1] = byte(r.next), 0
	copy(bytes[2:], r.body)
	return nil
}

// TagVariants returns frame as captured with no tag, one 802.1Q tag (VID
// 100), and two tags (802.1ad VID 200 outside, 802.1Q VID 100 inside): a
// filter must decide the same on all three.
func TagVariants(frame []byte) [][]byte {
	one := make([]byte, 0, len(frame)+4)
	one = append(append(append(one, frame[:12]...), 0x81, 0x00, 0x00, 100), frame[12:]...)
	two := make([]byte, 0, len(frame)+8)
	two = append(append(append(two, frame[:12]...), 0x88, 0xa8, 0x00, 200, 0x81, 0x00, 0x00, 100), frame[12:]...)
	return [][]byte{frame, one, two}
}

// TcpdumpAccepts runs the real tcpdump over frames (untagged, each at
// least 14 bytes) with expr and reports which it accepts: the frames go
// into a pcap file with their index as timestamp, tcpdump -r reads it and
// writes what the filter accepts to its stdout, read back as pcap.
func TcpdumpAccepts(t testing.TB, expr string, frames [][]byte) []bool {
	t.Helper()
	file := filepath.Join(t.TempDir(), "frames.pcap")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(262144, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for i, fr := range frames {
		ci := gopacket.CaptureInfo{Timestamp: frameTime(i), CaptureLength: len(fr), Length: len(fr)}
		if err := w.WritePacket(ci, fr); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	// libpcap 1.10's protochain can loop forever on some frames (an IPv6
	// AH header), deaf to SIGTERM: bound the run and kill it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "tcpdump", "-n", "-r", file, "-w", "-", expr)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("tcpdump -r %s %q: %v (killed after a minute: %v): %s", file, expr, err, ctx.Err() != nil, stderr.String())
	}
	r, err := pcapgo.NewReader(&stdout)
	if err != nil {
		t.Fatalf("tcpdump %q output: %v", expr, err)
	}
	accepts := make([]bool, len(frames))
	for {
		_, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return accepts
		}
		if err != nil {
			t.Fatalf("tcpdump %q output: %v", expr, err)
		}
		i := int(ci.Timestamp.Sub(frameTime(0)) / time.Second)
		if i < 0 || i >= len(frames) {
			t.Fatalf("tcpdump %q output: a frame with timestamp %v", expr, ci.Timestamp)
		}
		accepts[i] = true
	}
}

// frameTime is the pcap timestamp of the i-th frame TcpdumpAccepts writes.
func frameTime(i int) time.Time { return time.Unix(1_000_000_000+int64(i), 0) }
