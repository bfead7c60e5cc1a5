package perf

import (
	"testing"
	"time"
)

// TestPacerBounds: however late the caller comes back, a chunk never
// exceeds the caller's limit or pacedChunkMax (a late wakeup once made the
// AF_XDP sender take more frames than its descriptor array held).
func TestPacerBounds(t *testing.T) {
	for _, rate := range []float64{1e3, 2e5, 1e6, 5e6} {
		p := newPacer(rate, 64, time.Now().Add(-time.Second)) // a second late
		for _, limit := range []uint64{1, 64, 1 << 20} {
			n, ok := p.next(limit, time.Time{})
			if !ok || n == 0 || n > limit || n > pacedChunkMax {
				t.Errorf("rate %v: next(%d) = %d, %v; want 1..min(%d, %d)", rate, limit, n, ok, limit, pacedChunkMax)
			}
		}
	}
	p := newPacer(0, 1<<16, time.Now())
	if n, ok := p.next(10, time.Time{}); n != 10 || !ok {
		t.Errorf("flat out: next(10) = %d, %v, want 10, true", n, ok)
	}
	p = newPacer(1, 64, time.Now())
	p.next(1, time.Time{}) // takes the first token; the next is 1 s away
	if _, ok := p.next(1, time.Now().Add(time.Millisecond)); ok {
		t.Errorf("next past the deadline: ok, want false")
	}
}
