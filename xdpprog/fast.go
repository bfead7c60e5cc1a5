package xdpprog

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/net/bpf"
)

// The fast path decides copies inside the XDP program and sends them with
// bpf_redirect_map to a DEVMAP, instead of redirecting to an AF_XDP socket:
// on veth, copy-mode AF_XDP TX builds one skb per copy in the kernel and tops
// out near 1 Mpps, where an in-kernel redirect measured 2.6 Mpps (issues 3
// and 4, team/perf.md). The broker tabulates its own classifier into a
// FastTable; the program only looks the answer up.
//
// The table stays linear in the ports: a unicast frame between two ports is
// decided by the source port's side (its OUT flows) and the destination
// port's side (its IN flows), each a decision with its flows and a bitmask
// of services; the program ORs the masks, so a service both sides want
// gets one copy, and looks the copies up by mask. Only a group destination
// (IN excludes the port's own broadcast) and a frame from a port to itself
// need a decision of their own.

// Limits of one FastTable, fixed by the map sizes in xdp.c. A table beyond
// them is refused with ErrFastLimit and the broker keeps the AF_XDP path.
const (
	// MaxFastPorts is the most source-port MACs of one table.
	MaxFastPorts = 4096
	// MaxFastDecisions is the most decisions of one table.
	MaxFastDecisions = 8192
	// MaxFastCopies is the most distinct service masks of one table.
	MaxFastCopies = 8192
	// MaxFastServices is the most services of one capture: bits of a mask.
	MaxFastServices = 64
	// MaxFastSlots bounds flow and service counter slots: 0..MaxFastSlots-1.
	MaxFastSlots = 1024
	// MaxDecisionFlows and MaxDecisionServices bound what one frame matches.
	MaxDecisionFlows    = 8
	MaxDecisionServices = 8
	// MaxOutputSets is the most distinct multi-copy output sets of one
	// table (two generations and the barrier slot share 256 map slots).
	MaxOutputSets = 127
	// MaxSetCopies is the most copies of one frame.
	MaxSetCopies = 64
	// MaxFastMonitors is the most monitors of one-copy decisions (two
	// generations share the 256-entry fast_tx DEVMAP).
	MaxFastMonitors = 128
	// MulticastPort is the destination port id of a group address.
	MulticastPort = 0xffffffff
)

// Settings slots of the fast path; keep equal to SETTING_FAST / SETTING_GEN.
const (
	settingFast uint32 = 3
	settingGen  uint32 = 4
	// vids, svcDown, outSets: keep equal to VIDS, SVC_DOWN, OUT_SETS.
	vids    = 4096
	svcDown = 0x8000
	outSets = 256
	// barrierSlot is a fast_sets slot no decision uses: writing it makes
	// the kernel wait for every running program (the syscall runs
	// synchronize_rcu after a successful change to a map-of-maps; since
	// Linux 6.8 only a successful one, so deleting an empty slot does not).
	barrierSlot = outSets - 1
)

// ErrFastLimit wraps the reason a FastTable does not fit the program.
var ErrFastLimit = errors.New("fast table exceeds the xdp program's limits")

// FilterError is the refusal of one filter of a FastTable: Filter indexes
// FastTable.Filters, so that the caller can name the flows that use it.
// It wraps ErrFastLimit.
type FilterError struct {
	Filter int
	Err    error
}

func (e *FilterError) Error() string { return fmt.Sprintf("filter %d: %v", e.Filter, e.Err) }

// Unwrap returns the reason and ErrFastLimit.
func (e *FilterError) Unwrap() []error { return []error{e.Err, ErrFastLimit} }

// FastTable is the complete in-kernel decision of one capture interface.
// The program looks a frame of VLAN class c from source port s to
// destination port d up as:
//
//   - d a group address: Decisions[{c, s, MulticastPort}] (s 0: no port's);
//   - s == d, a port: Decisions[{c, s, s}];
//   - otherwise: Decisions[{c, s, 0}] (when s is a port) and
//     Decisions[{c, 0, d}] (when d is a port), their flows added and their
//     service masks ORed;
//
// then the copies of the mask: Copies[mask] (written into each decision
// too, so one side costs no second lookup). No decision, or no copies for
// the mask, means no flow
// wants the frame (it gets the unmatched action). check refuses a table
// whose masks of one class can OR into a mask Copies lacks.
type FastTable struct {
	// VIDClass is the VLAN class of each outer VID (0: untagged).
	VIDClass [vids]uint32
	// Ports maps a source port's MAC to its port id, 1 or more (0 is "not
	// a port", MulticastPort a group destination).
	Ports map[[6]byte]uint32
	// Decisions of the table.
	Decisions map[FastKey]Decision
	// Copies by service mask.
	Copies map[uint64]Copies
	// Filters are the classic BPF programs of the table's filtered flows
	// (pcapfilter.Filter.Program: run on the frame as captured, a non-zero
	// return accepts it), at most MaxFastFilters; Decision.FlowFilters
	// index them. SetFast translates them to eBPF and runs the ones a
	// frame's decisions need in one program the capture program tail-calls.
	Filters [][]bpf.Instruction
	// Snaplens truncates the copies sent to a monitor, by its ifindex, to
	// so many bytes (a DEVMAP egress program); absent or 0: whole frames.
	// At least MinSnaplen. It is the monitor's, not the generation's: a
	// new table's snaplen applies at once. A monitor that is also a
	// tunnel's uplink must not have one (in native mode a device's queued
	// copies run one entry's program). The kernel checks a copy against
	// the monitor's MTU before the egress program cuts it: a snaplen does
	// not make a frame fit a smaller monitor.
	Snaplens map[int]uint32
}

// FastKey is what the program looks a decision up by.
type FastKey struct {
	VIDClass uint32
	// Src is the port id of the source MAC, 0 for a destination-side
	// decision or a group destination from no port.
	Src uint32
	// Dst is the port id of the destination MAC, 0 for a source-side
	// decision, MulticastPort for a group address.
	Dst uint32
}

// Decision is what the classifier makes of the frames of a key.
type Decision struct {
	// Services is the mask of the services the frames go to: bit i is the
	// capture's service i (the broker numbers them), at most
	// MaxFastServices.
	Services uint64
	// Flows are the counter slots of the flows the frames match.
	Flows []uint16
	// FlowServices[i] is the service (bit of the masks) Flows[i] copies
	// to, and FlowFilters[i] the index in FastTable.Filters of its filter,
	// -1 for none. Both nil when no flow of the decision has a filter
	// (all -1 is the same); otherwise both as long as Flows, Services
	// holds only the unfiltered flows' services, and a filtered flow adds
	// its service when its filter accepts the frame (else it counts the
	// frame rejected). Copies must then hold every non-zero mask that can
	// result, alone and ORed with the other side's (check lists them); a
	// frame whose mask is 0 is counted fast_filtered.
	FlowServices []uint8
	FlowFilters  []int
}

// Copies are the copies of a frame that goes to a set of services.
type Copies struct {
	// Outputs holds one output per copy: a monitor's ifindex, or
	// TunnelOutput(slot) of a tunnel set with SetTunnel. An output twice
	// gets two copies (two services on it).
	Outputs []int
	// Services are the services of the mask, each once.
	Services []DecisionService
}

// DecisionService is one service of a decision.
type DecisionService struct {
	// Slot is the service's counter slot.
	Slot uint16
	// Down says its monitor is unavailable: the copy is counted, not sent.
	Down bool
	// Snaplen is the service's snaplen, 0 for whole frames: the service
	// counts the bytes of its copies cut to it, as its monitor's
	// FastTable.Snaplens cuts them.
	Snaplen uint16
}

// FastFlowCounter and FastServiceCounter are counters of one slot, summed
// over CPUs; they only grow while the program is loaded.
type FastFlowCounter struct {
	Packets, Bytes uint64
	// Rejected frames were the flow's by direction and VLAN, but its
	// filter rejected them.
	Rejected uint64
}

type FastServiceCounter struct {
	// Packets and Bytes were handed to the DEVMAP.
	Packets, Bytes uint64
	// Down copies had no usable monitor; Failed copies were refused by
	// bpf_redirect_map.
	Down, Failed uint64
}

// fastState mirrors what the fast maps of a Capture hold, so SetFast writes
// only differences and can always complete an interrupted change.
type fastState struct {
	on      bool
	gen     uint32                  // the live generation
	vidInit [2]bool                 // vids[g] mirrors the kernel
	vids    [2][vids]uint32         // fast_vids, per generation
	ports   [2]map[[6]byte]uint32   // fast_ports, per generation
	decs    [2]map[FastKey]Decision // fast_decisions, per generation
	copies  [2]map[uint64]Copies    // fast_copies, per generation
	sets    map[string]*outSet      // output set (setKey) -> its fast_sets slot, live or cached
	live    map[string]bool         // the output sets the live generation uses
	barrier *ebpf.Map               // an empty output set, written to barrierSlot
	tx      map[int]bool            // fast_tx keys
	// progs[g] is generation g's filter program (nil: no filters), of
	// filters[g]; the generations share one when their filters are equal.
	progs   [2]*ebpf.Program
	filters [2][][]bpf.Instruction
	// refused are the last filters the translator, the budget or the
	// verifier refused, and why: a plan that brings them again (every
	// plan, while the broker keeps that capture on the AF_XDP path) gets
	// the same answer without paying the verifier again.
	refused    [][]bpf.Instruction
	refusedErr error
	snaps      map[int]uint32 // snaplens: the monitors with a snaplen
	snap       *ebpf.Program  // xdp_snap, loaded for the first snaplen
	// scratch for per-CPU lookups
	flowPC []xdpFlowCounter
	svcPC  []xdpSvcCounter
	tunPC  []xdpTunnelCounter
}

// outSet is one output set in fast_sets. Its inner map stays open so that
// SetTunnel can retarget a tunnel's entries in place.
type outSet struct {
	slot uint32
	outs []int
	m    *ebpf.Map
}

// liveUses reports whether an output set of the live generation sends to
// out.
func (f *fastState) liveUses(out int) bool {
	for k := range f.live {
		if set := f.sets[k]; set != nil && slices.Contains(set.outs, out) {
			return true
		}
	}
	return false
}

var innerSpec struct {
	once sync.Once
	spec *ebpf.MapSpec
	err  error
}

// setSpec is the spec of one output set, the inner map of fast_sets.
func setSpec() (*ebpf.MapSpec, error) {
	innerSpec.once.Do(func() {
		cs, err := loadXdp()
		if err != nil {
			innerSpec.err = fmt.Errorf("load xdp spec: %w", err)
			return
		}
		innerSpec.spec = cs.Maps["fast_sets"].InnerMap
	})
	return innerSpec.spec, innerSpec.err
}

// check reports the first limit t exceeds, wrapping ErrFastLimit.
func (t *FastTable) check() error {
	limit := func(format string, a ...any) error {
		return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrFastLimit)
	}
	if len(t.Ports) > MaxFastPorts {
		return limit("%d ports, at most %d", len(t.Ports), MaxFastPorts)
	}
	if len(t.Decisions) > MaxFastDecisions {
		return limit("%d decisions, at most %d", len(t.Decisions), MaxFastDecisions)
	}
	if len(t.Copies) > MaxFastCopies {
		return limit("%d service sets, at most %d", len(t.Copies), MaxFastCopies)
	}
	if len(t.Filters) > MaxFastFilters {
		return limit("%d filters, at most %d", len(t.Filters), MaxFastFilters)
	}
	for i, f := range t.Filters {
		if err := checkFilter(f); err != nil {
			return &FilterError{Filter: i, Err: err}
		}
	}
	if len(t.Snaplens) > maxSnaplens {
		return limit("%d snaplens, at most %d", len(t.Snaplens), maxSnaplens)
	}
	for ifindex, n := range t.Snaplens {
		if n != 0 && n < MinSnaplen {
			return fmt.Errorf("snaplen %d of monitor %d: want 0 or at least %d", n, ifindex, MinSnaplen)
		}
	}
	// Per class, the masks each side can reach, to check that they and
	// their unions have copies.
	type sides struct{ src, dst map[uint64]bool }
	classes := map[uint32]*sides{}
	for k, d := range t.Decisions {
		if len(d.Flows) > MaxDecisionFlows {
			return limit("a frame matches %d flows on one side, at most %d", len(d.Flows), MaxDecisionFlows)
		}
		for _, s := range d.Flows {
			if s >= MaxFastSlots {
				return limit("flow counter slot %d, at most %d", s, MaxFastSlots-1)
			}
		}
		masks, err := d.reachable(len(t.Filters))
		if err != nil {
			return fmt.Errorf("decision %+v: %w", k, err)
		}
		for m := range masks {
			if _, ok := t.Copies[m]; !ok {
				return fmt.Errorf("decision %+v: no copies for services %#x", k, m)
			}
		}
		if k.Dst == MulticastPort || k.Src == k.Dst {
			continue
		}
		sd := classes[k.VIDClass]
		if sd == nil {
			sd = &sides{src: map[uint64]bool{}, dst: map[uint64]bool{}}
			classes[k.VIDClass] = sd
		}
		side := sd.dst
		if k.Dst == 0 {
			side = sd.src
		}
		for m := range masks {
			side[m] = true
		}
	}
	for c, sd := range classes {
		for a := range sd.src {
			for b := range sd.dst {
				if _, ok := t.Copies[a|b]; !ok && a|b != 0 {
					return fmt.Errorf("class %d: no copies for services %#x | %#x", c, a, b)
				}
			}
		}
	}
	sets, mons := map[string]bool{}, map[int]bool{}
	for _, d := range t.Copies {
		switch {
		case len(d.Services) > MaxDecisionServices:
			return limit("a frame goes to %d services, at most %d", len(d.Services), MaxDecisionServices)
		case len(d.Outputs) > MaxSetCopies:
			return limit("a frame has %d copies, at most %d", len(d.Outputs), MaxSetCopies)
		case len(d.Outputs) == 1:
			mons[d.Outputs[0]] = true
		case len(d.Outputs) > 1:
			sets[setKey(d.Outputs)] = true
		}
		for _, s := range d.Services {
			if s.Slot >= MaxFastSlots {
				return limit("service counter slot %d, at most %d", s.Slot, MaxFastSlots-1)
			}
		}
	}
	if len(sets) > MaxOutputSets {
		return limit("%d output sets, at most %d", len(sets), MaxOutputSets)
	}
	if len(mons) > MaxFastMonitors {
		return limit("%d monitors, at most %d", len(mons), MaxFastMonitors)
	}
	return nil
}

// filtered reports whether d has a filtered flow.
func (d *Decision) filtered() bool {
	for _, f := range d.FlowFilters {
		if f >= 0 {
			return true
		}
	}
	return false
}

// reachable returns the service masks frames of d can go to: Services
// alone without filtered flows, else Services with the services of any
// combination of its filters accepting (0, every flow rejecting, needs no
// copies).
func (d *Decision) reachable(filters int) (map[uint64]bool, error) {
	if !d.filtered() {
		return map[uint64]bool{d.Services: true}, nil
	}
	if len(d.FlowFilters) != len(d.Flows) || len(d.FlowServices) != len(d.Flows) {
		return nil, fmt.Errorf("%d flows, %d flow filters, %d flow services", len(d.Flows), len(d.FlowFilters), len(d.FlowServices))
	}
	// The services each filter of d adds when it accepts.
	var used []int
	adds := map[int]uint64{}
	for i, f := range d.FlowFilters {
		if s := d.FlowServices[i]; s >= MaxFastServices {
			return nil, fmt.Errorf("flow %d: service %d, at most %d", i, s, MaxFastServices-1)
		}
		if f < -1 || f >= filters {
			return nil, fmt.Errorf("flow %d: filter %d of %d", i, f, filters)
		}
		if f < 0 {
			continue
		}
		if _, ok := adds[f]; !ok {
			used = append(used, f)
		}
		adds[f] |= 1 << d.FlowServices[i]
	}
	masks := map[uint64]bool{}
	for sub := range 1 << len(used) {
		m := d.Services
		for j, f := range used {
			if sub&(1<<j) != 0 {
				m |= adds[f]
			}
		}
		if m != 0 {
			masks[m] = true
		}
	}
	return masks, nil
}

// setKey is the canonical name of a multiset of output ifindexes.
func setKey(outs []int) string {
	s := slices.Clone(outs)
	slices.Sort(s)
	var b strings.Builder
	for _, o := range s {
		b.WriteString(strconv.Itoa(o))
		b.WriteByte(',')
	}
	return b.String()
}

// FastOn reports whether the program decides frames in the kernel.
func (c *Capture) FastOn() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fast.on
}

// SetFast makes the program decide frames with t in the kernel instead of
// redirecting them to the AF_XDP sockets; nil goes back to the sockets.
//
// The change is atomic for every frame: the new table is written beside the
// live one as the other generation, one settings word flips the program to
// it, the kernel waits until no program can still be using the old
// generation, and only then is the old one deleted. A frame is decided
// wholly by the old or wholly by the new table, so a change never drops or
// duplicates frames it does not touch. A table beyond the limits is refused
// with an error wrapping ErrFastLimit before anything is written.
func (c *Capture) SetFast(t *FastTable) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("set fast table: %w", ErrClosed)
	}
	if t == nil {
		return c.fastOffLocked()
	}
	if err := t.check(); err != nil {
		return fmt.Errorf("set fast table: %w", err)
	}
	if err := c.setFastLocked(t); err != nil {
		return fmt.Errorf("set fast table: %w", err)
	}
	return nil
}

func (c *Capture) setFastLocked(t *FastTable) error {
	f := &c.fast
	if f.on && f.live != nil && c.isLiveLocked(t) {
		// The reconciler re-applies unchanged plans (link events): no
		// writes, and no grace period to wait for.
		return nil
	}
	for _, cp := range t.Copies {
		if err := c.checkTunnelsLocked(cp); err != nil {
			return err
		}
	}
	next := f.gen ^ 1
	// 0. The next generation's filter program, the one step the verifier
	// can refuse: before anything else is written.
	if err := c.filtersLocked(next, t); err != nil {
		return err
	}
	if err := c.snaplensLocked(t.Snaplens); err != nil {
		return err
	}
	// 1. Outputs the new table needs, next to those the live one uses.
	need := map[string]bool{}
	needTx := map[int]bool{}
	for _, d := range t.Copies {
		switch len(d.Outputs) {
		case 0:
		case 1:
			needTx[d.Outputs[0]] = true
		default:
			need[setKey(d.Outputs)] = true
		}
	}
	for _, d := range t.Copies {
		if len(d.Outputs) > 1 {
			if err := c.putSetLocked(d.Outputs, need); err != nil {
				return err
			}
		}
	}
	for out := range needTx {
		if !f.tx[out] {
			v, err := c.outputValueLocked(out)
			if err != nil {
				return err
			}
			if err := c.objs.FastTx.Update(uint32(out), v, ebpf.UpdateAny); err != nil {
				return fmt.Errorf("output %#x: %w", out, err)
			}
			f.tx[out] = true
		}
	}
	// 2. The next generation: VLAN classes, ports, decisions.
	if err := c.writeGenLocked(next, t); err != nil {
		return err
	}
	// 3. Flip, then wait out every program that read the old generation.
	if err := c.objs.Settings.Update(settingGen, next, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("flip generation: %w", err)
	}
	f.gen = next
	if !f.on {
		if err := c.objs.Settings.Update(settingFast, uint32(1), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("turn fast path on: %w", err)
		}
		f.on = true
	}
	if err := c.barrierLocked(); err != nil {
		return err
	}
	// 4. Delete the old generation and the monitors only it used. Output
	// sets stay cached for a later table: every change of fast_sets costs
	// a grace period (synchronize_rcu), about half of an Apply's time when
	// a set came and went with each plan.
	f.live = need // non-nil from the first table on
	if err := c.writeGenLocked(next^1, &FastTable{}); err != nil {
		return err
	}
	if err := c.filtersLocked(next^1, &FastTable{}); err != nil {
		return err
	}
	return c.dropTxLocked(needTx)
}

// isLiveLocked reports whether the live generation already holds t.
func (c *Capture) isLiveLocked(t *FastTable) bool {
	f := &c.fast
	g := f.gen
	return f.vidInit[g] && f.vids[g] == t.VIDClass && maps.Equal(f.ports[g], t.Ports) &&
		reflect.DeepEqual(f.decs[g], t.Decisions) && reflect.DeepEqual(f.copies[g], t.Copies) &&
		reflect.DeepEqual(f.filters[g], t.Filters) && sameSnaplens(f.snaps, t.Snaplens)
}

// putSetLocked makes sure an output set of outs exists in fast_sets,
// evicting a cached set that neither the live generation nor need uses
// when no slot is free.
func (c *Capture) putSetLocked(outs []int, need map[string]bool) error {
	f := &c.fast
	key := setKey(outs)
	if _, ok := f.sets[key]; ok {
		return nil
	}
	slot := -1
	used := map[uint32]bool{}
	for _, set := range f.sets {
		used[set.slot] = true
	}
	for s := uint32(0); s < barrierSlot; s++ {
		if !used[s] {
			slot = int(s)
			break
		}
	}
	for k, set := range f.sets {
		if slot >= 0 {
			break
		}
		if need[k] || f.live[k] {
			continue
		}
		if err := c.deleteSetLocked(k); err != nil {
			return fmt.Errorf("evict output set: %w", err)
		}
		slot = int(set.slot)
	}
	if slot < 0 {
		return fmt.Errorf("no free output set slot: %w", ErrFastLimit)
	}
	spec, err := setSpec()
	if err != nil {
		return err
	}
	m, err := ebpf.NewMap(spec.Copy())
	if err != nil {
		return fmt.Errorf("create output set: %w", err)
	}
	for i, out := range outs {
		v, err := c.outputValueLocked(out)
		if err == nil {
			err = m.Update(uint32(i), v, ebpf.UpdateAny)
		}
		if err != nil {
			// The update error is the one to report; m was never used.
			_ = m.Close()
			return fmt.Errorf("output set copy %d to %#x: %w", i, out, err)
		}
	}
	if err := c.objs.FastSets.Update(uint32(slot), m, ebpf.UpdateAny); err != nil {
		_ = m.Close() // as above
		return fmt.Errorf("output set slot %d: %w", slot, err)
	}
	f.sets[key] = &outSet{slot: uint32(slot), outs: slices.Clone(outs), m: m}
	return nil
}

// deleteSetLocked deletes output set key from fast_sets and the cache.
func (c *Capture) deleteSetLocked(key string) error {
	f := &c.fast
	set := f.sets[key]
	if err := c.objs.FastSets.Delete(set.slot); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete output set %d: %w", set.slot, err)
	}
	delete(f.sets, key)
	delete(f.live, key)
	if err := set.m.Close(); err != nil {
		return fmt.Errorf("close output set %d: %w", set.slot, err)
	}
	return nil
}

// writeGenLocked brings generation g of the fast maps to t, writing and
// deleting only what differs from the mirror.
func (c *Capture) writeGenLocked(g uint32, t *FastTable) error {
	f := &c.fast
	if len(t.Decisions) > 0 {
		for v := range t.VIDClass {
			if f.vidInit[g] && f.vids[g][v] == t.VIDClass[v] {
				continue
			}
			if err := c.objs.FastVids.Update(g*vids+uint32(v), t.VIDClass[v], ebpf.UpdateAny); err != nil {
				f.vidInit[g] = false
				return fmt.Errorf("vlan class of vid %d: %w", v, err)
			}
			f.vids[g][v] = t.VIDClass[v]
		}
		f.vidInit[g] = true
	}
	err := syncGen(c.objs.FastPorts, "port", f.ports[g], t.Ports,
		func(mac [6]byte) any { return xdpPortKey{Gen: g, Addr: mac} },
		func(id uint32) (any, error) { return id, nil })
	if err != nil {
		return err
	}
	// Copies before the decisions that lead to them, so that a generation
	// being written is never half usable; it is not live yet anyway.
	err = syncGen(c.objs.FastCopies, "copies of services", f.copies[g], t.Copies,
		func(m uint64) any { return xdpCopiesKey{Gen: g, Svcs: m} },
		func(cp Copies) (any, error) { return c.copiesValueLocked(cp) })
	if err != nil {
		return err
	}
	return syncGen(c.objs.FastDecisions, "decision", f.decs[g], t.Decisions,
		func(k FastKey) any { return xdpDecisionKey{Gen: g, Vclass: k.VIDClass, Src: k.Src, Dst: k.Dst} },
		func(d Decision) (any, error) {
			v := xdpDecision{Svcs: d.Services, Nflows: uint8(len(d.Flows))}
			copy(v.Flows[:], d.Flows)
			for i := range v.Ffilt {
				// xdp_resume reads the unfiltered side of a frame too.
				v.Ffilt[i] = noFilter
			}
			if d.filtered() {
				// The program never uses cp: it looks the copies of
				// the services that matched up.
				for i, flt := range d.FlowFilters {
					v.Fsvc[i] = d.FlowServices[i]
					if flt >= 0 {
						v.Ffilt[i] = uint8(flt)
						v.Filt |= 1 << flt
					}
				}
				if cp, ok := t.Copies[d.Services]; ok {
					var err error
					v.Cp, err = c.copiesValueLocked(cp)
					return v, err
				}
				return v, nil
			}
			cp, err := c.copiesValueLocked(t.Copies[d.Services])
			v.Cp = cp
			return v, err
		})
}

// syncGen brings the entries of one generation of hash map m, which have
// mirrors, to want: it writes every entry of want (with its kernel key and
// value) and deletes the others, recording each change in have.
func syncGen[K comparable, V any](m *ebpf.Map, what string, have, want map[K]V, key func(K) any, val func(V) (any, error)) error {
	for k, v := range want {
		kv, err := val(v)
		if err != nil {
			return err
		}
		if err := m.Update(key(k), kv, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("%s %v: %w", what, k, err)
		}
		have[k] = v
	}
	for k := range have {
		if _, ok := want[k]; ok {
			continue
		}
		if err := m.Delete(key(k)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete %s %v: %w", what, k, err)
		}
		delete(have, k)
	}
	return nil
}

// copiesValueLocked is the kernel form of d; its output set exists.
func (c *Capture) copiesValueLocked(d Copies) (xdpCopies, error) {
	v := xdpCopies{Nout: uint16(len(d.Outputs)), Nsvcs: uint8(len(d.Services))}
	switch len(d.Outputs) {
	case 0:
	case 1:
		v.Target = uint32(d.Outputs[0])
	default:
		set, ok := c.fast.sets[setKey(d.Outputs)]
		if !ok {
			return v, fmt.Errorf("output set %v not written", d.Outputs)
		}
		v.Target = set.slot
	}
	for i, s := range d.Services {
		v.Svcs[i] = s.Slot
		v.Snap[i] = s.Snaplen
		if s.Down {
			v.Svcs[i] |= svcDown
		}
	}
	for _, out := range d.Outputs {
		if slot, ok := tunnelSlot(out); ok && int(v.Ntun) < len(v.Tun) {
			v.Tun[v.Ntun] = uint16(slot)
			v.Ntun++
		}
	}
	return v, nil
}

// barrierLocked returns once no program that started before it runs: the
// kernel runs synchronize_rcu after a successful change to a map-of-maps,
// and an XDP program runs inside one RCU read-side section (redirect flush
// included). TestFastSwapNeverMisses fails without it.
func (c *Capture) barrierLocked() error {
	if c.fast.barrier == nil {
		spec, err := setSpec()
		if err != nil {
			return err
		}
		if c.fast.barrier, err = ebpf.NewMap(spec.Copy()); err != nil {
			return fmt.Errorf("create barrier map: %w", err)
		}
	}
	if err := c.objs.FastSets.Update(uint32(barrierSlot), c.fast.barrier, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("wait for running programs: %w", err)
	}
	return nil
}

// dropSetsLocked deletes every output set; no generation may use them.
func (c *Capture) dropSetsLocked() error {
	var errs []error
	for key := range c.fast.sets {
		errs = append(errs, c.deleteSetLocked(key))
	}
	c.fast.live = nil
	return errors.Join(errs...)
}

// dropTxLocked deletes the fast_tx entries not in keepTx.
func (c *Capture) dropTxLocked(keepTx map[int]bool) error {
	f := &c.fast
	for out := range f.tx {
		if keepTx[out] {
			continue
		}
		if err := c.objs.FastTx.Delete(uint32(out)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete output %#x: %w", out, err)
		}
		delete(f.tx, out)
	}
	return nil
}

// fastOffLocked sends frames to the sockets again and empties the tables.
func (c *Capture) fastOffLocked() error {
	f := &c.fast
	if f.on {
		if err := c.objs.Settings.Update(settingFast, uint32(0), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("turn fast path off: %w", err)
		}
		f.on = false
		if err := c.barrierLocked(); err != nil {
			return err
		}
	}
	for g := range uint32(2) {
		if err := c.writeGenLocked(g, &FastTable{}); err != nil {
			return fmt.Errorf("clear fast table: %w", err)
		}
		if err := c.filtersLocked(g, &FastTable{}); err != nil {
			return fmt.Errorf("clear fast table: %w", err)
		}
	}
	if err := c.snaplensLocked(nil); err != nil {
		return fmt.Errorf("clear fast table: %w", err)
	}
	if err := errors.Join(c.dropSetsLocked(), c.dropTxLocked(nil)); err != nil {
		return fmt.Errorf("clear fast table: %w", err)
	}
	return nil
}

// FastFlow returns the counters of flow counter slot, summed over CPUs.
func (c *Capture) FastFlow(slot uint16) (FastFlowCounter, error) {
	var s FastFlowCounter
	err := sumPerCPU(c, c.objs.FastFlows, "fast flow counter", uint32(slot), &c.fast.flowPC, func(p *xdpFlowCounter) {
		s.Packets += p.Packets
		s.Bytes += p.Bytes
		s.Rejected += p.Rejected
	})
	return s, err
}

// FastService returns the counters of service counter slot, summed over
// CPUs.
func (c *Capture) FastService(slot uint16) (FastServiceCounter, error) {
	var s FastServiceCounter
	err := sumPerCPU(c, c.objs.FastSvcs, "fast service counter", uint32(slot), &c.fast.svcPC, func(p *xdpSvcCounter) {
		s.Packets += p.Packets
		s.Bytes += p.Bytes
		s.Down += p.Down
		s.Failed += p.Failed
	})
	return s, err
}

// sumPerCPU looks slot of per-CPU map m up into scratch and calls add on
// each CPU's value, with c.mu held (scratch is c's).
func sumPerCPU[T any](c *Capture, m *ebpf.Map, what string, slot uint32, scratch *[]T, add func(*T)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("read %s %d: %w", what, slot, ErrClosed)
	}
	if err := m.Lookup(slot, scratch); err != nil {
		return fmt.Errorf("read %s %d: %w", what, slot, err)
	}
	for i := range *scratch {
		add(&(*scratch)[i])
	}
	return nil
}
