package broker

// The outer headers of a tap mirror come from the kernel's own state (issue
// 10): the route to the remote IP gives the egress interface, the next hop
// and the source address; the neighbour table gives the next hop's MAC.
// Apply resolves every mirror's remote IP when it runs; the resolver
// goroutine (resolver) follows route, neighbour and link changes and calls
// notify when a resolution Apply used no longer holds, so the reconciler
// applies again and the headers follow reality without a restart.

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// resolution is what the kernel's tables say about reaching one remote IP.
// It is comparable: the resolver tells a change by ==.
type resolution struct {
	// uplink is the egress interface, ifindex its index; set whenever a
	// route exists, even when the resolution is not usable.
	uplink  string
	ifindex int
	src     netip.Addr // outer source: the route's preferred source
	nextHop netip.Addr // the gateway, or the remote IP when on link
	srcMAC  [6]byte    // the uplink's
	dstMAC  [6]byte    // the next hop's, from the neighbour table
	// mtu is the route's MTU, or the uplink's when the route has none: the
	// largest outer IP packet in bytes.
	mtu int
	// why is the reason the mirror cannot send, "" when usable;
	// unresolved says the next hop is known but not its MAC.
	why        string
	unresolved bool
}

func (r resolution) ok() bool { return r.why == "" }

// usableNeigh are the neighbour states whose link-layer address the kernel
// itself would send to. resolve takes a NOARP one only on a point-to-point
// uplink.
const usableNeigh = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE |
	netlink.NUD_PERMANENT | netlink.NUD_NOARP

// resolve asks the kernel how remote is reached. uplinks are the interfaces
// copies may leave through. nc holds the neighbour tables read so far by
// the caller's pass, so that many mirrors read each once. An unresolved
// next hop is the caller's to nudge (nudgeNeighbour).
func resolve(remote netip.Addr, uplinks []string, nc neighCache) resolution {
	rs, err := netlink.RouteGet(remote.AsSlice())
	if err != nil || len(rs) == 0 {
		if t, ok := routeErrType(err); ok {
			return resolution{why: notUnicast(remote, t)}
		}
		why := fmt.Sprintf("no route to %s", remote)
		if err != nil && !errors.Is(err, unix.ENETUNREACH) {
			why = fmt.Sprintf("no route to %s (%v)", remote, err)
		}
		return resolution{why: why + downUplinks(uplinks)}
	}
	rt := rs[0]
	if rt.Type != unix.RTN_UNICAST {
		// A broadcast (the uplink's subnet-directed one), multicast or
		// local address would have the kernel's neighbour code answer
		// with a group MAC or none: copies would flood the uplink's
		// segment (review of issue 10). The route's interface is not
		// named: an IPv6 blackhole leaves through lo.
		return resolution{why: notUnicast(remote, rt.Type)}
	}
	l, err := netlink.LinkByIndex(rt.LinkIndex)
	if err != nil {
		return resolution{why: fmt.Sprintf("route to %s: look up interface %d: %v", remote, rt.LinkIndex, err)}
	}
	a := l.Attrs()
	res := resolution{uplink: a.Name, ifindex: a.Index, mtu: a.MTU}
	if rt.MTU > 0 && rt.MTU < res.mtu {
		res.mtu = rt.MTU
	}
	if !slices.Contains(uplinks, a.Name) {
		res.why = fmt.Sprintf("route to %s leaves through %s, which is not an uplink (role = \"uplink\" in [[interfaces]])%s",
			remote, a.Name, downUplinks(uplinks))
		return res
	}
	switch {
	case a.Flags&net.FlagUp == 0:
		res.why = fmt.Sprintf("uplink %s is down", a.Name)
		return res
	case a.OperState == netlink.OperDown || a.OperState == netlink.OperLowerLayerDown:
		res.why = fmt.Sprintf("uplink %s is down (no carrier)", a.Name)
		return res
	}
	if len(a.HardwareAddr) != 6 {
		res.why = fmt.Sprintf("uplink %s has no Ethernet address", a.Name)
		return res
	}
	copy(res.srcMAC[:], a.HardwareAddr)
	if src, ok := addrOf(rt.Src, remote); ok {
		res.src = src
	} else {
		res.why = fmt.Sprintf("route to %s through %s gives no source address", remote, a.Name)
		return res
	}
	res.nextHop = remote
	if rt.Via != nil {
		res.why = fmt.Sprintf("route to %s has a next hop of another address family (%v)", remote, rt.Via)
		return res
	}
	if gw, ok := addrOf(rt.Gw, remote); ok {
		res.nextHop = gw
	}
	n, err := nc.lookup(res.ifindex, res.nextHop)
	p2p := a.Flags&net.FlagPointToPoint != 0
	switch {
	case err != nil:
		res.why = fmt.Sprintf("neighbour %s on %s: %v", res.nextHop, a.Name, err)
	case n == nil || n.State&usableNeigh == 0 || len(n.HardwareAddr) != 6:
		res.why = fmt.Sprintf("neighbour %s on %s is unresolved", res.nextHop, a.Name)
		res.unresolved = true
	case n.State&netlink.NUD_NOARP != 0 && !p2p:
		// The kernel makes a NOARP entry, with a broadcast or
		// multicast MAC or the uplink's own, for what it does not
		// resolve: on a point-to-point link the only one who hears it
		// is the peer, anywhere else the segment or nobody.
		res.why = fmt.Sprintf("neighbour %s on %s is NOARP (%s), not resolved: set a permanent one if it is right",
			res.nextHop, a.Name, n.HardwareAddr)
	case n.HardwareAddr[0]&1 != 0 && !p2p:
		res.why = fmt.Sprintf("neighbour %s on %s has the group MAC %s, which would flood the segment",
			res.nextHop, a.Name, n.HardwareAddr)
	default:
		copy(res.dstMAC[:], n.HardwareAddr)
	}
	return res
}

// routeTypes name the kernel's route types (RTN_*) in reasons, as ip
// route does.
var routeTypes = map[int]string{
	unix.RTN_UNSPEC: "unspec", unix.RTN_UNICAST: "unicast", unix.RTN_LOCAL: "local", unix.RTN_BROADCAST: "broadcast",
	unix.RTN_ANYCAST: "anycast", unix.RTN_MULTICAST: "multicast", unix.RTN_BLACKHOLE: "blackhole",
	unix.RTN_UNREACHABLE: "unreachable", unix.RTN_PROHIBIT: "prohibit", unix.RTN_THROW: "throw", unix.RTN_NAT: "nat",
}

// notUnicast is the reason a mirror cannot use a route of type t.
func notUnicast(remote netip.Addr, t int) string {
	name, ok := routeTypes[t]
	if !ok {
		name = fmt.Sprintf("of type %d", t)
	}
	return fmt.Sprintf("route to %s is %s, not unicast", remote, name)
}

// routeErrType is the route type that made RTM_GETROUTE fail with err:
// the kernel answers a lookup that ends on a blackhole, unreachable or
// prohibit route with that route's error (fib_props) instead of the route.
func routeErrType(err error) (int, bool) {
	switch {
	case errors.Is(err, unix.EINVAL):
		return unix.RTN_BLACKHOLE, true
	case errors.Is(err, unix.EHOSTUNREACH):
		return unix.RTN_UNREACHABLE, true
	case errors.Is(err, unix.EACCES):
		return unix.RTN_PROHIBIT, true
	}
	return 0, false
}

// addrOf converts a netlink address to remote's family; false when ip is
// empty or of the other family.
func addrOf(ip net.IP, remote netip.Addr) (netip.Addr, bool) {
	if len(ip) == 0 {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, false
	}
	a = a.Unmap()
	if a.Is4() != remote.Is4() || a.IsUnspecified() {
		return netip.Addr{}, false
	}
	return a, true
}

// downUplinks says which uplinks are down, for a missing route: the kernel
// removes the routes through a link that is set down.
func downUplinks(uplinks []string) string {
	var down []string
	for _, u := range uplinks {
		ls, err := lookupLink(u, false)
		if err == nil && ls.exists && !ls.up {
			down = append(down, u)
		}
	}
	if len(down) == 0 {
		return ""
	}
	return fmt.Sprintf("; uplink %s is down", strings.Join(down, ", "))
}

// neighCache is the neighbour tables one pass of resolutions has read, by
// ifindex and family.
type neighCache map[[2]int][]netlink.Neigh

// lookup returns the kernel's neighbour entry of ip on ifindex, nil when
// there is none.
func (nc neighCache) lookup(ifindex int, ip netip.Addr) (*netlink.Neigh, error) {
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	key := [2]int{ifindex, family}
	ns, ok := nc[key]
	if !ok {
		var err error
		if ns, err = netlink.NeighList(ifindex, family); err != nil {
			return nil, err
		}
		nc[key] = ns
	}
	for i, n := range ns {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip {
			return &ns[i], nil
		}
	}
	return nil, nil
}

// nudgeNeighbour asks the kernel to resolve ip on ifindex, or to confirm a
// stale entry: a neighbour set with NTF_USE runs the kernel's own
// neighbour state machine (as if it had a packet to send) without a packet.
func nudgeNeighbour(ifindex int, ip netip.Addr) error {
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	err := netlink.NeighSet(&netlink.Neigh{LinkIndex: ifindex, Family: family, IP: ip.AsSlice(), Flags: netlink.NTF_USE})
	if err != nil {
		return fmt.Errorf("resolve neighbour %s: %w", ip, err)
	}
	return nil
}

// resolver follows the kernel's routes, neighbours and links for the
// remote IPs of the current plan's mirrors, and calls notify when one no
// longer resolves as Apply saw it. One goroutine reads the route and
// neighbour subscriptions and a ticker; link changes of the uplinks come
// through linkWatch. A subscription that ends (a failed receive) is made
// again with backoff (rewatch), and then everything checked; the ticker
// goes on meanwhile. Every tick it also nudges the next hops that are
// unresolved or not confirmed, so that a neighbour that fails (the remote
// is unreachable) is tried again, and one that changes its MAC is noticed
// once the kernel's probe sees the change.
type resolver struct {
	notify func()
	// onTick, when set, runs on every tick (the broker resyncs its XDP
	// programs' clocks); it must not take the broker's mutex, which
	// stop's caller holds.
	onTick func()
	log    *slog.Logger
	tick   time.Duration
	done   chan struct{}
	exited chan struct{}

	mu sync.Mutex
	// want holds the resolution Apply used for every remote IP of the plan.
	want    map[netip.Addr]resolution
	uplinks []string
}

// resolveTick is how often the resolver checks its remote IPs and nudges
// their next hops when no event came: the kernel's own probes take about
// a second.
const resolveTick = time.Second

func startResolver(notify, onTick func(), log *slog.Logger) (*resolver, error) {
	return startResolverWith(notify, onTick, log, resolveTick, subscribeRouting)
}

// routingSubscribe starts subscriptions to route and neighbour messages
// that closing done ends.
type routingSubscribe func(done <-chan struct{}, onErr func(error)) (<-chan netlink.RouteUpdate, <-chan netlink.NeighUpdate, error)

func subscribeRouting(done <-chan struct{}, onErr func(error)) (<-chan netlink.RouteUpdate, <-chan netlink.NeighUpdate, error) {
	routes := make(chan netlink.RouteUpdate, 256)
	neighs := make(chan netlink.NeighUpdate, 256)
	err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{
		ErrorCallback: onErr, ReceiveBufferSize: watchRcvBuf, ReceiveBufferForceSize: true})
	if err != nil {
		return nil, nil, fmt.Errorf("subscribe to route updates: %w", err)
	}
	err = netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{
		ErrorCallback: onErr, ReceiveBufferSize: watchRcvBuf, ReceiveBufferForceSize: true})
	if err != nil {
		// The caller closes done, which ends the route subscription:
		// drain it meanwhile.
		go func() {
			for range routes {
			}
		}()
		return nil, nil, fmt.Errorf("subscribe to neighbour updates: %w", err)
	}
	return routes, neighs, nil
}

// startResolverWith is startResolver with the tick and the subscription to
// use, which tests replace.
func startResolverWith(notify, onTick func(), log *slog.Logger, tick time.Duration, subscribe routingSubscribe) (*resolver, error) {
	r := &resolver{notify: notify, onTick: onTick, log: log, tick: tick, done: make(chan struct{}), exited: make(chan struct{}),
		want: map[netip.Addr]resolution{}}
	var (
		routes <-chan netlink.RouteUpdate
		neighs <-chan netlink.NeighUpdate
	)
	w := newRewatch("route watch", log, notify, func(done <-chan struct{}, onErr func(error)) error {
		var err error
		routes, neighs, err = subscribe(done, onErr)
		return err
	})
	if err := w.subscribe(); err != nil {
		return nil, err
	}
	go func() {
		defer close(r.exited)
		r.run(w, &routes, &neighs)
	}()
	return r, nil
}

// run reads the subscriptions w keeps in *routes and *neighs, and the
// ticker, until stop.
func (r *resolver) run(w *rewatch, routes *<-chan netlink.RouteUpdate, neighs *<-chan netlink.NeighUpdate) {
	t := time.NewTicker(r.tick)
	defer t.Stop()
	// lost ends a subscription whose channel closed (both channels end
	// together) and schedules the next. The tick goes on meanwhile.
	lost := func() {
		w.lost()
		drain(routes, neighs)
	}
	for {
		nudge, dirty := false, false
		select {
		case u, ok := <-*routes:
			if !ok {
				lost()
				continue
			}
			dirty = r.routeMatters(u)
		case u, ok := <-*neighs:
			if !ok {
				lost()
				continue
			}
			dirty = r.neighMatters(u)
		case <-w.retry:
			// Messages were lost meanwhile: check everything, and have
			// the reconciler apply again.
			if w.subscribe() == nil {
				r.notify()
				nudge = true
			}
		case <-t.C:
			nudge = true
			if r.onTick != nil {
				r.onTick()
			}
		case <-r.done:
			w.end()
			drain(routes, neighs)
			return
		}
		// One check covers a burst of messages.
		for drained := false; !drained; {
			select {
			case u, ok := <-*routes:
				if !ok {
					lost()
					drained = true
				} else {
					dirty = dirty || r.routeMatters(u)
				}
			case u, ok := <-*neighs:
				if !ok {
					lost()
					drained = true
				} else {
					dirty = dirty || r.neighMatters(u)
				}
			default:
				drained = true
			}
		}
		if nudge || dirty {
			r.check(nudge)
		}
	}
}

// drain reads what the ended subscriptions still send until their
// channels close, and forgets them: their reader closes them once its
// socket, closed by the end of the subscription, fails to receive.
func drain(routes *<-chan netlink.RouteUpdate, neighs *<-chan netlink.NeighUpdate) {
	for rs, ns := *routes, *neighs; rs != nil || ns != nil; {
		select {
		case _, ok := <-rs:
			if !ok {
				rs = nil
			}
		case _, ok := <-ns:
			if !ok {
				ns = nil
			}
		}
	}
	*routes, *neighs = nil, nil
}

// routeMatters says whether a route message may change how a wanted
// remote IP resolves: its prefix holds one. Others (a router's full
// table churning) wait for the tick, which compares everything anyway.
func (r *resolver) routeMatters(u netlink.RouteUpdate) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for ip := range r.want {
		if u.Dst == nil || u.Dst.Contains(ip.AsSlice()) {
			return true
		}
	}
	return false
}

// neighMatters says whether a neighbour message is about a wanted next hop.
func (r *resolver) neighMatters(u netlink.NeighUpdate) bool {
	a, ok := netip.AddrFromSlice(u.IP)
	if !ok {
		return false // a bridge's FDB entry
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, res := range r.want {
		if res.ifindex == u.LinkIndex && res.nextHop == a.Unmap() {
			return true
		}
	}
	return false
}

// check resolves every wanted remote IP again and notifies once when any
// differs from what Apply used.
func (r *resolver) check(nudge bool) {
	r.mu.Lock()
	want := make(map[netip.Addr]resolution, len(r.want))
	for ip, res := range r.want {
		want[ip] = res
	}
	uplinks := r.uplinks
	r.mu.Unlock()
	changed := false
	nc := neighCache{}
	for ip, old := range want {
		now := resolve(ip, uplinks, nc)
		if now != old {
			changed = true
		}
		if nudge && (now.ok() || now.unresolved) {
			// Try an unresolved next hop again (it failed: the remote
			// was unreachable), and keep a resolved one confirmed: nobody
			// else sends to it from this host, so the kernel would let it
			// go stale and never notice a new MAC. NTF_USE on a reachable
			// entry only marks it used.
			if err := nudgeNeighbour(now.ifindex, now.nextHop); err != nil {
				// Every second: Apply warns once per plan instead.
				r.log.Debug("resolve neighbour", "remote_ip", ip, "err", err)
			}
		}
	}
	if changed {
		r.notify()
	}
}

// set replaces the remote IPs to follow and the resolutions Apply used.
func (r *resolver) set(want map[netip.Addr]resolution, uplinks []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.want = want
	r.uplinks = uplinks
}

// stop ends the subscriptions and waits for the goroutine.
func (r *resolver) stop() {
	close(r.done)
	<-r.exited
}
