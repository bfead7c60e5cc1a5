package perf

import (
	"testing"
	"time"
)

// TestPacerBounds: however late the caller comes back, a chunk never
// exceeds the caller's limit or the burst (a late wakeup once made the
// AF_XDP sender take more frames than its descriptor array held).
func TestPacerBounds(t *testing.T) {
	for _, burst := range []uint64{0, 100, 4096} {
		most := burst
		if burst == 0 {
			most = pacedChunkMax
		}
		for _, rate := range []float64{1e3, 2e5, 1e6, 5e6} {
			p := newPacer(rate, 64, burst, time.Now().Add(-time.Second)) // a second late
			for _, limit := range []uint64{1, 64, 1 << 20} {
				n, ok := p.next(limit, time.Time{})
				if !ok || n == 0 || n > limit || n > most {
					t.Errorf("burst %d, rate %v: next(%d) = %d, %v; want 1..min(%d, %d)", burst, rate, limit, n, ok, limit, most)
				}
			}
		}
	}
	// A large burst sends 1 ms chunks: 2500 frames at 2.5 Mpps, where the
	// default sends 128.
	for _, c := range []struct {
		burst, want uint64
	}{{0, 128}, {4096, 2500}, {1000, 1000}, {100, 100}} {
		p := newPacer(2.5e6, 64, c.burst, time.Now())
		if n, _ := p.next(1<<20, time.Time{}); n != c.want {
			t.Errorf("burst %d at 2.5 Mpps: first chunk %d frames, want %d", c.burst, n, c.want)
		}
	}
	p := newPacer(0, 1<<16, 0, time.Now())
	if n, ok := p.next(10, time.Time{}); n != 10 || !ok {
		t.Errorf("flat out: next(10) = %d, %v, want 10, true", n, ok)
	}
	p = newPacer(1, 64, 0, time.Now())
	p.next(1, time.Time{}) // takes the first token; the next is 1 s away
	if _, ok := p.next(1, time.Now().Add(time.Millisecond)); ok {
		t.Errorf("next past the deadline: ok, want false")
	}
}
