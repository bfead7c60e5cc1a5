package perf

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Config says where and how much the generator sends.
type Config struct {
	// Iface is the link the frames leave by; for a veth, its peer receives
	// them (the peer needs an XDP program or GRO on, gotcha 10). Required.
	Iface string
	// Netns is the named network namespace (ip netns) Iface lives in; empty
	// is the caller's.
	Netns string
	// Traffic is what is sent.
	Traffic Traffic
	// Count stops the run after this many frames; 0 means no count limit.
	Count uint64
	// Duration stops the run after this long; 0 means no time limit. One
	// of Count and Duration is required.
	Duration time.Duration
	// Rate is the offered rate in frames per second; 0 sends flat out.
	Rate float64
	// CPU pins the generating thread to this CPU; -1 leaves it unpinned.
	CPU int
	// Batch is the kernel's live-frames batch (frames per flush); 0 means 64.
	Batch uint32
	// AFXDP sends with an AF_XDP socket instead of XDP live frames (the
	// fallback; Generate also falls back by itself when the kernel cannot
	// run live frames).
	AFXDP bool
	// Burst is the most frames a paced run sends at once with live frames;
	// 0 means 128, chunks of ~100 us that fit a veth's 256-frame ring when
	// its receiver runs on another CPU (gotcha 11). A larger burst (up to
	// MaxBurst) sends 1 ms chunks: for a receiver that runs in the
	// generator's own softirq (no ring to overflow), it lets pacing reach
	// rates that 100 us chunks cannot (each chunk is one BPF_PROG_RUN).
	Burst uint64
	// Realtime runs the generating thread as SCHED_FIFO (priority 1), so
	// that pacing wakeups are not delayed behind other work on a busy
	// machine (sleeps of 1 ms took 20+ ms here under a load of 12).
	Realtime bool
}

// Validate reports the first invalid field of c.
func (c Config) Validate() error {
	switch {
	case c.Iface == "":
		return errors.New("iface: required")
	case c.Count == 0 && c.Duration <= 0:
		return errors.New("count or duration: one is required")
	case c.Rate < 0:
		return fmt.Errorf("rate %v: negative", c.Rate)
	case c.Batch > 256:
		return fmt.Errorf("batch %d: above 256", c.Batch)
	case c.Burst > MaxBurst:
		return fmt.Errorf("burst %d: above %d", c.Burst, MaxBurst)
	}
	return c.Traffic.Validate()
}

// Result is what a run offered: frames the XDP program sent on (counted by
// the program itself) over the time the run took.
type Result struct {
	Frames  uint64
	Bytes   uint64
	Elapsed time.Duration
}

// Mpps is the offered rate in millions of frames per second.
func (r Result) Mpps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Frames) / r.Elapsed.Seconds() / 1e6
}

// Gbps is the offered L2 bit rate (frames without FCS) in Gbit/s.
func (r Result) Gbps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) * 8 / r.Elapsed.Seconds() / 1e9
}

func (r Result) String() string {
	return fmt.Sprintf("offered %d frames, %d bytes in %.3fs: %.3f Mpps, %.3f Gbit/s",
		r.Frames, r.Bytes, r.Elapsed.Seconds(), r.Mpps(), r.Gbps())
}

// Generate sends frames as c says and returns what it offered. The work
// runs on a goroutine of its own, locked to an OS thread that may enter
// c.Netns and be pinned to c.CPU; that thread exits with the goroutine, so
// the caller's thread never changes namespace. ctx cancels the run early
// (between chunks, which last at most ~10 ms).
func Generate(ctx context.Context, c Config) (Result, error) {
	if err := c.Validate(); err != nil {
		return Result{}, err
	}
	var r Result
	err := inLockedThread(c.Netns, func() (err error) {
		r, err = generateLocked(ctx, c)
		return err
	})
	return r, err
}

// inLockedThread runs fn on a goroutine of its own, locked to an OS thread
// that first enters the named namespace ("" is the caller's). The thread is
// never unlocked: it exits with the goroutine, taking its namespace,
// affinity and scheduling class with it, so no other goroutine runs there.
func inLockedThread(netnsName string, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := enterNetns(netnsName); err != nil {
			done <- err
			return
		}
		done <- fn()
	}()
	return <-done
}

func generateLocked(ctx context.Context, c Config) (Result, error) {
	if c.CPU >= 0 {
		var set unix.CPUSet
		set.Set(c.CPU)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return Result{}, fmt.Errorf("pin to cpu %d: %w", c.CPU, err)
		}
	}
	if c.Realtime {
		if err := setFIFO(1); err != nil {
			return Result{}, fmt.Errorf("realtime priority: %w", err)
		}
	}
	ifc, err := net.InterfaceByName(c.Iface)
	if err != nil {
		return Result{}, fmt.Errorf("iface %s: %w", c.Iface, err)
	}
	if c.AFXDP {
		return generateXSK(ctx, ifc.Index, c)
	}
	g, err := newGen(ifc.Index, c.Traffic)
	if errors.Is(err, ebpf.ErrNotSupported) {
		return generateXSK(ctx, ifc.Index, c)
	}
	if err != nil {
		return Result{}, fmt.Errorf("iface %s: %w", c.Iface, err)
	}
	defer g.close()
	return g.run(ctx, c)
}

// enterNetns moves the calling thread, which must be locked and must never
// be unlocked afterwards, into the named namespace; "" is a no-op.
func enterNetns(name string) error {
	if name == "" {
		return nil
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		return fmt.Errorf("enter netns %s: %w", name, err)
	}
	return nil
}

type gen struct {
	objs  pktgenBPFObjects
	hold  link.Link
	frame []byte
}

func newGen(ifindex int, t Traffic) (*gen, error) {
	frame, lay, err := t.template()
	if err != nil {
		return nil, err
	}
	t = t.withDefaults()
	spec, err := loadPktgenBPF()
	if err != nil {
		return nil, fmt.Errorf("load pktgen spec: %w", err)
	}
	n := t.entries()
	// The first tag's TPID (see pktgen.c: the receiver may untag in place).
	var offTPID, tpid uint32
	if first := cmp.Or(lay.outer, lay.inner); first != 0 { // the outer tag comes first
		offTPID = first - 2
		tpid = uint32(htons(binary.BigEndian.Uint16(frame[offTPID:])))
	}
	for name, v := range map[string]uint32{
		"off_tpid":    offTPID,
		"tpid":        tpid,
		"out_ifindex": uint32(ifindex),
		"nflows":      uint32(n),
		"off_outer":   lay.outer,
		"off_inner":   lay.inner,
		"off_sport":   lay.sport,
		"off_l3":      lay.l3,
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	g := &gen{frame: frame}
	if err := spec.LoadAndAssign(&g.objs, nil); err != nil {
		return nil, fmt.Errorf("load pktgen: %w", err)
	}
	for i := range n {
		e := t.entry(i)
		f := pktgenBPFFlow{
			OuterTci: htons(e.outer),
			InnerTci: htons(e.inner),
			Sport:    htons(e.sport),
		}
		copy(f.Dst[:], e.dst)
		copy(f.Src[:], e.src)
		if lay.l3 != 0 {
			b, err := t.mixBytes(i)
			if err != nil {
				g.close()
				return nil, err
			}
			copy(f.L34[:], b)
		}
		if err := g.objs.Flows.Put(uint32(i), f); err != nil {
			g.close()
			return nil, fmt.Errorf("fill flows map: %w", err)
		}
	}
	// Every BPF_PROG_RUN with Repeat > 1 adds the program to the kernel's
	// XDP dispatcher and removes it afterwards, rebuilding the dispatcher
	// image twice: 25-30 ms per call here, whatever the repeat count, which
	// made pacing impossible. A program already in the dispatcher (attached
	// somewhere) only has its use count bumped: 15 us per call. So attach
	// it, in generic mode, to the interface it sends out of; frames that
	// interface receives pass untouched (pktgen.c checks the ingress).
	g.hold, err = link.AttachXDP(link.XDPOptions{Program: g.objs.Pktgen, Interface: ifindex, Flags: link.XDPGenericMode})
	if err != nil {
		g.close()
		return nil, fmt.Errorf("attach pktgen (generic) to keep it in the dispatcher: %w", err)
	}
	return g, nil
}

func (g *gen) close() {
	// Closing a link or a loaded collection only releases file descriptors
	// (the link detaches); there is nothing an error here could change.
	if g.hold != nil {
		_ = g.hold.Close()
	}
	_ = g.objs.Close()
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// sent sums the program's per-CPU "sent" counter.
func (g *gen) sent() (frames, bytes uint64, err error) {
	return readCounter(g.objs.Counters, cntSent)
}

const (
	cntSent uint32 = 0 // pktgen.c CNT_SENT
	cntSink uint32 = 1 // pktgen.c CNT_SINK
)

func readCounter(m *ebpf.Map, key uint32) (frames, bytes uint64, err error) {
	var per []pktgenBPFCounter
	if err := m.Lookup(key, &per); err != nil {
		return 0, 0, fmt.Errorf("read counter %d: %w", key, err)
	}
	for _, c := range per {
		frames += c.Packets
		bytes += c.Bytes
	}
	return frames, bytes, nil
}

// flatOutChunk is the frames per BPF_PROG_RUN when not pacing: ~10 ms at
// 6 Mpps, short enough for duration and ctx checks.
const flatOutChunk = 1 << 16

func (g *gen) run(ctx context.Context, c Config) (Result, error) {
	batch := c.Batch
	if batch == 0 {
		batch = 64
	}
	opts := ebpf.RunOptions{
		Data:      g.frame,
		Flags:     unix.BPF_F_TEST_XDP_LIVE_FRAMES,
		BatchSize: batch,
	}
	var sent uint64
	start := time.Now()
	var deadline time.Time
	if c.Duration > 0 {
		deadline = start.Add(c.Duration)
	}
	pace := newPacer(c.Rate, flatOutChunk, c.Burst, start)
	for {
		if c.Count > 0 && sent >= c.Count || !deadline.IsZero() && !time.Now().Before(deadline) || ctx.Err() != nil {
			break
		}
		limit := ^uint64(0)
		if c.Count > 0 {
			limit = c.Count - sent
		}
		n, ok := pace.next(limit, deadline)
		if !ok {
			break
		}
		opts.Repeat = uint32(n)
		if _, err := g.objs.Pktgen.Run(&opts); err != nil {
			return Result{}, fmt.Errorf("run live frames: %w", err)
		}
		// The program's own counter, not n: the library reruns a whole
		// chunk when a signal interrupts the syscall.
		s, _, err := g.sent()
		if err != nil {
			return Result{}, err
		}
		sent = s
	}
	elapsed := time.Since(start)
	frames, bytes, err := g.sent()
	if err != nil {
		return Result{}, err
	}
	return Result{Frames: frames, Bytes: bytes, Elapsed: elapsed}, nil
}

// setFIFO makes the calling thread SCHED_FIFO at prio.
func setFIFO(prio int) error {
	// struct sched_param { int sched_priority; }
	param := int32(prio)
	_, _, errno := unix.Syscall(unix.SYS_SCHED_SETSCHEDULER, 0, 1 /* SCHED_FIFO */, uintptr(unsafe.Pointer(&param)))
	if errno != 0 {
		return errno
	}
	return nil
}
