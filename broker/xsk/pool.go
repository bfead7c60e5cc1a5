package xsk

// framePool is the free list of UMEM frames: a fixed stack of frame base
// addresses with O(1) push and pop and no allocation after newFramePool.
// A per-frame bit records whether a frame is in the pool, so freeing a frame
// twice (or an address that is no frame of this UMEM) is caught and counted
// instead of corrupting the list: the same frame handed out twice would
// have two owners writing it.
type framePool struct {
	stack     []uint64 // stack[:top] are free frame addresses
	top       int
	inPool    []uint64 // bit per frame index
	frameSize uint64
	shift     uint // log2(frameSize)
	numFrames uint64
}

// newFramePool returns a pool holding every frame of a UMEM of n frames of
// size bytes (a power of two).
func newFramePool(n int, size int) *framePool {
	p := &framePool{
		stack:     make([]uint64, n),
		inPool:    make([]uint64, (n+63)/64),
		frameSize: uint64(size),
		numFrames: uint64(n),
	}
	for s := size; s > 1; s >>= 1 {
		p.shift++
	}
	// Push in reverse so that frame 0 is handed out first: easier to read
	// in tests and dumps, and it costs nothing.
	for i := n - 1; i >= 0; i-- {
		p.stack[p.top] = uint64(i) << p.shift
		p.top++
		p.inPool[i/64] |= 1 << (uint(i) % 64)
	}
	return p
}

// len is the number of free frames.
func (p *framePool) len() int { return p.top }

// get pops one frame address; ok is false when the pool is empty.
func (p *framePool) get() (addr uint64, ok bool) {
	if p.top == 0 {
		return 0, false
	}
	p.top--
	addr = p.stack[p.top]
	i := addr >> p.shift
	p.inPool[i/64] &^= 1 << (i % 64)
	return addr, true
}

// put pushes the frame that contains addr (any offset inside the frame, as
// RX descriptors point past the headroom). It returns false, and leaves the
// pool unchanged, when addr is outside the UMEM or its frame is already free.
func (p *framePool) put(addr uint64) bool {
	i := addr >> p.shift
	if i >= p.numFrames {
		return false
	}
	bit := uint64(1) << (i % 64)
	if p.inPool[i/64]&bit != 0 {
		return false
	}
	p.inPool[i/64] |= bit
	p.stack[p.top] = i << p.shift
	p.top++
	return true
}
