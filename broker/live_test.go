package broker

import (
	"bytes"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taas-appliance/taas/xdpprog"
)

// TestLiveCaptureBounded: a capture's buffers are fixed at start (the
// byte budget, buffers of the snaplen or the largest frame); a reader
// that never reads gets as many frames as there are buffers, the rest are
// counted dropped (captured + dropped == offered), and released buffers
// take frames again. Data is the frame cut to the buffer, Length the
// frame's.
func TestLiveCaptureBounded(t *testing.T) {
	for _, tc := range []struct {
		name              string
		snaplen, maxFrame int
		bufLen, buffers   int
	}{
		{"whole frames", 0, 1792, 1792, liveBudget / 1792},
		{"snaplen 256", 256, 1792, 256, liveBudget / 256},
		{"snaplen over the largest frame", 9000, 1792, 1792, liveBudget / 1792},
		{"snaplen 64: at most maxLiveBuffers", 64, 1792, 64, maxLiveBuffers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newLiveCapture(LiveTarget{Kind: LiveService, ID: "s"}, tc.snaplen, tc.maxFrame)
			if c.bufLen != tc.bufLen || cap(c.free) != tc.buffers || len(c.free) != tc.buffers {
				t.Fatalf("newLiveCapture: %d buffers of %d bytes, want %d of %d", len(c.free), c.bufLen, tc.buffers, tc.bufLen)
			}
			frame := make([]byte, 1500)
			for i := range frame {
				frame[i] = byte(i)
			}
			now := time.Now()
			offered := tc.buffers + 100
			for range offered {
				c.offer(now, frame, len(frame))
			}
			c.kick()
			st := c.Stats()
			if st.Captured != uint64(tc.buffers) || st.Captured+st.Dropped != uint64(offered) {
				t.Fatalf("Stats() = %+v after %d offers, want %d captured and the rest dropped", st, offered, tc.buffers)
			}
			p := <-c.Packets()
			want := frame[:min(len(frame), tc.bufLen)]
			if !bytes.Equal(p.Data, want) || p.Length != len(frame) || !p.Time.Equal(now) {
				t.Fatalf("packet: %d bytes of a %d-byte frame at %v, want %d of %d at %v", len(p.Data), p.Length, p.Time,
					len(want), len(frame), now)
			}
			c.Release(p)
			c.offer(now, frame[:60], 60)
			c.kick()
			if st := c.Stats(); st.Captured != uint64(tc.buffers)+1 {
				t.Fatalf("after Release: captured %d, want %d", st.Captured, tc.buffers+1)
			}
			c.Stop()
			c.Stop() // idempotent
			n := 0
			for range c.Packets() {
				n++
			}
			if n != 0 {
				t.Errorf("after Stop: Packets held %d packets, want none (dropped)", n)
			}
			c.offer(now, frame, len(frame)) // after Stop: neither captured nor dropped
			if st := c.Stats(); st.Captured != uint64(tc.buffers)+1 || st.Dropped != 100 {
				t.Errorf("offer after Stop changed the counters: %+v", st)
			}
		})
	}
}

// TestLiveCaptureStopRace: Stop while several goroutines offer and a
// reader reads never sends on the closed channel (run with -race), and
// every offer before Stop is counted once.
func TestLiveCaptureStopRace(t *testing.T) {
	for range 20 {
		c := newLiveCapture(LiveTarget{Kind: LiveFlow, ID: "f"}, 128, 1792)
		frame := make([]byte, 200)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := range 5000 {
					c.offer(time.Now(), frame, len(frame))
					if i%100 == 0 {
						c.kick()
					}
				}
				c.kick()
			}()
		}
		read := make(chan int)
		go func() {
			n := 0
			for p := range c.Packets() {
				n++
				c.Release(p)
			}
			read <- n
		}()
		close(start)
		time.Sleep(time.Millisecond)
		c.Stop()
		wg.Wait()
		n := <-read
		st := c.Stats()
		if uint64(n) > st.Captured || st.Captured+st.Dropped > 4*5000 {
			t.Fatalf("read %d, Stats %+v: more than offered", n, st)
		}
	}
}

// TestLiveOfferAllocs: offering a frame (captured or dropped) and the
// worker's offer of a batch allocate nothing.
func TestLiveOfferAllocs(t *testing.T) {
	c := newLiveCapture(LiveTarget{Kind: LiveService, ID: "s"}, 0, 1792)
	ls := &liveSet{}
	ls.caps[3], ls.cut[3] = c, 100
	frame := make([]byte, 1514)
	now := time.Now()
	if n := testing.AllocsPerRun(1000, func() {
		ls.offer(1<<3, now, frame, len(frame))
		ls.kick(1 << 3)
		c.Release(<-c.Packets())
	}); n != 0 {
		t.Errorf("offer: %v allocations per frame, want 0", n)
	}
	c.mu.Lock()
	c.free = c.free[:0] // no room: dropped
	c.mu.Unlock()
	if n := testing.AllocsPerRun(1000, func() { ls.offer(1<<3, now, frame, len(frame)) }); n != 0 {
		t.Errorf("offer when full: %v allocations per frame, want 0", n)
	}
	c.Stop()

	// The fast path's reader: frames of two captures, staged, sorted and
	// queued every liveKickEvery frames.
	c1 := newLiveCapture(LiveTarget{Kind: LiveFlow, ID: "f"}, 0, 1792)
	c2 := newLiveCapture(LiveTarget{Kind: LiveMirror, ID: "m"}, 0, 1792)
	defer c1.Stop()
	defer c2.Stop()
	var live atomic.Pointer[liveSet]
	ls = &liveSet{}
	ls.caps[0], ls.cut[0], ls.caps[5], ls.cut[5] = c1, 1792, c2, 64
	live.Store(ls)
	lr := &liveReader{live: &live, staged: make([]stagedPacket, 0, liveKickEvery*MaxLive), wall0: now}
	mono := uint64(1000)
	if n := testing.AllocsPerRun(liveKickEvery*8, func() {
		mono -= 1 // backwards: the sort has work
		lr.deliver(xdpprog.LiveMeta{Mask: 1 | 1<<5, Len: uint32(len(frame)), Mono: mono}, frame)
		for _, c := range []*LiveCapture{c1, c2} {
			select {
			case p := <-c.Packets():
				c.Release(p)
			default:
			}
		}
	}); n != 0 {
		t.Errorf("reader's deliver: %v allocations per frame, want 0", n)
	}
}

// TestLiveReaderOrder: the fast path's reader queues what it staged in the
// kernel's time order (its per-CPU rings come one after the other), with
// wall times from the monotonic ones.
func TestLiveReaderOrder(t *testing.T) {
	c := newLiveCapture(LiveTarget{Kind: LiveService, ID: "s"}, 0, 1792)
	defer c.Stop()
	var live atomic.Pointer[liveSet]
	ls := &liveSet{}
	ls.caps[2], ls.cut[2] = c, 1792
	live.Store(ls)
	wall0 := time.Unix(1_700_000_000, 0)
	lr := &liveReader{live: &live, staged: make([]stagedPacket, 0, liveKickEvery*MaxLive), wall0: wall0, mono0: 5000}
	// Two CPUs' rings: 1, 3, 5 then 2, 4.
	for _, mono := range []uint64{5001, 5003, 5005, 5002, 5004} {
		lr.deliver(xdpprog.LiveMeta{Mask: 1 << 2, Len: 60, Mono: mono}, []byte{byte(mono)})
	}
	lr.flush()
	for want := 1; want <= 5; want++ {
		p := <-c.Packets()
		if got := p.Time.Sub(wall0); got != time.Duration(want) || p.Data[0] != byte(5000+want) {
			t.Fatalf("packet %d: %v after wall0, data %x, want %dns and %x", want, got, p.Data, want, byte(5000+want))
		}
		c.Release(p)
	}
}

// BenchmarkLiveOffer: a batch of 64 frames offered, one kick, and the
// reader's receive and Release of each.
func BenchmarkLiveOffer(b *testing.B) {
	c := newLiveCapture(LiveTarget{Kind: LiveService, ID: "s"}, 0, 1792)
	ls := &liveSet{}
	ls.caps[0], ls.cut[0] = c, 1792
	frame := make([]byte, 64)
	now := time.Now()
	b.ReportAllocs()
	const batch = 64
	for b.Loop() {
		for range batch {
			ls.offer(1, now, frame, len(frame))
		}
		ls.kick(1)
		for range batch {
			c.Release(<-c.Packets())
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/frame")
	c.Stop()
}
