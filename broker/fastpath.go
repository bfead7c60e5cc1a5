package broker

// The fast path: the capture's XDP program decides every frame itself and
// sends the copies with bpf_redirect_map to the monitors' DEVMAP entries,
// so no frame crosses into userspace. Copy-mode AF_XDP TX on veth builds an
// skb per copy and tops out near 1 Mpps; an in-kernel redirect measured
// 2.6 Mpps on the same box (issues 3 and 4, team/perf.md).
//
// The program cannot run Go: Apply tabulates the capture's table (table.go,
// the one classifier) for every (VLAN class, source port, destination port)
// into an xdpprog.FastTable, by classifying one representative frame per
// combination. A flow with a filter (issue 11) cannot be decided from a
// representative frame: its decision lists the flow, its service and its
// filter, the program runs the filter on the frame, and the table holds
// copies for every service mask the decision's filters can leave. The
// monitors' DEVMAP entries cut copies to their services' snaplen.
//
// A tap mirror's tunnel is an output too: its uplink's DEVMAP entry runs
// xdpprog's tunnel program (SetTunnel), which encapsulates the copy as the
// workers do, byte for byte, also when a frame has several tunnel copies
// through one uplink (a mirror with IN and OUT ids, two mirrored ports
// that talk to each other). What does not fit the program's limits (among
// them: more than xdpprog.MaxTunnelCopies tunnel copies of one frame,
// more than xdpprog.MaxFastFilters filters, a filter the translator or the
// verifier refuses, two services of one monitor with different snaplens,
// a monitor with a snaplen that is also an uplink), or needs a monitor or
// uplink that cannot take redirected frames (afxdp-notes gotcha 10) or is
// smaller than the capture's frames (snaplen or not: outputRefusal), stays
// on the AF_XDP path for that capture interface alone; the reason is
// logged and shown in Stats (IfaceStats.Path, PathReason).

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/taas-appliance/taas/xdpprog"
)

// Paths a capture interface's frames take, as IfaceStats.Path, metrics
// (taas_interface_path), logs and the README spell them: in prose "the
// fast path" and "the AF_XDP path" (issue 13: one name each).
const (
	PathFast  = "fast"
	PathAFXDP = "afxdp"
)

// maxFastCombos bounds the classifier runs of one compile: VLAN classes x
// (4 x ports + 1). Beyond it the table could not fit MaxFastDecisions in
// any realistic plan anyway, and Apply must stay quick.
const maxFastCombos = 1 << 20

// maxDecisionFilters bounds the filters of one decision: the table holds
// copies for the mask of every combination of them accepting a frame.
const maxDecisionFilters = xdpprog.MaxDecisionFlows

// kslot is a flow's or service's counter slot in one capture's program,
// with the kernel counter's value when the slot was given to it: kernel
// counters are never reset, so a reused slot counts from its base.
type kslot[C any] struct {
	k    uint16
	base C
}

// kslots hands out kernel counter slots for the broker's stable slots.
type kslots[C any] struct {
	of   map[int32]kslot[C]
	free []uint16
	next uint16
	// limit is the number of kernel slots; 0 means xdpprog.MaxFastSlots.
	limit uint16
}

// get returns the kernel slot of global slot s, giving it one (its base
// read by read) the first time; it fails when the program has no room.
func (ks *kslots[C]) get(s int32, read func(k uint16) (C, error)) (uint16, error) {
	if ks.of == nil {
		ks.of = map[int32]kslot[C]{}
	}
	if e, ok := ks.of[s]; ok {
		return e.k, nil
	}
	var k uint16
	switch {
	case len(ks.free) > 0:
		k, ks.free = ks.free[len(ks.free)-1], ks.free[:len(ks.free)-1]
	case ks.next < ks.max():
		k = ks.next
		ks.next++
	default:
		return 0, fmt.Errorf("more than %d counter slots", ks.max())
	}
	base, err := read(k)
	if err != nil {
		ks.free = append(ks.free, k)
		return 0, err
	}
	ks.of[s] = kslot[C]{k: k, base: base}
	return k, nil
}

func (ks *kslots[C]) max() uint16 {
	if ks.limit == 0 {
		return xdpprog.MaxFastSlots
	}
	return ks.limit
}

// fastCapture is the fast-path state of one capture, guarded by Broker.mu.
// Services and the tap mirrors' tunnels share the kernel's service counter
// slots: a tunnel's key in svcs is -1 - its tunnel slot. tuns are the
// kernel's tunnel slots (xdpprog.SetTunnel), by tunnel slot.
type fastCapture struct {
	on    bool   // the program decides frames
	why   string // why not, when the config asked for the fast path
	flows kslots[xdpprog.FastFlowCounter]
	svcs  kslots[xdpprog.FastServiceCounter]
	tuns  kslots[xdpprog.FastTunnelCounter]
}

// noFlowSlot is what compileFast's flowK returns for a tunnel's pseudo
// flow, which has no flow counter.
const noFlowSlot = 0xffff

// tunSvcKey is the key of tunnel slot s in fastCapture.svcs.
func tunSvcKey(s int32) int32 { return -1 - s }

// fastOutput is what compileFast needs of one service's monitor.
type fastOutput struct {
	ifindex int
	usable  bool // the monitor exists and is up
}

// compileFast tabulates t into a FastTable (see xdpprog.FastTable for how
// the program reads it). flowK and svcK give the kernel counter slots of a
// local flow and a local service of t; outputOf the monitor of a local
// service, whose index is also its bit in the service masks.
func compileFast(t *table, vlans []*xdpprog.VLANSet, flowK func(i int) uint16, svcK func(s int32) uint16,
	outputOf func(s int32) fastOutput) (*xdpprog.FastTable, error) {
	if len(t.services) > xdpprog.MaxFastServices {
		return nil, fmt.Errorf("%d services, at most %d", len(t.services), xdpprog.MaxFastServices)
	}
	ft := &xdpprog.FastTable{Ports: map[[6]byte]uint32{}, Decisions: map[xdpprog.FastKey]xdpprog.Decision{},
		Copies: map[uint64]xdpprog.Copies{}}

	// VLAN classes: VIDs that every flow wants or refuses alike share one,
	// with the smallest such VID as its representative.
	var reps []uint16
	classOf := map[string]uint32{}
	sig := make([]byte, (len(vlans)+7)/8)
	for vid := range uint16(4096) {
		clear(sig)
		for i, v := range vlans {
			if v == nil || v.Has(vid) {
				sig[i/8] |= 1 << (i % 8)
			}
		}
		c, ok := classOf[string(sig)]
		if !ok {
			c = uint32(len(reps))
			classOf[string(sig)] = c
			reps = append(reps, vid)
		}
		ft.VIDClass[vid] = c
	}

	// Ports, and a unicast MAC that is no port's, for "anyone else".
	macs := make([]uint64, 0, len(t.ports))
	for m := range t.ports {
		macs = append(macs, m)
	}
	slices.Sort(macs)
	if len(macs) > xdpprog.MaxFastPorts {
		return nil, fmt.Errorf("%d source ports, at most %d", len(macs), xdpprog.MaxFastPorts)
	}
	if n := len(reps) * (4*len(macs) + 1); n > maxFastCombos {
		return nil, fmt.Errorf("%d combinations of VLAN class, port and side to tabulate, at most %d", n, maxFastCombos)
	}
	for i, m := range macs {
		ft.Ports[unpackMAC(m)] = uint32(i + 1)
	}
	other := uint64(0x020000000000)
	for t.ports[other] != nil {
		other++
	}
	const bcast = uint64(0xffffffffffff)

	for _, f := range t.filters {
		ft.Filters = append(ft.Filters, f.Program())
	}

	var cls classifier
	cls.resize(t)
	ctr := (&counterSet{}).grown(t.flowSlots, t.svcSlots) // scratch: classify counts
	// decide classifies one representative frame of key; sides collects the
	// source-side (0) and destination-side (1) masks of the class: every
	// mask the decision can result in, its filtered flows' services added
	// or not.
	var sides [2]map[uint64]bool
	var usedFilters []int32
	decide := func(key xdpprog.FastKey, src, dst uint64, side int) error {
		h := frameHeader{src: src, dst: dst, vid: reps[key.VIDClass]}
		hits := cls.classify(t, &h, nil, ctr) // the unfiltered flows' services
		var d xdpprog.Decision
		// used are the decision's filters, and adds the services each
		// adds to the mask when it accepts the frame.
		used, adds := usedFilters[:0], map[int32]uint64{}
		for _, s := range hits {
			d.Services |= 1 << s
		}
		for i := 0; i < t.nFlows; i++ {
			if cls.flowStamp[i] != cls.gen {
				continue
			}
			k := flowK(i)
			if k == noFlowSlot {
				continue // a tunnel: no counter, never a filter
			}
			tf := t.flows[i]
			d.Flows = append(d.Flows, k)
			d.FlowServices = append(d.FlowServices, uint8(tf.svc))
			d.FlowFilters = append(d.FlowFilters, int(tf.filter))
			if tf.filter >= 0 {
				if _, ok := adds[tf.filter]; !ok {
					used = append(used, tf.filter)
				}
				adds[tf.filter] |= 1 << tf.svc
			}
		}
		if len(used) == 0 {
			d.FlowServices, d.FlowFilters = nil, nil
			if len(hits) == 0 {
				return nil
			}
		}
		if len(used) > maxDecisionFilters {
			return fmt.Errorf("a frame needs %d filters on one side, at most %d", len(used), maxDecisionFilters)
		}
		if len(ft.Decisions) == xdpprog.MaxFastDecisions {
			return fmt.Errorf("more than %d decisions", xdpprog.MaxFastDecisions)
		}
		ft.Decisions[key] = d
		// The masks of every combination of the filters accepting; 0
		// (every flow rejects the frame) needs no copies.
		for sub := range 1 << len(used) {
			m := d.Services
			for j, fi := range used {
				if sub&(1<<j) != 0 {
					m |= adds[fi]
				}
			}
			if m == 0 {
				continue
			}
			ft.Copies[m] = xdpprog.Copies{}
			if side >= 0 {
				sides[side][m] = true
			}
		}
		return nil
	}
	for class := range reps {
		c := uint32(class)
		sides = [2]map[uint64]bool{{}, {}}
		if err := decide(xdpprog.FastKey{VIDClass: c, Dst: xdpprog.MulticastPort}, other, bcast, -1); err != nil {
			return nil, err
		}
		for i, a := range macs {
			id := uint32(i + 1)
			for _, k := range []struct {
				key      xdpprog.FastKey
				src, dst uint64
				side     int
			}{
				{xdpprog.FastKey{VIDClass: c, Src: id}, a, other, 0},
				{xdpprog.FastKey{VIDClass: c, Dst: id}, other, a, 1},
				{xdpprog.FastKey{VIDClass: c, Src: id, Dst: id}, a, a, -1},
				{xdpprog.FastKey{VIDClass: c, Src: id, Dst: xdpprog.MulticastPort}, a, bcast, -1},
			} {
				if err := decide(k.key, k.src, k.dst, k.side); err != nil {
					return nil, err
				}
			}
		}
		// Filtered flows make many masks per side (every subset of their
		// services), whose unions mostly coincide: bound the work, and let
		// the count of distinct masks below say whether they fit.
		if n := len(sides[0]) * len(sides[1]); n > maxFastCombos {
			return nil, fmt.Errorf("%d unions of service sets in one VLAN class", n)
		}
		for a := range sides[0] {
			for b := range sides[1] {
				ft.Copies[a|b] = xdpprog.Copies{}
			}
			if len(ft.Copies) > xdpprog.MaxFastCopies {
				return nil, fmt.Errorf("more than %d service sets", xdpprog.MaxFastCopies)
			}
		}
	}
	if len(ft.Copies) > xdpprog.MaxFastCopies {
		return nil, fmt.Errorf("%d service sets, at most %d", len(ft.Copies), xdpprog.MaxFastCopies)
	}

	// The copies of each service set: one per service, in service order.
	for mask := range ft.Copies {
		var cp xdpprog.Copies
		for s := int32(0); s < int32(len(t.services)); s++ {
			if mask&(1<<s) == 0 {
				continue
			}
			o := outputOf(s)
			ds := xdpprog.DecisionService{Slot: svcK(s), Down: !o.usable}
			if t.services[s].tun == nil {
				// No frame is that long: a larger snaplen cuts nothing either.
				ds.Snaplen = uint16(min(t.services[s].snap, math.MaxUint16))
			}
			cp.Services = append(cp.Services, ds)
			if o.usable {
				cp.Outputs = append(cp.Outputs, o.ifindex)
			}
		}
		ft.Copies[mask] = cp
	}

	// Snaplens by monitor: the DEVMAP entry of a monitor truncates every
	// copy it sends, so the services of a monitor must agree. A tunnel
	// truncates in its own program (TunnelSpec.Snaplen).
	snapOf := map[int]int32{} // ifindex -> the service that set its snaplen
	for s := int32(0); s < int32(len(t.services)); s++ {
		ts := &t.services[s]
		o := outputOf(s)
		if ts.tun != nil || !o.usable {
			continue
		}
		if prev, ok := snapOf[o.ifindex]; ok {
			if t.services[prev].snap != ts.snap {
				return nil, fmt.Errorf("monitor %s serves tap services with snaplens %d and %d (0: whole frames)",
					t.outputs[ts.out].name, t.services[prev].snap, ts.snap)
			}
			continue
		}
		snapOf[o.ifindex] = s
		if ts.snap > 0 {
			if ft.Snaplens == nil {
				ft.Snaplens = map[int]uint32{}
			}
			ft.Snaplens[o.ifindex] = ts.snap
		}
	}
	// An interface has one DEVMAP egress program for all its copies (in
	// native mode the kernel runs the first queued frame's entry's program
	// over every frame a CPU queued for the device): a monitor that cuts
	// copies cannot also be the uplink that encapsulates a tunnel's.
	for _, ts := range t.services {
		if ts.tun == nil || ts.tun.out == nil || ft.Snaplens[ts.tun.out.ifindex] == 0 {
			continue
		}
		for _, ms := range t.services {
			if ms.tun == nil && ms.out >= 0 && t.outputs[ms.out].ifindex == ts.tun.out.ifindex {
				return nil, fmt.Errorf("monitor %s, whose tap services cut copies to a snaplen, is also a tap mirror's uplink", t.outputs[ms.out].name)
			}
		}
	}
	return ft, nil
}

func unpackMAC(m uint64) (a [6]byte) {
	for i := range a {
		a[i] = byte(m >> (40 - 8*i))
	}
	return a
}

// applyFast puts capture c on the fast path for table t (flows are t's, in
// order) when it can, else on the AF_XDP path, logging why when that
// changes. t is already stored and the early filter set, so going back to
// the sockets is atomic too.
func (b *Broker) applyFast(c *capture, t *table, flows []compiledFlow) {
	why := b.fastRefusal(c, t, flows)
	if why == "" {
		return
	}
	if b.cfg.FastPath && (c.fast.on || c.fast.why != why) {
		b.log.Warn("capture on the AF_XDP path", "iface", c.name, "path", PathAFXDP, "reason", why)
	}
	if err := c.prog.SetFast(nil); err != nil {
		// The program keeps deciding with the last table it had; the next
		// Apply tries again.
		b.log.Error("leave the fast path", "iface", c.name, "err", err)
		c.fast.why = why
		return
	}
	c.fast.on, c.fast.why = false, why
	b.harvestFast(c, nil, nil, nil)
}

// outputRefusal returns "", or why the outputs of table t keep a capture
// named capName, which brings frames of up to frame bytes, off the fast
// path. The kernel checks a redirected frame's size against its output's
// MTU (xdp_ok_fwd_dev) before the DEVMAP entry's program runs, so neither
// a monitor's snaplen (xdp_snap) nor a tunnel's (xdp_tunnel) makes a
// frame fit: the workers cut copies before they send them.
func outputRefusal(capName string, frame int, t *table) string {
	for i, o := range t.outputs {
		if o.refused.Load() {
			return fmt.Sprintf("%s %s does not take frames redirected by XDP (a veth needs GRO or XDP on its peer: ethtool -K <peer of %s> gro on)", o.role, o.name, o.name)
		}
		// The kernel drops a redirected frame larger than the monitor
		// carries after the program counted it sent, silently for a
		// broadcast to several monitors; the workers count it instead.
		m := t.outMax[i]
		if m == 0 || int(m) >= frame {
			continue
		}
		if o.role == roleUplink {
			return fmt.Sprintf("uplink %s carries frames up to %d bytes, capture %s brings up to %d: the AF_XDP path truncates the tap mirrors' copies that do not fit",
				o.name, m, capName, frame)
		}
		return fmt.Sprintf("monitor %s carries frames up to %d bytes, capture %s brings up to %d, and the kernel checks a copy's size before a snaplen cuts it: the AF_XDP path cuts the copies, and counts those that still do not fit (monitor_mtu)",
			o.name, m, capName, frame)
	}
	return ""
}

// fastRefusal loads t into c's program and returns "", or returns why c
// stays on the AF_XDP path.
func (b *Broker) fastRefusal(c *capture, t *table, flows []compiledFlow) string {
	if !b.cfg.FastPath {
		return "fast path off in the configuration"
	}
	if why := outputRefusal(c.name, c.frame, t); why != "" {
		return why
	}
	// Tunnels first: a table may send only to tunnels the program holds.
	tunOut := map[int32]fastOutput{}
	for s, ts := range t.services {
		tn := ts.tun
		if tn == nil {
			continue
		}
		if tn.hdr == nil || tn.out == nil {
			tunOut[int32(s)] = fastOutput{} // counted down in the kernel
			continue
		}
		c.fast.tuns.limit = xdpprog.MaxTunnels
		_, had := c.fast.tuns.of[tn.slot]
		k, err := c.fast.tuns.get(tn.slot, func(k uint16) (xdpprog.FastTunnelCounter, error) { return c.prog.FastTunnel(int(k)) })
		if err == nil {
			err = c.prog.SetTunnel(int(k), tn.hdr, tn.out.ifindex)
		}
		if err == nil && !had {
			// The kernel numbers on from the workers: a collector sees
			// no jump when the capture changes path (copies the workers
			// still send from their rings may repeat a few numbers).
			err = c.prog.SetTunnelSeq(int(k), tn.seq.Load()+1)
		}
		if err != nil {
			return fmt.Sprintf("tap mirror tunnel does not fit the fast path: %v", err)
		}
		tunOut[int32(s)] = fastOutput{ifindex: xdpprog.TunnelOutput(int(k)), usable: tn.out.up.Load()}
	}
	var kerr error
	flowK := func(i int) uint16 {
		if flows[i].slot < 0 {
			return noFlowSlot // a tunnel counts on its own
		}
		k, err := c.fast.flows.get(flows[i].slot, c.prog.FastFlow)
		if err != nil && kerr == nil {
			kerr = err
		}
		return k
	}
	svcK := func(s int32) uint16 {
		key := t.services[s].slot
		if t.services[s].tun != nil {
			key = tunSvcKey(key)
		}
		k, err := c.fast.svcs.get(key, c.prog.FastService)
		if err != nil && kerr == nil {
			kerr = err
		}
		return k
	}
	outputOf := func(s int32) fastOutput {
		ts := t.services[s]
		if ts.tun != nil {
			return tunOut[s]
		}
		if ts.out < 0 {
			return fastOutput{}
		}
		o := t.outputs[ts.out]
		return fastOutput{ifindex: o.ifindex, usable: o.up.Load()}
	}
	vlans := make([]*xdpprog.VLANSet, len(flows))
	for i, f := range flows {
		vlans[i] = f.vlans
	}
	ft, err := compileFast(t, vlans, flowK, svcK, outputOf)
	if err == nil {
		err = kerr
	}
	if err == nil {
		err = c.prog.SetFast(ft)
	}
	if err != nil {
		return b.tableRefusal(err, t, flows)
	}
	if !c.fast.on {
		b.log.Info("capture on the fast path", "iface", c.name, "path", PathFast, "decisions", len(ft.Decisions))
	}
	c.fast.on, c.fast.why = true, ""
	keepF, keepS, keepT := map[int32]bool{}, map[int32]bool{}, map[int32]bool{}
	for _, f := range flows {
		keepF[f.slot] = true
	}
	for _, s := range t.services {
		if s.tun != nil {
			keepS[tunSvcKey(s.slot)] = true
			keepT[s.slot] = s.tun.hdr != nil && s.tun.out != nil
			continue
		}
		keepS[s.slot] = true
	}
	b.harvestFast(c, keepF, keepS, keepT)
	return ""
}

// tableRefusal is why c stays on the AF_XDP path when the fast path
// refused table t (flows are t's) with err: a filter's refusal names its
// expression and the tap flows that have it, not its index in the table.
func (b *Broker) tableRefusal(err error, t *table, flows []compiledFlow) string {
	var fe *xdpprog.FilterError
	if !errors.As(err, &fe) || fe.Filter < 0 || fe.Filter >= len(t.filters) {
		return fmt.Sprintf("fast table does not fit: %v", err)
	}
	f := t.filters[fe.Filter]
	idOf := make(map[int32]string, len(b.flowSlots))
	for id, s := range b.flowSlots {
		idOf[s] = id
	}
	var ids []string
	for _, cf := range flows {
		if cf.filter == f && cf.slot >= 0 {
			ids = append(ids, idOf[cf.slot])
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	noun := "tap flow"
	if len(ids) > 1 {
		noun = "tap flows"
	}
	return fmt.Sprintf("filter %q of %s %s does not fit the fast path (the AF_XDP path runs it): %v",
		f.Expr(), noun, strings.Join(ids, ", "), fe.Err)
}

// harvestFast moves the kernel counts of c's slots not in keepFlows /
// keepSvcs / keepTuns (nil: all) into b.retired and frees their kernel
// slots, emptying the program's tunnels that go. A frame decided before
// the last table swap may still bump such a slot while this runs; it is
// counted for whichever flow gets the slot next, at most a handful per
// swap.
func (b *Broker) harvestFast(c *capture, keepFlows, keepSvcs, keepTuns map[int32]bool) {
	for s, e := range c.fast.flows.of {
		if keepFlows[s] {
			continue
		}
		if v, err := c.prog.FastFlow(e.k); err == nil {
			addFastFlow(b.retired.flowAt(s), v, e.base)
		}
		delete(c.fast.flows.of, s)
		c.fast.flows.free = append(c.fast.flows.free, e.k)
	}
	for s, e := range c.fast.svcs.of {
		if keepSvcs[s] {
			continue
		}
		if v, err := c.prog.FastService(e.k); err == nil {
			b.retired.addFastService(s, v, e.base)
		}
		delete(c.fast.svcs.of, s)
		c.fast.svcs.free = append(c.fast.svcs.free, e.k)
	}
	for s, e := range c.fast.tuns.of {
		if keepTuns[s] {
			continue
		}
		if v, err := c.prog.FastTunnel(int(e.k)); err == nil {
			addFastTunnel(b.retired.tunAt(s), v, e.base)
		}
		// The workers number on from the kernel, never backwards.
		if next, err := c.prog.TunnelSeq(int(e.k)); err != nil {
			b.log.Warn("read tunnel sequence number", "iface", c.name, "slot", e.k, "err", err)
		} else if int(s) < len(b.tunSeqs) {
			seq := b.tunSeqs[s]
			for cur := seq.Load(); int32(next-1-cur) > 0 && !seq.CompareAndSwap(cur, next-1); cur = seq.Load() {
			}
		}
		// The live table no longer sends to it (SetFast came first).
		if err := c.prog.ClearTunnel(int(e.k)); err != nil {
			b.log.Error("clear tunnel", "iface", c.name, "slot", e.k, "err", err)
			continue // keep the slot: the next harvest tries again
		}
		delete(c.fast.tuns.of, s)
		c.fast.tuns.free = append(c.fast.tuns.free, e.k)
	}
}

// addFastService adds the kernel service counter of key (a service slot,
// or a tunnel's tunSvcKey), less its base, to cs.
func (cs *counterSet) addFastService(key int32, v, base xdpprog.FastServiceCounter) {
	if key < 0 {
		// A tunnel: what it sent is in its tunnel counter.
		tc := cs.tunAt(tunSvcKey(key))
		tc.drops[tdMirrorDown].Add(v.Down - base.Down)
		tc.drops[tdRedirectFailed].Add(v.Failed - base.Failed)
		return
	}
	sc := cs.svcAt(key)
	sc.pkts.Add(v.Packets - base.Packets)
	sc.bytes.Add(v.Bytes - base.Bytes)
	sc.drops[dropMonitorDown].Add(v.Down - base.Down)
	sc.drops[dropRedirectFailed].Add(v.Failed - base.Failed)
}

// addFastFlow adds a kernel flow counter, less its base, to fc.
func addFastFlow(fc *flowCounter, v, base xdpprog.FastFlowCounter) {
	fc.pkts.Add(v.Packets - base.Packets)
	fc.bytes.Add(v.Bytes - base.Bytes)
	fc.rejected.Add(v.Rejected - base.Rejected)
}

// addFastTunnel adds a kernel tunnel counter, less its base, to tc.
func addFastTunnel(tc *tunnelCounter, v, base xdpprog.FastTunnelCounter) {
	tc.pkts.Add(v.Packets - base.Packets)
	tc.bytes.Add(v.Bytes - base.Bytes)
	tc.truncated.Add(v.Truncated - base.Truncated)
	tc.drops[tdRedirectFailed].Add(v.Failed - base.Failed)
}

// fastCounters adds the live kernel counts of every capture's slots into
// a counterSet for Stats.
func (b *Broker) fastCounters() *counterSet {
	var cs counterSet
	for _, c := range b.captures {
		for s, e := range c.fast.flows.of {
			if v, err := c.prog.FastFlow(e.k); err == nil {
				addFastFlow(cs.flowAt(s), v, e.base)
			}
		}
		for s, e := range c.fast.svcs.of {
			if v, err := c.prog.FastService(e.k); err == nil {
				cs.addFastService(s, v, e.base)
			}
		}
		for s, e := range c.fast.tuns.of {
			if v, err := c.prog.FastTunnel(int(e.k)); err == nil {
				addFastTunnel(cs.tunAt(s), v, e.base)
			}
		}
	}
	return &cs
}
