package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/taas-appliance/taas/broker/xsk"
	"github.com/taas-appliance/taas/pcapfilter"
	"github.com/taas-appliance/taas/xdpprog"
)

// Broker is the data plane. Apply realises a Plan: it attaches the XDP
// program to every capture interface the plan names, opens one AF_XDP
// socket and starts one worker per RX queue, opens a TX socket on every
// monitor interface, and swaps compiled tables in atomically. Interfaces
// that a new plan still uses keep their programs, sockets and workers, so a
// change never interrupts traffic it does not touch.
//
// Its methods are safe for concurrent use; Apply calls are serialised.
type Broker struct {
	cfg    Config
	log    *slog.Logger
	events chan struct{}
	watch  *linkWatch
	rwatch *redirectWatch
	// resolver follows the routes and neighbours of the mirrors' remote
	// IPs (resolve.go).
	resolver *resolver
	// clocks are the capture programs of the last Apply, whose ERSPAN III
	// clocks the resolver's tick keeps in step (syncClocks).
	clocks atomic.Pointer[[]*xdpprog.Capture]

	// mu serialises Apply, Stats and Close, and guards the fields below.
	mu       sync.Mutex
	captures map[string]*capture
	monitors map[string]*output
	uplinks  map[string]*output
	// mirrors is each mirror's state as the last Apply found it.
	mirrors map[string]mirrorState
	// Stable counter slots: a flow or service keeps its slot for the
	// broker's lifetime, so its counters survive plan swaps.
	flowSlots map[string]int32
	svcSlots  map[string]int32
	// tunSlots are the tunnels' (tunnelKey), and tunSeqs their sequence
	// numbers by slot.
	tunSlots map[string]int32
	tunSeqs  []*atomic.Uint32
	// retired holds the counters of workers, sockets and programs that were
	// torn down, so that totals never go backwards.
	retired  counterSet
	retIface map[string]*ifaceTotals
	// lastIndex is the ifindex each interface of the plan had when last
	// seen, to tell a rename from a deletion.
	lastIndex map[string]int
	// delivered is the delivered_packets each service slot last showed.
	delivered map[int32]uint64
	// filters are the flows' filters compiled by earlier Applies, by
	// expression, with the compiler's refusal: compiled once, shared by
	// every flow and table that uses the expression.
	filters map[string]compiledFilter
	plan    *Plan // last applied, for Stats
	closed  bool
	// liveCaps are the running live captures by bit (live.go), liveDone
	// the counters of those that ended.
	liveCaps [MaxLive]*LiveCapture
	liveDone LiveStats
	// liveSince[i] is when bit i last changed hands (xdpprog.Monotonic),
	// liveRetired the bits retired since the kernel's masks were last
	// synced (live.go).
	liveSince   [MaxLive]uint64
	liveRetired uint8

	// live is what the data path needs of the live captures (nil: none
	// runs), loaded once per batch by the workers.
	live atomic.Pointer[liveSet]
}

// capture is one capture interface: its XDP program, its RX sockets and
// workers, and the table they classify against.
type capture struct {
	name    string
	ifindex int
	// frame is the largest frame the link brings (Broker.captureFrame),
	// as of the last Apply.
	frame   int
	prog    *xdpprog.Capture
	workers []*worker
	table   atomic.Pointer[table]
	fast    fastCapture // guarded by Broker.mu
	// live is the broker's live set (nil in tests without a broker).
	live *atomic.Pointer[liveSet]
	// The fast path's live capture (live.go), guarded by Broker.mu:
	// whether the program has masks set, the last error setting them, and
	// the reader of its frames.
	liveOn  bool
	liveErr string
	liveR   *liveReader
}

// New starts a broker with no plan: nothing is attached until Apply. It
// starts watching links at once so that LinkEvents works from the start.
func New(cfg Config) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	b := &Broker{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "broker"),
		events:    make(chan struct{}, 1),
		captures:  map[string]*capture{},
		monitors:  map[string]*output{},
		uplinks:   map[string]*output{},
		tunSlots:  map[string]int32{},
		flowSlots: map[string]int32{},
		svcSlots:  map[string]int32{},
		retIface:  map[string]*ifaceTotals{},
		lastIndex: map[string]int{},
		delivered: map[int32]uint64{},
		filters:   map[string]compiledFilter{},
	}
	w, err := startLinkWatch(b.notify, b.log)
	if err != nil {
		return nil, err
	}
	b.watch = w
	r, err := startResolver(b.notify, b.syncClocks, b.log)
	if err != nil {
		w.stop()
		return nil, err
	}
	b.resolver = r
	b.rwatch = startRedirectWatch(b.notify, b.log)
	return b, nil
}

// LinkEvents delivers a value (coalesced) whenever an interface the current
// plan uses appears, disappears, goes up or down, or a worker stops on a
// socket error: the reconciler then calls Apply again.
func (b *Broker) LinkEvents() <-chan struct{} { return b.events }

func (b *Broker) notify() {
	select {
	case b.events <- struct{}{}:
	default: // one pending event covers this one
	}
}

// linkState is what Apply needs to know of one netdev.
type linkState struct {
	exists  bool
	ifindex int
	up      bool
	downWhy string // why it is not up, when exists
	// missingWhy is why it does not exist, when it does not.
	missingWhy string
	rxQueues   int
	mtu        int
	peerMTU    int // of a veth's peer, 0 when not a veth or unknown
	stats      *netlink.LinkStatistics
}

// lookupLink reads netdev name; with peer, also the MTU of a veth's peer,
// one more netlink request (into the peer's namespace), which only a
// monitor's realisation needs: Stats, called every second by a dashboard,
// does without.
func lookupLink(name string, peer bool) (linkState, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return linkState{}, nil
		}
		return linkState{}, fmt.Errorf("look up interface %s: %w", name, err)
	}
	a := l.Attrs()
	st := linkState{exists: true, ifindex: a.Index, rxQueues: a.NumRxQueues, mtu: a.MTU, stats: a.Statistics}
	if peer {
		st.peerMTU = peerMTUOf(l)
	}
	switch {
	case a.Flags&net.FlagUp == 0:
		st.downWhy = fmt.Sprintf("interface %s is down", name)
	case a.OperState == netlink.OperDown || a.OperState == netlink.OperLowerLayerDown:
		st.downWhy = fmt.Sprintf("interface %s has no carrier", name)
	default:
		st.up = true
	}
	return st, nil
}

// missingWhy says why interface name does not exist. A binding names an
// interface; when the link that had the name was renamed, the broker does
// not follow it by ifindex: the name is what the admin bound, whatever now
// carries the old link may be anything (a repurposed port, another
// tenant's feed), and mirroring traffic the configuration no longer names
// is the unsafe failure for a security product. So the capture or monitor
// is detached from the renamed link, the status names the new name, and a
// link that takes the bound name again is attached to (issue 9).
func (b *Broker) missingWhy(name string) string {
	why := fmt.Sprintf("interface %s does not exist", name)
	idx, ok := b.lastIndex[name]
	if !ok {
		return why
	}
	l, err := netlink.LinkByIndex(idx)
	if err != nil || l.Attrs().Name == name {
		return why // gone, or the lookup raced a rename back
	}
	return fmt.Sprintf("%s: renamed to %s (ifindex %d), which taasd does not follow (bind the port to %s, or rename it back)",
		why, l.Attrs().Name, idx, l.Attrs().Name)
}

// pruneLastIndex forgets the interfaces plan p does not name.
func (b *Broker) pruneLastIndex(p *Plan) {
	keep := map[string]bool{}
	for _, s := range p.Services {
		keep[s.Iface] = true
	}
	for _, name := range captureNames(p) {
		keep[name] = true
	}
	for _, name := range p.Uplinks {
		keep[name] = true
	}
	for name := range b.lastIndex {
		if !keep[name] {
			delete(b.lastIndex, name)
		}
	}
}

// l2Overhead is what a netdev carries beyond its MTU: the Ethernet header
// and one VLAN tag, as the kernel's own checks allow (is_skb_forwardable,
// xdp_ok_fwd_dev: mtu + hard_header_len + VLAN_HLEN).
const l2Overhead = 14 + 4

// largestFrame is the largest frame, in bytes, netdev ls carries, or 0 when
// its MTU is unknown.
func (ls linkState) largestFrame() int {
	if ls.mtu <= 0 {
		return 0
	}
	return ls.mtu + l2Overhead
}

// maxFrame is the largest frame a capture interface passes on
// (Config.MaxFrame).
func (b *Broker) maxFrame() int { return b.cfg.MaxFrame() }

// peerLimits says whether monitor ls's veth peer has the smaller MTU,
// which then limits what ls carries.
func (ls linkState) peerLimits() bool { return ls.peerMTU > 0 && ls.peerMTU < ls.mtu }

// carries is the largest frame in bytes monitor ls carries: its own MTU's,
// or its veth peer's when smaller. 0 when unknown.
func (ls linkState) carries() int {
	if ls.peerLimits() {
		return ls.peerMTU + l2Overhead
	}
	return ls.largestFrame()
}

// mtuText describes the MTU that limits monitor ls, for reasons.
func (ls linkState) mtuText() string {
	if ls.peerLimits() {
		return fmt.Sprintf("MTU %d, its veth peer's %d", ls.mtu, ls.peerMTU)
	}
	return fmt.Sprintf("MTU %d", ls.mtu)
}

// captureFrame is the largest frame a capture on ls can bring to a monitor.
func (b *Broker) captureFrame(ls linkState) int {
	if f := ls.largestFrame(); f > 0 && f < b.maxFrame() {
		return f
	}
	return b.maxFrame()
}

// mtuStatus reports ERROR when monitor mon cannot carry the largest copy a
// capture of caps can bring, truncated to snap (0: whole frames). ERROR, not DOWN: the service is set up and
// copies that fit still go out, but the others are lost until an operator
// raises the MTU (or lowers the capture's); DOWN is for what waits on
// something outside (a link, a binding) and means nothing is sent. Issue 9:
// such a monitor used to show ACTIVE while the kernel dropped every copy.
func (b *Broker) mtuStatus(mon string, snap int, ml linkState, caps []string, look func(string) linkState) Status {
	carry := ml.carries()
	if carry == 0 {
		return Status{State: StateActive}
	}
	for _, c := range caps {
		cl := look(c)
		if !cl.exists {
			continue
		}
		need := b.captureFrame(cl)
		if snap > 0 {
			need = min(need, snap)
		}
		if need > carry {
			return Status{State: StateError, Reason: fmt.Sprintf(
				"monitor %s (%s) cannot carry the copies of capture %s (frames up to %d bytes): copies over %d bytes are dropped (monitor_mtu); raise the MTU of %s to %d",
				mon, ml.mtuText(), c, need, carry, mon, need-l2Overhead)}
		}
	}
	return Status{State: StateActive}
}

// Apply realises p and reports every service's and flow's status. It only
// fails when the broker is closed or ctx ends: what cannot be realised is
// reported DOWN or ERROR with its reason, and the rest runs.
func (b *Broker) Apply(ctx context.Context, p *Plan) (Report, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return Report{}, errors.New("apply plan: broker closed")
	}
	if err := ctx.Err(); err != nil {
		return Report{}, fmt.Errorf("apply plan %d: %w", p.Version, err)
	}
	defer b.pruneLastIndex(p)
	defer b.snapshotClocks()
	b.harvestKernelDrops()
	b.plan = p
	rep := Report{Version: p.Version, Services: map[string]Status{}, Flows: map[string]Status{}, Mirrors: map[string]Status{}}

	links := map[string]linkState{}
	linkErr := map[string]error{}
	look := func(name string) linkState {
		if st, ok := links[name]; ok {
			return st
		}
		st, err := lookupLink(name, true)
		if err != nil {
			linkErr[name] = err
		}
		if !st.exists && err == nil {
			st.missingWhy = b.missingWhy(name)
		}
		if st.exists {
			b.lastIndex[name] = st.ifindex
		}
		links[name] = st
		return st
	}
	watched := map[string]bool{}

	// 1. Monitors: keep, reopen (new ifindex) or open.
	// A monitor that feeds a capture back is closed and its services
	// ERROR (loop.go).
	monStatus := map[string]Status{}
	wantMon := map[string]bool{}
	caps := captureNames(p)
	loops := loopReasons(p, caps)
	for _, s := range p.Services {
		if s.Iface == "" || wantMon[s.Iface] {
			continue
		}
		watched[s.Iface] = true
		if why, ok := loops[s.Iface]; ok {
			if o := b.monitors[s.Iface]; o != nil {
				b.closeOutput(o)
			}
			monStatus[s.Iface] = Status{State: StateError, Reason: why}
			continue
		}
		wantMon[s.Iface] = true
		monStatus[s.Iface] = b.realiseMonitor(s.Iface, look(s.Iface), linkErr[s.Iface])
	}

	// 2. Services: slots and status.
	snaps := map[string]uint32{}
	for _, s := range p.Services {
		b.svcSlot(s.ID)
		snaps[s.ID] = uint32(s.Snaplen)
		st := Status{State: StateDown, Reason: "tap service's port has no interface binding"}
		if s.Iface != "" {
			st = monStatus[s.Iface]
		}
		rep.Services[s.ID] = st
	}

	// 2b. Mirrors: resolve their remote IPs, open their uplinks.
	byIface, mirStatus := b.realiseMirrors(p, look, linkErr, caps)
	for _, m := range p.Mirrors {
		if m.Iface != "" {
			watched[m.Iface] = true
		}
	}
	if len(p.Mirrors) > 0 {
		// An uplink going down or up changes the routes through it.
		for _, u := range p.Uplinks {
			watched[u] = true
		}
	}

	// 3. Flows, grouped by capture interface, after the mirrors' tunnels.
	flowIface := map[string]string{}
	flowNote := map[string]string{}  // the reason an ACTIVE flow shows
	svcCaps := map[string][]string{} // service id -> capture interfaces of its flows
	for _, f := range p.Flows {
		slot := b.flowSlot(f.ID)
		vlans, dead, err := parseVLANFilter(f.VLANFilter)
		if err != nil {
			rep.Flows[f.ID] = Status{State: StateError, Reason: err.Error()}
			continue
		}
		// A filter that matches no VID is the user's choice and lasts as
		// long as the flow: say so before anything transient.
		vst := vlanStatus(f.VLANFilter, vlans, dead)
		if vst.State != StateActive {
			rep.Flows[f.ID] = vst
			continue
		}
		filter, err := b.filter(f.Filter)
		if err != nil {
			// control validates filters: only stored data that this
			// version's compiler refuses gets here.
			rep.Flows[f.ID] = Status{State: StateError, Reason: err.Error()}
			continue
		}
		if vst.Reason != "" {
			flowNote[f.ID] = vst.Reason
		}
		if f.Iface == "" {
			rep.Flows[f.ID] = Status{State: StateDown, Reason: fmt.Sprintf("port %s has no interface binding", f.SourcePortID)}
			continue
		}
		if _, ok := rep.Services[f.ServiceID]; !ok {
			rep.Flows[f.ID] = Status{State: StateError, Reason: fmt.Sprintf("tap service %s is not in the plan", f.ServiceID)}
			continue
		}
		watched[f.Iface] = true
		if !slices.Contains(svcCaps[f.ServiceID], f.Iface) {
			svcCaps[f.ServiceID] = append(svcCaps[f.ServiceID], f.Iface)
		}
		byIface[f.Iface] = append(byIface[f.Iface], compiledFlow{mac: macKey(f.MAC), dir: f.Direction, slot: slot,
			svc: b.svcSlot(f.ServiceID), vlans: vlans, filter: filter, snap: snaps[f.ServiceID]})
		flowIface[f.ID] = f.Iface
	}
	indexes := map[int]string{}
	for name := range watched {
		if ls := look(name); ls.exists {
			indexes[ls.ifindex] = name
		}
	}
	b.watch.setWatched(watched, indexes)
	b.pruneFilters(p)

	// 3b. A monitor must carry the largest copy its services' captures
	// can bring.
	for _, s := range p.Services {
		if st := rep.Services[s.ID]; st.State == StateActive {
			slices.Sort(svcCaps[s.ID])
			rep.Services[s.ID] = b.mtuStatus(s.Iface, s.Snaplen, look(s.Iface), svcCaps[s.ID], look)
		}
	}

	// 4. Captures: keep, rebuild or attach; then swap tables and filters.
	outputOf := map[int32]*output{}
	for _, s := range p.Services {
		if o := b.monitors[s.Iface]; s.Iface != "" && o != nil {
			outputOf[b.svcSlots[s.ID]] = o
		}
	}
	flowSlots, svcSlots := int32(len(b.flowSlots)), int32(len(b.svcSlots))
	capStatus := map[string]Status{}
	for name, flows := range byIface {
		st := b.realiseCapture(name, look(name), linkErr[name])
		if c := b.captures[name]; c != nil {
			t := buildTable(p.Version, flows, func(slot int32) *output { return outputOf[slot] }, flowSlots, svcSlots)
			c.table.Store(t)
			if err := c.prog.SetFilter(xdpFilter(flows)); err != nil {
				st = Status{State: StateError, Reason: fmt.Sprintf("set xdp filter of %s: %v", name, err)}
			}
			b.applyFast(c, t, flows)
			// A link taken over from the previous process runs its program
			// until now: this one's tables are full (handoff.go).
			if err := c.prog.Activate(); err != nil {
				st = Status{State: StateError, Reason: fmt.Sprintf("attach xdp to %s: %v", name, err)}
			}
		}
		capStatus[name] = st
	}
	for _, m := range p.Mirrors {
		st := mirStatus[m.ID]
		if m.Iface != "" {
			st = combineStatus(capStatus[m.Iface], st)
		}
		rep.Mirrors[m.ID] = st
		ms := b.mirrors[m.ID]
		ms.status = st
		b.mirrors[m.ID] = ms
	}
	for _, f := range p.Flows {
		name, ok := flowIface[f.ID]
		if !ok {
			continue
		}
		st := flowStatus(capStatus[name], f.ServiceID, rep.Services[f.ServiceID])
		if st.State == StateActive {
			st.Reason = flowNote[f.ID]
		}
		rep.Flows[f.ID] = st
	}

	// 5. Tear down what the plan no longer uses.
	for name, c := range b.captures {
		if _, ok := byIface[name]; !ok {
			b.teardownCapture(c)
		}
	}
	// An uplink takes the fast path's redirected copies on the same terms
	// as a monitor.
	mons := make([]*output, 0, len(b.monitors)+len(b.uplinks))
	for _, o := range b.monitors {
		mons = append(mons, o)
	}
	for _, o := range b.uplinks {
		mons = append(mons, o)
	}
	b.rwatch.setMonitors(mons, b.cfg.FastPath)
	for name, o := range b.monitors {
		if !wantMon[name] {
			b.closeOutput(o)
		}
	}
	b.removeStalePins()
	// After the fast tables: the kernel's live masks are by their slots.
	b.syncLiveLocked()
	b.log.Info("plan applied", "plan_version", p.Version, "tap_services", len(p.Services), "tap_flows", len(p.Flows),
		"tap_mirrors", len(p.Mirrors), "captures", len(b.captures), "monitors", len(b.monitors), "uplinks", len(b.uplinks))
	return rep, nil
}

// flowStatus combines the status of a flow's capture interface and of its
// service: an error wins over down, the capture's reason over the service's.
func flowStatus(capture Status, svcID string, svc Status) Status {
	own := Status{State: StateActive}
	if svc.State != StateActive {
		own = Status{State: svc.State, Reason: fmt.Sprintf("tap service %s: %s", svcID, svc.Reason)}
	}
	return combineStatus(capture, own)
}

// combineStatus combines the status of a capture interface with that of
// what uses it (a flow's service, a mirror): an error wins over down, the
// capture's reason over the other's.
func combineStatus(capture, own Status) Status {
	switch {
	case capture.State == StateError:
		return capture
	case own.State == StateError:
		return own
	case capture.State == StateDown:
		return capture
	}
	return own
}

// compiledFilter is an expression's Filter, or why it does not compile.
type compiledFilter struct {
	f   *pcapfilter.Filter
	err error
}

// filter returns the compiled filter of expression expr, nil for the empty
// expression (every frame), compiling it the first time.
func (b *Broker) filter(expr string) (*pcapfilter.Filter, error) {
	if expr == "" {
		return nil, nil
	}
	c, ok := b.filters[expr]
	if !ok {
		c.f, c.err = pcapfilter.Compile(expr)
		if c.err != nil {
			c.err = fmt.Errorf("filter %q: %w", expr, c.err)
		}
		b.filters[expr] = c
	}
	return c.f, c.err
}

// pruneFilters forgets the compiled filters plan p no longer uses.
func (b *Broker) pruneFilters(p *Plan) {
	used := map[string]bool{}
	for _, f := range p.Flows {
		used[f.Filter] = true
	}
	for expr := range b.filters {
		if !used[expr] {
			delete(b.filters, expr)
		}
	}
}

func (b *Broker) flowSlot(id string) int32 { return slotOf(b.flowSlots, id) }

func (b *Broker) svcSlot(id string) int32 { return slotOf(b.svcSlots, id) }

// slotOf returns id's counter slot in slots, giving it the next free one
// the first time.
func slotOf(slots map[string]int32, id string) int32 {
	s, ok := slots[id]
	if !ok {
		s = int32(len(slots))
		slots[id] = s
	}
	return s
}

// Output roles, as IfaceStats.Role spells them.
const (
	roleMonitor = "monitor"
	roleUplink  = "uplink"
)

// outputs returns the open outputs of a role: b.monitors or b.uplinks.
func (b *Broker) outputs(role string) map[string]*output {
	if role == roleUplink {
		return b.uplinks
	}
	return b.monitors
}

// realiseMonitor makes b.monitors[name] match the link and returns the
// monitor's status.
func (b *Broker) realiseMonitor(name string, ls linkState, lerr error) Status {
	return b.realiseOutput(roleMonitor, name, ls, lerr)
}

// realiseOutput makes the output of role called name match the link and
// returns its status. Monitors and uplinks alike get a TX-only socket on
// queue 0: it sends beside the kernel's own traffic (an uplink's ARP, ND
// and routed packets go on as before).
func (b *Broker) realiseOutput(role, name string, ls linkState, lerr error) Status {
	outs := b.outputs(role)
	o := outs[name]
	if lerr != nil {
		return Status{State: StateError, Reason: lerr.Error()}
	}
	if o != nil && (!ls.exists || o.ifindex != ls.ifindex) {
		b.closeOutput(o)
		o = nil
	}
	if !ls.exists {
		return Status{State: StateDown, Reason: ls.missingWhy}
	}
	if o == nil {
		s, err := xsk.Open(ls.ifindex, 0, b.cfg.outputSocket())
		if err != nil {
			return Status{State: StateError, Reason: fmt.Sprintf("open %s %s: %v", role, name, err)}
		}
		o = &output{name: name, role: role, ifindex: ls.ifindex, sock: s}
		if ls.stats != nil {
			o.kernelSeen = ls.stats.TxDropped
		}
		outs[name] = o
		b.log.Info(role+" opened", "iface", name, "ifindex", ls.ifindex)
	}
	o.up.Store(ls.up)
	if role == roleMonitor {
		o.maxLen.Store(uint32(ls.carries()))
	} else {
		// The kernel checks a redirected frame against the uplink's MTU
		// before its DEVMAP program encapsulates (and truncates) it.
		o.maxLen.Store(uint32(ls.largestFrame()))
	}
	o.peerMTU.Store(int32(ls.peerMTU))
	checkRedirect(o, b.log)
	if !ls.up {
		return Status{State: StateDown, Reason: ls.downWhy}
	}
	return Status{State: StateActive}
}

// closeOutput closes a monitor's or an uplink's socket, keeping its
// counters.
func (b *Broker) closeOutput(o *output) {
	b.retireOutput(o)
	if err := o.close(); err != nil {
		b.log.Error("close "+o.role, "iface", o.name, "err", err)
	}
	delete(b.outputs(o.role), o.name)
	b.log.Info(o.role+" closed", "iface", o.name)
}

// realiseCapture makes b.captures[name] match the link and returns the
// capture's status.
func (b *Broker) realiseCapture(name string, ls linkState, lerr error) Status {
	if lerr != nil {
		return Status{State: StateError, Reason: lerr.Error()}
	}
	c := b.captures[name]
	if c != nil && (!ls.exists || c.ifindex != ls.ifindex || c.anyDead()) {
		b.teardownCapture(c)
		c = nil
	}
	if !ls.exists {
		return Status{State: StateDown, Reason: ls.missingWhy}
	}
	if c == nil {
		var err error
		if c, err = b.attach(name, ls); err != nil {
			return Status{State: StateError, Reason: err.Error()}
		}
		b.captures[name] = c
	}
	c.frame = b.captureFrame(ls)
	if !ls.up {
		return Status{State: StateDown, Reason: ls.downWhy}
	}
	return Status{State: StateActive}
}

// attach loads the XDP program on the capture interface, opens a socket per
// RX queue and starts the workers.
func (b *Broker) attach(name string, ls linkState) (*capture, error) {
	ic := b.cfg.iface(name)
	unmatched, _ := unmatchedAction(ic.Unmatched) // validated in New
	queues := b.cfg.CaptureQueues(name, ls.rxQueues)
	if queues > xdpprog.MaxQueues {
		return nil, fmt.Errorf("attach %s: %d queues, at most %d", name, queues, xdpprog.MaxQueues)
	}
	scfg := b.cfg.captureSocket()
	maxFrame := b.maxFrame()
	prog, err := b.attachProg(name, ls.ifindex, xdpprog.Config{Unmatched: unmatched, MaxFrame: maxFrame})
	if err != nil {
		// A netdev without native XDP still captures in generic mode,
		// slower but working.
		var gerr error
		prog, gerr = xdpprog.Attach(ls.ifindex, xdpprog.Config{Unmatched: unmatched, MaxFrame: maxFrame, Mode: xdpprog.Generic})
		if gerr != nil {
			return nil, fmt.Errorf("attach xdp to %s: %w", name, errors.Join(err, gerr))
		}
		b.log.Warn("native xdp refused, capturing in generic mode", "iface", name, "err", err)
	}
	c := &capture{name: name, ifindex: ls.ifindex, prog: prog, live: &b.live}
	for q := 0; q < queues; q++ {
		s, err := xsk.Open(ls.ifindex, q, scfg)
		if err != nil && ic.Queues == 0 && q > 0 && errors.Is(err, unix.EINVAL) {
			// IFLA_NUM_RX_QUEUES counts allocated queues; a veth made
			// without numrxqueues has fewer real ones, and binding past
			// them says EINVAL: all real queues have a socket.
			break
		}
		if err != nil {
			b.teardownCapture(c)
			return nil, fmt.Errorf("open capture socket of %s: %w", name, err)
		}
		cpu := -1
		if len(b.cfg.CPUs) > 0 {
			cpu = b.cfg.CPUs[(len(b.allWorkers())+q)%len(b.cfg.CPUs)]
		}
		// Fill before the socket is in the XSKMAP: frames redirected to a
		// socket with an empty fill ring are lost (gotcha 5), and the
		// worker's goroutine may start late on a busy machine.
		s.Fill()
		w := newWorker(c, s, q, &b.cfg, cpu)
		c.workers = append(c.workers, w)
		go w.run(b.notify)
		if err := prog.SetSocket(q, s.FD()); err != nil {
			b.teardownCapture(c)
			return nil, fmt.Errorf("attach %s: %w", name, err)
		}
	}
	b.log.Info("capture attached", "iface", name, "ifindex", ls.ifindex, "queues", len(c.workers), "unmatched", unmatched)
	return c, nil
}

func (c *capture) anyDead() bool {
	for _, w := range c.workers {
		if w.dead.Load() {
			return true
		}
	}
	return false
}

func (b *Broker) allWorkers() []*worker {
	var ws []*worker
	for _, c := range b.captures {
		ws = append(ws, c.workers...)
	}
	return ws
}

// teardownCapture stops the capture's workers, keeps their counters, and
// closes its sockets and program.
func (b *Broker) teardownCapture(c *capture) {
	if c.liveR != nil {
		c.liveR.close()
		c.liveR = nil
	}
	for q := range c.workers {
		// The program is closed below anyway; a failure here only means
		// frames of this queue are counted redirect_failed meanwhile.
		_ = c.prog.ClearSocket(q)
	}
	for _, w := range c.workers {
		w.stop.Store(true)
		w.sock.Wake() // not its poll timeout: taasd stops in ms (issue 9)
	}
	for _, w := range c.workers {
		<-w.done
	}
	b.retireCapture(c)
	for _, w := range c.workers {
		if err := w.sock.Close(); err != nil && !errors.Is(err, xsk.ErrClosed) {
			b.log.Error("close capture socket", "iface", c.name, "queue", w.queue, "err", err)
		}
	}
	if err := c.prog.Close(); err != nil {
		b.log.Error("detach xdp", "iface", c.name, "err", err)
	}
	if b.captures[c.name] == c {
		delete(b.captures, c.name)
	}
	b.log.Info("capture detached", "iface", c.name)
}

// Close tears everything down, detaching every XDP program; the broker
// cannot be used afterwards.
func (b *Broker) Close() error { return b.close(false) }

// Handoff is Close for a restart: the captures on the fast path stay
// attached, pinned in Config.PinDir, and go on copying with their last
// tables until the next broker's Apply takes them over (handoff.go). It is
// Close without a PinDir.
func (b *Broker) Handoff() error { return b.close(b.cfg.PinDir != "") }

func (b *Broker) close(handoff bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.watch.stop()
	b.resolver.stop()
	b.rwatch.stop()
	b.endLiveLocked()
	if handoff {
		b.pinFast()
	}
	for _, c := range b.captures {
		b.teardownCapture(c)
	}
	for _, o := range b.monitors {
		b.closeOutput(o)
	}
	for _, o := range b.uplinks {
		b.closeOutput(o)
	}
	return nil
}

// snapshotClocks records the capture programs whose clocks syncClocks
// keeps; b.mu is held.
func (b *Broker) snapshotClocks() {
	progs := make([]*xdpprog.Capture, 0, len(b.captures))
	for _, c := range b.captures {
		if c.prog != nil {
			progs = append(progs, c.prog)
		}
	}
	b.clocks.Store(&progs)
}

// syncClocks rewrites the clock offset of every capture program, on the
// resolver's tick: the fast path's ERSPAN III timestamps follow a step of
// the wall clock within a second. It runs without b.mu (Close holds it
// while it stops the resolver), from the snapshot of the last Apply; a
// program closed since says so, and the next Apply's snapshot drops it.
func (b *Broker) syncClocks() {
	p := b.clocks.Load()
	if p == nil {
		return
	}
	for _, prog := range *p {
		if err := prog.SyncClock(); err != nil && !errors.Is(err, xdpprog.ErrClosed) {
			b.log.Debug("sync xdp clock", "err", err)
		}
	}
}
