package broker

import (
	"fmt"
	"sort"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/taas-appliance/taas/xdpprog"
)

// unmatchedAction maps IfaceConfig.Unmatched to the XDP program's action.
func unmatchedAction(s string) (xdpprog.Action, error) {
	switch s {
	case "", "pass":
		return xdpprog.Pass, nil
	case "drop":
		return xdpprog.Drop, nil
	}
	return xdpprog.Pass, fmt.Errorf("must be pass or drop, got %q", s)
}

// xdpDrops are the XDP program's counters that count frames a flow may have
// wanted and that did not reach a socket; the others are not losses
// (unmatched frames are passed or dropped by design, per interface).
var xdpDrops = map[string]bool{"redirect_failed": true, "runt": true, "truncated_tag": true, "oversize": true}

// xdpUnits are the units of the XDP program's counters that do not count
// frames.
var xdpUnits = map[string]Unit{"seen_bytes": UnitBytes}

// addCounter adds v to the drops or the counters map of an IfaceStats.
func addCounter(drops, counters map[string]uint64, name string, v uint64, drop bool) {
	if drop {
		drops[name] += v
	} else {
		counters[name] += v
	}
}

// ifaceTotals are the counters of torn-down incarnations of an interface
// (a capture detached when its link went away, a monitor reopened): Stats
// adds them so that totals never go backwards.
type ifaceTotals struct {
	role            string
	drops, counters map[string]uint64
}

func (b *Broker) totals(name, role string) *ifaceTotals {
	t := b.retIface[name]
	if t == nil || t.role != role {
		t = &ifaceTotals{role: role, drops: map[string]uint64{}, counters: map[string]uint64{}}
		b.retIface[name] = t
	}
	return t
}

// captureCounters adds the live counters of c to drops and counters.
func captureCounters(c *capture, drops, counters map[string]uint64) {
	if xc, err := c.prog.Counters(); err == nil {
		xc.Each(func(name string, v uint64) { addCounter(drops, counters, "xdp_"+name, v, xdpDrops[name]) })
	}
	// Tunnel copies of the fast path whose tunnel the kernel could not
	// tell (a driver without XDP metadata), dropped.
	if v, err := c.prog.FastTunnel(xdpprog.UnknownTunnel); err == nil {
		addCounter(drops, counters, "xdp_tunnel_unknown", v.Failed, true)
	}
	for _, w := range c.workers {
		for i := range w.wctr {
			addCounter(drops, counters, workerCounterNames[i], w.wctr[i].Load(), workerCounterIsDrop[i])
		}
		// A closed socket still reports its own counters with ErrClosed.
		st, _ := w.sock.Stats()
		st.Each(func(name string, v uint64, drop, _ bool) { addCounter(drops, counters, name, v, drop) })
	}
}

// outputCounters adds the live counters of o to drops and counters.
func outputCounters(o *output, drops, counters map[string]uint64) {
	for i := range o.ctr {
		addCounter(drops, counters, outputCounterNames[i], o.ctr[i].Load(), outputCounterIsDrop[i])
	}
	if o.sock != nil {
		st, _ := o.sock.Stats()
		st.Each(func(name string, v uint64, drop, _ bool) { addCounter(drops, counters, name, v, drop) })
	}
}

// retireCapture keeps the counters of c, whose workers have stopped.
func (b *Broker) retireCapture(c *capture) {
	t := b.totals(c.name, "capture")
	captureCounters(c, t.drops, t.counters)
	b.harvestFast(c, nil, nil, nil)
	for _, w := range c.workers {
		addSet(&b.retired, w.ctr.Load())
	}
}

func (b *Broker) retireOutput(o *output) {
	t := b.totals(o.name, o.role)
	outputCounters(o, t.drops, t.counters)
}

// addSet adds src's counters into dst, growing dst as needed; dst is
// b.retired, guarded by b.mu.
func addSet(dst, src *counterSet) {
	dst.ensureTo(int32(len(src.flows)), int32(len(src.svcs)), int32(len(src.tuns)))
	dst.add(src)
}

// harvestKernelDrops moves what the kernel dropped on the way out of each
// monitor since the last harvest (its tx_dropped: a veth whose peer's MTU
// or ring cannot take the copy, in veth_xmit on the AF_XDP path and in
// veth_xdp_xmit on the fast path) into the kernel_dropped drops of the
// monitor's tap service, so that Stats does not count them delivered
// (issue 9). The kernel does not say whose copy it dropped: when the
// monitor serves several services of the plan, the drops show on the
// monitor's kernel_tx_dropped only. Apply calls it before it replaces the
// plan, Stats before it reads; b.mu is held.
func (b *Broker) harvestKernelDrops() {
	if b.plan == nil || len(b.monitors) == 0 {
		return
	}
	svcOf := map[string]int32{}
	shared := map[string]bool{}
	for _, s := range b.plan.Services {
		if _, ok := svcOf[s.Iface]; ok {
			shared[s.Iface] = true
		}
		svcOf[s.Iface] = b.svcSlots[s.ID]
	}
	for name, o := range b.monitors {
		l, err := netlink.LinkByIndex(o.ifindex)
		if err != nil || l.Attrs().Statistics == nil || l.Attrs().Name != name {
			continue // gone or renamed: the next Apply closes it
		}
		cur := l.Attrs().Statistics.TxDropped
		d := cur - o.kernelSeen
		if cur < o.kernelSeen {
			d = 0 // counters reset (a driver reload): start again
		}
		o.kernelSeen = cur
		slot, ok := svcOf[name]
		if d == 0 || !ok || shared[name] {
			continue
		}
		b.retired.svcAt(slot).drops[dropKernel].Add(d)
	}
}

// Stats returns a snapshot of every counter of the interfaces, services and
// flows of the last applied plan, summed over workers and CPUs and over
// earlier incarnations of each interface.
func (b *Broker) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := Stats{UnixNano: time.Now().UnixNano()}
	if b.plan == nil {
		return st
	}
	st.PlanVersion = b.plan.Version
	b.harvestKernelDrops()
	sets := []*counterSet{&b.retired, b.fastCounters()}
	for _, c := range b.captures {
		for _, w := range c.workers {
			sets = append(sets, w.ctr.Load())
		}
	}
	iface := func(name, role string, queues int, add func(d, c map[string]uint64)) IfaceStats {
		is := IfaceStats{Name: name, Role: role, Queues: queues, Drops: map[string]uint64{}, Counters: map[string]uint64{}}
		if ls, err := lookupLink(name, false); err == nil && ls.exists {
			is.LinkUp, is.MTU = ls.up, ls.mtu
			if ls.stats != nil {
				is.RxPackets, is.RxBytes = ls.stats.RxPackets, ls.stats.RxBytes
				is.TxPackets, is.TxBytes = ls.stats.TxPackets, ls.stats.TxBytes
				// The netdev's own drop counters: on veth, rx_dropped of a
				// capture holds frames its 256-slot ring could not take
				// (gotcha 11) and fast-path copies the kernel could not
				// forward (monitor down); tx_dropped of a monitor holds
				// redirected frames its peer refused (gotcha 10).
				is.Drops["kernel_rx_dropped"], is.Drops["kernel_tx_dropped"] = ls.stats.RxDropped, ls.stats.TxDropped
			}
		}
		if t := b.retIface[name]; t != nil && t.role == role {
			for k, v := range t.drops {
				is.Drops[k] += v
			}
			for k, v := range t.counters {
				is.Counters[k] += v
			}
		}
		if add != nil {
			add(is.Drops, is.Counters)
		}
		if role == "capture" {
			// The XDP program sees every frame a capture receives, whole,
			// whatever the driver: a veth with XDP counts its rx_bytes
			// after eth_type_trans, 14 bytes a frame short of the TX of
			// the monitor the copies leave (issue 13).
			is.RxPackets, is.RxBytes = is.Counters["xdp_seen"], is.Counters["xdp_seen_bytes"]
		}
		return is
	}
	seen := map[string]bool{}
	for _, name := range captureNames(b.plan) {
		var add func(d, c map[string]uint64)
		queues := 0
		c := b.captures[name]
		if c != nil {
			add, queues = func(d, cs map[string]uint64) { captureCounters(c, d, cs) }, len(c.workers)
		}
		is := iface(name, "capture", queues, add)
		if c != nil {
			is.Path, is.PathReason = PathAFXDP, c.fast.why
			if c.fast.on {
				is.Path = PathFast
			}
		}
		st.Interfaces = append(st.Interfaces, is)
	}
	for _, s := range b.plan.Services {
		if s.Iface == "" || seen["m/"+s.Iface] {
			continue
		}
		seen["m/"+s.Iface] = true
		var add func(d, c map[string]uint64)
		queues := 0
		if o := b.monitors[s.Iface]; o != nil {
			add, queues = func(d, cs map[string]uint64) { outputCounters(o, d, cs) }, 1
		}
		st.Interfaces = append(st.Interfaces, iface(s.Iface, roleMonitor, queues, add))
	}
	for _, name := range b.usedUplinks() {
		o := b.uplinks[name]
		st.Interfaces = append(st.Interfaces, iface(name, roleUplink, 1, func(d, cs map[string]uint64) { outputCounters(o, d, cs) }))
	}
	sort.Slice(st.Interfaces, func(i, j int) bool {
		a, c := st.Interfaces[i], st.Interfaces[j]
		return a.Role < c.Role || (a.Role == c.Role && a.Name < c.Name)
	})
	for _, s := range b.plan.Services {
		ss := ServiceStats{ID: s.ID, Drops: map[string]uint64{}}
		for d := range numServiceDrops {
			ss.Drops[d.String()] = 0
		}
		if slot, ok := b.svcSlots[s.ID]; ok {
			for _, set := range sets {
				if int(slot) >= len(set.svcs) {
					continue
				}
				c := &set.svcs[slot]
				ss.DeliveredPackets += c.pkts.Load()
				ss.DeliveredBytes += c.bytes.Load()
				for d := range numServiceDrops {
					ss.Drops[d.String()] += c.drops[d].Load()
				}
			}
		}
		// Copies the kernel dropped after the hand-off were counted
		// delivered when handed over; their size is not known, so
		// delivered_bytes still holds them. A copy is counted and dropped
		// at slightly different moments, so the difference may dip by the
		// copies in flight: the high-water mark keeps the counter from
		// going backwards (Prometheus would read a reset).
		if slot, ok := b.svcSlots[s.ID]; ok {
			d := ss.DeliveredPackets - min(ss.Drops[dropKernel.String()], ss.DeliveredPackets)
			d = max(d, b.delivered[slot])
			b.delivered[slot], ss.DeliveredPackets = d, d
		}
		st.Services = append(st.Services, ss)
	}
	for _, f := range b.plan.Flows {
		fs := FlowStats{ID: f.ID}
		if slot, ok := b.flowSlots[f.ID]; ok {
			for _, set := range sets {
				if int(slot) < len(set.flows) {
					fs.MatchedPackets += set.flows[slot].pkts.Load()
					fs.MatchedBytes += set.flows[slot].bytes.Load()
					fs.RejectedPackets += set.flows[slot].rejected.Load()
				}
			}
		}
		st.Flows = append(st.Flows, fs)
	}
	st.Mirrors = b.mirrorStats(b.plan, sets)
	return st
}
