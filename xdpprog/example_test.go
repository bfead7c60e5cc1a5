package xdpprog_test

import (
	"fmt"
	"log"
	"net"

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
