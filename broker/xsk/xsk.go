// The life of a frame in a Socket (each arrow is one batched call):
//
//  1. pool -> Fill -> fill ring -> kernel copies a received frame in -> RX ring
//  2. RX ring -> Receive -> caller reads Frame(d) -> Free -> pool
//  3. pool -> AllocTx -> caller writes Frame(d) -> Transmit -> TX ring -> Kick
//  4. kernel sends, the peer frees the skb -> completion ring -> Complete -> pool

package xsk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Defaults for the zero fields of Config.
const (
	DefaultNumFrames = 4096
	DefaultFrameSize = 2048
	DefaultRingSize  = 2048
	DefaultTxBudget  = 256
	// kernelTxBatch is what copy-mode TX sends per sendto(2) when
	// XDP_MAX_TX_SKB_BUDGET is not set (TX_BATCH_SIZE in net/xdp/xsk.c).
	kernelTxBatch = 32
	// MaxNumFrames bounds NumFrames: 8 GiB of 2048-byte frames.
	MaxNumFrames = 1 << 22
	// maxRingSize bounds ring sizes far above any use (the rings are
	// kernel memory mapped into the process).
	maxRingSize = 1 << 20
	// xdpPacketHeadroom is what copy mode puts before each received frame.
	xdpPacketHeadroom = unix.XDP_PACKET_HEADROOM
)

// Config shapes a socket. The zero value is a socket with RX and TX, 4096
// frames of 2048 bytes, rings of 2048 entries, need_wakeup on and a TX budget
// of 256.
type Config struct {
	// NumFrames is the number of UMEM frames; default 4096.
	NumFrames int
	// FrameSize is the UMEM chunk size in bytes: 2048 or 4096 (a power of
	// two no larger than the page); default 2048. See MaxRxFrame.
	FrameSize int
	// Headroom is UMEM headroom in bytes reserved before every frame, on
	// top of the 256 bytes copy mode adds on RX; default 0.
	Headroom int
	// FillSize, CompletionSize, RxSize and TxSize are ring sizes in
	// entries, powers of two; default 2048 each.
	FillSize, CompletionSize, RxSize, TxSize int
	// NoNeedWakeup binds without XDP_USE_NEED_WAKEUP: Kick then calls
	// sendto(2) every time instead of only when the kernel asks.
	NoNeedWakeup bool
	// TxBudget is the copy-mode TX skb budget: how many descriptors one
	// sendto(2) may send (setsockopt XDP_MAX_TX_SKB_BUDGET, Linux >= 6.17;
	// the kernel's default is 32, gotcha 3). Default 256, capped at TxSize;
	// -1 leaves the kernel's default. A kernel without the option is not an
	// error: TxBudgetErr reports it and Kick simply loops more.
	TxBudget int
	// RxOnly creates no TX ring, TxOnly no RX ring; at most one may be set.
	RxOnly, TxOnly bool
}

func (c *Config) setDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.NumFrames, DefaultNumFrames)
	def(&c.FrameSize, DefaultFrameSize)
	def(&c.FillSize, DefaultRingSize)
	def(&c.CompletionSize, DefaultRingSize)
	def(&c.RxSize, DefaultRingSize)
	def(&c.TxSize, DefaultRingSize)
	def(&c.TxBudget, DefaultTxBudget)
	if c.TxBudget > c.TxSize {
		c.TxBudget = c.TxSize
	}
}

// UMEMSize is the UMEM, in bytes, of a socket opened with c: NumFrames
// chunks of FrameSize bytes, after defaults. Open maps and registers
// exactly this much, and the kernel pins and charges all of it to
// RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK (gotcha 7); the rings
// are the kernel's own memory, not charged.
func (c Config) UMEMSize() int {
	c.setDefaults()
	return c.NumFrames * c.FrameSize
}

// MaxRxFrame is the largest frame a socket opened with c receives (see
// Socket.MaxRxFrame).
func (c Config) MaxRxFrame() int {
	c.setDefaults()
	return c.FrameSize - xdpPacketHeadroom - c.Headroom
}

// Validate reports the first field of c (after defaults) that is out of range.
func (c Config) Validate() error {
	c.setDefaults()
	pow2 := func(v int) bool { return v > 0 && v <= maxRingSize && v&(v-1) == 0 }
	switch {
	case c.NumFrames < 0 || c.NumFrames > MaxNumFrames:
		return fmt.Errorf("xsk config: NumFrames %d out of range 1..%d", c.NumFrames, MaxNumFrames)
	case c.FrameSize != 2048 && c.FrameSize != 4096:
		return fmt.Errorf("xsk config: FrameSize %d must be 2048 or 4096", c.FrameSize)
	case c.Headroom < 0 || c.Headroom > c.FrameSize-xdpPacketHeadroom-64:
		return fmt.Errorf("xsk config: Headroom %d leaves no room in a %d-byte frame", c.Headroom, c.FrameSize)
	case !pow2(c.FillSize), !pow2(c.CompletionSize), !pow2(c.RxSize), !pow2(c.TxSize):
		return fmt.Errorf("xsk config: ring sizes %d/%d/%d/%d (fill/completion/rx/tx) must be powers of two up to %d",
			c.FillSize, c.CompletionSize, c.RxSize, c.TxSize, maxRingSize)
	case c.TxBudget < -1:
		return fmt.Errorf("xsk config: TxBudget %d must be -1, 0 or positive", c.TxBudget)
	case c.RxOnly && c.TxOnly:
		return errors.New("xsk config: RxOnly and TxOnly both set")
	}
	return nil
}

// Desc is one frame: its address in the UMEM and its length. Received
// descriptors point at the frame's first byte; AllocTx descriptors at the
// start of the writable area, with Len its capacity.
type Desc struct {
	Addr uint64
	Len  uint32
}

// Socket is one AF_XDP socket bound to one (interface, queue) in copy mode,
// with its own UMEM. See the package doc for who may call what.
type Socket struct {
	// closeMu keeps Close from closing the FDs while Stats or Wake, from
	// another goroutine, uses them. The owner's per-batch calls never take it.
	closeMu   sync.RWMutex
	fd        atomic.Int32 // -1 once closed
	wakeFD    int          // eventfd that ends a Poll (Wake), while hasWake
	hasWake   bool         // false when TxOnly or closed: the zero Socket has none
	ifindex   int
	queueID   int
	cfg       Config
	umem      []byte
	ringMaps  [][]byte // what Close unmaps
	fill      addrRing
	comp      addrRing
	rx        *descRing // nil when TxOnly
	tx        *descRing // nil when RxOnly
	rxRing    descRing
	txRing    descRing
	pool      *framePool
	txBudget  int            // effective budget of one sendto(2)
	budgetErr error          // why TxBudget could not be set, or nil
	pollFDs   [2]unix.PollFd // the socket, then wakeFD
	soErr     int32          // getsockopt(SO_ERROR) result, a field so it does not escape
	soErrLen  uint32
	sockErr   error // sticky: the socket was unbound (its link is gone)
	ctr       counters
}

// Open creates an AF_XDP socket with its own UMEM and binds it to queue
// queueID of interface ifindex in copy mode (XDP_COPY; veth has no zero
// copy, gotcha 1), with XDP_USE_NEED_WAKEUP unless cfg says otherwise. An
// XSK only sees the queue it is bound to (gotcha 2): open one per RX queue.
// The caller puts FD() into its XDP program's XSKMAP, then calls Fill.
//
// The UMEM is charged to RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK
// (gotcha 7): a too small limit shows as an error naming it.
func Open(ifindex, queueID int, cfg Config) (*Socket, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if ifindex <= 0 || queueID < 0 {
		return nil, fmt.Errorf("open xsk: ifindex %d / queue %d out of range", ifindex, queueID)
	}
	cfg.setDefaults()
	s := &Socket{ifindex: ifindex, queueID: queueID, cfg: cfg, txBudget: kernelTxBatch}
	s.fd.Store(-1)
	if err := s.open(); err != nil {
		s.release()
		return nil, fmt.Errorf("open xsk on ifindex %d queue %d: %w", ifindex, queueID, err)
	}
	return s, nil
}

func (s *Socket) open() error {
	cfg := &s.cfg
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EPROTONOSUPPORT) {
			return fmt.Errorf("socket(AF_XDP): %w: %w", ErrNotSupported, err)
		}
		return fmt.Errorf("socket(AF_XDP): %w", err)
	}
	s.fd.Store(int32(fd))

	size := cfg.UMEMSize()
	s.umem, err = unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mmap umem of %d bytes: %w", size, err)
	}
	reg := unix.XDPUmemReg{
		Addr:     uint64(uintptr(unsafe.Pointer(&s.umem[0]))),
		Len:      uint64(size),
		Size:     uint32(cfg.FrameSize),
		Headroom: uint32(cfg.Headroom),
	}
	if err := setsockopt(fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.EPERM) {
			return fmt.Errorf("register umem of %d bytes (RLIMIT_MEMLOCK too low without CAP_IPC_LOCK?): %w", size, err)
		}
		return fmt.Errorf("register umem: %w", err)
	}

	rings := []struct {
		opt  int
		size int
		name string
		skip bool
	}{
		{unix.XDP_UMEM_FILL_RING, cfg.FillSize, "fill", false},
		{unix.XDP_UMEM_COMPLETION_RING, cfg.CompletionSize, "completion", false},
		{unix.XDP_RX_RING, cfg.RxSize, "rx", cfg.TxOnly},
		{unix.XDP_TX_RING, cfg.TxSize, "tx", cfg.RxOnly},
	}
	for _, r := range rings {
		if r.skip {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, r.opt, r.size); err != nil {
			return fmt.Errorf("set %s ring size %d: %w", r.name, r.size, err)
		}
	}

	off, err := mmapOffsets(fd)
	if err != nil {
		return err
	}
	const descSize = uint64(unsafe.Sizeof(unix.XDPDesc{}))
	mem, err := s.mapRing(fd, off.Fr, cfg.FillSize, 8, unix.XDP_UMEM_PGOFF_FILL_RING)
	if err != nil {
		return fmt.Errorf("mmap fill ring: %w", err)
	}
	s.fill.init(mem, off.Fr, uint32(cfg.FillSize))
	if mem, err = s.mapRing(fd, off.Cr, cfg.CompletionSize, 8, unix.XDP_UMEM_PGOFF_COMPLETION_RING); err != nil {
		return fmt.Errorf("mmap completion ring: %w", err)
	}
	s.comp.init(mem, off.Cr, uint32(cfg.CompletionSize))
	if !cfg.TxOnly {
		if mem, err = s.mapRing(fd, off.Rx, cfg.RxSize, descSize, unix.XDP_PGOFF_RX_RING); err != nil {
			return fmt.Errorf("mmap rx ring: %w", err)
		}
		s.rxRing.init(mem, off.Rx, uint32(cfg.RxSize))
		s.rx = &s.rxRing
	}
	if !cfg.RxOnly {
		if mem, err = s.mapRing(fd, off.Tx, cfg.TxSize, descSize, unix.XDP_PGOFF_TX_RING); err != nil {
			return fmt.Errorf("mmap tx ring: %w", err)
		}
		s.txRing.init(mem, off.Tx, uint32(cfg.TxSize))
		s.tx = &s.txRing
		s.setTxBudget(fd)
	}

	flags := uint16(unix.XDP_COPY)
	if !cfg.NoNeedWakeup {
		flags |= unix.XDP_USE_NEED_WAKEUP
	}
	sa := &unix.SockaddrXDP{Flags: flags, Ifindex: uint32(s.ifindex), QueueID: uint32(s.queueID)}
	// The kernel releases a closed socket's hold on its queue from a
	// deferred work item, so binding right after a Close of the previous
	// socket on the same queue (a worker restarting after a link flap) can
	// see EBUSY for a moment: retry, bounded.
	for start := time.Now(); ; time.Sleep(bindRetryInterval) {
		err = unix.Bind(fd, sa)
		if err == nil {
			break
		}
		if errors.Is(err, unix.EBUSY) && time.Since(start) < bindRetryFor {
			continue
		}
		switch {
		case errors.Is(err, unix.EBUSY):
			return fmt.Errorf("bind: queue in use by another AF_XDP socket: %w", err)
		case errors.Is(err, unix.ENODEV):
			return fmt.Errorf("bind: no interface with this index in the socket's namespace: %w", err)
		case errors.Is(err, unix.EINVAL):
			return fmt.Errorf("bind: queue beyond the interface's queues?: %w", err)
		}
		return fmt.Errorf("bind: %w", err)
	}
	s.pool = newFramePool(cfg.NumFrames, cfg.FrameSize)
	s.pollFDs[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	s.pollFDs[1] = unix.PollFd{Fd: -1} // poll(2) skips a negative fd
	if !cfg.TxOnly {
		efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			return fmt.Errorf("eventfd: %w", err)
		}
		s.wakeFD, s.hasWake = efd, true
		s.pollFDs[1].Fd = int32(efd)
		s.pollFDs[1].Events = unix.POLLIN
	}
	return nil
}

// Open retries a bind that says EBUSY every bindRetryInterval for up to
// bindRetryFor.
const (
	bindRetryInterval = 5 * time.Millisecond
	bindRetryFor      = time.Second
)

// setTxBudget raises the copy-mode TX skb budget (gotcha 3). Failure is not
// fatal: an older kernel sends 32 per sendto(2) and Kick loops.
func (s *Socket) setTxBudget(fd int) {
	if s.cfg.TxBudget < 0 {
		return
	}
	b := s.cfg.TxBudget // capped at TxSize by setDefaults
	if b <= kernelTxBatch {
		// Nothing to raise; the kernel also refuses budgets above the TX
		// ring size (EACCES), which a ring of 16 would be.
		return
	}
	err := unix.SetsockoptInt(fd, unix.SOL_XDP, unix.XDP_MAX_TX_SKB_BUDGET, b)
	switch {
	case err == nil:
		s.txBudget = b
	case errors.Is(err, unix.ENOPROTOOPT):
		s.budgetErr = fmt.Errorf("set tx skb budget %d: %w: %w", b, ErrNotSupported, err)
	default:
		s.budgetErr = fmt.Errorf("set tx skb budget %d: %w", b, err)
	}
}

func (s *Socket) mapRing(fd int, off unix.XDPRingOffset, entries int, entrySize uint64, pgoff int64) ([]byte, error) {
	length := int(off.Desc + uint64(entries)*entrySize)
	mem, err := unix.Mmap(fd, pgoff, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, err
	}
	s.ringMaps = append(s.ringMaps, mem)
	return mem, nil
}

// mmapOffsets reads XDP_MMAP_OFFSETS. Kernels before 5.4 return the v1
// layout, which has no flags word; there the flags live right after the
// consumer index, as libxdp assumes.
func mmapOffsets(fd int) (unix.XDPMmapOffsets, error) {
	var off unix.XDPMmapOffsets
	n, err := getsockopt(fd, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), unsafe.Sizeof(off))
	if err != nil {
		return off, fmt.Errorf("get mmap offsets: %w", err)
	}
	if err := fixOffsets(&off, n); err != nil {
		return off, fmt.Errorf("get mmap offsets: %w", err)
	}
	return off, nil
}

// fixOffsets turns what the kernel wrote into off (n bytes) into the v2
// layout: a v1 answer is four {producer, consumer, desc} triples packed at
// the start of off.
func fixOffsets(off *unix.XDPMmapOffsets, n uintptr) error {
	const v1 = 4 * 3 * 8
	switch n {
	case unsafe.Sizeof(*off):
	case v1:
		o1 := *(*[4][3]uint64)(unsafe.Pointer(off))
		for i, r := range []*unix.XDPRingOffset{&off.Rx, &off.Tx, &off.Fr, &off.Cr} {
			r.Producer, r.Consumer, r.Desc = o1[i][0], o1[i][1], o1[i][2]
			r.Flags = r.Consumer + 4
		}
	default:
		return fmt.Errorf("unexpected size %d", n)
	}
	return nil
}

func setsockopt(fd, opt int, p unsafe.Pointer, n uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), n, 0)
	if e != 0 {
		return e
	}
	return nil
}

func getsockopt(fd, opt int, p unsafe.Pointer, n uintptr) (uintptr, error) {
	l := uint32(n)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p),
		uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, e
	}
	return uintptr(l), nil
}

// FD is the socket's file descriptor, for the XSKMAP; -1 after Close.
func (s *Socket) FD() int { return int(s.fd.Load()) }

// Ifindex and QueueID are what the socket is bound to.
func (s *Socket) Ifindex() int { return s.ifindex }

// QueueID is the queue the socket is bound to.
func (s *Socket) QueueID() int { return s.queueID }

// Config is the socket's configuration with defaults filled in.
func (s *Socket) Config() Config { return s.cfg }

// MaxRxFrame is the largest frame the socket receives: in copy mode the
// kernel puts 256 bytes of XDP headroom and the UMEM headroom before it
// (gotcha 6), 1792 bytes with the default 2048-byte frames. Larger frames
// are dropped by the kernel and counted in Statistics.RxDropped.
func (s *Socket) MaxRxFrame() int { return s.cfg.MaxRxFrame() }

// MaxTxFrame is the largest frame AllocTx hands out room for.
func (s *Socket) MaxTxFrame() int { return s.cfg.FrameSize - s.cfg.Headroom }

// TxBudget is how many descriptors one sendto(2) sends: the configured
// budget if the kernel took it, else the kernel's 32.
func (s *Socket) TxBudget() int { return s.txBudget }

// TxBudgetErr says why the TX budget could not be raised (it wraps
// ErrNotSupported on kernels before 6.17), or nil.
func (s *Socket) TxBudgetErr() error { return s.budgetErr }

// FreeFrames is the number of frames in the pool: neither on a ring nor held
// by the caller.
func (s *Socket) FreeFrames() int { return s.pool.len() }

// Fill tops the fill ring up from the frame pool so the kernel has frames to
// receive into, and returns how many it added. Call it once per batch, after
// Free. It never puts more than FillSize frames in the ring, so with the
// defaults (4096 frames, fill ring 2048) half the UMEM stays free for RX
// frames the caller holds and for AllocTx. On a TxOnly socket it does
// nothing.
func (s *Socket) Fill() int {
	if s.rx == nil {
		return 0
	}
	n := s.fill.free(uint32(s.pool.len()))
	if n == 0 {
		return 0
	}
	for i := uint32(0); i < n; i++ {
		addr, _ := s.pool.get()
		s.fill.addrs[(s.fill.cachedProd+i)&s.fill.mask] = addr
	}
	s.fill.submit(n)
	s.ctr.filled.Add(uint64(n))
	return int(n)
}

// Receive takes up to len(descs) descriptors off the RX ring into descs and
// returns how many. The frames are the caller's until it passes them to Free
// (or to Transmit on this socket); Frame gives their bytes.
func (s *Socket) Receive(descs []Desc) int {
	if s.rx == nil || len(descs) == 0 {
		return 0
	}
	r := s.rx
	n := r.avail(uint32(len(descs)))
	if n == 0 {
		return 0
	}
	for i := uint32(0); i < n; i++ {
		d := &r.descs[(r.cachedCons+i)&r.mask]
		descs[i] = Desc{Addr: d.Addr, Len: d.Len}
	}
	r.release(n)
	s.ctr.received.Add(uint64(n))
	return int(n)
}

// Frame returns the UMEM bytes of d. They stay valid until d's frame goes
// back to the pool (Free, or completion after Transmit); the caller must not
// touch them after that. A descriptor outside the UMEM gives nil.
func (s *Socket) Frame(d Desc) []byte {
	end := d.Addr + uint64(d.Len)
	if end > uint64(len(s.umem)) || end < d.Addr {
		return nil
	}
	return s.umem[d.Addr:end:end]
}

// Free gives frames back to the pool. Addresses that are not frames held by
// the caller (freed twice, or foreign) are ignored and counted as BadFree.
func (s *Socket) Free(descs []Desc) {
	bad := 0
	for i := range descs {
		if !s.pool.put(descs[i].Addr) {
			bad++
		}
	}
	if bad > 0 {
		s.ctr.badFree.Add(uint64(bad))
	}
}

// AllocTx takes up to len(descs) free frames for sending, reaping the
// completion ring first when the pool runs short, and returns how many it
// took. Each descriptor's Len is the room in the frame (MaxTxFrame): write
// the frame into Frame(d), set Len to its length, then Transmit. Frames it
// could not take are counted as NoFreeFrame.
func (s *Socket) AllocTx(descs []Desc) int {
	if s.umem == nil {
		return 0 // closed
	}
	if s.pool.len() < len(descs) {
		s.Complete()
	}
	room := uint32(s.MaxTxFrame())
	head := uint64(s.cfg.Headroom)
	n := 0
	for ; n < len(descs); n++ {
		addr, ok := s.pool.get()
		if !ok {
			break
		}
		descs[n] = Desc{Addr: addr + head, Len: room}
	}
	if short := len(descs) - n; short > 0 {
		s.ctr.noFreeFrame.Add(uint64(short))
	}
	return n
}

// Transmit puts descs on the TX ring and returns how many fit; the frames
// that fit belong to the kernel until Complete returns them. The caller
// still owns descs[n:] and must Free them (they are counted as TxRingFull).
// Nothing is sent until Kick.
func (s *Socket) Transmit(descs []Desc) int {
	if s.tx == nil || len(descs) == 0 {
		return 0
	}
	r := s.tx
	n := r.free(uint32(len(descs)))
	for i := uint32(0); i < n; i++ {
		r.descs[(r.cachedProd+i)&r.mask] = unix.XDPDesc{Addr: descs[i].Addr, Len: descs[i].Len}
	}
	if n > 0 {
		r.submit(n)
		s.ctr.transmitted.Add(uint64(n))
	}
	if short := uint32(len(descs)) - n; short > 0 {
		s.ctr.txRingFull.Add(uint64(short))
	}
	return int(n)
}

// maxKickStalls bounds Kick: it gives up after this many sendto(2) calls in
// a row that moved no descriptor off the TX ring.
const maxKickStalls = 4

// Kick makes the kernel send what Transmit queued. With need_wakeup it makes
// a syscall only when the kernel asks for one. In copy mode one sendto(2)
// sends at most TxBudget descriptors and says EAGAIN (gotcha 3); EBUSY means
// the driver dropped a frame (it is completed anyway); Kick reaps
// completions and calls again while descriptors remain, giving up after a
// few calls in a row that made no progress (a full completion ring or a
// stalled peer): what stays on the ring goes with the next Kick.
//
// A link that is down returns a *KickError wrapping ENETDOWN, a deleted link
// or unbound socket one wrapping ENXIO; the descriptors stay on the ring.
// Kick never panics and does not allocate for these.
func (s *Socket) Kick() error {
	fd := s.fd.Load()
	if fd < 0 {
		return ErrClosed
	}
	if s.tx == nil {
		return nil
	}
	if !s.cfg.NoNeedWakeup && !s.tx.needWakeup() {
		return nil
	}
	pending := s.tx.pending()
	stalls := 0
	for pending > 0 && stalls < maxKickStalls {
		_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
		s.ctr.kicks.Add(1)
		switch e {
		case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS, unix.EINTR:
		case unix.ENETDOWN:
			s.ctr.kickErrNetDown.Add(1)
			return kickError(e)
		case unix.ENXIO:
			s.ctr.kickErrNxio.Add(1)
			return kickError(e)
		default:
			s.ctr.kickErrOther.Add(1)
			return kickError(e)
		}
		left := s.tx.pending()
		if left == 0 {
			break
		}
		s.ctr.kickRetries.Add(1)
		if left == pending {
			stalls++
			// A full completion ring stops the kernel: make room.
			s.Complete()
		} else {
			stalls = 0
		}
		pending = left
	}
	return nil
}

// TxPending is how many descriptors are on the TX ring, not yet taken by
// the kernel.
func (s *Socket) TxPending() int {
	if s.tx == nil {
		return 0
	}
	return int(s.tx.pending())
}

// Complete reaps the completion ring: sent frames go back to the pool (TX
// frames return only here, gotcha 4). It returns how many it reaped.
func (s *Socket) Complete() int {
	if s.umem == nil {
		return 0 // closed: the ring is unmapped
	}
	r := &s.comp
	n := r.avail(r.size)
	if n == 0 {
		return 0
	}
	bad := 0
	for i := uint32(0); i < n; i++ {
		if !s.pool.put(r.addrs[(r.cachedCons+i)&r.mask]) {
			bad++
		}
	}
	r.release(n)
	s.ctr.completed.Add(uint64(n))
	if bad > 0 {
		s.ctr.badFree.Add(uint64(bad))
	}
	return int(n)
}

// FillNeedsWakeup reports whether the kernel asked for a poll(2) to resume
// filling (zero-copy drivers; copy mode receives without one).
func (s *Socket) FillNeedsWakeup() bool { return s.rx != nil && s.fill.needWakeup() }

// TxNeedsWakeup reports whether Kick will make a syscall.
func (s *Socket) TxNeedsWakeup() bool {
	return s.tx != nil && (s.cfg.NoNeedWakeup || s.tx.needWakeup())
}

// Poll waits up to timeout for the RX ring to have descriptors (poll(2) with
// POLLIN; a negative timeout waits forever, 0 does not wait). An interrupted
// poll returns false and no error. Errors on the socket (POLLERR, POLLNVAL)
// come back as errors. A deleted link does not wake poll(2); Poll notices it
// when the wait times out and from then on returns an error wrapping
// ErrUnbound (and ENETDOWN): close the socket and open a new one when the
// link is back. Bound the timeout so that happens.
func (s *Socket) Poll(timeout time.Duration) (readable bool, err error) {
	if s.fd.Load() < 0 {
		return false, ErrClosed
	}
	if s.sockErr != nil {
		return false, s.sockErr
	}
	ms := -1
	if timeout >= 0 {
		ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
	}
	s.pollFDs[0].Revents, s.pollFDs[1].Revents = 0, 0
	n, err := unix.Poll(s.pollFDs[:], ms)
	if err != nil {
		if err == unix.EINTR {
			return false, nil
		}
		return false, err
	}
	if s.pollFDs[1].Revents&unix.POLLIN != 0 {
		// Woken: drain the eventfd so the next Poll waits again.
		var b [8]byte
		_, _ = unix.Read(s.wakeFD, b[:]) // EAGAIN: a concurrent Poll drained it
		n--
	}
	if n == 0 {
		// Only an idle socket pays for this syscall.
		return false, s.checkUnbound()
	}
	re := s.pollFDs[0].Revents
	if re&(unix.POLLERR|unix.POLLNVAL) != 0 {
		return false, errPollSocket
	}
	return re&unix.POLLIN != 0, nil
}

// Wake makes a Poll in progress, or else the next one, return at once
// (false, nil), so that an owner sleeping in Poll notices it must stop
// without waiting for its timeout: taasd's stop then takes milliseconds,
// not a poll timeout per worker (issue 9). Any goroutine may call it; it
// does nothing on a TxOnly or closed socket.
func (s *Socket) Wake() {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if !s.hasWake {
		return
	}
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1) // eventfd adds a native-endian uint64
	// EAGAIN means the counter is already non-zero: a wake is pending.
	_, _ = unix.Write(s.wakeFD, one[:])
}

// checkUnbound reads SO_ERROR: when the interface is unregistered the kernel
// unbinds the socket and sets its error to ENETDOWN, and nothing else shows
// it to a reader (poll(2) on an unbound socket reports no event). SO_ERROR
// clears the error, so the answer is kept.
func (s *Socket) checkUnbound() error {
	s.soErr, s.soErrLen = 0, 4
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(s.fd.Load()), unix.SOL_SOCKET, unix.SO_ERROR,
		uintptr(unsafe.Pointer(&s.soErr)), uintptr(unsafe.Pointer(&s.soErrLen)), 0)
	if e != 0 {
		return fmt.Errorf("xsk poll: get SO_ERROR: %w", e)
	}
	if s.soErr != 0 {
		s.sockErr = fmt.Errorf("xsk poll on ifindex %d queue %d: %w: %w", s.ifindex, s.queueID, ErrUnbound, unix.Errno(s.soErr))
		return s.sockErr
	}
	return nil
}

var errPollSocket = errors.New("xsk poll: socket error (POLLERR or POLLNVAL)")

// Stats reads the kernel's XDP_STATISTICS and this package's counters. It
// may be called from any goroutine while the owner works the rings, and
// concurrently with Close (then it returns the counters and ErrClosed).
func (s *Socket) Stats() (Statistics, error) {
	var st Statistics
	s.ctr.load(&st)
	// Hold off Close while the FD is in use: a closed FD number can be
	// reused at once, by another socket whose statistics we would read.
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	fd := s.fd.Load()
	if fd < 0 {
		return st, ErrClosed
	}
	var ks unix.XDPStatistics
	if _, err := getsockopt(int(fd), unix.XDP_STATISTICS, unsafe.Pointer(&ks), unsafe.Sizeof(ks)); err != nil {
		return st, fmt.Errorf("get xdp statistics: %w", err)
	}
	st.RxDropped = ks.Rx_dropped
	st.RxInvalidDescs = ks.Rx_invalid_descs
	st.TxInvalidDescs = ks.Tx_invalid_descs
	st.RxRingFull = ks.Rx_ring_full
	st.RxFillRingEmptyDescs = ks.Rx_fill_ring_empty_descs
	st.TxRingEmptyDescs = ks.Tx_ring_empty_descs
	return st, nil
}

// Close unbinds and closes the socket and unmaps its rings and UMEM. Frames
// and byte slices from Frame are invalid afterwards. It is safe to call
// twice; the second call returns ErrClosed.
func (s *Socket) Close() error {
	if s.fd.Load() < 0 && s.umem == nil {
		return ErrClosed
	}
	return s.release()
}

func (s *Socket) release() error {
	var errs []error
	// Close the socket first: the kernel stops using the UMEM and rings.
	s.closeMu.Lock()
	if fd := s.fd.Swap(-1); fd >= 0 {
		if err := unix.Close(int(fd)); err != nil {
			errs = append(errs, fmt.Errorf("close xsk fd: %w", err))
		}
	}
	if s.hasWake {
		if err := unix.Close(s.wakeFD); err != nil {
			errs = append(errs, fmt.Errorf("close xsk eventfd: %w", err))
		}
		s.hasWake = false
	}
	s.closeMu.Unlock()
	for _, m := range s.ringMaps {
		if err := unix.Munmap(m); err != nil {
			errs = append(errs, fmt.Errorf("munmap ring: %w", err))
		}
	}
	s.ringMaps = nil
	s.rx, s.tx = nil, nil
	if s.umem != nil {
		if err := unix.Munmap(s.umem); err != nil {
			errs = append(errs, fmt.Errorf("munmap umem: %w", err))
		}
		s.umem = nil
	}
	return errors.Join(errs...)
}
