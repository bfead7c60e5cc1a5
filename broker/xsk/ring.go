package xsk

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The rings are single-producer single-consumer queues shared with the
// kernel. Their producer and consumer indices are free-running uint32
// counters (they wrap at 2^32; index & mask is the slot), so "entries in the
// ring" is always prod - cons in uint32 arithmetic. Each side keeps a cached
// copy of the other side's index and reads the shared one only when the
// cache says there is not enough room or not enough entries, as libxdp's
// xsk.h does: that keeps the shared cache lines out of the per-descriptor
// path.
//
// Ordering: the producer writes descriptors, then publishes its index with
// a release store; the consumer loads the producer index with an acquire
// load, then reads descriptors, then publishes its own index with a release
// store. Go's sync/atomic loads and stores are sequentially consistent,
// which is at least as strong as the smp_load_acquire/smp_store_release
// pairs the kernel uses on the other side.

// ring holds the index arithmetic shared by all four rings.
type ring struct {
	producer *uint32 // shared with the kernel
	consumer *uint32 // shared with the kernel
	flags    *uint32 // shared; XDP_RING_NEED_WAKEUP
	mask     uint32
	size     uint32
	// cachedProd and cachedCons are this side's view. On a ring we produce
	// into, cachedProd is ours (ahead of *producer until submit) and
	// cachedCons is the kernel's last seen consumer. On a ring we consume,
	// cachedCons is ours and cachedProd the kernel's last seen producer.
	cachedProd uint32
	cachedCons uint32
}

// initRing points r at the shared words of a ring in mem and reads the
// indices already there (the kernel starts them at 0; tests start them near
// 2^32 to exercise wraparound).
func (r *ring) init(mem []byte, off unix.XDPRingOffset, size uint32) {
	r.producer = (*uint32)(unsafe.Pointer(&mem[off.Producer]))
	r.consumer = (*uint32)(unsafe.Pointer(&mem[off.Consumer]))
	r.flags = (*uint32)(unsafe.Pointer(&mem[off.Flags]))
	r.size = size
	r.mask = size - 1
	r.cachedProd = atomic.LoadUint32(r.producer)
	r.cachedCons = atomic.LoadUint32(r.consumer)
}

// free returns how many slots a producer can fill now, up to want, reading
// the shared consumer index only when the cached one says fewer than want.
func (r *ring) free(want uint32) uint32 {
	n := r.size - (r.cachedProd - r.cachedCons)
	if n >= want {
		return want
	}
	r.cachedCons = atomic.LoadUint32(r.consumer)
	n = r.size - (r.cachedProd - r.cachedCons)
	if n > want {
		n = want
	}
	return n
}

// submit publishes n produced entries (already written at the slots from
// cachedProd on) to the kernel.
func (r *ring) submit(n uint32) {
	r.cachedProd += n
	atomic.StoreUint32(r.producer, r.cachedProd)
}

// avail returns how many entries a consumer can read now, up to want,
// reading the shared producer index only when the cache runs short.
func (r *ring) avail(want uint32) uint32 {
	n := r.cachedProd - r.cachedCons
	if n < want {
		r.cachedProd = atomic.LoadUint32(r.producer)
		n = r.cachedProd - r.cachedCons
	}
	if n > want {
		n = want
	}
	return n
}

// release hands n consumed entries back to the kernel.
func (r *ring) release(n uint32) {
	r.cachedCons += n
	atomic.StoreUint32(r.consumer, r.cachedCons)
}

// needWakeup reports whether the kernel asked for a syscall to make progress.
func (r *ring) needWakeup() bool {
	return atomic.LoadUint32(r.flags)&unix.XDP_RING_NEED_WAKEUP != 0
}

// pending is how many entries a producer submitted that the kernel has not
// consumed yet (reads the shared consumer index).
func (r *ring) pending() uint32 {
	r.cachedCons = atomic.LoadUint32(r.consumer)
	return r.cachedProd - r.cachedCons
}

// addrRing is a fill or completion ring: its entries are UMEM addresses.
type addrRing struct {
	ring
	addrs []uint64
}

func (r *addrRing) init(mem []byte, off unix.XDPRingOffset, size uint32) {
	r.ring.init(mem, off, size)
	r.addrs = unsafe.Slice((*uint64)(unsafe.Pointer(&mem[off.Desc])), size)
}

// descRing is an RX or TX ring: its entries are descriptors.
type descRing struct {
	ring
	descs []unix.XDPDesc
}

func (r *descRing) init(mem []byte, off unix.XDPRingOffset, size uint32) {
	r.ring.init(mem, off, size)
	r.descs = unsafe.Slice((*unix.XDPDesc)(unsafe.Pointer(&mem[off.Desc])), size)
}
