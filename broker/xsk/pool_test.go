package xsk

import "testing"

func TestFramePool(t *testing.T) {
	p := newFramePool(4, 2048)
	if p.len() != 4 {
		t.Fatalf("len = %d, want 4", p.len())
	}
	seen := map[uint64]bool{}
	for i := 0; i < 4; i++ {
		a, ok := p.get()
		if !ok {
			t.Fatalf("get %d: pool empty", i)
		}
		if a%2048 != 0 || a >= 4*2048 || seen[a] {
			t.Fatalf("get %d = %#x: not a fresh frame address", i, a)
		}
		seen[a] = true
	}
	if a, ok := p.get(); ok {
		t.Fatalf("get on exhausted pool = %#x, true", a)
	}
	// Addresses inside a frame (RX descriptors point past the headroom)
	// return the whole frame.
	if !p.put(2048 + 256) {
		t.Fatal("put(frame 1 + 256) = false")
	}
	if a, _ := p.get(); a != 2048 {
		t.Fatalf("get after put(2048+256) = %#x, want 0x800", a)
	}
	if !p.put(2048) {
		t.Fatal("put(2048) = false")
	}
}

func TestFramePoolBadFree(t *testing.T) {
	tests := []struct {
		name string
		addr uint64
	}{
		{"double free", 0},
		{"double free mid-frame", 100},
		{"outside umem", 4 * 4096},
		{"far outside", 1 << 63},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newFramePool(4, 4096)
			a, _ := p.get() // frame 0
			if a != 0 {
				t.Fatalf("first get = %#x, want 0", a)
			}
			if tc.addr < 4096 && !p.put(a) {
				t.Fatal("first put = false")
			}
			if p.put(tc.addr) {
				t.Errorf("put(%#x) = true, want false", tc.addr)
			}
			if want := 4; tc.addr < 4096 && p.len() != want {
				t.Errorf("len = %d after rejected put, want %d", p.len(), want)
			}
			if tc.addr >= 4096 && p.len() != 3 {
				t.Errorf("len = %d after rejected put, want 3", p.len())
			}
		})
	}
}

func TestFramePoolNoAllocs(t *testing.T) {
	p := newFramePool(64, 2048)
	allocs := testing.AllocsPerRun(100, func() {
		var got [16]uint64
		for i := range got {
			got[i], _ = p.get()
		}
		for _, a := range got {
			p.put(a)
		}
	})
	if allocs != 0 {
		t.Errorf("get/put allocs = %v, want 0", allocs)
	}
}

func BenchmarkFramePool(b *testing.B) {
	p := newFramePool(4096, 2048)
	b.ReportAllocs()
	var got [64]uint64
	for b.Loop() {
		for i := range got {
			got[i], _ = p.get()
		}
		for _, a := range got {
			p.put(a)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/frame")
}
