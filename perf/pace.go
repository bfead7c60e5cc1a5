package perf

import (
	"time"

	"golang.org/x/sys/unix"
)

// pacer is the generators' token bucket, refilled by the clock. Frames go
// in chunks of about 100 us worth (at most 128), and the bucket holds at
// most 224 frames: a burst after a late wakeup fits a veth's 256-frame
// receive ring (gotcha 11), so a paced run offers a smooth stream rather
// than millisecond bursts that a peer on another CPU would drop at the
// ring. A stall longer than the bucket loses its tokens: the run then
// offers less than asked, and says so.
//
// A larger burst (Config.Burst) suits a receiver that drains the ring in
// the generator's own softirq, before the next frames are sent: bigger
// chunks mean fewer BPF_PROG_RUN calls, each of which costs a page pool
// set-up, so the pacer reaches higher rates.
type pacer struct {
	rate     float64 // frames per second; 0: flat out
	chunk    uint64
	chunkMax uint64
	due      time.Time // when the bucket holds one chunk
	maxLag   time.Duration
}

// Paced chunk and bucket sizes, in frames, for the default burst, and the
// largest burst Config takes.
const (
	pacedChunkMax = 128
	minPacedChunk = 16
	bucketDepth   = 224
	MaxBurst      = 1 << 14
)

// newPacer paces at rate (0: flat out in chunks of flatOut), in chunks of
// at most burst frames (0: pacedChunkMax) lasting about 100 us, or 1 ms
// for a burst above the default.
func newPacer(rate float64, flatOut, burst uint64, start time.Time) *pacer {
	p := &pacer{rate: rate, chunk: flatOut, due: start, chunkMax: flatOut}
	if rate > 0 {
		depth, span := uint64(bucketDepth), rate/10000
		p.chunkMax = pacedChunkMax
		switch {
		case burst > pacedChunkMax:
			p.chunkMax, depth, span = burst, burst+burst/2, rate/1000
		case burst > 0:
			p.chunkMax = burst
		}
		// At least minPacedChunk frames a call: each BPF_PROG_RUN of live
		// frames registers a page pool with an XDP memory id, released
		// only once a receiver has freed all its pages (at best a second
		// later). Single-frame chunks at 20 kpps into a slow AF_PACKET
		// reader (OVS, the churn scenario) used up the 65534 ids and
		// failed with ENOSPC.
		p.chunk = uint64(min(max(minPacedChunk, span), float64(p.chunkMax)))
		p.maxLag = p.span(depth - p.chunk)
	}
	return p
}

// span is how long n frames last at the rate.
func (p *pacer) span(n uint64) time.Duration {
	return time.Duration(float64(n) / p.rate * float64(time.Second))
}

// next blocks until the bucket holds a chunk and returns how many frames
// may go now: at least a chunk, more if the wakeup came late, never more
// than the burst (flat out: the flat-out chunk) or limit. It returns
// false, without waiting, when the next chunk falls after deadline (zero:
// none).
func (p *pacer) next(limit uint64, deadline time.Time) (uint64, bool) {
	if p.rate == 0 {
		return min(p.chunk, limit), true
	}
	now := time.Now()
	if now.Sub(p.due) > p.maxLag {
		p.due = now.Add(-p.maxLag)
	}
	if !deadline.IsZero() && p.due.After(deadline) {
		sleep(deadline.Sub(now))
		return 0, false
	}
	if d := p.due.Sub(now); d > 0 {
		sleep(d)
		now = time.Now()
	}
	n := p.chunk
	if late := now.Sub(p.due); late > 0 {
		n += uint64(late.Seconds() * p.rate)
	}
	n = min(n, p.chunkMax, limit)
	p.due = p.due.Add(p.span(n))
	return n, true
}

// sleep blocks the locked thread in nanosleep(2). time.Sleep on a locked
// goroutine waits for the scheduler to hand the thread back, which took
// ~25 ms per sleep on this kind of VM under load and broke pacing.
func sleep(d time.Duration) {
	ts := unix.NsecToTimespec(int64(d))
	for {
		err := unix.Nanosleep(&ts, &ts)
		if err != unix.EINTR {
			// Nanosleep fails only with EINTR (retried with the remainder)
			// or EINVAL for a negative time, which d never is.
			return
		}
	}
}
