package broker

// Live captures (issue 12): a bounded stream of the frames a tap service
// delivers, a tap flow matches or a tap mirror sends (its inner frames), on
// both paths, for the API's pcapng endpoint. A capture never changes what
// monitors receive and never slows the data path: frames it has no room
// for are dropped and counted.
//
//  1. start:   StartLive takes a free bit i < MaxLive and preallocates the
//              capture's buffers (a fixed byte budget, liveBudget)
//  2. resolve: at start and at every Apply (syncLiveLocked), each capture's
//              target becomes slots: a service's counter slot, a flow's
//              counter slot, a mirror's tunnel slots; bit i is set in the
//              masks of those slots. The masks go into an immutable
//              liveSet (Broker.live, an atomic.Pointer) for the workers,
//              and by kernel slot into every fast-path program (SetLive).
//              A target that left the plan ends its capture.
//  3. AF_XDP:  a worker loads the live set once per batch; classify ORs the
//              masks of the flows a frame matched, sendChunk those of the
//              services and tunnels that sent a copy of it; after the
//              batch's sends, each frame with a mask is offered once to
//              each capture of its bits.
//  4. fast:    the XDP program outputs a frame with its mask to a perf
//              buffer; one reader goroutine per capture interface (while it
//              has masks) offers it the same way, its monotonic time turned
//              into wall time; what the kernel could not hand over (its
//              live_failed counter: a full buffer) counts as dropped for
//              the captures with a mask on that interface. A frame stamped
//              before its bit changed hands (liveSet.since) is not the
//              capture's that has the bit now.
//  5. offer:   under the capture's mutex, once per batch (the worker's; the
//              fast-path reader's per frame), take a free buffer for each
//              frame (none: Dropped++), copy the frame's first bytes (the
//              target's cut: a service's or a mirror's snaplen, then the
//              capture's) and queue it (the queue has room for every
//              buffer); then kick the capture's pump
//  6. pump:    one goroutine per capture moves what is queued to Packets.
//              A send on a channel a reader waits on wakes the reader, a
//              futex call when it sleeps: the pump pays it, not the data
//              path (a worker sending to Packets itself mirrored 8 times
//              fewer 64-byte frames). Release returns a buffer.
//
// Nothing in 3 to 5 allocates or blocks, and a worker takes a capture's
// mutex once per batch.

import (
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/taas-appliance/taas/xdpprog"
)

// MaxLive is how many live captures run at once.
const MaxLive = 8

// The kernel's masks must tell every capture apart.
var _ [xdpprog.MaxLive - MaxLive]struct{}

// ErrLiveLimit is StartLive's error when MaxLive captures run.
var ErrLiveLimit = errors.New("broker: the most live captures already run")

// liveBudget is the bytes of frame buffers of one live capture: what a
// reader that stalls can fall behind by before frames are dropped. 8 MiB
// hold 4681 whole 1792-byte frames, or 16384 cut to 512 bytes (8 captures:
// 64 MiB at most).
const liveBudget = 8 << 20

// maxLiveBuffers bounds a capture's buffers when they are small, so that
// the packets' own headers stay a fraction of the budget.
const maxLiveBuffers = 16384

// livePerCPU is the perf buffer, in bytes per CPU, of a capture
// interface's live reader on the fast path: about 2,700 whole 1500-byte
// frames or 40,000 64-byte ones a CPU may hand over before the reader
// takes them. With 1 MiB and a wakeup at a quarter, a 64 B capture lost
// 31% of its frames flat out and some at 0.06 Mpps; with 4 MiB and a wakeup
// every 64 KiB (xdpprog.OpenLive), 1% flat out and none at 0.3 Mpps
// (TestBenchLiveSmoke, same machine, same hour).
const livePerCPU = 4 << 20

// liveReadWait is the longest a fast-path reader waits in one Read: the
// kernel's watermark batches wakeups, and a trickle is delivered within
// it; a capture that starts or ends is seen by the next Read.
const liveReadWait = 20 * time.Millisecond

// liveKickEvery is how many frames a fast-path reader offers between kicks
// of the pumps: a Read may go on for its whole wait while frames come.
const liveKickEvery = 256

// LiveKind is what a live capture follows.
type LiveKind uint8

const (
	LiveService LiveKind = iota + 1 // the copies a tap service delivers
	LiveFlow                        // the frames a tap flow matches
	LiveMirror                      // the inner frames a tap mirror sends
)

func (k LiveKind) String() string {
	switch k {
	case LiveService:
		return "tap service"
	case LiveFlow:
		return "tap flow"
	case LiveMirror:
		return "tap mirror"
	}
	return fmt.Sprintf("kind %d", uint8(k))
}

// LiveTarget names the resource a live capture follows.
type LiveTarget struct {
	Kind LiveKind
	ID   string
}

// LivePacket is one captured frame.
type LivePacket struct {
	// Time is when the data plane saw the frame.
	Time time.Time
	// Length is the frame's length; Data holds its first bytes (the
	// capture's snaplen, or the service's or mirror's own when shorter).
	// Data is valid until Release.
	Length int
	Data   []byte

	buf []byte // the capture's buffer Data is cut from
	// owner is the capture the buffer belongs to; held is true from the
	// capture's taking the buffer for a frame to its Release (guarded by
	// owner.mu).
	owner *LiveCapture
	held  bool
}

// LiveStats are the counters of one live capture.
type LiveStats struct {
	// Captured frames were handed to Packets; Dropped ones had no room
	// (a slow reader), were lost in the kernel's buffer, or were still
	// queued when Stop ended the capture: after Stop, the counters are
	// final and every frame never handed to Packets is in Dropped.
	Captured, Dropped uint64
}

// LiveTotals are the counters of every live capture since start, for
// metrics and taas/stats.
type LiveTotals struct {
	Running           int
	Captured, Dropped uint64
}

// LiveCapture is one running capture. Its methods are safe for concurrent
// use.
type LiveCapture struct {
	target  LiveTarget
	snaplen int
	bufLen  int
	packets chan *LivePacket
	// signal (room for one) tells the pump that packets are queued; end
	// closes it. Nil for NewLiveCapture's, which has no pump.
	signal chan struct{}

	b   *Broker // nil: NewLiveCapture's, which nothing feeds
	bit int

	// mu guards the buffers and counters below. A worker takes it once
	// per batch, the fast path's reader once per frame, the pump once
	// per kick, Release once per packet.
	mu sync.Mutex
	// free are the buffers no one holds, queued those taken for the pump;
	// both have room for every buffer, so appending never allocates.
	free, queued []*LivePacket
	closed       bool
	// Captured frames were queued, dropped ones found no free buffer or
	// were lost in the kernel.
	captured, dropped uint64
	// staged counts the packets a fast-path reader took and has not
	// queued yet; unstaged signals (on mu) when it falls to 0 after end,
	// for Stop.
	staged   int
	unstaged *sync.Cond
	// badReleases counts Release calls of a packet this capture did not
	// hold (a second Release, another capture's packet): ignored, the
	// first logged.
	badReleases uint64

	// spare is the pump's: the queue it hands over next (queued and spare
	// swap at each kick).
	spare   []*LivePacket
	endOnce sync.Once

	// seen: the target was in a plan since the capture started; when it
	// leaves, the capture ends. Guarded by Broker.mu.
	seen bool
	// recorded is what Broker.liveDone holds of the capture's counters
	// once it is retired. Guarded by Broker.mu.
	recorded LiveStats
}

// NewLiveCapture is a capture no data plane feeds: its Packets channel
// stays empty until Stop closes it. It serves NullDataPlane.
func NewLiveCapture(t LiveTarget, snaplen int) *LiveCapture {
	return &LiveCapture{target: t, snaplen: snaplen, packets: make(chan *LivePacket), bit: -1}
}

// newLiveCapture is a capture with its buffers: frames up to maxFrame
// bytes, cut to snaplen (0: whole). Its pump runs until it ends.
func newLiveCapture(t LiveTarget, snaplen, maxFrame int) *LiveCapture {
	bufLen := maxFrame
	if snaplen > 0 {
		bufLen = min(snaplen, maxFrame)
	}
	n := min(liveBudget/bufLen, maxLiveBuffers)
	c := &LiveCapture{target: t, snaplen: snaplen, bufLen: bufLen, packets: make(chan *LivePacket, n),
		signal: make(chan struct{}, 1), free: make([]*LivePacket, n), queued: make([]*LivePacket, 0, n),
		spare: make([]*LivePacket, 0, n)}
	c.unstaged = sync.NewCond(&c.mu)
	mem := make([]byte, n*bufLen)
	pkts := make([]LivePacket, n)
	for i := range pkts {
		pkts[i].buf = mem[i*bufLen : (i+1)*bufLen : (i+1)*bufLen]
		pkts[i].owner = c
		c.free[i] = &pkts[i]
	}
	go c.pump()
	return c
}

// pump moves queued packets to Packets when kicked, until end.
func (c *LiveCapture) pump() {
	for range c.signal {
		c.forward()
	}
	c.forward() // what was queued before end
	close(c.packets)
}

// forward moves every queued packet to Packets; it never blocks, Packets
// having room for every buffer.
func (c *LiveCapture) forward() {
	c.mu.Lock()
	q := c.queued
	c.queued = c.spare
	c.mu.Unlock()
	for _, p := range q {
		c.packets <- p
	}
	clear(q)
	c.spare = q[:0]
}

// Packets delivers the captured frames; it is closed when the capture
// ends. Each packet must be handed back with Release.
//
// Frames come in the order the data plane saw them on one queue and CPU;
// across queues, CPUs or interfaces (a service fed by several, a flow on a
// multi-queue NIC) their times may be slightly out of order: the AF_XDP
// workers offer a batch each, the fast path's readers sort only what one
// wakeup of one interface brought.
func (c *LiveCapture) Packets() <-chan *LivePacket { return c.packets }

// Release returns p's buffer to the capture. A packet the capture does
// not hold (released already, or another capture's) is ignored and
// counted, the first one logged: the pool stays whole.
func (c *LiveCapture) Release(p *LivePacket) {
	if p == nil || c.signal == nil {
		return
	}
	c.mu.Lock()
	if p.owner != c || !p.held {
		c.badReleases++
		first := c.badReleases == 1
		c.mu.Unlock()
		if first && c.b != nil {
			c.b.log.Error("live capture: Release of a packet it does not hold, ignored", "kind", c.target.Kind.String(),
				"id", c.target.ID)
		}
		return
	}
	c.releaseLocked(p)
	c.mu.Unlock()
}

// releaseLocked puts p, held, back in the free list. c.mu is held.
func (c *LiveCapture) releaseLocked(p *LivePacket) {
	p.Data, p.held = nil, false
	c.free = append(c.free, p) // room for every buffer
}

// Stats returns the capture's counters.
func (c *LiveCapture) Stats() LiveStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return LiveStats{Captured: c.captured, Dropped: c.dropped}
}

// Target is what the capture follows.
func (c *LiveCapture) Target() LiveTarget { return c.target }

// Stop ends the capture: Packets is closed, and what it still held is
// dropped: counted in Dropped, no longer in Captured (so are frames of the
// fast path's reader not queued yet). Once Stop returns, Stats is final.
// It may be called more than once.
func (c *LiveCapture) Stop() {
	c.end()
	// Buffers a reader has not taken go back to the pool; one it reads
	// concurrently it releases itself (and it counts as captured).
	var n uint64
	for p := range c.packets {
		n++
		c.Release(p)
	}
	c.mu.Lock()
	c.captured -= n
	c.dropped += n
	// A fast-path reader's packets staged for c come back within its
	// wait (liveReadWait), counted dropped: then the counters are final.
	for c.staged > 0 {
		c.unstaged.Wait()
	}
	c.mu.Unlock()
	if c.b != nil {
		c.b.removeLive(c)
	}
}

// end stops offers and kicks, and has Packets closed, once (by the pump,
// after what was queued). It never takes Broker.mu.
func (c *LiveCapture) end() {
	c.endOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		if c.signal == nil {
			close(c.packets) // NewLiveCapture's: no pump
			return
		}
		// No kick sends any more: closed is set under mu.
		close(c.signal)
	})
}

// takeLocked copies data, the first bytes of a frame of length bytes seen
// at ts, into a free buffer and counts it captured, or counts it dropped
// when none is free; nil when dropped or the capture has ended. c.mu is
// held.
func (c *LiveCapture) takeLocked(ts time.Time, data []byte, length int) *LivePacket {
	if c.closed {
		return nil
	}
	n := len(c.free)
	if n == 0 {
		c.dropped++
		return nil
	}
	p := c.free[n-1]
	c.free = c.free[:n-1]
	p.held = true
	p.Data = p.buf[:copy(p.buf, data)]
	p.Length, p.Time = length, ts
	c.captured++
	return p
}

// offerLocked queues a copy of a frame for the pump (takeLocked). c.mu is
// held.
func (c *LiveCapture) offerLocked(ts time.Time, data []byte, length int) {
	if p := c.takeLocked(ts, data, length); p != nil {
		c.queued = append(c.queued, p) // room for every buffer
	}
}

// offer is offerLocked for one frame.
func (c *LiveCapture) offer(ts time.Time, data []byte, length int) {
	c.mu.Lock()
	c.offerLocked(ts, data, length)
	c.mu.Unlock()
}

// queue queues p, taken earlier, for the pump; an ended capture takes it
// back and counts it dropped (it was counted captured when taken).
func (c *LiveCapture) queue(p *LivePacket) {
	c.mu.Lock()
	if c.staged--; c.staged == 0 && c.closed {
		c.unstaged.Broadcast()
	}
	if c.closed {
		c.releaseLocked(p)
		c.captured--
		c.dropped++
	} else {
		c.queued = append(c.queued, p)
	}
	c.mu.Unlock()
}

// kick tells the pump that packets are queued: once per batch.
func (c *LiveCapture) kick() {
	c.mu.Lock()
	if !c.closed {
		select {
		case c.signal <- struct{}{}:
		default: // the pump has a kick pending
		}
	}
	c.mu.Unlock()
}

// lose counts n frames the kernel lost while the capture ran.
func (c *LiveCapture) lose(n uint64) {
	c.mu.Lock()
	if !c.closed {
		c.dropped += n
	}
	c.mu.Unlock()
}

// liveSet is what the data path needs of the running captures: immutable
// once published, loaded once per batch (workers) or per frame (fast-path
// readers).
type liveSet struct {
	caps [MaxLive]*LiveCapture
	// cut[i] is how many bytes of a frame capture i keeps: its target's
	// (a service's or mirror's snaplen), its own snaplen, its buffers.
	cut [MaxLive]int
	// Masks by stable slot: the captures that want the frames a flow
	// matches, the copies a service or a tunnel sends.
	flows, svcs, tuns []uint8
	// since[i] is when, on the kernel's clock (xdpprog.Monotonic), bit i
	// last changed hands: a frame the fast path stamped at or before it
	// carries the bit for the capture that had it before (still in the
	// perf buffer when a new capture takes the bit), or for nobody.
	since [MaxLive]uint64
}

// mask is slots[s], 0 past its end.
func mask(slots []uint8, s int32) uint8 {
	if s >= 0 && int(s) < len(slots) {
		return slots[s]
	}
	return 0
}

// offer queues frame (length bytes on the wire; data may be a prefix) for
// every capture of m, without kicking their pumps.
func (ls *liveSet) offer(m uint8, ts time.Time, data []byte, length int) {
	for ; m != 0; m &= m - 1 {
		i := bits.TrailingZeros8(m)
		if c := ls.caps[i]; c != nil {
			c.offer(ts, data[:min(len(data), ls.cut[i])], length)
		}
	}
}

// kick kicks the pumps of the captures of m.
func (ls *liveSet) kick(m uint8) {
	for ; m != 0; m &= m - 1 {
		if c := ls.caps[bits.TrailingZeros8(m)]; c != nil {
			c.kick()
		}
	}
}

// lose counts n lost frames on every capture of m in the set.
func (ls *liveSet) lose(m uint8, n uint64) {
	for ; m != 0; m &= m - 1 {
		if c := ls.caps[bits.TrailingZeros8(m)]; c != nil {
			c.lose(n)
		}
	}
}

// StartLive starts a capture of t's frames, cut to snaplen bytes (0: whole
// frames). It returns ErrLiveLimit when MaxLive captures run. A target the
// plan does not hold (yet) captures nothing until it does; the capture
// ends (Packets closed) when the target leaves the plan or the broker
// closes.
func (b *Broker) StartLive(t LiveTarget, snaplen int) (*LiveCapture, error) {
	if t.Kind < LiveService || t.Kind > LiveMirror {
		return nil, fmt.Errorf("start live capture: %v: want a tap service, flow or mirror", t.Kind)
	}
	if snaplen < 0 {
		return nil, fmt.Errorf("start live capture of %v %s: snaplen %d: want 0 (whole frames) or more", t.Kind, t.ID, snaplen)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("start live capture of %v %s: broker closed", t.Kind, t.ID)
	}
	// The bit freed longest ago (never used: 0): the fast path's frames
	// of the capture that had it have had the most time to drain.
	bit := -1
	for i, c := range b.liveCaps {
		if c == nil && (bit < 0 || b.liveSince[i] < b.liveSince[bit]) {
			bit = i
		}
	}
	if bit < 0 {
		return nil, ErrLiveLimit
	}
	c := newLiveCapture(t, snaplen, b.maxFrame())
	c.b, c.bit = b, bit
	b.liveCaps[bit] = c
	// Before its masks are written: what the kernel stamps from now on
	// with this bit is the new capture's.
	b.liveSince[bit] = xdpprog.Monotonic()
	b.syncLiveLocked()
	b.log.Info("live capture started", "kind", t.Kind.String(), "id", t.ID, "snaplen", snaplen, "bit", bit)
	return c, nil
}

// LiveTotals returns the counters of every live capture.
func (b *Broker) LiveTotals() LiveTotals {
	b.mu.Lock()
	defer b.mu.Unlock()
	lt := LiveTotals{Captured: b.liveDone.Captured, Dropped: b.liveDone.Dropped}
	for _, c := range b.liveCaps {
		if c != nil {
			st := c.Stats()
			lt.Running++
			lt.Captured += st.Captured
			lt.Dropped += st.Dropped
		}
	}
	return lt
}

// removeLive takes c, ended, out of the running captures.
func (b *Broker) removeLive(c *LiveCapture) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.bit < 0 || b.liveCaps[c.bit] != c {
		// Ended by the broker already: its counters moved since (Stop's
		// drain).
		b.recordLiveLocked(c)
		return
	}
	b.retireLiveLocked(c)
	if !b.closed {
		b.syncLiveLocked()
	}
}

// retireLiveLocked ends c, keeps its counters and frees its bit; b.mu is
// held. syncLiveLocked stamps the bit's changeover once the kernel's masks
// no longer have it.
func (b *Broker) retireLiveLocked(c *LiveCapture) {
	c.end()
	st := b.recordLiveLocked(c)
	b.liveCaps[c.bit] = nil
	b.liveRetired |= 1 << c.bit
	b.log.Info("live capture ended", "kind", c.target.Kind.String(), "id", c.target.ID,
		"captured", st.Captured, "dropped", st.Dropped)
}

// recordLiveLocked brings liveDone up to c's counters, ended, and returns
// them; b.mu is held. The differences wrap: Stop moves frames from
// captured to dropped.
func (b *Broker) recordLiveLocked(c *LiveCapture) LiveStats {
	st := c.Stats()
	b.liveDone.Captured += st.Captured - c.recorded.Captured
	b.liveDone.Dropped += st.Dropped - c.recorded.Dropped
	c.recorded = st
	return st
}

// resolveLive sets bit in ls's masks of t's slots in the current plan and
// returns the bytes of a frame its target keeps (0: whole frames); ok is
// false when the plan does not hold t. b.mu is held.
func (b *Broker) resolveLive(ls *liveSet, t LiveTarget, bit uint8) (cut int, ok bool) {
	if b.plan == nil {
		return 0, false
	}
	switch t.Kind {
	case LiveService:
		for _, s := range b.plan.Services {
			if s.ID == t.ID {
				ls.svcs[b.svcSlots[s.ID]] |= bit
				return s.Snaplen, true
			}
		}
	case LiveFlow:
		for _, f := range b.plan.Flows {
			if f.ID == t.ID {
				ls.flows[b.flowSlots[f.ID]] |= bit
				return 0, true
			}
		}
	case LiveMirror:
		for _, m := range b.plan.Mirrors {
			if m.ID == t.ID {
				ms := b.mirrors[m.ID]
				for _, s := range ms.slots {
					ls.tuns[s] |= bit
				}
				// The inner frame as sent: the tunnel cuts it to what
				// its uplink carries and the mirror's snaplen.
				if ms.maxFrame > 0 {
					return ms.maxFrame, true
				}
				return m.Snaplen, true
			}
		}
	}
	return 0, false
}

// syncLiveLocked resolves every live capture against the current plan,
// ending those whose target left it, publishes the live set to the
// workers and sets the fast-path programs' masks. b.mu is held.
func (b *Broker) syncLiveLocked() {
	ls := &liveSet{flows: make([]uint8, len(b.flowSlots)), svcs: make([]uint8, len(b.svcSlots)),
		tuns: make([]uint8, len(b.tunSlots))}
	running := false
	for i, c := range b.liveCaps {
		if c == nil {
			continue
		}
		cut, ok := b.resolveLive(ls, c.target, 1<<i)
		if !ok && c.seen {
			b.retireLiveLocked(c)
			continue
		}
		c.seen = c.seen || ok
		ls.caps[i], ls.since[i] = c, b.liveSince[i]
		ls.cut[i] = c.bufLen
		if cut > 0 {
			ls.cut[i] = min(cut, c.bufLen)
		}
		running = true
	}
	if running {
		b.live.Store(ls)
	} else {
		b.live.Store(nil)
	}
	for _, c := range b.captures {
		b.syncFastLive(c, ls)
	}
	b.stampRetiredLocked()
}

// stampRetiredLocked records when the bits retired since the last call
// changed hands: after SetLive cleared them, the kernel stamps no frame
// with them until a new capture takes one (StartLive stamps it again).
// b.mu is held.
func (b *Broker) stampRetiredLocked() {
	if b.liveRetired == 0 {
		return
	}
	now := xdpprog.Monotonic()
	for m := b.liveRetired; m != 0; m &= m - 1 {
		b.liveSince[bits.TrailingZeros8(m)] = now
	}
	b.liveRetired = 0
}

// syncFastLive sets the live masks of c's program by kernel slot (only the
// slots c's table has), and runs c's reader while c is on the fast path
// with a mask set. b.mu is held.
func (b *Broker) syncFastLive(c *capture, ls *liveSet) {
	var flows, svcs map[uint16]uint8
	var all uint8
	if c.fast.on {
		for s, e := range c.fast.flows.of {
			if m := mask(ls.flows, s); m != 0 {
				if flows == nil {
					flows = map[uint16]uint8{}
				}
				flows[e.k] = m
				all |= m
			}
		}
		for key, e := range c.fast.svcs.of {
			m := mask(ls.svcs, key)
			if key < 0 {
				m = mask(ls.tuns, tunSvcKey(key))
			}
			if m != 0 {
				if svcs == nil {
					svcs = map[uint16]uint8{}
				}
				svcs[e.k] = m
				all |= m
			}
		}
	}
	// The kernel copies the most any capture of c keeps.
	snap := 0
	for m := all; m != 0; m &= m - 1 {
		snap = max(snap, ls.cut[bits.TrailingZeros8(m)])
	}
	// The reader first: the program hands frames over only while one is
	// open.
	var err error
	if all != 0 && c.liveR == nil {
		var r *xdpprog.LiveReader
		if r, err = c.prog.OpenLive(livePerCPU); err == nil {
			c.liveR = startLiveReader(r, c.prog, &b.live, b.log.With("iface", c.name))
		} else {
			flows, svcs, all = nil, nil, 0
		}
	}
	if err == nil && (all != 0 || c.liveOn) {
		if err = c.prog.SetLive(flows, svcs, uint32(snap)); err == nil {
			c.liveOn = all != 0
		}
	}
	why := ""
	if err != nil {
		why = err.Error()
	}
	if why != c.liveErr && why != "" {
		// Once per new error: the next Apply or capture tries again.
		b.log.Error("live capture on the fast path", "iface", c.name, "err", err)
	}
	c.liveErr = why
	if !c.liveOn && c.liveR != nil {
		c.liveR.close()
		c.liveR = nil
	}
	if c.liveR != nil {
		c.liveR.bits.Store(uint32(all))
	}
}

// endLiveLocked ends every live capture: the broker closes. b.mu is held.
func (b *Broker) endLiveLocked() {
	for _, c := range b.liveCaps {
		if c != nil {
			b.retireLiveLocked(c)
		}
	}
	b.live.Store(nil)
	// A program handed off keeps running: without masks, it outputs
	// nothing to a reader that is gone.
	for _, c := range b.captures {
		b.syncFastLive(c, &liveSet{})
	}
	b.stampRetiredLocked()
}

// liveReader is the goroutine that reads a fast-path capture interface's
// live frames and offers them to the captures of their masks.
//
// The kernel's perf buffer is one ring per CPU, read ring after ring: the
// frames of one wakeup come CPU by CPU, not in time order. A source's
// frames mostly take one CPU (its RX queue's), but not always (a veth fed
// from several CPUs): the reader stages what it takes, by capture, and
// queues each stage sorted by the kernel's time, every liveKickEvery
// frames and after each Read. Frames of two CPUs may still come out of
// order across stages, at rates where a wakeup holds more than a stage.
type liveReader struct {
	r    *xdpprog.LiveReader
	prog *xdpprog.Capture
	live *atomic.Pointer[liveSet]
	stop atomic.Bool
	done chan struct{}
	// wall0 and mono0 are one instant on the wall and monotonic clocks:
	// the kernel stamps frames with bpf_ktime_get_ns (CLOCK_MONOTONIC).
	wall0 time.Time
	mono0 int64
	// staged are the packets taken since the last flush, n the frames.
	staged []stagedPacket
	n      int
	// failed is the program's live_failed when last read.
	failed uint64
	// bits are the captures with a mask on the reader's interface: those
	// its kernel losses are charged to (syncFastLive sets them).
	bits atomic.Uint32
}

// stagedPacket is a packet a reader took for capture c.
type stagedPacket struct {
	c *LiveCapture
	p *LivePacket
}

func startLiveReader(r *xdpprog.LiveReader, prog *xdpprog.Capture, live *atomic.Pointer[liveSet], log *slog.Logger) *liveReader {
	lr := &liveReader{r: r, prog: prog, live: live, done: make(chan struct{}),
		staged: make([]stagedPacket, 0, liveKickEvery*MaxLive)}
	lr.failed = lr.liveFailed()
	lr.wall0, lr.mono0 = time.Now(), int64(xdpprog.Monotonic())
	go lr.run(log)
	return lr
}

func (lr *liveReader) run(log *slog.Logger) {
	defer close(lr.done)
	deliver := lr.deliver // one method value, not one per Read
	for !lr.stop.Load() {
		// What Read says was lost the kernel reports with the next frame
		// it hands over on that CPU, never after the last of a burst: the
		// program's live_failed counts every frame it could not hand over
		// (a full buffer) at once, so the reader counts that instead.
		_, err := lr.r.Read(time.Now().Add(liveReadWait), deliver)
		lr.flush()
		if failed := lr.liveFailed(); failed > lr.failed {
			if ls := lr.live.Load(); ls != nil {
				// The kernel does not say whose frames it lost: every
				// capture with a mask on this interface counts them.
				ls.lose(uint8(lr.bits.Load()), failed-lr.failed)
			}
			lr.failed = failed
		}
		if err != nil {
			if !lr.stop.Load() {
				log.Error("read live frames", "err", err)
			}
			return
		}
	}
}

// deliver takes one frame of the kernel's for the captures of its mask. The
// live set is loaded per frame: a Read may last its whole wait, and a
// capture started meanwhile wants the frames that follow.
func (lr *liveReader) deliver(m xdpprog.LiveMeta, data []byte) {
	ls := lr.live.Load()
	if ls == nil {
		return // no capture runs any more
	}
	ts := lr.wall0.Add(time.Duration(int64(m.Mono) - lr.mono0))
	for b := m.Mask; b != 0; b &= b - 1 {
		i := bits.TrailingZeros8(b)
		// A frame stamped before bit i changed hands is not this
		// capture's: another's still in the buffer, or nobody's.
		if c := ls.caps[i]; c != nil && m.Mono > ls.since[i] {
			c.mu.Lock()
			p := c.takeLocked(ts, data[:min(len(data), ls.cut[i])], int(m.Len))
			if p != nil {
				c.staged++
			}
			c.mu.Unlock()
			if p != nil {
				lr.staged = append(lr.staged, stagedPacket{c: c, p: p})
			}
		}
	}
	if lr.n++; lr.n == liveKickEvery {
		lr.flush()
	}
}

// flush queues the staged packets in time order and kicks their captures'
// pumps.
func (lr *liveReader) flush() {
	slices.SortStableFunc(lr.staged, stagedBefore)
	var kicked [MaxLive]*LiveCapture
	for _, s := range lr.staged {
		s.c.queue(s.p)
		for i := range kicked {
			if kicked[i] == s.c {
				break
			}
			if kicked[i] == nil {
				kicked[i] = s.c
				break
			}
		}
	}
	for _, c := range kicked {
		if c != nil {
			c.kick()
		}
	}
	clear(lr.staged)
	lr.staged, lr.n = lr.staged[:0], 0
}

// liveFailed is the program's live_failed counter (0 when it cannot be
// read: the capture interface is being torn down).
func (lr *liveReader) liveFailed() uint64 {
	c, err := lr.prog.Counters()
	if err != nil {
		return lr.failed
	}
	return c.LiveFailed
}

func stagedBefore(a, b stagedPacket) int { return a.p.Time.Compare(b.p.Time) }

// close stops the reader and waits for its goroutine.
func (lr *liveReader) close() {
	lr.stop.Store(true)
	// Close makes a Read in progress return; the reader is done with it.
	_ = lr.r.Close()
	<-lr.done
}
