package xsk

import (
	"bytes"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// newFakeSocket builds a Socket whose UMEM and rings live in ordinary
// memory and whose "kernel" is the kernelRx/kernelTx helpers below, to test
// the frame accounting without privileges. It has no FD: Kick, Poll and
// Stats see a closed socket.
func newFakeSocket(t testing.TB, cfg Config) *Socket {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.setDefaults()
	s := &Socket{cfg: cfg, txBudget: kernelTxBatch}
	s.fd.Store(-1)
	s.umem = make([]byte, cfg.NumFrames*cfg.FrameSize)
	s.fill.init(fakeRingMem(uint32(cfg.FillSize), 8, 0, 0), fakeOff, uint32(cfg.FillSize))
	s.comp.init(fakeRingMem(uint32(cfg.CompletionSize), 8, 0, 0), fakeOff, uint32(cfg.CompletionSize))
	if !cfg.TxOnly {
		s.rxRing.init(fakeRingMem(uint32(cfg.RxSize), 16, 0, 0), fakeOff, uint32(cfg.RxSize))
		s.rx = &s.rxRing
	}
	if !cfg.RxOnly {
		s.txRing.init(fakeRingMem(uint32(cfg.TxSize), 16, 0, 0), fakeOff, uint32(cfg.TxSize))
		s.tx = &s.txRing
	}
	s.pool = newFramePool(cfg.NumFrames, cfg.FrameSize)
	return s
}

// kernelRx plays copy-mode receive: for each frame it takes an address off
// the fill ring, copies the frame to address + 256 + headroom and puts a
// descriptor on the RX ring. It returns how many frames it delivered.
func kernelRx(s *Socket, frames ...[]byte) int {
	f, r := &s.fill, s.rx
	fcons, fprod := atomic.LoadUint32(f.consumer), atomic.LoadUint32(f.producer)
	rprod, rcons := atomic.LoadUint32(r.producer), atomic.LoadUint32(r.consumer)
	n := 0
	for _, fr := range frames {
		if fcons == fprod || rprod-rcons == r.size {
			break
		}
		addr := f.addrs[fcons&f.mask] + xdpPacketHeadroom + uint64(s.cfg.Headroom)
		fcons++
		copy(s.umem[addr:], fr)
		r.descs[rprod&r.mask] = unix.XDPDesc{Addr: addr, Len: uint32(len(fr))}
		rprod++
		n++
	}
	atomic.StoreUint32(f.consumer, fcons)
	atomic.StoreUint32(r.producer, rprod)
	return n
}

// kernelTx plays copy-mode transmit: it takes descriptors off the TX ring
// while the completion ring has room (the kernel reserves a completion slot
// before it sends), returns the frames' bytes and puts their addresses on
// the completion ring.
func kernelTx(s *Socket) [][]byte {
	t, c := s.tx, &s.comp
	tcons, tprod := atomic.LoadUint32(t.consumer), atomic.LoadUint32(t.producer)
	cprod, ccons := atomic.LoadUint32(c.producer), atomic.LoadUint32(c.consumer)
	var out [][]byte
	for ; tcons != tprod && cprod-ccons < c.size; tcons++ {
		d := t.descs[tcons&t.mask]
		out = append(out, bytes.Clone(s.umem[d.Addr:d.Addr+uint64(d.Len)]))
		c.addrs[cprod&c.mask] = d.Addr
		cprod++
	}
	atomic.StoreUint32(t.consumer, tcons)
	atomic.StoreUint32(c.producer, cprod)
	return out
}

func stats(s *Socket) Statistics {
	var st Statistics
	s.ctr.load(&st)
	return st
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; empty means valid
	}{
		{"zero is defaults", Config{}, ""},
		{"4096 frames", Config{FrameSize: 4096}, ""},
		{"frame size not 2048/4096", Config{FrameSize: 3000}, "FrameSize"},
		{"frame size 1024", Config{FrameSize: 1024}, "FrameSize"},
		{"ring not power of two", Config{RxSize: 1000}, "powers of two"},
		{"negative ring", Config{TxSize: -4}, "powers of two"},
		{"huge ring", Config{FillSize: 1 << 21}, "powers of two"},
		{"negative frames", Config{NumFrames: -1}, "NumFrames"},
		{"headroom too big", Config{Headroom: 1800}, "Headroom"},
		{"budget below -1", Config{TxBudget: -2}, "TxBudget"},
		{"budget -1", Config{TxBudget: -1}, ""},
		{"rx and tx only", Config{RxOnly: true, TxOnly: true}, "RxOnly"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate(%+v) = %v, want nil", tc.cfg, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate(%+v) = %v, want error mentioning %q", tc.cfg, err, tc.want)
			}
		})
	}
}

func TestOpenBadArguments(t *testing.T) {
	tests := []struct {
		name           string
		ifindex, queue int
		cfg            Config
		want           string
	}{
		{"ifindex 0", 0, 0, Config{}, "out of range"},
		{"negative queue", 1, -1, Config{}, "out of range"},
		{"bad config", 1, 0, Config{FrameSize: 1000}, "FrameSize"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(tc.ifindex, tc.queue, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open(%d, %d, %+v) = %v, %v; want an error mentioning %q", tc.ifindex, tc.queue, tc.cfg, s, err, tc.want)
			}
		})
	}
}

func TestSocketRxPath(t *testing.T) {
	s := newFakeSocket(t, Config{NumFrames: 16, FillSize: 8, RxSize: 8, RxOnly: true})
	if n := s.Fill(); n != 8 {
		t.Fatalf("Fill() = %d, want 8 (fill ring size)", n)
	}
	if n := s.Fill(); n != 0 {
		t.Fatalf("second Fill() = %d, want 0 (ring full)", n)
	}
	frames := [][]byte{[]byte("first frame"), bytes.Repeat([]byte{0xab}, 1792), {1}}
	if n := kernelRx(s, frames...); n != 3 {
		t.Fatalf("kernel delivered %d, want 3", n)
	}
	descs := make([]Desc, 2)
	var got [][]byte
	for {
		n := s.Receive(descs)
		if n == 0 {
			break
		}
		for _, d := range descs[:n] {
			if d.Addr%2048 != 256 {
				t.Errorf("rx desc addr %#x: want frame + 256 headroom", d.Addr)
			}
			got = append(got, bytes.Clone(s.Frame(d)))
		}
		s.Free(descs[:n])
	}
	if len(got) != len(frames) {
		t.Fatalf("received %d frames, want %d", len(got), len(frames))
	}
	for i := range frames {
		if !bytes.Equal(got[i], frames[i]) {
			t.Errorf("frame %d = %x, want %x", i, got[i], frames[i])
		}
	}
	if n := s.Fill(); n != 3 {
		t.Errorf("Fill() after freeing 3 = %d, want 3", n)
	}
	if st := stats(s); st.Received != 3 || st.Filled != 11 || st.BadFree != 0 {
		t.Errorf("stats = %+v, want Received 3, Filled 11, BadFree 0", st)
	}
	if s.FreeFrames() != 16-8 {
		t.Errorf("FreeFrames = %d, want 8", s.FreeFrames())
	}
}

func TestSocketTxPath(t *testing.T) {
	s := newFakeSocket(t, Config{NumFrames: 8, TxSize: 4, CompletionSize: 8, TxOnly: true})
	descs := make([]Desc, 6)
	n := s.AllocTx(descs)
	if n != 6 {
		t.Fatalf("AllocTx(6) = %d, want 6", n)
	}
	for i := range descs[:n] {
		if int(descs[i].Len) != s.MaxTxFrame() {
			t.Errorf("AllocTx desc %d Len = %d, want %d", i, descs[i].Len, s.MaxTxFrame())
		}
		f := s.Frame(descs[i])
		descs[i].Len = uint32(copy(f, []byte{byte(i), 'x', 'y'}))
	}
	sent := s.Transmit(descs)
	if sent != 4 {
		t.Fatalf("Transmit(6) into a 4-entry ring = %d, want 4", sent)
	}
	s.Free(descs[sent:])
	got := kernelTx(s)
	if len(got) != 4 {
		t.Fatalf("kernel sent %d, want 4", len(got))
	}
	for i, f := range got {
		if want := []byte{byte(i), 'x', 'y'}; !bytes.Equal(f, want) {
			t.Errorf("sent frame %d = %x, want %x", i, f, want)
		}
	}
	if c := s.Complete(); c != 4 {
		t.Errorf("Complete() = %d, want 4", c)
	}
	if s.FreeFrames() != 8 {
		t.Errorf("FreeFrames = %d after completion, want 8", s.FreeFrames())
	}
	st := stats(s)
	if st.Transmitted != 4 || st.TxRingFull != 2 || st.Completed != 4 || st.BadFree != 0 {
		t.Errorf("stats = %+v, want Transmitted 4, TxRingFull 2, Completed 4", st)
	}
}

func TestSocketAllocTxReapsAndCountsShortage(t *testing.T) {
	s := newFakeSocket(t, Config{NumFrames: 4, TxOnly: true})
	descs := make([]Desc, 4)
	s.Transmit(descs[:s.AllocTx(descs)])
	kernelTx(s) // completions wait on the ring, not yet reaped
	if s.FreeFrames() != 0 {
		t.Fatalf("FreeFrames = %d before reaping, want 0", s.FreeFrames())
	}
	more := make([]Desc, 6)
	if n := s.AllocTx(more); n != 4 {
		t.Errorf("AllocTx(6) with 4 frames on the completion ring = %d, want 4", n)
	}
	if st := stats(s); st.NoFreeFrame != 2 || st.Completed != 4 {
		t.Errorf("stats = %+v, want NoFreeFrame 2, Completed 4", st)
	}
}

func TestSocketBadFreeAndFrameBounds(t *testing.T) {
	s := newFakeSocket(t, Config{NumFrames: 4})
	d := make([]Desc, 1)
	s.AllocTx(d)
	s.Free(d)
	s.Free(d) // double free
	s.Free([]Desc{{Addr: 1 << 40}})
	if st := stats(s); st.BadFree != 2 {
		t.Errorf("BadFree = %d, want 2", st.BadFree)
	}
	if s.FreeFrames() != 4 {
		t.Errorf("FreeFrames = %d, want 4", s.FreeFrames())
	}
	for _, bad := range []Desc{{Addr: 4 * 2048, Len: 1}, {Addr: 4*2048 - 10, Len: 11}, {Addr: 1<<64 - 1, Len: 2}} {
		if f := s.Frame(bad); f != nil {
			t.Errorf("Frame(%+v) = %d bytes, want nil", bad, len(f))
		}
	}
	if f := s.Frame(Desc{Addr: 4*2048 - 10, Len: 10}); len(f) != 10 || cap(f) != 10 {
		t.Errorf("Frame(last 10 bytes) len %d cap %d, want 10 10", len(f), cap(f))
	}
}

func TestClosedSocketCallsReturnErrors(t *testing.T) {
	s := newFakeSocket(t, Config{})
	s.umem = nil // what Close leaves
	s.rx, s.tx = nil, nil
	if err := s.Kick(); !errors.Is(err, ErrClosed) {
		t.Errorf("Kick on closed socket = %v, want ErrClosed", err)
	}
	if _, err := s.Poll(0); !errors.Is(err, ErrClosed) {
		t.Errorf("Poll on closed socket = %v, want ErrClosed", err)
	}
	if _, err := s.Stats(); !errors.Is(err, ErrClosed) {
		t.Errorf("Stats on closed socket = %v, want ErrClosed", err)
	}
	d := make([]Desc, 4)
	if s.Fill() != 0 || s.Receive(d) != 0 || s.AllocTx(d) != 0 || s.Transmit(d) != 0 || s.Complete() != 0 {
		t.Error("ring calls on a closed socket did something")
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("Close twice = %v, want ErrClosed", err)
	}
}

func TestErrNotSupported(t *testing.T) {
	err := errors.Join(errors.New("context"), ErrNotSupported)
	var ns interface{ NotSupported() bool }
	if !errors.As(err, &ns) || !ns.NotSupported() {
		t.Error("ErrNotSupported has no NotSupported() bool in the chain")
	}
	if !errors.Is(err, ErrNotSupported) {
		t.Error("errors.Is(wrapped, ErrNotSupported) = false")
	}
	var ke *KickError
	if e := kickError(unix.ENETDOWN); !errors.Is(e, unix.ENETDOWN) || !errors.As(e, &ke) || errors.Is(e, ErrUnbound) {
		t.Errorf("kickError(ENETDOWN) = %v: want a *KickError wrapping ENETDOWN, not ErrUnbound", e)
	}
	if e := kickError(unix.ENXIO); !errors.Is(e, unix.ENXIO) || !errors.Is(e, ErrUnbound) {
		t.Errorf("kickError(ENXIO) = %v: want it to wrap ENXIO and match ErrUnbound", e)
	}
}

// TestHotPathNoAllocs runs one whole RX and TX batch through the ring calls
// and asserts none of them allocates.
func TestHotPathNoAllocs(t *testing.T) {
	s := newFakeSocket(t, Config{NumFrames: 256, FillSize: 64, RxSize: 64, TxSize: 64, CompletionSize: 64})
	rxd := make([]Desc, 64)
	txd := make([]Desc, 64)
	frame := make([]byte, 60)
	frames := make([][]byte, 32)
	for i := range frames {
		frames[i] = frame
	}
	allocs := testing.AllocsPerRun(200, func() { forwardBatch(s, rxd, txd, frames) })
	if allocs != 0 {
		t.Errorf("one batch allocates %v times, want 0", allocs)
	}
	if st := stats(s); st.Received == 0 || st.Completed == 0 || st.BadFree != 0 || st.NoFreeFrame != 0 {
		t.Errorf("stats after the batches = %+v: frames did not flow", st)
	}
}

// forwardBatch runs one batch of a forwarding worker on a fake socket, the
// kernel's side included: fill, deliver frames, receive, copy each into a
// TX frame, free, transmit, send, complete.
func forwardBatch(s *Socket, rxd, txd []Desc, frames [][]byte) {
	s.Fill()
	kernelRx(s, frames...)
	n := s.Receive(rxd)
	m := s.AllocTx(txd[:n])
	for i := 0; i < m; i++ {
		txd[i].Len = uint32(copy(s.Frame(txd[i]), s.Frame(rxd[i])))
	}
	s.Free(rxd[:n])
	s.Transmit(txd[:m])
	drainTx(s)
	s.Complete()
}

// drainTx is kernelTx without collecting the bytes, so it does not allocate.
func drainTx(s *Socket) {
	t, c := s.tx, &s.comp
	tcons, tprod := atomic.LoadUint32(t.consumer), atomic.LoadUint32(t.producer)
	cprod, ccons := atomic.LoadUint32(c.producer), atomic.LoadUint32(c.consumer)
	for ; tcons != tprod && cprod-ccons < c.size; tcons++ {
		c.addrs[cprod&c.mask] = t.descs[tcons&t.mask].Addr
		cprod++
	}
	atomic.StoreUint32(t.consumer, tcons)
	atomic.StoreUint32(c.producer, cprod)
}

// BenchmarkRingBatch is the userspace cost of one 64-frame forward batch
// (fill, receive, alloc, copy 64 B, free, transmit, complete) with the
// kernel side simulated: the overhead this package adds per frame.
func BenchmarkRingBatch(b *testing.B) {
	s := newFakeSocket(b, Config{NumFrames: 512, FillSize: 128, RxSize: 128, TxSize: 128, CompletionSize: 128})
	rxd := make([]Desc, 64)
	txd := make([]Desc, 64)
	frames := make([][]byte, 64)
	for i := range frames {
		frames[i] = make([]byte, 60)
	}
	b.ReportAllocs()
	for b.Loop() {
		forwardBatch(s, rxd, txd, frames)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/frame")
}

// FuzzConfig checks that Validate accepts only configurations Open can
// build: powers of two, a frame that holds the copy-mode headroom, and no
// panic on any input.
func FuzzConfig(f *testing.F) {
	f.Add(0, 0, 0, 0, 0, 0, 0, 0, false, false)
	f.Add(4096, 4096, 128, 64, 64, 64, 64, 256, true, false)
	f.Add(-1, 3000, 2000, 3, 0, 0, 1<<31, -2, true, true)
	f.Fuzz(func(t *testing.T, frames, size, head, fill, comp, rx, tx, budget int, rxOnly, txOnly bool) {
		c := Config{NumFrames: frames, FrameSize: size, Headroom: head, FillSize: fill, CompletionSize: comp,
			RxSize: rx, TxSize: tx, TxBudget: budget, RxOnly: rxOnly, TxOnly: txOnly}
		if c.Validate() != nil {
			return
		}
		c.setDefaults()
		pow2 := func(v int) bool { return v > 0 && v&(v-1) == 0 }
		if c.NumFrames <= 0 || c.TxSize > maxRingSize || !pow2(c.FrameSize) || !pow2(c.FillSize) || !pow2(c.CompletionSize) ||
			!pow2(c.RxSize) || !pow2(c.TxSize) || c.TxBudget > c.TxSize || (c.RxOnly && c.TxOnly) {
			t.Fatalf("Validate accepted %+v", c)
		}
		if room := c.FrameSize - xdpPacketHeadroom - c.Headroom; room < 64 {
			t.Fatalf("Validate accepted %+v: %d bytes of room per frame", c, room)
		}
	})
}

// FuzzSocketAccounting drives a fake socket through random interleavings of
// every ring call and the kernel's side, and checks after each step that
// every UMEM frame is in exactly one place: the pool, a ring, or the
// caller's hands. A lost frame starves the pool; a doubled one would be
// written by two owners at once.
func FuzzSocketAccounting(f *testing.F) {
	f.Add([]byte{0, 0x39, 0x1a, 0x23, 0x2c, 0x25, 6, 7})
	f.Add([]byte{0x24, 0x1d, 6, 0x7f, 0, 0x79, 0x7a, 0x3b, 7, 0x24, 0x25, 6, 7, 0x3c})
	f.Fuzz(func(t *testing.T, ops []byte) {
		const frames = 16
		s := newFakeSocket(t, Config{NumFrames: frames, FillSize: 8, RxSize: 4, TxSize: 4, CompletionSize: 8})
		var heldRx, heldTx []Desc
		rxFrame := []byte{1, 2, 3}
		for step, op := range ops {
			k := int(op>>3)%8 + 1
			switch op & 7 {
			case 0:
				s.Fill()
			case 1:
				batch := make([][]byte, k)
				for i := range batch {
					batch[i] = rxFrame
				}
				kernelRx(s, batch...)
			case 2:
				d := make([]Desc, k)
				heldRx = append(heldRx, d[:s.Receive(d)]...)
			case 3:
				n := min(k, len(heldRx))
				s.Free(heldRx[:n])
				heldRx = heldRx[n:]
			case 4:
				d := make([]Desc, k)
				heldTx = append(heldTx, d[:s.AllocTx(d)]...)
			case 5:
				n := s.Transmit(heldTx[:min(k, len(heldTx))])
				heldTx = heldTx[n:]
			case 6:
				kernelTx(s)
			case 7:
				s.Complete()
			}
			// Where is every frame?
			owner := make(map[uint64]string)
			place := func(where string, addr uint64) {
				i := addr / 2048
				if prev, ok := owner[i]; ok {
					t.Fatalf("step %d (op %#x): frame %d is both in %s and in %s", step, op, i, prev, where)
				}
				owner[i] = where
			}
			for _, a := range s.pool.stack[:s.pool.top] {
				place("pool", a)
			}
			for r, name := range map[*addrRing]string{&s.fill: "fill ring", &s.comp: "completion ring"} {
				for i := atomic.LoadUint32(r.consumer); i != atomic.LoadUint32(r.producer); i++ {
					place(name, r.addrs[i&r.mask])
				}
			}
			for r, name := range map[*descRing]string{s.rx: "rx ring", s.tx: "tx ring"} {
				for i := atomic.LoadUint32(r.consumer); i != atomic.LoadUint32(r.producer); i++ {
					place(name, r.descs[i&r.mask].Addr)
				}
			}
			for _, d := range heldRx {
				place("caller (rx)", d.Addr)
			}
			for _, d := range heldTx {
				place("caller (tx)", d.Addr)
			}
			if len(owner) != frames {
				t.Fatalf("step %d (op %#x): %d frames accounted for, want %d", step, op, len(owner), frames)
			}
			if st := stats(s); st.BadFree != 0 {
				t.Fatalf("step %d: BadFree = %d", step, st.BadFree)
			}
		}
	})
}
