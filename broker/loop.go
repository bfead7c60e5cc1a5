package broker

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
)

// The loop guard (issue 9): a copy sent out of a monitor interface that
// comes back in on a capture interface is classified again and copied
// again. One injected frame became 2.9 M frames/s on a monitor that was
// the peer of a capture veth. Control refuses such a binding at the API,
// and Apply checks again at plan time, since links change after the API
// call.

// FeedsBack says how frames sent out of monitor would arrive on capture,
// "" when it finds no way. It looks at this network namespace's links:
// the same interface; the two ends of one veth pair; a monitor (or the
// peer of a monitor veth) that is a port of the bridge or bond capture (or
// the peer of a capture veth) is a port of, or of capture itself, or that
// is that bridge or bond. A stacked monitor (macvlan, vlan, ipvlan) is
// followed down to the device it sends out of, a stacked capture down to
// the device it receives from. An interface that does not
// exist feeds nothing back (yet): the caller checks again when it appears.
// Other paths (tc mirred, routing, a bridge in another namespace) are not
// detected.
func FeedsBack(monitor, capture string) (string, error) {
	if monitor == capture {
		return fmt.Sprintf("monitor interface %s is the capture interface itself", monitor), nil
	}
	ml, err := link(monitor)
	if ml == nil || err != nil {
		return "", err
	}
	cl, err := link(capture)
	if cl == nil || err != nil {
		return "", err
	}
	mon, capt := ml.Attrs(), cl.Attrs()
	// The far ends of the monitor: where its frames arrive. A stacked
	// device (macvlan, vlan, ipvlan) sends out of its lower device: 5 of
	// 5 frames sent out of a macvlan on a capture's veth peer came back.
	type end struct {
		*netlink.LinkAttrs
		via string
	}
	ends := []end{{mon, ""}}
	mlow, err := lowerChain(ml)
	if err != nil {
		return "", err
	}
	out, via := ml, ""
	for _, lower := range mlow {
		out, via = lower, fmt.Sprintf(" through its lower device %s", lower.Attrs().Name)
		if lower.Attrs().Index == capt.Index {
			return fmt.Sprintf("monitor interface %s sends out of capture interface %s", monitor, capture), nil
		}
		ends = append(ends, end{lower.Attrs(), via})
	}
	if peer, err := vethPeer(out); err != nil {
		return "", err
	} else if peer != nil {
		if peer.Index == capt.Index {
			return fmt.Sprintf("monitor interface %s%s is the veth peer of capture interface %s", monitor, via, capture), nil
		}
		ends = append(ends, end{peer, fmt.Sprintf("%s through its veth peer %s", via, peer.Name)})
	}
	// A stacked capture (a macvlan) receives what reaches its lower
	// device; the capture receives what its (lower device's) veth peer is
	// sent, and a bridge or bond the peer is a port of forwards the
	// monitor's copies to it.
	clow, err := lowerChain(cl)
	if err != nil {
		return "", err
	}
	in, cpeerOf := cl, ""
	for _, lower := range clow {
		in, cpeerOf = lower, fmt.Sprintf("'s lower device %s", lower.Attrs().Name)
	}
	cpeer, err := vethPeer(in)
	if err != nil {
		return "", err
	}
	if cpeer != nil {
		cpeerOf = fmt.Sprintf("capture interface %s%s's veth peer %s", capture, cpeerOf, cpeer.Name)
	}
	for _, e := range ends {
		via := e.via
		for _, l := range clow {
			if e.Index == l.Attrs().Index {
				return fmt.Sprintf("monitor interface %s%s is the lower device of capture interface %s", monitor, via, capture), nil
			}
		}
		switch {
		case cpeer != nil && cpeer.MasterIndex != 0 && e.Index == cpeer.MasterIndex:
			return fmt.Sprintf("monitor interface %s%s is the bridge or bond that %s is a port of", monitor, via, cpeerOf), nil
		case e.MasterIndex == 0:
		case e.MasterIndex == capt.Index:
			return fmt.Sprintf("monitor interface %s%s is a port of capture interface %s", monitor, via, capture), nil
		case e.MasterIndex == capt.MasterIndex:
			return fmt.Sprintf("monitor interface %s%s and capture interface %s are ports of the same bridge or bond (ifindex %d)",
				monitor, via, capture, e.MasterIndex), nil
		case cpeer != nil && e.MasterIndex == cpeer.MasterIndex:
			return fmt.Sprintf("monitor interface %s%s and %s are ports of the same bridge or bond (ifindex %d)",
				monitor, via, cpeerOf, e.MasterIndex), nil
		}
	}
	return "", nil
}

// link returns the link called name, nil when it does not exist.
func link(name string) (netlink.Link, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up interface %s: %w", name, err)
	}
	return l, nil
}

// lowerChain follows a stacked link down its lower devices, at most 8
// deep: the last is the device its frames leave by and arrive on.
func lowerChain(l netlink.Link) ([]netlink.Link, error) {
	var out []netlink.Link
	for range 8 {
		lower, err := lowerDevice(l)
		if lower == nil || err != nil {
			return out, err
		}
		out = append(out, lower)
		l = lower
	}
	return out, nil
}

// lowerDevice returns the device a stacked link (macvlan, macvtap, vlan,
// ipvlan, ipvtap) sends its frames out of, nil for other links and for a
// lower device in another namespace.
func lowerDevice(l netlink.Link) (netlink.Link, error) {
	switch l.Type() {
	case "macvlan", "macvtap", "vlan", "ipvlan", "ipvtap":
		return linkOf(l, "lower device")
	}
	return nil, nil
}

// vethPeer returns the other end of a veth in this namespace, nil when v is
// no veth or its peer lives in another namespace.
func vethPeer(v netlink.Link) (*netlink.LinkAttrs, error) {
	if v.Type() != "veth" {
		return nil, nil
	}
	l, err := linkOf(v, "veth peer")
	if l == nil || err != nil || l.Type() != "veth" {
		return nil, err
	}
	return l.Attrs(), nil
}

// linkOf returns the link l's IFLA_LINK names (a veth's peer, a stacked
// device's lower device), nil when it has none, it is gone or it lives in
// the namespace IFLA_LINK_NETNSID names.
func linkOf(l netlink.Link, what string) (netlink.Link, error) {
	a := l.Attrs()
	if a.ParentIndex == 0 || a.NetNsID >= 0 {
		return nil, nil
	}
	o, err := netlink.LinkByIndex(a.ParentIndex)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up %s of %s: %w", what, a.Name, err)
	}
	return o, nil
}

// loopReasons checks every monitor of p against caps, the capture
// interfaces of p, and returns, per monitor, why it feeds a capture back.
func loopReasons(p *Plan, caps []string) map[string]string {
	out := map[string]string{}
	seen := map[string]bool{}
	for _, s := range p.Services {
		if s.Iface == "" || seen[s.Iface] {
			continue
		}
		seen[s.Iface] = true
		if why := feedsAny(s.Iface, caps); why != "" {
			out[s.Iface] = why
		}
	}
	return out
}

// feedsAny says how output (a monitor or an uplink) feeds one of caps
// back, "loop refused: ..." or "" when it finds no way.
func feedsAny(output string, caps []string) string {
	for _, c := range caps {
		why, err := FeedsBack(output, c)
		if err != nil {
			// Unknown is not safe: keep the output closed.
			why = fmt.Sprintf("loop check of %s: %v", output, err)
		}
		if why != "" {
			return "loop refused: " + why
		}
	}
	return ""
}
