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
// frame's. Stop counts what Packets still held as dropped, not captured.
func TestLiveCaptureBounded(t *testing.T) {
	for _, tc := range []struct {
		name              string
		snaplen, maxFrame int
		bufLen, buffers   int
	}{
		{"whole frames", 0, 1792, 1792, liveBudget / 1792},
		{"snaplen 1024", 1024, 1792, 1024, liveBudget / 1024},
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
			// Stop dropped what Packets held: the packet read is the one
			// captured.
			if st := c.Stats(); st.Captured != 1 || st.Dropped != 100+uint64(tc.buffers) {
				t.Errorf("after Stop: Stats() = %+v, want 1 captured (read) and %d dropped", st, 100+tc.buffers)
			}
			c.offer(now, frame, len(frame)) // after Stop: neither captured nor dropped
			if st := c.Stats(); st.Captured != 1 || st.Dropped != 100+uint64(tc.buffers) {
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
	lr.flush() // Stop waits for what a reader staged
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

// TestLiveReleaseNotHeld: a second Release of a packet, or a Release of
// another capture's, is ignored and counted: the pool never hands one
// buffer out twice.
func TestLiveReleaseNotHeld(t *testing.T) {
	c := newLiveCapture(LiveTarget{Kind: LiveService, ID: "s"}, 0, 1792)
	other := newLiveCapture(LiveTarget{Kind: LiveService, ID: "o"}, 0, 1792)
	defer c.Stop()
	defer other.Stop()
	frame := make([]byte, 100)
	now := time.Now()
	read := func(c *LiveCapture, n int) []*LivePacket {
		for range n {
			c.offer(now, frame, len(frame))
		}
		c.kick()
		var ps []*LivePacket
		for range n {
			ps = append(ps, <-c.Packets())
		}
		return ps
	}
	ps := read(c, 2)
	c.Release(ps[0])
	c.Release(ps[0]) // again
	op := read(other, 2)
	c.Release(op[0]) // another capture's
	c.Release(nil)
	if got := c.badReleases; got != 2 {
		t.Errorf("badReleases = %d, want 2", got)
	}
	// One buffer was free before, ps[0] once more: two distinct buffers.
	qs := read(c, 2)
	if qs[0] == qs[1] {
		t.Fatalf("two packets share a buffer after a double Release")
	}
	other.Release(op[0])
	other.Release(op[1])
	c.mu.Lock()
	free := len(c.free)
	c.mu.Unlock()
	if want := cap(c.free) - 3; free != want { // ps[1], qs[0], qs[1] held
		t.Errorf("free buffers = %d, want %d", free, want)
	}
}

// TestLiveReaderSince: the fast path's reader gives a capture only the
// frames the kernel stamped after its bit changed hands: those before are
// the previous capture's (still in the perf buffer) or nobody's.
func TestLiveReaderSince(t *testing.T) {
	c := newLiveCapture(LiveTarget{Kind: LiveService, ID: "s"}, 0, 1792)
	defer c.Stop()
	var live atomic.Pointer[liveSet]
	ls := &liveSet{}
	ls.caps[1], ls.cut[1], ls.since[1] = c, 1792, 5003
	live.Store(ls)
	lr := &liveReader{live: &live, staged: make([]stagedPacket, 0, liveKickEvery*MaxLive), mono0: 5000}
	for _, mono := range []uint64{5001, 5002, 5003, 5004, 5005} {
		lr.deliver(xdpprog.LiveMeta{Mask: 1 << 1, Len: 60, Mono: mono}, []byte{byte(mono)})
	}
	lr.flush()
	for _, want := range []byte{byte(5004 % 256), byte(5005 % 256)} {
		p := <-c.Packets()
		if p.Data[0] != want {
			t.Fatalf("packet %x, want %x (stamped after the bit changed hands)", p.Data[0], want)
		}
		c.Release(p)
	}
	if st := c.Stats(); st.Captured != 2 || st.Dropped != 0 {
		t.Errorf("Stats() = %+v, want 2 captured: the older frames are not the capture's", st)
	}
}

// TestLiveBitReuse: a new capture takes the bit freed longest ago (one
// never used first), and its changeover time is after the frames the
// kernel stamped for the capture that had it.
func TestLiveBitReuse(t *testing.T) {
	b := newBroker(t, Config{})
	start := func() *LiveCapture {
		t.Helper()
		c, err := b.StartLive(LiveTarget{Kind: LiveService, ID: "s"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Stop)
		return c
	}
	var caps []*LiveCapture
	for range MaxLive {
		caps = append(caps, start())
	}
	before := xdpprog.Monotonic()
	caps[1].Stop()
	caps[5].Stop()
	caps[3].Stop()
	for _, want := range []int{1, 5, 3} {
		c := start()
		if c.bit != want {
			t.Fatalf("new capture got bit %d, want %d (freed longest ago)", c.bit, want)
		}
		if ls := b.live.Load(); ls == nil || ls.since[c.bit] <= before {
			t.Fatalf("bit %d changed hands at %v, want after %d", c.bit, ls, before)
		}
	}
	for _, c := range caps {
		c.Stop()
	}
	// Of bits never used, the lowest; a bit in use is never taken.
	b2 := newBroker(t, Config{})
	c0, _ := b2.StartLive(LiveTarget{Kind: LiveFlow, ID: "f"}, 0)
	c1, _ := b2.StartLive(LiveTarget{Kind: LiveFlow, ID: "f"}, 0)
	c1.Stop()
	c2, _ := b2.StartLive(LiveTarget{Kind: LiveFlow, ID: "f"}, 0)
	if c0.bit != 0 || c2.bit != 2 {
		t.Errorf("bits %d then %d after stopping bit 1, want 0 then 2 (never used before freed)", c0.bit, c2.bit)
	}
	c0.Stop()
	c2.Stop()
}

// TestLiveStopTotals: what Stop drains from Packets counts dropped in the
// capture's Stats and the broker's LiveTotals, also when the broker ended
// the capture before Stop.
func TestLiveStopTotals(t *testing.T) {
	b := newBroker(t, Config{})
	frame := make([]byte, 100)
	for _, brokerEnds := range []bool{false, true} {
		before := b.LiveTotals()
		c, err := b.StartLive(LiveTarget{Kind: LiveService, ID: "s"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			c.offer(time.Now(), frame, len(frame))
		}
		c.kick()
		c.Release(<-c.Packets())
		if brokerEnds {
			b.mu.Lock()
			b.retireLiveLocked(c)
			b.syncLiveLocked()
			b.mu.Unlock()
		}
		c.Stop()
		st := c.Stats()
		if st.Captured != 1 || st.Dropped != 4 {
			t.Errorf("broker ends it %v: Stats() = %+v after Stop, want 1 captured and 4 dropped", brokerEnds, st)
		}
		lt := b.LiveTotals()
		if lt.Captured-before.Captured != 1 || lt.Dropped-before.Dropped != 4 || lt.Running != 0 {
			t.Errorf("broker ends it %v: LiveTotals() = %+v from %+v, want 1 more captured and 4 more dropped", brokerEnds, lt, before)
		}
	}
}

// TestLiveLoseMask: the kernel's losses on an interface count only for
// the captures of the bits its reader has.
func TestLiveLoseMask(t *testing.T) {
	a := newLiveCapture(LiveTarget{Kind: LiveService, ID: "a"}, 0, 1792)
	o := newLiveCapture(LiveTarget{Kind: LiveService, ID: "o"}, 0, 1792)
	defer a.Stop()
	defer o.Stop()
	ls := &liveSet{}
	ls.caps[0], ls.caps[4] = a, o
	ls.lose(1<<0, 7)
	if sa, so := a.Stats(), o.Stats(); sa.Dropped != 7 || so.Dropped != 0 {
		t.Errorf("lose(bit 0, 7): dropped %d and %d, want 7 and 0", sa.Dropped, so.Dropped)
	}
}

// TestLiveStopStaged: Stop waits for the frames a fast-path reader took
// for the capture and has not queued yet, and counts them dropped: once
// Stop returns, Stats is final.
func TestLiveStopStaged(t *testing.T) {
	c := newLiveCapture(LiveTarget{Kind: LiveService, ID: "s"}, 0, 1792)
	var live atomic.Pointer[liveSet]
	ls := &liveSet{}
	ls.caps[0], ls.cut[0] = c, 1792
	live.Store(ls)
	lr := &liveReader{live: &live, staged: make([]stagedPacket, 0, liveKickEvery*MaxLive)}
	for mono := range uint64(3) {
		lr.deliver(xdpprog.LiveMeta{Mask: 1, Len: 60, Mono: mono + 1}, make([]byte, 60))
	}
	stopped := make(chan LiveStats)
	go func() {
		c.Stop()
		stopped <- c.Stats()
	}()
	select {
	case st := <-stopped:
		t.Fatalf("Stop returned (%+v) with 3 frames staged", st)
	case <-time.After(50 * time.Millisecond):
	}
	lr.flush()
	if st := <-stopped; st.Captured != 0 || st.Dropped != 3 {
		t.Errorf("Stats() after Stop = %+v, want the 3 staged frames dropped", st)
	}
}
