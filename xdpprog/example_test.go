package xdpprog_test

import (
	"fmt"
	"log"
	"net"
	"net/netip"
	"time"

	"github.com/taas-appliance/taas/xdpprog"
)

// Attach the program to a capture interface, give queue 0 its AF_XDP
// socket, want the traffic of one port in both directions on VLANs 100-199,
// and read the counters. (Not run: it needs root and a capture interface.)
func ExampleAttach() {
	ifc, err := net.InterfaceByName("cap0")
	if err != nil {
		log.Fatal(err)
	}
	c, err := xdpprog.Attach(ifc.Index, xdpprog.Config{Unmatched: xdpprog.Drop, MaxFrame: 1792})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	var xskFD int // from the AF_XDP socket bound to (cap0, queue 0)
	if err := c.SetSocket(0, xskFD); err != nil {
		log.Fatal(err)
	}

	port := [6]byte{0xfa, 0x16, 0x3e, 0x00, 0x00, 0x01}
	vlans := new(xdpprog.VLANSet)
	vlans.AddRange(100, 199)
	err = c.SetFilter(xdpprog.Filter{
		MACs:      map[[6]byte]xdpprog.Want{port: xdpprog.WantSrc | xdpprog.WantDst},
		Multicast: true, // an IN flow also wants broadcast and multicast
		VLANs:     vlans,
	})
	if err != nil {
		log.Fatal(err)
	}

	n, err := c.Counters()
	if err != nil {
		log.Fatal(err)
	}
	n.Each(func(name string, v uint64) { fmt.Println(name, v) })
}

// Encapsulate a copy for an ERSPAN III collector, as an AF_XDP worker does.
func ExampleNewTunnelHeader() {
	h, err := xdpprog.NewTunnelHeader(xdpprog.TunnelSpec{
		Encap:   xdpprog.EncapERSPAN3,
		ID:      100, // the direction's session id
		PortMAC: [6]byte{0xfa, 0x16, 0x3e, 0x00, 0x00, 0x01},
		SrcMAC:  [6]byte{0x02, 0, 0, 0, 0, 1}, // the uplink's
		DstMAC:  [6]byte{0x02, 0, 0, 0, 0, 2}, // the next hop's
		Src:     netip.MustParseAddr("192.0.2.1"),
		Dst:     netip.MustParseAddr("198.51.100.7"),
		MTU:     1500,
	})
	if err != nil {
		log.Fatal(err)
	}
	frame := make([]byte, 1514)
	dst := make([]byte, h.Overhead()+len(frame))
	var seq uint32
	n, truncated := h.Encapsulate(dst, frame, seq, xdpprog.ERSPANTimestamp(time.Now()))
	fmt.Println(h.Overhead(), n, truncated)
	// Output: 54 1514 true
}

// Send a fast-path copy through a VXLAN tunnel: the tunnel's slot is an
// output of Copies like a monitor's ifindex. (Not run: it needs root.)
func ExampleCapture_SetTunnel() {
	c, err := xdpprog.Attach(2, xdpprog.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	h, err := xdpprog.NewTunnelHeader(xdpprog.TunnelSpec{Encap: xdpprog.EncapVXLAN, ID: 5000,
		Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("198.51.100.7"), MTU: 1500})
	if err != nil {
		log.Fatal(err)
	}
	const uplink = 3 // the ifindex of the route to 198.51.100.7
	if err := c.SetTunnel(0, h, uplink); err != nil {
		log.Fatal(err)
	}
	port := [6]byte{0xfa, 0x16, 0x3e, 0x00, 0x00, 0x01}
	err = c.SetFast(&xdpprog.FastTable{
		Ports:     map[[6]byte]uint32{port: 1},
		Decisions: map[xdpprog.FastKey]xdpprog.Decision{{Src: 1}: {Services: 1, Flows: []uint16{0}}},
		Copies: map[uint64]xdpprog.Copies{1: {Outputs: []int{xdpprog.TunnelOutput(0)},
			Services: []xdpprog.DecisionService{{Slot: 0}}}},
	})
	if err != nil {
		log.Fatal(err)
	}
	t, err := c.FastTunnel(0)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(t.Packets, t.Bytes, t.Truncated, t.Failed)
}
