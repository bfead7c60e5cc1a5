package broker

import (
	"strings"
	"testing"

	"github.com/taas-appliance/taas/internal/testutil"
)

// TestFeedsBack checks the loop guard's view of real links: veth pairs, a
// bridge, and a veth whose peer sits in another namespace.
func TestFeedsBack(t *testing.T) {
	testutil.RequireRoot(t, "CAP_NET_ADMIN for veth pairs, a bridge and a namespace")
	p := testutil.Prefix(t)
	other := testutil.Netns(t, p+"ns")
	// a <-> b: a plain pair. c <-> d, e <-> f and g <-> h, with d, e and
	// h ports of bridge br. x <-> y, y in another namespace.
	testutil.Veth(t, p+"a", p+"b", testutil.VethOpts{})
	testutil.Veth(t, p+"c", p+"d", testutil.VethOpts{})
	testutil.Veth(t, p+"e", p+"f", testutil.VethOpts{})
	testutil.Veth(t, p+"g", p+"h", testutil.VethOpts{})
	testutil.Veth(t, p+"x", p+"y", testutil.VethOpts{NetnsB: other})
	br := p + "br"
	testutil.Run(t, "ip", "link", "add", br, "type", "bridge")
	t.Cleanup(func() { testutil.Run(t, "ip", "link", "del", br) })
	testutil.Run(t, "ip", "link", "set", p+"d", "master", br)
	testutil.Run(t, "ip", "link", "set", p+"e", "master", br)
	testutil.Run(t, "ip", "link", "set", p+"h", "master", br)
	// Macvlans (their frames leave through the lower device): m on b,
	// the capture a's peer; n on c, whose peer d is a port of br.
	testutil.Run(t, "ip", "link", "add", "link", p+"b", "name", p+"m", "type", "macvlan", "mode", "bridge")
	testutil.Run(t, "ip", "link", "add", "link", p+"c", "name", p+"n", "type", "macvlan", "mode", "bridge")

	for _, tc := range []struct {
		name, monitor, capture string
		want                   string // substring of the reason; "" for none
	}{
		{"same interface", p + "a", p + "a", "is the capture interface itself"},
		{"veth peer", p + "b", p + "a", "is the veth peer of capture interface " + p + "a"},
		{"veth peer, other way", p + "a", p + "b", "is the veth peer of capture interface " + p + "b"},
		{"same bridge", p + "e", p + "d", "are ports of the same bridge or bond"},
		{"peer in the capture's bridge", p + "c", p + "e", "through its veth peer " + p + "d"},
		{"port of the capture bridge", p + "d", br, "is a port of capture interface " + br},
		// The bridge forwards what c sends (received on d) out of h, so g,
		// h's peer, receives it: the lab's capture veth plugged into a
		// bridge (5 of 5 broadcast frames came back in a namespace).
		{"peer in the bridge of the capture's peer", p + "c", p + "g", "veth peer " + p + "h"},
		{"bridge of the capture's peer", br, p + "g", "veth peer " + p + "h"},
		// 5 of 5 broadcast frames sent out of a macvlan on a capture's
		// veth peer came back in on the capture.
		{"macvlan on the capture's veth peer", p + "m", p + "a", "through its lower device " + p + "b"},
		{"macvlan on the capture's veth peer, capture is the peer", p + "m", p + "b", "sends out of capture interface " + p + "b"},
		{"macvlan, lower's peer in the bridge of the capture's peer", p + "n", p + "g", "veth peer " + p + "h"},
		// A macvlan capture receives what reaches its lower device.
		{"capture macvlan on the monitor's veth peer", p + "a", p + "m", "is the lower device of capture interface " + p + "m"},
		{"capture macvlan, lower's peer in the monitor's peer's bridge", p + "f", p + "n",
			"capture interface " + p + "n's lower device " + p + "c's veth peer " + p + "d"},
		{"unrelated", p + "a", p + "e", ""},
		{"unrelated macvlan", p + "m", p + "e", ""},
		{"peer in another namespace", p + "x", p + "a", ""},
		{"missing monitor", p + "zz", p + "a", ""},
		{"missing capture", p + "a", p + "zz", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FeedsBack(tc.monitor, tc.capture)
			if err != nil {
				t.Fatalf("FeedsBack(%s, %s): %v", tc.monitor, tc.capture, err)
			}
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Errorf("FeedsBack(%s, %s) = %q, want %q", tc.monitor, tc.capture, got, tc.want)
			}
		})
	}
}
