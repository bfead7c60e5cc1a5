package broker

// The hot path, one worker per (capture interface, RX queue):
//
//  1. rx ring:  Receive up to BatchSize descriptors (poll(2) when idle)
//  2. plan:     load the capture's table once per batch
//  3. classify: parse dst/src/outer VID, match flows (direction, VLAN set,
//               then the flow's filter, each filter run at most once per
//               frame) and mirror tunnels, dedupe per service and tunnel;
//               a copy larger than its monitor carries is counted, not sent
//  4. gather:   append each copy to its output's list (a monitor, or the
//               uplink of a tunnel)
//  5. fan-out:  per output, under its mutex once per batch: AllocTx, memcpy
//               (a monitor's: the frame truncated to its service's
//               snaplen; a tunnel's: outer headers, next sequence number,
//               frame truncated to the mirror's snaplen and the uplink's
//               MTU), Transmit, one Kick, reap completions
//  6. live:     with live captures running (live.go), offer each frame a
//               capture wants (a service or tunnel of its sent a copy in
//               step 5, or a flow of its matched it in step 3 and some
//               copy of it was sent) once to each such capture, and kick
//               each capture's pump once
//  7. fill:     Free the RX frames and refill the fill ring once
//
// Nothing here allocates, locks (except step 5's per-batch mutex, and step
// 6's per batch and live capture), logs or builds an error per frame;
// allocation and benchmark tests prove it.

import (
	"errors"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taas-appliance/taas/broker/xsk"
	"github.com/taas-appliance/taas/xdpprog"
)

// copyRef is one copy to send: the RX descriptor index in the batch and the
// local service index it is for.
type copyRef struct {
	desc int32
	svc  int32
}

// worker drains one RX socket. Only its goroutine touches the socket's
// rings and its scratch arrays; others read its counters.
type worker struct {
	cap    *capture
	sock   *xsk.Socket
	queue  int
	cpu    int // -1: not pinned
	busy   bool
	pollTO time.Duration

	stop atomic.Bool
	dead atomic.Bool  // exited on its own (socket error)
	tid  atomic.Int32 // OS thread of the worker, for CPU accounting
	done chan struct{}

	ctr  atomic.Pointer[counterSet]
	wctr [numWorkerCounters]atomic.Uint64

	// Scratch, owned by the goroutine.
	descs  []xsk.Desc
	txd    []xsk.Desc
	gather [][]copyRef
	cls    classifier
	tab    *table
	ts     uint32 // ERSPAN III timestamp of the batch
	// live is the batch's live set (nil: no live capture runs); for
	// descriptor i of the batch, lmask[i] are the captures of the services
	// and tunnels that sent a copy of it, fmask[i] those of the flows it
	// matched, and sent[i] says that at least one copy of it was sent: a
	// frame no copy left with is not captured (the kernel's rule, xdp.c).
	live  *liveSet
	lmask []uint8
	fmask []uint8
	sent  []bool
}

func newWorker(c *capture, s *xsk.Socket, queue int, cfg *Config, cpu int) *worker {
	w := &worker{cap: c, sock: s, queue: queue, cpu: cpu, busy: cfg.BusyPoll, pollTO: cfg.PollTimeout,
		done: make(chan struct{}), descs: make([]xsk.Desc, cfg.BatchSize), txd: make([]xsk.Desc, cfg.BatchSize),
		lmask: make([]uint8, cfg.BatchSize), fmask: make([]uint8, cfg.BatchSize), sent: make([]bool, cfg.BatchSize)}
	w.ctr.Store(&counterSet{})
	return w
}

// run is the worker's goroutine. notify is called (without blocking) when
// it exits on its own, so the broker rebuilds it.
func (w *worker) run(notify func()) {
	defer close(w.done)
	runtime.LockOSThread()
	w.tid.Store(int32(unix.Gettid()))
	if w.cpu >= 0 {
		var set unix.CPUSet
		set.Set(w.cpu)
		// Pinning is an optimisation: a CPU that is not allowed leaves the
		// worker where the scheduler puts it, which still works. The thread
		// stays locked so that the runtime retires it, pinned, when the
		// worker ends, instead of lending it to other goroutines.
		_ = unix.SchedSetaffinity(0, &set)
	} else {
		defer runtime.UnlockOSThread()
	}
	for !w.stop.Load() {
		if w.batch() > 0 {
			continue
		}
		if w.busy {
			continue
		}
		readable, err := w.sock.Poll(w.pollTO)
		if err != nil {
			// The socket is unusable (its interface went away): stop and
			// let the next Apply rebuild the capture.
			w.wctr[wcPollErrors].Add(1)
			w.dead.Store(true)
			notify()
			return
		}
		if !readable {
			w.flushIdle()
		}
	}
}

// flushIdle kicks the outputs that still hold descriptors on their TX ring
// (a Kick gives up when the peer stalls; what is left goes with the next
// one) and reaps their completions, so an idle capture does not leave its
// last copies waiting for the next frame.
func (w *worker) flushIdle() {
	if w.tab == nil {
		return
	}
	for _, o := range w.tab.outputs {
		o.mu.Lock()
		if o.sock != nil && o.up.Load() && o.sock.TxPending() > 0 {
			if err := o.sock.Kick(); err != nil {
				o.ctr[ocKickErrors].Add(1)
			}
			o.sock.Complete()
		}
		o.mu.Unlock()
	}
}

// batch receives and forwards one batch and returns its size.
func (w *worker) batch() int {
	n := w.sock.Receive(w.descs)
	if n == 0 {
		return 0
	}
	t := w.cap.table.Load()
	if t != w.tab {
		w.swap(t)
	}
	ctr := w.ctr.Load()
	if t != nil && t.tunnels {
		w.ts = xdpprog.ERSPANTimestamp(time.Now())
	}
	descs := w.descs[:n]
	w.live, w.cls.liveFlows = nil, nil
	if w.cap.live != nil {
		w.live = w.cap.live.Load()
	}
	var now time.Time
	if w.live != nil {
		now = time.Now()
		w.cls.liveFlows = w.live.flows
		clear(w.lmask[:n])
		clear(w.fmask[:n])
		clear(w.sent[:n])
	}
	var bytes uint64
	if t != nil {
		var h frameHeader
		for i := range descs {
			b := w.sock.Frame(descs[i])
			bytes += uint64(len(b))
			switch parseFrame(b, &h) {
			case parseRunt:
				w.wctr[wcRunt].Add(1)
				continue
			case parseTruncatedTag:
				w.wctr[wcTruncatedTag].Add(1)
				continue
			}
			hits := w.cls.classify(t, &h, b, ctr)
			w.fmask[i] = w.cls.liveMask
			if len(hits) == 0 {
				w.wctr[wcUnwanted].Add(1)
				continue
			}
			for _, s := range hits {
				ts := &t.services[s]
				if ts.out < 0 {
					if ts.tun != nil {
						ctr.tuns[ts.slot].drops[tdMirrorDown].Add(1)
					} else {
						ctr.svcs[ts.slot].drops[dropMonitorDown].Add(1)
					}
					continue
				}
				// A tunnel truncates what its uplink cannot carry.
				if m := t.outMax[ts.out]; ts.tun == nil && m > 0 && ts.copyLen(len(b)) > m {
					// The kernel would drop it after the send and we
					// would count it delivered (issue 9). Only a
					// misconfigured monitor gets here, so the shared
					// output counter is bumped per frame.
					ctr.svcs[ts.slot].drops[dropMonitorMTU].Add(1)
					t.outputs[ts.out].ctr[ocMonitorMTU].Add(1)
					continue
				}
				w.gather[ts.out] = append(w.gather[ts.out], copyRef{desc: int32(i), svc: s})
			}
		}
		for o := range t.outputs {
			if len(w.gather[o]) > 0 {
				w.send(t, t.outputs[o], w.gather[o], ctr)
				w.gather[o] = w.gather[o][:0]
			}
		}
		if w.live != nil {
			w.offerLive(descs, now)
		}
	} else {
		for i := range descs {
			bytes += uint64(descs[i].Len)
		}
		w.wctr[wcUnwanted].Add(uint64(n)) // a nil plan drops everything
	}
	w.wctr[wcFrames].Add(uint64(n))
	w.wctr[wcBytes].Add(bytes)
	w.wctr[wcBatches].Add(1)
	w.sock.Free(descs)
	w.sock.Fill()
	return n
}

// offerLive offers each frame of the batch that live captures want to
// each of them, once, holding each capture's mutex once. The captures of
// the flows a frame matched get it only when a copy of it was sent.
func (w *worker) offerLive(descs []xsk.Desc, now time.Time) {
	var hit uint8
	for i := range descs {
		if w.sent[i] {
			w.lmask[i] |= w.fmask[i]
		}
		hit |= w.lmask[i]
	}
	for m := hit; m != 0; m &= m - 1 {
		bit := uint8(bits.TrailingZeros8(m))
		c, cut := w.live.caps[bit], w.live.cut[bit]
		if c == nil {
			continue
		}
		c.mu.Lock()
		for i := range descs {
			if w.lmask[i]&(1<<bit) != 0 {
				b := w.sock.Frame(descs[i])
				c.offerLocked(now, b[:min(len(b), cut)], len(b))
			}
		}
		c.mu.Unlock()
		c.kick()
	}
}

// swap adopts a new table: counter and scratch arrays grow here, never per
// frame.
func (w *worker) swap(t *table) {
	w.tab = t
	if t == nil {
		return
	}
	w.cls.resize(t)
	if c := w.ctr.Load(); c != nil {
		if g := c.grownTo(t.flowSlots, t.svcSlots, t.tunSlots); g != c {
			w.ctr.Store(g)
		}
	}
	for len(w.gather) < len(t.outputs) {
		w.gather = append(w.gather, nil)
	}
	// A frame can go to every service of an output once.
	perOut := make([]int, len(t.outputs))
	for _, s := range t.services {
		if s.out >= 0 {
			perOut[s.out]++
		}
	}
	for o, k := range perOut {
		if need := k * len(w.descs); cap(w.gather[o]) < need {
			w.gather[o] = make([]copyRef, 0, need)
		}
	}
}

// send copies the gathered frames into o's TX frames and sends them with one
// kick, holding o's mutex once for the whole batch.
func (w *worker) send(t *table, o *output, refs []copyRef, ctr *counterSet) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.sock == nil || !o.up.Load() {
		o.ctr[ocMonitorDown].Add(uint64(len(refs)))
		for _, r := range refs {
			if ts := &t.services[r.svc]; ts.tun != nil {
				ctr.tuns[ts.slot].drops[tdMirrorDown].Add(1)
			} else {
				ctr.svcs[ts.slot].drops[dropMonitorDown].Add(1)
			}
		}
		return
	}
	for len(refs) > 0 {
		chunk := refs[:min(len(refs), len(w.txd))]
		refs = refs[len(chunk):]
		w.sendChunk(t, o, chunk, ctr)
	}
}

// sendChunk sends at most len(w.txd) copies; o.mu is held.
func (w *worker) sendChunk(t *table, o *output, refs []copyRef, ctr *counterSet) {
	s := o.sock
	txd := w.txd[:len(refs)]
	k := s.AllocTx(txd)
	// filled counts the copies written; those that could not be are freed
	// and dropped, and the rest moved down over them, in order.
	filled := 0
	for j := 0; j < k; j++ {
		src := w.sock.Frame(w.descs[refs[j].desc])
		dst := s.Frame(txd[j])
		if tun := t.services[refs[j].svc].tun; tun != nil {
			// Sequence numbers are taken under o.mu, so they increase
			// on the wire in the order the copies are queued.
			n, cut := tun.hdr.Encapsulate(dst, src, tun.seq.Add(1), w.ts)
			if n == 0 {
				// The TX frame cannot hold the copy. compileMirrors
				// refuses an uplink whose frames are too small, so
				// this is a bug: drop the copy rather than send an
				// empty frame counted as sent.
				s.Free(txd[j : j+1])
				ctr.tuns[tun.slot].drops[tdEncapFailed].Add(1)
				continue
			}
			txd[j].Len = uint32(n)
			if cut {
				ctr.tuns[tun.slot].truncated.Add(1)
			}
		} else {
			// The monitor's TX frame (FrameSize - UMEM headroom) is always
			// larger than a received frame (FrameSize - 256, gotcha 6).
			txd[j].Len = uint32(copy(dst, src[:t.services[refs[j].svc].copyLen(len(src))]))
		}
		txd[filled], refs[filled] = txd[j], refs[j]
		filled++
	}
	sent := s.Transmit(txd[:filled])
	if sent < filled {
		s.Free(txd[sent:filled])
	}
	if err := s.Kick(); err != nil {
		o.ctr[ocKickErrors].Add(1)
		// The link is down or gone: what is on the TX ring goes out when
		// it is back (or never); stop queueing more until the next Apply
		// sees the link up, so that at most this batch is stale.
		if errors.Is(err, unix.ENETDOWN) || errors.Is(err, unix.ENXIO) {
			o.up.Store(false)
		}
	}
	s.Complete()
	o.ctr[ocCopies].Add(uint64(sent))
	o.ctr[ocTxRingFull].Add(uint64(filled - sent))
	o.ctr[ocNoTxFrame].Add(uint64(len(refs) - k))
	o.ctr[ocBatches].Add(1)
	var bytes uint64
	for j, r := range refs {
		if j >= filled && j < k {
			continue // not written, counted above
		}
		if ts := &t.services[r.svc]; ts.tun != nil {
			tc := &ctr.tuns[ts.slot]
			switch {
			case j < sent:
				if w.live != nil {
					w.lmask[r.desc] |= mask(w.live.tuns, ts.slot)
					w.sent[r.desc] = true
				}
				tc.pkts.Add(1)
				tc.bytes.Add(uint64(txd[j].Len))
				bytes += uint64(txd[j].Len)
			case j < filled:
				tc.drops[tdTxRingFull].Add(1)
			default:
				tc.drops[tdNoTxFrame].Add(1)
			}
			continue
		}
		sc := &ctr.svcs[t.services[r.svc].slot]
		switch {
		case j < sent:
			if w.live != nil {
				w.lmask[r.desc] |= mask(w.live.svcs, t.services[r.svc].slot)
				w.sent[r.desc] = true
			}
			sc.pkts.Add(1)
			sc.bytes.Add(uint64(txd[j].Len))
			bytes += uint64(txd[j].Len)
		case j < filled:
			sc.drops[dropTxRingFull].Add(1)
		default:
			sc.drops[dropNoTxFrame].Add(1)
		}
	}
	o.ctr[ocBytes].Add(bytes)
}

// output is one monitor's or uplink's TX socket, shared by every worker
// that sends to it; a worker holds mu for a whole batch, never per frame.
type output struct {
	name    string
	role    string // roleMonitor or roleUplink
	ifindex int
	up      atomic.Bool
	// refused: the monitor cannot take frames redirected by the fast path
	// (a veth whose peer has neither XDP nor GRO, gotcha 10); captures that
	// send to it use the AF_XDP path.
	refused atomic.Bool
	// maxLen is the largest frame in bytes the monitor carries (MTU plus
	// Ethernet header and one VLAN tag), 0 when unknown; Apply sets it and
	// tables copy it.
	maxLen atomic.Uint32
	// peerMTU is the MTU of a veth monitor's peer as Apply saw it, 0 when
	// not a veth; redirectWatch reports a change.
	peerMTU atomic.Int32
	ctr     [numOutputCounters]atomic.Uint64
	// kernelSeen is the netdev's tx_dropped when last harvested
	// (Broker.harvestKernelDrops); guarded by Broker.mu.
	kernelSeen uint64

	mu   sync.Mutex
	sock *xsk.Socket // nil once closed
}

// close stops sends (waiting for a batch in flight) and closes the socket.
func (o *output) close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.sock == nil {
		return nil
	}
	err := o.sock.Close()
	o.sock = nil
	return err
}
