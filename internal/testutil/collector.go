package testutil

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
)

// CollectorPath is the way from a tap mirror's uplink to a remote
// collector: the uplink Prefix+"up" in the test's namespace, its peer
// RouterIf (Prefix+"upr") in namespace RouterNS, and the collector
// CollectorIf (Prefix+"col") in namespace CollectorNS behind the router,
// so that the next hop is not the collector. Addresses are TEST-NET-2 (a
// random /29 of 198.51.100.0/25 on the uplink link, the /30 at the same
// offset in 198.51.100.128/25 behind the router, 2001:db8::/32 for IPv6)
// and every packet stays inside the veths it made. Not TEST-NET-1: it may
// be the host's own network (on the dev machine it is), and a route to a
// collector there would take a real host's address. The routes to the
// collector in the test's namespace go with the uplink when the test ends.
// broker's mirror tests and cmd/taasd's end-to-end tests build it.
type CollectorPath struct {
	Uplink, RouterNS, CollectorNS, RouterIf, CollectorIf string
	// Gw4 and Gw6 are the router's addresses on the uplink link, Spare4
	// one nobody holds (an unreachable next hop).
	Gw4, Gw6, Spare4 netip.Addr
	// Col4 and Col6 are the collector's addresses, Src4 and Src6 the
	// uplink's.
	Col4, Col6, Src4, Src6 netip.Addr
	// UplinkMAC and RouterMAC are the uplink's MAC and the router's on its
	// link.
	UplinkMAC, RouterMAC [6]byte
}

// NewCollectorPath builds the path with names starting with prefix (see
// Prefix), routes the collector's addresses through the router and waits
// for the uplink to be up. Everything goes when t ends.
func NewCollectorPath(t testing.TB, prefix string) *CollectorPath {
	t.Helper()
	c := &CollectorPath{Uplink: prefix + "up", RouterNS: Netns(t, prefix+"rt"), CollectorNS: Netns(t, prefix+"co"),
		RouterIf: prefix + "upr", CollectorIf: prefix + "col"}
	Veth(t, c.Uplink, c.RouterIf, VethOpts{NetnsB: c.RouterNS})
	Veth(t, prefix+"rc", c.CollectorIf, VethOpts{NetnsA: c.RouterNS, NetnsB: c.CollectorNS})
	var n int
	up := func(host int) string { return fmt.Sprintf("198.51.100.%d", 8*n+host) }
	co := func(host int) string { return fmt.Sprintf("198.51.100.%d", 128+8*n+host) }
	up6 := func(host int) string { return fmt.Sprintf("2001:db8:%x:a::%d", n+1, host) }
	co6 := func(host int) string { return fmt.Sprintf("2001:db8:%x:b::%d", n+1, host) }
	// Tests of several packages run at once in one namespace: the slot is
	// taken (the uplink's address added) under a lock between processes,
	// among the slots no address of this namespace uses yet.
	unlock := lockFile(t, "/tmp/taas-test-collector.lock")
	n = freeCollectorSlot(t, rand.IntN(16))
	Run(t, "ip", "addr", "add", up(1)+"/29", "dev", c.Uplink)
	unlock()
	c.Gw4, c.Spare4 = netip.MustParseAddr(up(2)), netip.MustParseAddr(up(3))
	c.Gw6 = netip.MustParseAddr(up6(2))
	c.Col4, c.Col6 = netip.MustParseAddr(co(2)), netip.MustParseAddr(co6(2))
	c.Src4, c.Src6 = netip.MustParseAddr(up(1)), netip.MustParseAddr(up6(1))
	rt := []string{"-n", c.RouterNS}
	cmds := [][]string{
		{"-6", "addr", "add", up6(1) + "/64", "dev", c.Uplink, "nodad"},
		append(rt, "addr", "add", up(2)+"/29", "dev", c.RouterIf),
		append(rt, "-6", "addr", "add", up6(2)+"/64", "dev", c.RouterIf, "nodad"),
		append(rt, "addr", "add", co(1)+"/30", "dev", prefix+"rc"),
		append(rt, "-6", "addr", "add", co6(1)+"/64", "dev", prefix+"rc", "nodad"),
		{"-n", c.CollectorNS, "addr", "add", co(2) + "/30", "dev", c.CollectorIf},
		{"-n", c.CollectorNS, "-6", "addr", "add", co6(2) + "/64", "dev", c.CollectorIf, "nodad"},
	}
	for _, cmd := range cmds {
		Run(t, "ip", cmd...)
	}
	Run(t, "ip", "netns", "exec", c.RouterNS, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	// The fast path's redirect into the uplink veth needs GRO or XDP on
	// its peer (gotcha 10).
	Run(t, "ip", "netns", "exec", c.RouterNS, "ethtool", "-K", c.RouterIf, "gro", "on")
	c.UplinkMAC, c.RouterMAC = LinkMAC(t, "", c.Uplink), LinkMAC(t, c.RouterNS, c.RouterIf)
	c.AddRoutes(t)
	WaitOperUp(t, "", c.Uplink)
	return c
}

// AddRoutes routes the collector's addresses through the router.
func (c *CollectorPath) AddRoutes(t testing.TB) {
	t.Helper()
	c.AddRoute4(t)
	Run(t, "ip", "-6", "route", "replace", c.Col6.String()+"/128", "via", c.Gw6.String(), "dev", c.Uplink)
}

// AddRoute4 routes the collector's IPv4 address through the router, as a
// routing daemon would after the uplink comes back.
func (c *CollectorPath) AddRoute4(t testing.TB) {
	t.Helper()
	Run(t, "ip", "route", "replace", c.Col4.String()+"/32", "via", c.Gw4.String(), "dev", c.Uplink)
}

// LinkMAC is the MAC of link name in netns (empty: the test's own).
func LinkMAC(t testing.TB, netns, name string) (m [6]byte) {
	t.Helper()
	var hw net.HardwareAddr
	get := func() error {
		ifi, err := net.InterfaceByName(name)
		if err == nil {
			hw = ifi.HardwareAddr
		}
		return err
	}
	var err error
	if netns == "" {
		err = get()
	} else {
		err = InNetns(netns, get)
	}
	if err != nil || len(hw) != 6 {
		t.Fatalf("MAC of %s: %v %v", name, hw, err)
	}
	copy(m[:], hw)
	return m
}

// freeCollectorSlot is the first of the 16 collector slots, from start on,
// whose uplink /29 no address of this namespace lies in.
func freeCollectorSlot(t testing.TB, start int) int {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 16 {
		n := (start + i) % 16
		slot := netip.MustParsePrefix(fmt.Sprintf("198.51.100.%d/29", 8*n))
		used := false
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && slot.Contains(p.Addr()) {
				used = true
			}
		}
		if !used {
			return n
		}
	}
	t.Fatal("every collector slot of 198.51.100.0/25 is in use in this namespace")
	return 0
}

// lockFile takes an exclusive lock on path, shared by every test process,
// and returns its release.
func lockFile(t testing.TB, path string) func() {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatal(err)
	}
	return func() { f.Close() } // closing releases the lock
}
