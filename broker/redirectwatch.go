package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// redirectWatch also re-reads the MTU of veth monitors' peers (peer.go).
//
// A monitor takes frames redirected by XDP only when its driver offers
// ndo_xdp_xmit; a veth does only while its peer has an XDP program or GRO
// on (afxdp-notes gotcha 10), and otherwise the kernel drops every copy at
// the redirect (counted in the capture's rx_dropped) while the XDP program
// saw bpf_redirect_map succeed. The kernel says which netdevs take them:
// NETDEV_XDP_ACT_NDO_XMIT in the netdev's xdp-features (netdev generic
// netlink family, Linux >= 6.3), which veth updates when its peer changes.
//
// Apply reads it for every monitor (output.refused) and keeps captures that
// send to a refusing monitor on the AF_XDP path. redirectWatch re-reads it
// every redirectWatchInterval, because the peer can change at any time
// without a link event: a change makes the reconciler re-Apply (through
// LinkEvents), so a monitor that starts refusing costs at most about one
// interval of copies, and one that is fixed gets the fast path back.

// redirectWatchInterval is how often the watch reads the monitors' XDP
// features.
const redirectWatchInterval = 500 * time.Millisecond

// xdpActNDOXmit is NETDEV_XDP_ACT_NDO_XMIT (linux/netdev.h).
const xdpActNDOXmit = 1 << 2

// Generic netlink "netdev" family: NETDEV_CMD_DEV_GET, NETDEV_A_DEV_IFINDEX,
// NETDEV_A_DEV_XDP_FEATURES.
const (
	netdevCmdDevGet       = 1
	netdevAttrIfindex     = 1
	netdevAttrXDPFeatures = 3
)

// errNoXDPFeatures: the kernel does not report XDP features (before 6.3);
// the broker then assumes monitors take redirected frames.
var errNoXDPFeatures = errors.New("kernel does not report xdp features")

// genlHeader is struct genlmsghdr: cmd, version, reserved (u16, zero).
// nl.Genlmsg serialises 4 bytes from its 2-byte struct, so its reserved
// field is whatever memory follows, and the kernel refuses that.
type genlHeader [nl.SizeofGenlmsg]byte

func (h genlHeader) Len() int          { return len(h) }
func (h genlHeader) Serialize() []byte { return h[:] }

// takesRedirect reports whether netdev ifindex accepts frames redirected by
// XDP (ndo_xdp_xmit), as the kernel says right now.
func takesRedirect(ifindex int) (bool, error) {
	fam, err := netlink.GenlFamilyGet("netdev")
	if err != nil {
		return false, fmt.Errorf("%w: %v", errNoXDPFeatures, err)
	}
	req := nl.NewNetlinkRequest(int(fam.ID), 0)
	req.AddData(genlHeader{netdevCmdDevGet, 1, 0, 0})
	req.AddData(nl.NewRtAttr(netdevAttrIfindex, nl.Uint32Attr(uint32(ifindex))))
	msgs, err := req.Execute(unix.NETLINK_GENERIC, 0)
	if err != nil {
		return false, fmt.Errorf("xdp features of ifindex %d: %w", ifindex, err)
	}
	for _, m := range msgs {
		if len(m) < nl.SizeofGenlmsg {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[nl.SizeofGenlmsg:])
		if err != nil {
			return false, fmt.Errorf("xdp features of ifindex %d: %w", ifindex, err)
		}
		for _, a := range attrs {
			if a.Attr.Type == netdevAttrXDPFeatures && len(a.Value) >= 8 {
				return binary.NativeEndian.Uint64(a.Value)&xdpActNDOXmit != 0, nil
			}
		}
	}
	return false, fmt.Errorf("xdp features of ifindex %d: %w", ifindex, errNoXDPFeatures)
}

// checkRedirect sets o.refused from the kernel and reports whether it
// changed, logging the change: a warning that names the fix when o starts
// refusing. An unknown answer counts as taking them (older kernels).
func checkRedirect(o *output, log *slog.Logger) bool {
	ok, err := takesRedirect(o.ifindex)
	refused := err == nil && !ok
	if o.refused.Swap(refused) == refused {
		return false
	}
	if refused {
		log.Warn(o.role+" does not take frames redirected by XDP; captures that copy to it use the AF_XDP path",
			"iface", o.name, "fix", fmt.Sprintf("ethtool -K <peer of %s> gro on, or an XDP program on the peer", o.name))
	} else {
		log.Info(o.role+" takes frames redirected by XDP again", "iface", o.name)
	}
	return true
}

// checkPeerMTU reports whether the MTU of veth monitor o's peer changed
// since Apply read it: the peer's namespace sends us no link event.
func checkPeerMTU(o *output, log *slog.Logger) bool {
	l, err := netlink.LinkByIndex(o.ifindex)
	if err != nil {
		return false // gone: the link watch reports it
	}
	mtu := int32(peerMTUOf(l))
	was := o.peerMTU.Swap(mtu) // the next Apply stores the same
	if mtu == was {
		return false
	}
	log.Info("mtu of the monitor's veth peer changed", "iface", o.name, "from", was, "to", mtu)
	return true
}

// redirectWatch re-checks the monitors in the background; one goroutine.
type redirectWatch struct {
	notify func()
	log    *slog.Logger
	done   chan struct{}
	exited chan struct{}

	mu       sync.Mutex
	mons     []*output // the monitors of the last Apply
	redirect bool      // check XDP features: the fast path is on
}

func startRedirectWatch(notify func(), log *slog.Logger) *redirectWatch {
	rw := &redirectWatch{notify: notify, log: log, done: make(chan struct{}), exited: make(chan struct{})}
	go rw.run()
	return rw
}

// setMonitors replaces the monitors to watch (Apply calls it); redirect
// says whether their XDP features matter.
func (rw *redirectWatch) setMonitors(mons []*output, redirect bool) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	rw.mons, rw.redirect = mons, redirect
}

func (rw *redirectWatch) stop() {
	close(rw.done)
	<-rw.exited
}

func (rw *redirectWatch) run() {
	defer close(rw.exited)
	tick := time.NewTicker(redirectWatchInterval)
	defer tick.Stop()
	for {
		select {
		case <-rw.done:
			return
		case <-tick.C:
		}
		rw.mu.Lock()
		mons, redirect := rw.mons, rw.redirect
		rw.mu.Unlock()
		changed := false
		for _, o := range mons {
			if redirect {
				changed = checkRedirect(o, rw.log) || changed
			}
			changed = checkPeerMTU(o, rw.log) || changed
		}
		if changed {
			rw.notify()
		}
	}
}
