package broker

import (
	"errors"
	"fmt"
	"slices"

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
// is that bridge or bond. An interface that does not exist feeds
// nothing back (yet): the caller checks again when it appears. Other
// paths (tc mirred, routing) are not detected.
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
	// The far ends of the monitor: where its frames arrive.
	ends := []*netlink.LinkAttrs{mon}
	if peer, err := vethPeer(ml); err != nil {
		return "", err
	} else if peer != nil {
		if peer.Index == capt.Index {
			return fmt.Sprintf("monitor interface %s is the veth peer of capture interface %s", monitor, capture), nil
		}
		ends = append(ends, peer)
	}
	// The capture receives what its veth peer is sent: a bridge or bond
	// the peer is a port of forwards the monitor's copies to it.
	cpeer, err := vethPeer(cl)
	if err != nil {
		return "", err
	}
	for _, e := range ends {
		via := ""
		if e != mon {
			via = fmt.Sprintf(" through its veth peer %s", e.Name)
		}
		switch {
		case cpeer != nil && cpeer.MasterIndex != 0 && e.Index == cpeer.MasterIndex:
			return fmt.Sprintf("capture interface %s's veth peer %s is a port of monitor interface %s%s",
				capture, cpeer.Name, monitor, via), nil
		case e.MasterIndex == 0:
		case e.MasterIndex == capt.Index:
			return fmt.Sprintf("monitor interface %s%s is a port of capture interface %s", monitor, via, capture), nil
		case e.MasterIndex == capt.MasterIndex:
			return fmt.Sprintf("monitor interface %s%s and capture interface %s are ports of the same bridge or bond (ifindex %d)",
				monitor, via, capture, e.MasterIndex), nil
		case cpeer != nil && e.MasterIndex == cpeer.MasterIndex:
			return fmt.Sprintf("monitor interface %s%s and capture interface %s's veth peer %s are ports of the same bridge or bond (ifindex %d)",
				monitor, via, capture, cpeer.Name, e.MasterIndex), nil
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

// vethPeer returns the other end of a veth in this namespace, nil when v is
// no veth or its peer lives in another namespace.
func vethPeer(v netlink.Link) (*netlink.LinkAttrs, error) {
	a := v.Attrs()
	// IFLA_LINK of a veth is its peer's ifindex, in the namespace
	// IFLA_LINK_NETNSID names when it is another one.
	if v.Type() != "veth" || a.ParentIndex == 0 || a.NetNsID >= 0 {
		return nil, nil
	}
	l, err := netlink.LinkByIndex(a.ParentIndex)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up veth peer of %s: %w", a.Name, err)
	}
	if l.Type() != "veth" {
		return nil, nil
	}
	return l.Attrs(), nil
}

// loopReasons checks every monitor of p against every capture of p and
// returns, per monitor, why it feeds a capture back.
func loopReasons(p *Plan) map[string]string {
	var caps []string
	for _, f := range p.Flows {
		if f.Iface != "" && !slices.Contains(caps, f.Iface) {
			caps = append(caps, f.Iface)
		}
	}
	out := map[string]string{}
	seen := map[string]bool{}
	for _, s := range p.Services {
		if s.Iface == "" || seen[s.Iface] {
			continue
		}
		seen[s.Iface] = true
		for _, c := range caps {
			why, err := FeedsBack(s.Iface, c)
			if err != nil {
				// Unknown is not safe: keep the monitor closed.
				why = fmt.Sprintf("loop check of %s: %v", s.Iface, err)
			}
			if why != "" {
				out[s.Iface] = "loop refused: " + why
				break
			}
		}
	}
	return out
}
