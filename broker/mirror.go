package broker

// Tap mirrors (issue 10, remote delivery): a port's frames, per direction,
// encapsulated (xdpprog.TunnelHeader) towards a remote collector. Each
// (mirror, direction) is a tunnel, compiled into the capture's table like a
// flow with a service of its own (table.go): the same direction semantics,
// a frame goes to each tunnel at most once. Its output is the uplink the
// kernel's route to the remote IP leaves through (resolve.go), with the
// outer headers built from that route and the next hop's neighbour entry.
// What cannot send (no route, neighbour unresolved, uplink down, port
// unbound) is DOWN with the reason, its copies counted mirror_down.

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync/atomic"

	"github.com/taas-appliance/taas/xdpprog"
)

// tunnel is one direction of a tap mirror as a table holds it; immutable
// once built, except the sequence number it points to.
type tunnel struct {
	// slot is the tunnel's stable counter slot.
	slot int32
	// hdr and out are the outer headers and the uplink; both nil while the
	// mirror cannot send.
	hdr *xdpprog.TunnelHeader
	out *output
	// seq is the last ERSPAN sequence number sent, stable across plans so
	// that numbers go on increasing through a plan swap or a new route.
	// Workers take the next one under out.mu.
	seq *atomic.Uint32
}

// tunnelKey names one tunnel for its stable slot.
func tunnelKey(mirrorID string, d Direction) string {
	switch d {
	case DirIn:
		return mirrorID + "/in"
	case DirOut:
		return mirrorID + "/out"
	}
	return mirrorID + "/both"
}

// tunSlot returns the stable counter slot of a tunnel and its sequence
// number.
func (b *Broker) tunSlot(key string) (int32, *atomic.Uint32) {
	s := slotOf(b.tunSlots, key)
	for int(s) >= len(b.tunSeqs) {
		b.tunSeqs = append(b.tunSeqs, new(atomic.Uint32))
	}
	return s, b.tunSeqs[s]
}

// encapOf maps a mirror's type to the encoder's.
func encapOf(t TunnelType) (xdpprog.Encap, bool) {
	switch t {
	case TunnelGRE:
		return xdpprog.EncapGRE, true
	case TunnelERSPANv1:
		return xdpprog.EncapERSPAN2, true
	case TunnelERSPANv3:
		return xdpprog.EncapERSPAN3, true
	case TunnelVXLAN:
		return xdpprog.EncapVXLAN, true
	}
	return 0, false
}

// mirrorState is what Apply found for one mirror, kept for Stats.
type mirrorState struct {
	status Status
	res    resolution
	slots  []int32
	// maxFrame is the most bytes of an inner frame its tunnels send
	// (TunnelHeader.MaxFrame: the uplink's MTU less the outer headers,
	// the mirror's snaplen), 0 when none can send: a live capture of the
	// mirror cuts to it.
	maxFrame int
}

// realiseMirrors resolves every mirror of p, opens the uplinks they leave
// through (closing those no mirror uses any more) and returns the tunnels
// to compile per capture interface and each mirror's status, before its
// capture interface's is known. caps are the plan's capture interfaces,
// for the loop guard.
func (b *Broker) realiseMirrors(p *Plan, look func(string) linkState, linkErr map[string]error,
	caps []string) (map[string][]compiledFlow, map[string]Status) {
	byIface := map[string][]compiledFlow{}
	status := map[string]Status{}
	resolved := map[netip.Addr]resolution{}
	nc := neighCache{}
	upStatus := map[string]Status{}
	states := map[string]mirrorState{}
	for _, m := range p.Mirrors {
		st, res := b.mirrorRoute(m, p.Uplinks, look, linkErr, caps, resolved, nc, upStatus)
		ms := mirrorState{res: res}
		var tuns []*tunnel
		for _, tn := range m.Tunnels {
			slot, seq := b.tunSlot(tunnelKey(m.ID, tn.Direction))
			ms.slots = append(ms.slots, slot)
			tuns = append(tuns, &tunnel{slot: slot, seq: seq})
			if st.State != StateActive {
				continue
			}
			enc, _ := encapOf(m.Type) // mirrorRoute checked it
			hdr, err := xdpprog.NewTunnelHeader(xdpprog.TunnelSpec{Encap: enc, ID: tn.ID, PortMAC: m.MAC,
				SrcMAC: res.srcMAC, DstMAC: res.dstMAC, Src: res.src, Dst: m.RemoteIP, MTU: res.mtu, Snaplen: m.Snaplen})
			if err != nil {
				st = Status{State: StateError, Reason: fmt.Sprintf("tunnel %s %d: %v", m.Type, tn.ID, err)}
				continue
			}
			out := b.uplinks[res.uplink] // realised: st is ACTIVE
			if why := encapRoom(out.sock.MaxTxFrame(), b.maxFrame(), hdr); why != "" {
				st = Status{State: StateError, Reason: fmt.Sprintf("tunnel %s %d: uplink %s %s", m.Type, tn.ID, res.uplink, why)}
				continue
			}
			tuns[len(tuns)-1].hdr, tuns[len(tuns)-1].out = hdr, out
			ms.maxFrame = hdr.MaxFrame()
		}
		if st.State != StateActive {
			// Every copy is counted mirror_down until it can send.
			for _, t := range tuns {
				t.hdr, t.out = nil, nil
			}
		}
		if m.Iface != "" {
			for i, tn := range m.Tunnels {
				byIface[m.Iface] = append(byIface[m.Iface], compiledFlow{mac: macKey(m.MAC), dir: tn.Direction,
					slot: -1, tun: tuns[i]})
			}
		}
		status[m.ID] = st
		ms.status = st
		states[m.ID] = ms
	}
	for name, o := range b.uplinks {
		if _, ok := upStatus[name]; !ok {
			b.closeOutput(o)
		}
	}
	b.mirrors = states
	b.resolver.set(resolved, slices.Clone(p.Uplinks))
	return byIface, status
}

// mirrorRoute resolves mirror m (through resolved, the resolutions of this
// Apply) and realises its uplink (through upStatus); it returns the
// mirror's status and the resolution.
func (b *Broker) mirrorRoute(m Mirror, uplinks []string, look func(string) linkState, linkErr map[string]error,
	caps []string, resolved map[netip.Addr]resolution, nc neighCache, upStatus map[string]Status) (Status, resolution) {
	if _, ok := encapOf(m.Type); !ok {
		return Status{State: StateError, Reason: fmt.Sprintf("mirror type %d is not supported", m.Type)}, resolution{}
	}
	if !m.RemoteIP.IsValid() {
		return Status{State: StateError, Reason: "mirror has no remote IP"}, resolution{}
	}
	if m.Iface == "" {
		return Status{State: StateDown, Reason: fmt.Sprintf("port %s has no interface binding", m.PortID)}, resolution{}
	}
	remote := m.RemoteIP.Unmap()
	res, ok := resolved[remote]
	if !ok {
		res = resolve(remote, uplinks, nc)
		resolved[remote] = res
		if res.unresolved {
			// The kernel resolves it (its own ARP or ND); the resolver
			// reports the answer.
			if err := nudgeNeighbour(res.ifindex, res.nextHop); err != nil {
				b.log.Warn("resolve neighbour", "remote_ip", remote, "err", err)
			}
		}
	}
	if res.uplink == "" || !slices.Contains(uplinks, res.uplink) {
		return Status{State: StateDown, Reason: res.why}, res
	}
	// The uplink first: a loop is an error whatever the neighbour says.
	up, ok := upStatus[res.uplink]
	if !ok {
		up = b.realiseUplink(res.uplink, look, linkErr, caps)
		upStatus[res.uplink] = up
	}
	if up.State == StateError || res.ok() {
		return up, res
	}
	return Status{State: StateDown, Reason: res.why}, res
}

// realiseUplink opens uplink name's socket unless the uplink would feed a
// capture back (the loop guard, loop.go), and returns its status.
func (b *Broker) realiseUplink(name string, look func(string) linkState, linkErr map[string]error, caps []string) Status {
	if why := feedsAny(name, caps); why != "" {
		if o := b.uplinks[name]; o != nil {
			b.closeOutput(o)
		}
		return Status{State: StateError, Reason: why}
	}
	ls := look(name)
	st := b.realiseOutput(roleUplink, name, ls, linkErr[name])
	if st.State == StateDown && ls.exists {
		st.Reason = fmt.Sprintf("uplink %s", st.Reason)
	}
	return st
}

// captureNames are the capture interfaces of p: those of its flows and of
// its mirrors, each once, in plan order.
func captureNames(p *Plan) []string {
	var caps []string
	add := func(name string) {
		if name != "" && !slices.Contains(caps, name) {
			caps = append(caps, name)
		}
	}
	for _, f := range p.Flows {
		add(f.Iface)
	}
	for _, m := range p.Mirrors {
		add(m.Iface)
	}
	return caps
}

// mirrorStats are the state and counters of p's mirrors; sets are the
// counter sets to sum.
func (b *Broker) mirrorStats(p *Plan, sets []*counterSet) []MirrorStats {
	var out []MirrorStats
	for _, m := range p.Mirrors {
		ms := MirrorStats{ID: m.ID, Status: StateDown.String(), Drops: map[string]uint64{}}
		for d := range numTunnelDrops {
			ms.Drops[d.String()] = 0
		}
		st, ok := b.mirrors[m.ID]
		if ok {
			ms.Status, ms.Reason = st.status.State.String(), st.status.Reason
			if slices.Contains(p.Uplinks, st.res.uplink) {
				ms.Uplink = st.res.uplink
			}
		}
		for _, slot := range st.slots {
			for _, set := range sets {
				if int(slot) >= len(set.tuns) {
					continue
				}
				c := &set.tuns[slot]
				ms.EncapPackets += c.pkts.Load()
				ms.EncapBytes += c.bytes.Load()
				ms.TruncatedPackets += c.truncated.Load()
				for d := range numTunnelDrops {
					ms.Drops[d.String()] += c.drops[d].Load()
				}
			}
		}
		out = append(out, ms)
	}
	return out
}

// usedUplinks are the uplinks with an open socket, sorted.
func (b *Broker) usedUplinks() []string {
	names := make([]string, 0, len(b.uplinks))
	for n := range b.uplinks {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// encapRoom says why an uplink's TX frames of txFrame bytes cannot hold a
// copy of a received frame (at most rxFrame bytes) under hdr's outer
// headers, "" when they can: the workers' Encapsulate would fail on it
// (worker.go drops such a copy as encap_failed).
func encapRoom(txFrame, rxFrame int, hdr *xdpprog.TunnelHeader) string {
	if need := hdr.Overhead() + min(rxFrame, hdr.MaxFrame()); txFrame < need {
		return fmt.Sprintf("TX frames hold %d bytes, a copy needs up to %d", txFrame, need)
	}
	return ""
}
