package pcapfilter

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcap"

	"github.com/taas-appliance/taas/internal/packettest"
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

func tcpFrame(t testing.TB, dport uint16, syn bool) []byte {
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

// TestCompileRefuses is the bad-input table: each expression is refused
// with an *Error whose message says why (the API returns it verbatim in a
// 400), in bounded time.
func TestCompileRefuses(t *testing.T) {
	var ports, ranges, protochains, hosts []string
	for i := 1; i <= 60; i++ {
		ports = append(ports, strconv.Itoa(i))
		ranges = append(ranges, fmt.Sprintf("portrange %d-%d", i, i+3))
		protochains = append(protochains, fmt.Sprintf("ip6 protochain %d", i))
	}
	for i := 0; i < 200; i++ {
		hosts = append(hosts, fmt.Sprintf("host 198.51.100.%d", i))
	}
	for _, tc := range []struct{ name, expr, want string }{
		{"empty", "", "use null to select every frame"},
		{"blanks", "   ", "use null to select every frame"},
		{"tab and newline only", "\t\n ", "use null to select every frame"},
		{"10 KB", strings.Repeat("tcp or ", 1500) + "udp", "10503 bytes long: the limit is 1024"},
		{"NUL", "tcp port 443\x00", "control character (0x00) at byte 12"},
		{"control character", "tcp\x1bport 443", "control character (0x1b)"},
		{"tab inside", "tcp\tport 443", "control character (0x09)"},
		{"syntax: dangling qualifier", "tcp port", "invalid filter expression: can't parse filter expression: syntax error"},
		{"syntax: dangling and", "host 198.51.100.1 and", "syntax error"},
		{"syntax: parenthesis", "((tcp)", "syntax error"},
		{"syntax: illegal character", "tcp @ 1", "invalid filter expression"},
		{"vlan 10", "vlan 10", "select VLANs with vlan_filter"},
		{"vlan", "vlan", "the filter sees frames with their VLAN tags removed"},
		{"vlan later", "tcp and (vlan or udp)", "vlan_filter"},
		{"ether proto 0x8100", "ether proto 0x8100", "tests the EtherType 0x8100: the filter sees frames with their VLAN tags removed (a test of the EtherType 0x8100 or 0x88a8 never matches either)"},
		{"ether proto 0x88a8", "ip or ether proto 0x88A8", "tests the EtherType 0x88A8"},
		{"ether proto decimal", "link proto 33024", "tests the EtherType 33024"},
		{"ether[-1]", "ether[-1] = 0", "loads at offset 4294967295, beyond any frame"},
		{"unknown protocol: proto foo", "proto foo", `unknown protocol "foo": use its number`},
		{"unknown protocol: ip proto", "ip proto nosuch", `unknown protocol "nosuch"`},
		{"unknown protocol: ether proto", "ether proto \\gre", `unknown protocol "gre"`},
		{"unknown protocol: foo", "foo", `names "foo": host names are not resolved: use an address`},
		{"uppercase keyword", "TCP", `names "TCP": host names are not resolved`},
		{"host name", "host example.com", `names "example.com": host names are not resolved: use an address`},
		{"host name after and", "host 198.51.100.1 and db1", `"db1": host names`},
		{"ether name", "ether host gw", `"gw": host names`},
		{"network name", "net corp", `"corp": host names`},
		{"gateway", "gateway router", `"router": host names`},
		{"five-part address", "host 1.2.3.4.5", `"1.2.3.4.5": host names`},
		{"escaped name", "host \\tcp", `"tcp": host names`},
		{"identifier with minus", "len-1 > 10", `"len-1": host names`},
		{"service name", "port http", `port "http": service names are not resolved: use a number`},
		{"service name in a list", "port 80 or https", `port "https"`},
		{"service range", "portrange ftp-data-http", `port "ftp-data-http"`},
		{"range after port", "port 80 or 1024-2047", `port "1024-2047"`},
		{"inbound", "inbound", "direction attribute"},
		{"outbound", "outbound and tcp", "direction attribute"},
		{"ifindex", "ifindex 3", "source port"},
		{"rejects everything", "tcp and udp", "invalid filter expression: expression rejects all packets"},
		{"no netmask", "ip broadcast", "invalid filter expression: netmask not known"},
		{"200 hosts", strings.Join(hosts, " or "), "bytes long: the limit is 1024"},
		{"60 ports", "port " + strings.Join(ports, " or "), "60 host, net, port or portrange terms (a portrange counts two): the limit is 16"},
		{"9 port ranges", strings.Join(ranges[:9], " or "), "has 18 host, net, port or portrange terms"},
		{"ports in parentheses", "port (" + strings.Join(ports[:30], " or ") + ")", "has 31 host, net"},
		{"17 hosts", strings.Join(hosts[:17], " or "), "has 17 host, net"},
		{"inherited hosts", "host 198.51.100.1" + strings.Repeat(" or 198.51.100.2", 16), "has 17 host, net"},
		{"bare addresses", "198.51.100.1" + strings.Repeat(" or 198.51.100.2", 16), "has 17 host, net"},
		{"inherited nets", "net 10.0/16" + strings.Repeat(" or 10.1/16", 16), "has 17 host, net"},
		{"ether hosts", "ether host 02:00:00:00:00:01" + strings.Repeat(" or 02:00:00:00:00:02", 16), "has 17 host, net"},
		{"gateway and hosts", "host 198.51.100.1" + strings.Repeat(" or 198.51.100.2", 15) + " or gateway 198.51.100.3", "has 17 host, net"},
		{"hosts and ports", strings.Join(hosts[:9], " or ") + " or port " + strings.Join(ports[:8], " or "), "has 17 host, net"},
		{"too many instructions", strings.Join(protochains[:40], " or "), "too complex for the data path"},
		{"too many registers", strings.Join(protochains[:60], " or ")[:1020], "invalid filter expression"},
		{"deep parentheses", strings.Repeat("(", 400) + "tcp" + strings.Repeat(")", 401), "syntax error"},
		{"too many operators", strings.Repeat("not ", 255) + "tcp", "255 and/or/not operators: the limit is 160"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			f, err := Compile(tc.expr)
			var e *Error
			if !errors.As(err, &e) || f != nil {
				t.Fatalf("Compile(%.60q) = %v, %v, want an *Error", tc.expr, f, err)
			}
			if !strings.Contains(e.Msg, tc.want) {
				t.Errorf("Compile(%.60q) = %q, want it to say %q", tc.expr, e.Msg, tc.want)
			}
			t.Logf("%v: %s", time.Since(start).Round(time.Microsecond), e.Msg)
		})
	}
}

// TestCompileAccepts covers what the checks before libpcap must let
// through: addresses of every form, numbers, ranges, the names of
// libpcap's tables, and expressions at the limits (their compile time is
// logged: the structural limits keep it near 2 ms).
func TestCompileAccepts(t *testing.T) {
	var ranges, ports, hosts, nets []string
	for i := 1; i <= MaxTerms; i++ {
		ranges = append(ranges, fmt.Sprintf("portrange %d-%d", i, i+3))
		ports = append(ports, fmt.Sprintf("port %d", i))
		hosts = append(hosts, fmt.Sprintf("host 2001:db8::%x", i))
		nets = append(nets, fmt.Sprintf("net 10.%d.0.0/16", i))
	}
	for _, expr := range []string{
		"tcp port 443", "net 10.1.0.0/16 and not icmp", "udp and port 53", "tcp[tcpflags] & tcp-syn != 0", "ip6",
		"host ::ffff:198.51.100.1", "ip6 net 2001:db8::/32", "ether host 02:00:00:00:00:01",
		"ether host 02-00-00-00-00-01", "ether host 0200.0000.0001", "net 198.51.100.0 mask 255.255.255.0",
		"portrange 1024-2047", "port 80 or 443 or 8080", "portrange 80-90 or 1024-2047", "ip proto \\tcp", "proto gre", "ip6 protochain 6",
		"ether proto \\arp", "iso proto \\isis", "llc ui", "icmp[icmptype] = icmp-echo", "less 100",
		"len - 1 > 10 or len -1 > 10", "mpls", "geneve",
		strings.Join(ranges[:MaxTerms/2], " or "), strings.Join(ports, " or "), strings.Join(hosts, " or "),
		strings.Join(nets, " or "), strings.Join(ranges[:MaxTerms/4], " or ") + " or " + strings.Join(nets[:MaxTerms/2], " or "),
		"tcp and (src host 198.51.100.1 and dst host 198.51.100.2) and not (port 22 or 80)",
	} {
		start := time.Now()
		f, err := Compile(expr)
		if err != nil {
			t.Errorf("Compile(%.60q): %v", expr, err)
			continue
		}
		t.Logf("%.50q (%d bytes): %d instructions in %v", expr, len(expr), len(f.Program()),
			time.Since(start).Round(time.Microsecond))
	}
}

// TestMatchBackJumpBound: protochain follows a chain of up to MaxBackJumps
// extension headers (one backward jump each) and rejects a longer one,
// tagged or not.
func TestMatchBackJumpBound(t *testing.T) {
	f, err := Compile("ip6 protochain 6")
	if err != nil {
		t.Fatal(err)
	}
	// ChainFrames: for n headers, a TCP frame then a UDP frame.
	frames := packettest.ChainFrames(MaxBackJumps + 3)
	for n := 0; n <= MaxBackJumps+3; n++ {
		for _, tf := range packettest.TagVariants(frames[2*n]) {
			if got, want := f.Match(tf), n <= MaxBackJumps; got != want {
				t.Errorf("Match(TCP behind %d extension headers, %d bytes) = %v, want %v", n, len(tf), got, want)
			}
			if f.Match(packettest.TagVariants(frames[2*n+1])[0]) {
				t.Errorf("Match(UDP behind %d extension headers) = true", n)
			}
		}
	}
}
