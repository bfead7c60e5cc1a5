package xsk

import (
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fakeRingMem lays a ring out in ordinary memory the way the kernel's mmap
// offsets do (indices and flags on their own cache lines, then the entries),
// so the ring arithmetic is tested without a kernel.
var fakeOff = unix.XDPRingOffset{Producer: 0, Consumer: 64, Flags: 128, Desc: 192}

func fakeRingMem(size uint32, entrySize uintptr, prod, cons uint32) []byte {
	words := make([]uint64, (192+uintptr(size)*entrySize)/8+1)
	mem := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(words)*8)
	*(*uint32)(unsafe.Pointer(&mem[fakeOff.Producer])) = prod
	*(*uint32)(unsafe.Pointer(&mem[fakeOff.Consumer])) = cons
	return mem
}

func newFakeAddrRing(size, prod, cons uint32) *addrRing {
	r := &addrRing{}
	r.init(fakeRingMem(size, 8, prod, cons), fakeOff, size)
	return r
}

// kernelConsume plays the kernel on a ring userspace produces into: it takes
// up to n entries and returns them.
func kernelConsume(r *addrRing, n uint32) []uint64 {
	prod := atomic.LoadUint32(r.producer)
	cons := atomic.LoadUint32(r.consumer)
	var out []uint64
	for ; cons != prod && n > 0; n-- {
		out = append(out, r.addrs[cons&r.mask])
		cons++
	}
	atomic.StoreUint32(r.consumer, cons)
	return out
}

// kernelProduce plays the kernel on a ring userspace consumes: it appends
// addrs if they fit and returns how many did.
func kernelProduce(r *addrRing, addrs ...uint64) int {
	prod := atomic.LoadUint32(r.producer)
	cons := atomic.LoadUint32(r.consumer)
	n := 0
	for _, a := range addrs {
		if prod-cons == r.size {
			break
		}
		r.addrs[prod&r.mask] = a
		prod++
		n++
	}
	atomic.StoreUint32(r.producer, prod)
	return n
}

func produce(r *addrRing, addrs ...uint64) int {
	n := r.free(uint32(len(addrs)))
	for i := uint32(0); i < n; i++ {
		r.addrs[(r.cachedProd+i)&r.mask] = addrs[i]
	}
	r.submit(n)
	return int(n)
}

func consume(r *addrRing, max uint32) []uint64 {
	n := r.avail(max)
	out := make([]uint64, n)
	for i := uint32(0); i < n; i++ {
		out[i] = r.addrs[(r.cachedCons+i)&r.mask]
	}
	r.release(n)
	return out
}

func TestRingProducerWraparound(t *testing.T) {
	tests := []struct {
		name  string
		start uint32
	}{
		{"zero", 0},
		{"just before 2^32", 1<<32 - 3},
		{"at 2^32-1", 1<<32 - 1},
		{"mask boundary", 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newFakeAddrRing(8, tc.start, tc.start)
			next := uint64(100)
			var want []uint64
			// Ten rounds of "fill to the brim, kernel drains part" walk the
			// indices across the mask and the 2^32 boundary.
			for round := 0; round < 10; round++ {
				var batch []uint64
				for i := 0; i < 8; i++ {
					batch = append(batch, next+uint64(i))
				}
				n := produce(r, batch...)
				want = append(want, batch[:n]...)
				next += uint64(n)
				if got := atomic.LoadUint32(r.producer) - atomic.LoadUint32(r.consumer); got != 8 {
					t.Fatalf("round %d: entries in ring = %d, want 8 (full)", round, got)
				}
				if n := r.free(1); n != 0 {
					t.Fatalf("round %d: free(1) on a full ring = %d, want 0", round, n)
				}
				got := kernelConsume(r, 5)
				for i, a := range got {
					if a != want[i] {
						t.Fatalf("round %d: kernel read %v, want %v", round, got, want[:len(got)])
					}
				}
				want = want[len(got):]
			}
			if got, want := atomic.LoadUint32(r.producer), tc.start+8+9*5; got != want {
				t.Errorf("producer = %d, want %d", got, want)
			}
		})
	}
}

func TestRingConsumerWraparound(t *testing.T) {
	for _, start := range []uint32{0, 1<<32 - 5, 1<<32 - 1} {
		r := newFakeAddrRing(4, start, start)
		if got := consume(r, 4); len(got) != 0 {
			t.Fatalf("start %d: empty ring gave %v", start, got)
		}
		seq := uint64(0)
		for round := 0; round < 7; round++ {
			k := kernelProduce(r, seq, seq+1, seq+2)
			got := consume(r, 2)
			if len(got) != 2 || got[0] != seq || got[1] != seq+1 {
				t.Fatalf("start %d round %d: consume(2) = %v, want [%d %d]", start, round, got, seq, seq+1)
			}
			got = consume(r, 8)
			if len(got) != k-2 {
				t.Fatalf("start %d round %d: consume(8) = %v, want %d entries", start, round, got, k-2)
			}
			seq += 3
		}
		if c, p := atomic.LoadUint32(r.consumer), atomic.LoadUint32(r.producer); c != p {
			t.Errorf("start %d: consumer %d != producer %d after draining", start, c, p)
		}
	}
}

func TestRingFullAndEmptyEdges(t *testing.T) {
	r := newFakeAddrRing(4, 1<<32-2, 1<<32-2)
	if n := r.free(5); n != 4 {
		t.Errorf("free(5) on empty ring of 4 = %d, want 4", n)
	}
	if n := produce(r, 1, 2, 3, 4, 5); n != 4 {
		t.Fatalf("produce 5 into ring of 4 = %d, want 4", n)
	}
	if n := r.free(1); n != 0 {
		t.Errorf("free(1) on full ring = %d, want 0", n)
	}
	kernelConsume(r, 1)
	// The cached consumer is stale; free must look at the shared one.
	if n := r.free(4); n != 1 {
		t.Errorf("free(4) after the kernel took 1 = %d, want 1", n)
	}
	if p := r.pending(); p != 3 {
		t.Errorf("pending = %d, want 3", p)
	}

	c := newFakeAddrRing(4, 1<<32-1, 1<<32-1)
	if n := c.avail(4); n != 0 {
		t.Errorf("avail on empty ring = %d, want 0", n)
	}
	kernelProduce(c, 7, 8, 9, 10, 11)
	if n := c.avail(100); n != 4 {
		t.Errorf("avail on full ring = %d, want 4", n)
	}
}

func TestRingCachedIndices(t *testing.T) {
	// A producer with room in its cache must not read the shared consumer:
	// that is what keeps the kernel's cache line out of the hot path.
	r := newFakeAddrRing(8, 0, 0)
	produce(r, 1, 2)
	atomic.StoreUint32(r.consumer, 2) // kernel consumed both
	if n := r.free(6); n != 6 {
		t.Fatalf("free(6) = %d, want 6", n)
	}
	if r.cachedCons != 0 {
		t.Errorf("free(6) with 6 cached slots read the shared consumer (cachedCons = %d)", r.cachedCons)
	}
	if n := r.free(8); n != 8 {
		t.Errorf("free(8) = %d, want 8 after refresh", n)
	}
	if r.cachedCons != 2 {
		t.Errorf("cachedCons = %d after refresh, want 2", r.cachedCons)
	}
}

func TestRingNeedWakeup(t *testing.T) {
	r := newFakeAddrRing(4, 0, 0)
	if r.needWakeup() {
		t.Error("needWakeup with flags 0 = true")
	}
	atomic.StoreUint32(r.flags, unix.XDP_RING_NEED_WAKEUP)
	if !r.needWakeup() {
		t.Error("needWakeup with XDP_RING_NEED_WAKEUP = false")
	}
}

// FuzzRing runs a random sequence of produce, kernel-consume, kernel-produce
// and consume operations from a random start index against a plain queue
// model: the ring must never lose, duplicate or reorder an entry, and never
// exceed its size.
func FuzzRing(f *testing.F) {
	f.Add(uint32(0), uint8(3), []byte{0x13, 0x25, 0x07, 0x3f})
	f.Add(uint32(1<<32-3), uint8(2), []byte{0xff, 0x11, 0x22, 0x33, 0x44, 0x55})
	f.Fuzz(func(t *testing.T, start uint32, sizeLog uint8, ops []byte) {
		size := uint32(1) << (sizeLog % 6)
		prodRing := newFakeAddrRing(size, start, start)
		consRing := newFakeAddrRing(size, start, start)
		var inProd, inCons []uint64 // model contents
		next := uint64(1)
		for _, op := range ops {
			n := uint32(op>>2) % (2*size + 1)
			switch op & 3 {
			case 0: // userspace produces n
				batch := make([]uint64, n)
				for i := range batch {
					batch[i] = next + uint64(i)
				}
				k := produce(prodRing, batch...)
				if want := min(int(n), int(size)-len(inProd)); k != want {
					t.Fatalf("produce(%d) = %d, want %d", n, k, want)
				}
				inProd = append(inProd, batch[:k]...)
				next += uint64(k)
			case 1: // kernel consumes n
				got := kernelConsume(prodRing, n)
				for i := range got {
					if got[i] != inProd[i] {
						t.Fatalf("kernel consumed %v, want %v", got, inProd[:len(got)])
					}
				}
				inProd = inProd[len(got):]
			case 2: // kernel produces n
				batch := make([]uint64, n)
				for i := range batch {
					batch[i] = next + uint64(i)
				}
				k := kernelProduce(consRing, batch...)
				inCons = append(inCons, batch[:k]...)
				next += uint64(k)
			case 3: // userspace consumes n
				got := consume(consRing, n)
				if want := min(int(n), len(inCons)); len(got) != want {
					t.Fatalf("consume(%d) = %d entries, want %d", n, len(got), want)
				}
				for i := range got {
					if got[i] != inCons[i] {
						t.Fatalf("consumed %v, want %v", got, inCons[:len(got)])
					}
				}
				inCons = inCons[len(got):]
			}
		}
	})
}

func TestFixOffsets(t *testing.T) {
	v2 := unix.XDPMmapOffsets{Rx: unix.XDPRingOffset{Producer: 0, Consumer: 64, Desc: 192, Flags: 128}}
	got := v2
	if err := fixOffsets(&got, unsafe.Sizeof(got)); err != nil || got != v2 {
		t.Errorf("fixOffsets(v2) = %+v, %v; want it unchanged", got, err)
	}

	// A v1 kernel packs {producer, consumer, desc} x 4 and has no flags:
	// libxdp puts the flags right after the consumer index.
	var v1 unix.XDPMmapOffsets
	raw := (*[16]uint64)(unsafe.Pointer(&v1))
	for i := 0; i < 12; i++ {
		raw[i] = uint64(1000*(i/3) + 8*(i%3))
	}
	if err := fixOffsets(&v1, 96); err != nil {
		t.Fatal(err)
	}
	want := unix.XDPMmapOffsets{
		Rx: unix.XDPRingOffset{Producer: 0, Consumer: 8, Desc: 16, Flags: 12},
		Tx: unix.XDPRingOffset{Producer: 1000, Consumer: 1008, Desc: 1016, Flags: 1012},
		Fr: unix.XDPRingOffset{Producer: 2000, Consumer: 2008, Desc: 2016, Flags: 2012},
		Cr: unix.XDPRingOffset{Producer: 3000, Consumer: 3008, Desc: 3016, Flags: 3012},
	}
	if v1 != want {
		t.Errorf("fixOffsets(v1) = %+v, want %+v", v1, want)
	}
	if err := fixOffsets(&v1, 40); err == nil {
		t.Error("fixOffsets(40 bytes) = nil, want an error")
	}
}
