package xdpprog

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The fast path's tunnels: a Copies output can be a tunnel as well as a
// monitor. SetTunnel writes the tunnel's headers into the tunnels map; the
// output TunnelOutput(slot) is then a DEVMAP_HASH entry {uplink ifindex,
// xdp_tunnel}, so the kernel runs the program on each copy before the
// uplink sends it: one instance for all tunnels in native mode, one per
// tunnel in generic mode (see tunnelProgLocked). See xdp.c, "Tunnels".

// MaxTunnels is the number of tunnel slots of a Capture: 0..MaxTunnels-1.
const MaxTunnels = 256

// UnknownTunnel is the counter slot (FastTunnel) of the copies whose tunnel
// xdp_tunnel could not tell, counted Failed and dropped: in native mode,
// copies without the capture program's metadata (a driver without XDP
// metadata support).
const UnknownTunnel = MaxTunnels

// MaxTunnelCopies is the most tunnel outputs of one Copies, through any
// uplinks: the capture program lists a frame's tunnels in its metadata,
// and xdp_tunnel gives the copies that reach one uplink that uplink's
// tunnels in turn (tun_meta and tun_order in xdp.c). A table beyond that is
// refused with ErrFastLimit.
const MaxTunnelCopies = 4

// tunnelKey is the fast_tx key of tunnel slot 0: TUNNEL_KEY in xdp.c. An
// ifindex is a positive int32, so no monitor key reaches it.
const tunnelKey = 0x80000000

// TunnelOutput is the Copies output of tunnel slot: put it in
// Copies.Outputs like a monitor's ifindex.
func TunnelOutput(slot int) int { return tunnelKey + slot }

// tunnelSlot returns the slot of output out and whether it is a tunnel.
func tunnelSlot(out int) (int, bool) {
	if out >= tunnelKey && out < tunnelKey+MaxTunnels {
		return out - tunnelKey, true
	}
	return 0, false
}

// FastTunnelCounter are the counters of one tunnel slot, summed over CPUs.
type FastTunnelCounter struct {
	// Packets and Bytes were sent on, encapsulated; Bytes counts the
	// outer headers (bytes on the wire).
	Packets, Bytes uint64
	// Truncated copies were cut to the uplink's MTU or to the snaplen (and
	// sent).
	Truncated uint64
	// Failed copies were dropped: the kernel refused to grow or cut the
	// frame, or the slot held no tunnel.
	Failed uint64
}

// tunnelState is one SetTunnel slot.
type tunnelState struct {
	h      *TunnelHeader
	uplink int
	prog   *ebpf.Program // the slot's own (generic mode) or c.sharedTunnel
}

// tunnelValue is the kernel form of h sent through uplink.
func tunnelValue(h *TunnelHeader, uplink int) xdpTunnel {
	v := xdpTunnel{Len: uint16(h.n), MaxFrame: uint16(h.maxFrame), Encap: uint8(h.spec.Encap), Port: h.spec.PortMAC,
		Uplink: uint32(uplink)}
	copy(v.Hdr[:], h.hdr[:h.n])
	if h.l4 == ethLen+ipv6Len {
		v.V6 = 1
		if h.spec.Encap == EncapVXLAN {
			// xdp_tunnel sums in memory order: the byte-swapped fold.
			f := fold(h.csum)
			v.Csum = uint32(f>>8 | f<<8)
		}
	}
	return v
}

// loadTunnelProg loads an instance of xdp_tunnel for slot (UnknownTunnel:
// the shared one) on the maps of c, attached as attach: AttachXDPDevMap for
// a DEVMAP entry, AttachNone to run it with BPF_PROG_RUN (which refuses
// DEVMAP programs). The verifier takes about 80 ms.
func (c *Capture) loadTunnelProg(slot int, attach ebpf.AttachType) (*ebpf.Program, error) {
	spec, err := loadXdp()
	if err != nil {
		return nil, fmt.Errorf("load xdp spec: %w", err)
	}
	if err := spec.Variables[xdpVarTunnelSlot].Set(uint32(slot)); err != nil {
		return nil, fmt.Errorf("set tunnel slot: %w", err)
	}
	if attach != ebpf.AttachXDPDevMap {
		if err := spec.Variables[xdpVarTestRun].Set(uint32(1)); err != nil {
			return nil, fmt.Errorf("set test run: %w", err)
		}
	}
	spec.Programs[xdpProgXdpTunnel].AttachType = attach
	var objs struct {
		Prog *ebpf.Program `ebpf:"xdp_tunnel"`
	}
	err = spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		xdpMapTunnels:     c.objs.Tunnels,
		xdpMapTunnelSeq:   c.objs.TunnelSeq,
		xdpMapTunnelStats: c.objs.TunnelStats,
		xdpMapClockOffset: c.objs.ClockOffset,
		xdpMapTunOrder:    c.objs.TunOrder,
	}})
	if err != nil {
		return nil, fmt.Errorf("load tunnel program: %w", err)
	}
	return objs.Prog, nil
}

// writeClockLocked writes the Unix time minus boot time, in ns, for the
// ERSPAN III timestamps of xdp_tunnel.
func (c *Capture) writeClockLocked() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return fmt.Errorf("read boot time: %w", err)
	}
	off := uint64(time.Now().UnixNano() - ts.Nano())
	if err := c.objs.ClockOffset.Update(uint32(0), off, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write clock offset: %w", err)
	}
	return nil
}

// SyncClock writes the clock offset of the ERSPAN III timestamps again
// (Load and SetTunnel write it too). XDP has only the boot clock: without
// this, the fast path's timestamps stay off by however far the wall clock
// was stepped since (NTP, an admin's date). The broker calls it every
// second.
func (c *Capture) SyncClock() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("sync clock: %w", ErrClosed)
	}
	if err := c.writeClockLocked(); err != nil {
		return fmt.Errorf("sync clock: %w", err)
	}
	return nil
}

// SetTunnel makes tunnel slot send through uplink (the ifindex of the
// route's egress interface) with h's headers: a copy sent to
// TunnelOutput(slot) is encapsulated in the kernel, byte for byte as
// h.Encapsulate does (the ERSPAN sequence number is the slot's own counter,
// the timestamp the kernel's clock). Setting a slot again changes its
// headers and uplink in place, also under a live FastTable.
func (c *Capture) SetTunnel(slot int, h *TunnelHeader, uplink int) error {
	if slot < 0 || slot >= MaxTunnels {
		return fmt.Errorf("set tunnel %d: slot out of range 0..%d", slot, MaxTunnels-1)
	}
	if h == nil || uplink <= 0 {
		return fmt.Errorf("set tunnel %d: want a header and an uplink ifindex", slot)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("set tunnel %d: %w", slot, ErrClosed)
	}
	if err := c.writeClockLocked(); err != nil {
		return fmt.Errorf("set tunnel %d: %w", slot, err)
	}
	ts := c.tunnels[slot]
	if ts == nil {
		prog, err := c.tunnelProgLocked(slot)
		if err != nil {
			return fmt.Errorf("set tunnel %d: %w", slot, err)
		}
		ts = &tunnelState{prog: prog}
		c.tunnels[slot] = ts
	}
	if err := c.objs.Tunnels.Update(uint32(slot), tunnelValue(h, uplink), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set tunnel %d: write headers: %w", slot, err)
	}
	ts.h = h
	if ts.uplink != uplink {
		ts.uplink = uplink
		if err := c.retargetLocked(TunnelOutput(slot)); err != nil {
			return fmt.Errorf("set tunnel %d: %w", slot, err)
		}
	}
	return nil
}

// TunnelSeq returns the ERSPAN sequence number the next fast-path copy of
// tunnel slot will carry, so that the AF_XDP workers can go on from it
// when a capture leaves the fast path; SetTunnelSeq sets it, for the way
// back. The kernel numbers the copies of all CPUs from one counter.
func (c *Capture) TunnelSeq(slot int) (uint32, error) {
	var seq uint32
	err := c.withTunnelSeq("read", slot, func(k uint32) error { return c.objs.TunnelSeq.Lookup(k, &seq) })
	return seq, err
}

// SetTunnelSeq sets the ERSPAN sequence number of the next fast-path copy
// of tunnel slot (see TunnelSeq).
func (c *Capture) SetTunnelSeq(slot int, seq uint32) error {
	return c.withTunnelSeq("set", slot, func(k uint32) error { return c.objs.TunnelSeq.Update(k, seq, ebpf.UpdateAny) })
}

func (c *Capture) withTunnelSeq(op string, slot int, fn func(key uint32) error) error {
	return c.withKey(op+" sequence number of tunnel", "slot", slot, MaxTunnels, fn)
}

// tunnelProgLocked is the program for the DEVMAP entries of a new tunnel
// slot. Native mode: one instance for every slot, loaded once (the slot
// comes with each frame, tun_meta in xdp.c); generic mode keeps no
// metadata, so each slot gets its own.
func (c *Capture) tunnelProgLocked(slot int) (*ebpf.Program, error) {
	if c.cfg.Mode == Generic {
		return c.loadTunnelProg(slot, ebpf.AttachXDPDevMap)
	}
	if c.sharedTunnel == nil {
		prog, err := c.loadTunnelProg(UnknownTunnel, ebpf.AttachXDPDevMap)
		if err != nil {
			return nil, err
		}
		c.sharedTunnel = prog
	}
	return c.sharedTunnel, nil
}

// ClearTunnel empties tunnel slot. The live FastTable must not send to it
// any more (SetFast first); cached output sets that do are evicted.
func (c *Capture) ClearTunnel(slot int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("clear tunnel %d: %w", slot, ErrClosed)
	}
	ts := c.tunnels[slot]
	if ts == nil {
		return nil
	}
	out := TunnelOutput(slot)
	if c.fast.tx[out] || c.fast.liveUses(out) {
		return fmt.Errorf("clear tunnel %d: the live fast table sends to it", slot)
	}
	if err := c.evictSetsLocked(out); err != nil {
		return fmt.Errorf("clear tunnel %d: %w", slot, err)
	}
	if err := c.objs.Tunnels.Delete(uint32(slot)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("clear tunnel %d: %w", slot, err)
	}
	delete(c.tunnels, slot)
	if ts.prog == c.sharedTunnel {
		return nil
	}
	if err := ts.prog.Close(); err != nil {
		return fmt.Errorf("clear tunnel %d: close program: %w", slot, err)
	}
	return nil
}

// FastTunnel returns the counters of tunnel slot (or UnknownTunnel), summed
// over CPUs. They only grow while the program is loaded, across SetTunnel
// and ClearTunnel.
func (c *Capture) FastTunnel(slot int) (FastTunnelCounter, error) {
	var s FastTunnelCounter
	err := sumPerCPU(c, c.objs.TunnelStats, "tunnel counter", uint32(slot), &c.fast.tunPC, func(p *xdpTunnelCounter) {
		s.Packets += p.Packets
		s.Bytes += p.Bytes
		s.Truncated += p.Truncated
		s.Failed += p.Failed
	})
	return s, err
}

// checkTunnelsLocked checks the tunnel outputs of cp: each set with
// SetTunnel, at most MaxTunnelCopies, through any uplinks.
func (c *Capture) checkTunnelsLocked(cp Copies) error {
	n := 0
	for _, out := range cp.Outputs {
		s, ok := tunnelSlot(out)
		if !ok {
			continue
		}
		if c.tunnels[s] == nil {
			return fmt.Errorf("output to tunnel %d: no such tunnel (SetTunnel first)", s)
		}
		n++
	}
	if n > MaxTunnelCopies {
		return fmt.Errorf("a frame has %d tunnel copies, at most %d: %w", n, MaxTunnelCopies, ErrFastLimit)
	}
	return nil
}

// outputValueLocked is the DEVMAP value of output out: a monitor's
// ifindex, or a tunnel's uplink and program.
func (c *Capture) outputValueLocked(out int) (xdpBpfDevmapVal, error) {
	var v xdpBpfDevmapVal
	slot, ok := tunnelSlot(out)
	if !ok {
		v.Ifindex = uint32(out)
		if c.fast.snaps[out] != 0 {
			v.BpfProg.Fd = int32(c.fast.snap.FD())
		}
		return v, nil
	}
	ts := c.tunnels[slot]
	if ts == nil {
		return v, fmt.Errorf("output to tunnel %d: no such tunnel (SetTunnel first)", slot)
	}
	v.Ifindex = uint32(ts.uplink)
	v.BpfProg.Fd = int32(ts.prog.FD())
	return v, nil
}

// retargetLocked rewrites, in place, every DEVMAP entry of output out:
// its fast_tx entry and its entries in the output sets.
func (c *Capture) retargetLocked(out int) error {
	v, err := c.outputValueLocked(out)
	if err != nil {
		return err
	}
	f := &c.fast
	if f.tx[out] {
		if err := c.objs.FastTx.Update(uint32(out), v, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("output %#x: %w", out, err)
		}
	}
	for _, set := range f.sets {
		for i, o := range set.outs {
			if o != out {
				continue
			}
			if err := set.m.Update(uint32(i), v, ebpf.UpdateAny); err != nil {
				return fmt.Errorf("output set copy %d to %#x: %w", i, out, err)
			}
		}
	}
	return nil
}

// evictSetsLocked deletes the cached output sets that send to out; none
// may be live.
func (c *Capture) evictSetsLocked(out int) error {
	f := &c.fast
	var errs []error
	for key, set := range f.sets {
		for _, o := range set.outs {
			if o == out {
				errs = append(errs, c.deleteSetLocked(key))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// closeTunnelsLocked closes every tunnel program (Close).
func (c *Capture) closeTunnelsLocked() error {
	var errs []error
	for slot, ts := range c.tunnels {
		if ts.prog != c.sharedTunnel {
			if err := ts.prog.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close tunnel %d program: %w", slot, err))
			}
		}
		delete(c.tunnels, slot)
	}
	if c.sharedTunnel != nil {
		if err := c.sharedTunnel.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close the tunnel program: %w", err))
		}
		c.sharedTunnel = nil
	}
	return errors.Join(errs...)
}
