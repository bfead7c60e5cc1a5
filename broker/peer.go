package broker

import (
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// A veth monitor hands its copies to its peer, and the kernel drops a copy
// larger than the peer's MTU takes (veth_xmit, veth_xdp_xmit): the peer's
// MTU limits the monitor as much as its own. The peer usually sits in
// another network namespace (a monitoring VM's or container's), where no
// link event of ours reports its changes; redirectWatch re-reads it.

// peerMTUOf is vethPeerMTU; a test hides the peer with it.
var peerMTUOf = vethPeerMTU

// vethPeerMTU returns the MTU of the peer of veth l, in whichever network
// namespace it is, or 0 when l is not a veth or its peer cannot be read
// (then only l's own MTU is known).
func vethPeerMTU(l netlink.Link) int {
	if l.Type() != "veth" {
		return 0
	}
	a := l.Attrs()
	if a.ParentIndex <= 0 {
		return 0
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(a.ParentIndex)
	req.AddData(msg)
	if a.NetNsID >= 0 {
		// The peer's ifindex is in the namespace of that id (as this
		// namespace numbers it); IFLA_TARGET_NETNSID, Linux >= 4.20.
		req.AddData(nl.NewRtAttr(unix.IFLA_TARGET_NETNSID, nl.Uint32Attr(uint32(a.NetNsID))))
	}
	msgs, err := req.Execute(unix.NETLINK_ROUTE, 0)
	if err != nil || len(msgs) != 1 {
		return 0 // unknown: the kernel drop counters still show it
	}
	p, err := netlink.LinkDeserialize(nil, msgs[0])
	if err != nil {
		return 0
	}
	return p.Attrs().MTU
}
