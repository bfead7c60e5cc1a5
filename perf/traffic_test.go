package perf

import (
	"bytes"
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

func TestParseVIDRange(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    VIDRange
		wantErr bool
	}{
		{"", VIDRange{}, false},
		{"100", VIDRange{100, 100}, false},
		{"100-199", VIDRange{100, 199}, false},
		{"1-4094", VIDRange{1, 4094}, false},
		{"0", VIDRange{}, true},
		{"4095", VIDRange{}, true},
		{"200-100", VIDRange{}, true},
		{"x", VIDRange{}, true},
		{"1-", VIDRange{}, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseVIDRange(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("ParseVIDRange(%q) = %v, %v, want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseMACList(t *testing.T) {
	got, err := ParseMACList("02:00:00:00:00:01, fa:16:3e:aa:bb:cc")
	if err != nil || len(got) != 2 || got[1].String() != "fa:16:3e:aa:bb:cc" {
		t.Errorf("ParseMACList = %v, %v", got, err)
	}
	for _, bad := range []string{"02:00", "00:00:00:00:00:00:00:01", "zz:00:00:00:00:01", "02:00:00:00:00:01,"} {
		if _, err := ParseMACList(bad); err == nil {
			t.Errorf("ParseMACList(%q) = nil error, want one", bad)
		}
	}
}

func TestTrafficValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		t    Traffic
		ok   bool
	}{
		{"zero", Traffic{}, true},
		{"jumbo", Traffic{Size: MaxFrameSize}, true},
		{"too small", Traffic{Size: 59}, false},
		{"too big", Traffic{Size: MaxFrameSize + 1}, false},
		{"flows", Traffic{Flows: MaxFlows}, true},
		{"too many flows", Traffic{Flows: MaxFlows + 1}, false},
		{"full vlan range", Traffic{VLANs: VIDRange{1, 4094}}, true},
		{"bad vlan range", Traffic{VLANs: VIDRange{0, 5}}, false},
		{"mixed 60", Traffic{Mix: true}, true},
		{"mixed qinq 60", Traffic{Mix: true, VLANs: VIDRange{1, 1}, OuterTag: true}, false},
		{"mixed qinq 63", Traffic{Size: 63, Mix: true, VLANs: VIDRange{1, 1}, OuterTag: true}, true},
		{"mixed too many", Traffic{Mix: true, Flows: MaxFlows/10 + 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.t.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate(%+v) = %v, want ok %v", tc.t, err, tc.ok)
			}
		})
	}
}

// TestFrames decodes every frame a traffic spec produces and checks the
// fields that vary per frame, the tags and the size.
func TestFrames(t *testing.T) {
	a, b := net.HardwareAddr{2, 0, 0, 0, 0, 0xa}, net.HardwareAddr{2, 0, 0, 0, 0, 0xb}
	for _, tc := range []struct {
		name string
		t    Traffic
		n    int
		tags []layers.EthernetType // EtherTypes in front of each tag, outermost first
	}{
		{"default", Traffic{}, 1, nil},
		{"1514 untagged", Traffic{Size: 1514, Flows: 3}, 3, nil},
		{"dot1q", Traffic{Size: 64, VLANs: VIDRange{100, 103}, SrcMACs: []net.HardwareAddr{a, b}}, 4,
			[]layers.EthernetType{layers.EthernetTypeDot1Q}},
		{"qinq", Traffic{Size: 128, VLANs: VIDRange{10, 11}, OuterTag: true, Outer: VIDRange{300, 300}, Flows: 5}, 5,
			[]layers.EthernetType{layers.EthernetTypeQinQ, layers.EthernetTypeDot1Q}},
		{"qinq only", Traffic{OuterTag: true}, 1, []layers.EthernetType{layers.EthernetTypeQinQ}},
		{"mixed", Traffic{Mix: true, SrcMACs: eightMACs()}, 80, nil},
		{"mixed dot1q flows", Traffic{Size: 200, Mix: true, VLANs: VIDRange{5, 6}, Flows: 3}, 30,
			[]layers.EthernetType{layers.EthernetTypeDot1Q}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frames, err := tc.t.Frames()
			if err != nil {
				t.Fatal(err)
			}
			if len(frames) != tc.n {
				t.Fatalf("Frames() returned %d frames, want %d", len(frames), tc.n)
			}
			d := tc.t.withDefaults()
			for i, f := range frames {
				if len(f) != d.Size {
					t.Errorf("frame %d: %d bytes, want %d", i, len(f), d.Size)
				}
				e := d.entry(i)
				p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
				eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
				if !bytes.Equal(eth.SrcMAC, e.src) || !bytes.Equal(eth.DstMAC, e.dst) {
					t.Errorf("frame %d: %v -> %v, want %v -> %v", i, eth.SrcMAC, eth.DstMAC, e.src, e.dst)
				}
				if len(tc.tags) > 0 && eth.EthernetType != tc.tags[0] {
					t.Errorf("frame %d: outer EtherType %v, want %v", i, eth.EthernetType, tc.tags[0])
				}
				var vids []uint16
				for _, l := range p.Layers() {
					if q, ok := l.(*layers.Dot1Q); ok {
						vids = append(vids, q.VLANIdentifier)
					}
				}
				if len(vids) != len(tc.tags) {
					t.Fatalf("frame %d: %d tags, want %d", i, len(vids), len(tc.tags))
				}
				want := []uint16{}
				if d.OuterTag {
					want = append(want, e.outer)
				}
				if d.VLANs.Count() > 0 {
					want = append(want, e.inner)
				}
				for j := range want {
					if vids[j] != want[j] {
						t.Errorf("frame %d tag %d: vid %d, want %d", i, j, vids[j], want[j])
					}
				}
				kind := MixKind{layers.IPProtocolUDP, 9}
				if d.Mix {
					kind = e.kind
				}
				var sport, dport uint16
				switch l4 := p.TransportLayer().(type) {
				case *layers.UDP:
					if kind.Proto != layers.IPProtocolUDP {
						t.Errorf("frame %d: UDP, want %v", i, kind.Proto)
					}
					if l4.Length != uint16(len(l4.Contents)+len(l4.Payload)) || l4.Checksum != 0 {
						t.Errorf("frame %d: UDP length %d checksum %#x, want %d and 0", i, l4.Length, l4.Checksum, len(l4.Contents)+len(l4.Payload))
					}
					sport, dport = uint16(l4.SrcPort), uint16(l4.DstPort)
				case *layers.TCP:
					if kind.Proto != layers.IPProtocolTCP {
						t.Errorf("frame %d: TCP, want %v", i, kind.Proto)
					}
					sport, dport = uint16(l4.SrcPort), uint16(l4.DstPort)
				default:
					t.Fatalf("frame %d: no UDP or TCP layer: %v", i, p)
				}
				if sport != e.sport || dport != kind.Port {
					t.Errorf("frame %d: ports %d -> %d, want %d -> %d", i, sport, dport, e.sport, kind.Port)
				}
				// gopacket also decodes the payload as DNS, NTP or SIP by
				// port; the generator's payload is none of them.
				if el := p.ErrorLayer(); el != nil && p.TransportLayer() == nil {
					t.Errorf("frame %d: decode error %v", i, el.Error())
				}
			}
			if !d.Mix {
				return
			}
			// Every source sends every kind: 1 frame in 10 of each is
			// `tcp port 443`.
			https := map[string]int{}
			for i, f := range frames {
				if d.entry(i).kind.Port == 443 {
					https[net.HardwareAddr(f[6:12]).String()]++
				}
			}
			for _, m := range d.SrcMACs {
				if got, want := https[m.String()], len(frames)/len(d.SrcMACs)/10; got != want {
					t.Errorf("source %v: %d frames to tcp port 443, want %d", m, got, want)
				}
			}
		})
	}
}

// eightMACs are eight source MACs, 02:be:00:00:01:00 on.
func eightMACs() []net.HardwareAddr {
	var macs []net.HardwareAddr
	for i := range 8 {
		macs = append(macs, net.HardwareAddr{2, 0xbe, 0, 0, 1, byte(i)})
	}
	return macs
}

func FuzzParseVIDRange(f *testing.F) {
	for _, s := range []string{"", "1", "100-199", "4094-4094", "0-1", "9-8", " 5 - 7"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseVIDRange(s)
		if err != nil {
			return
		}
		if s != "" && (r.Lo < 1 || r.Hi > 4094 || r.Hi < r.Lo) {
			t.Errorf("ParseVIDRange(%q) = %v, outside 1-4094", s, r)
		}
		if err := (Traffic{VLANs: r}).Validate(); err != nil {
			t.Errorf("ParseVIDRange(%q) = %v, which Validate rejects: %v", s, r, err)
		}
	})
}

func FuzzParseMACList(f *testing.F) {
	for _, s := range []string{"", "02:00:00:00:00:01", "02:00:00:00:00:01,fa:16:3e:00:00:02", "0200.0000.0001", ","} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		macs, err := ParseMACList(s)
		if err != nil {
			return
		}
		for _, m := range macs {
			if len(m) != 6 {
				t.Errorf("ParseMACList(%q) returned %v, not 6 bytes", s, m)
			}
		}
	})
}
