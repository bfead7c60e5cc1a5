package broker

import (
	"bytes"
	"cmp"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

// startLive starts a live capture or fails the test; the test's end stops
// it.
func startLive(t *testing.T, b *Broker, kind LiveKind, id string, snaplen int) *LiveCapture {
	t.Helper()
	c, err := b.StartLive(LiveTarget{Kind: kind, ID: id}, snaplen)
	if err != nil {
		t.Fatalf("StartLive(%v %s): %v", kind, id, err)
	}
	t.Cleanup(c.Stop)
	return c
}

// liveRead reads c's packets, copied, until it holds n, then until none
// came for a quiet 200 ms (what comes later is a packet too many); it gives
// up after timeout.
func liveRead(c *LiveCapture, n int, timeout time.Duration) []LivePacket {
	var got []LivePacket
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		wait := time.Hour
		if len(got) >= n {
			wait = 200 * time.Millisecond
		}
		quiet := time.NewTimer(wait)
		select {
		case p, ok := <-c.Packets():
			quiet.Stop()
			if !ok {
				return got
			}
			got = append(got, LivePacket{Time: p.Time, Length: p.Length, Data: slices.Clone(p.Data)})
			c.Release(p)
		case <-quiet.C:
			return got
		case <-deadline.C:
			quiet.Stop()
			return got
		}
	}
}

// wantLive checks that a live capture read exactly want (the frames, cut,
// in order), each with its frame's length (lengths, by sequence number)
// and a time in [from, to].
func wantLive(t *testing.T, what string, got []LivePacket, want [][]byte, lengths map[uint32]int, from, to time.Time) {
	t.Helper()
	seqs := func(fs [][]byte) []uint32 {
		var s []uint32
		for _, f := range fs {
			n, _ := packettest.Seq(f)
			s = append(s, n)
		}
		return s
	}
	var data [][]byte
	for _, p := range got {
		data = append(data, p.Data)
	}
	if len(got) != len(want) {
		t.Fatalf("%s: captured frames %v, want %v", what, seqs(data), seqs(want))
	}
	// In the order of the frames' sequence numbers: on the fast path each
	// CPU has its ring, and frames that ran on two CPUs may be read in
	// another order than the monitor got them (README: a capture's order
	// across CPUs).
	seqOf := func(f []byte) uint32 { n, _ := packettest.Seq(f); return n }
	got = slices.Clone(got)
	want = slices.Clone(want)
	slices.SortStableFunc(got, func(a, b LivePacket) int { return cmp.Compare(seqOf(a.Data), seqOf(b.Data)) })
	slices.SortStableFunc(want, func(a, b []byte) int { return cmp.Compare(seqOf(a), seqOf(b)) })
	for i, p := range got {
		seq, _ := packettest.Seq(want[i])
		if !bytes.Equal(p.Data, want[i]) {
			t.Errorf("%s: packet %d (frame %d) differs:\n got %x\nwant %x", what, i, seq, p.Data, want[i])
		}
		if p.Length != lengths[seq] {
			t.Errorf("%s: packet %d (frame %d): length %d, want %d", what, i, seq, p.Length, lengths[seq])
		}
		if p.Time.Before(from) || p.Time.After(to) {
			t.Errorf("%s: packet %d (frame %d) at %v, not within the test's %v .. %v", what, i, seq, p.Time, from, to)
		}
	}
}

// cutAll is frames, each cut to n bytes.
func cutAll(frames [][]byte, n int) [][]byte {
	var out [][]byte
	for _, f := range frames {
		out = append(out, f[:min(len(f), n)])
	}
	return out
}

// TestLiveCapture: a live capture of a tap service reads exactly the
// frames its monitor receives (cut to the service's snaplen, then to the
// capture's), byte for byte and in order; of a tap flow, the frames the
// flow matched, whole (a filtered flow: only those its filter accepts);
// two captures of one frame each read it; and the monitors receive the
// same frames with and without the captures.
func TestLiveCapture(t *testing.T) { forEachPath(t, testLiveCapture) }

func testLiveCapture(t *testing.T, fast bool) {
	tp := newTopo(t, 2, 1)
	b := newBroker(t, Config{FastPath: fast})
	const odd = "ether[25] & 1 = 1" // the low byte of the sequence number
	plan := &Plan{Version: 1, Services: []Service{{ID: "s0", Iface: tp.mons[0], Snaplen: 100}, {ID: "s1", Iface: tp.mons[1]}},
		Flows: []Flow{
			{ID: "f0", ServiceID: "s0", SourcePortID: "pa", Iface: tp.capIf, MAC: mac6(hwA), Direction: DirOut},
			{ID: "f1", ServiceID: "s1", SourcePortID: "pa", Iface: tp.capIf, MAC: mac6(hwA), Direction: DirBoth, Filter: odd},
		}}
	wantActive(t, apply(t, b, plan))
	wantPath(t, b, tp.capIf, fast)

	lengths := map[uint32]int{}
	var frames, fromA [][]byte
	sizes := []int{60, 99, 100, 101, 500, 1514}
	for i := range 18 {
		seq := uint32(i + 1)
		var tags []packettest.Tag
		if i%4 == 3 {
			tags = []packettest.Tag{{TPID: 0x8100, VID: 7}}
		}
		dst, src := hwB, hwA // OUT of A
		switch i % 3 {
		case 1:
			dst, src = hwA, hwB // IN
		case 2:
			dst, src = hwB, hwC // not A's
		}
		f := packettest.Frame(dst, src, tags, seq, sizes[i%len(sizes)])
		frames = append(frames, f)
		lengths[seq] = len(f)
		if i%3 == 0 {
			fromA = append(fromA, f)
		}
	}
	// run sends the frames and returns what each monitor received.
	n0, n1 := len(fromA), 0
	for i := range frames {
		if i%3 != 2 && (i+1)%2 == 1 {
			n1++
		}
	}
	run := func() (mon0, mon1 [][]byte) {
		tp.reset()
		tp.send(t, frames...)
		tp.caps[0].WaitN(n0, 10*time.Second)
		tp.caps[1].WaitN(n1, 10*time.Second)
		return tp.caps[0].Quiet(200*time.Millisecond, 3*time.Second), tp.caps[1].Quiet(200*time.Millisecond, 3*time.Second)
	}
	before0, before1 := run()
	if len(before0) != n0 || len(before1) != n1 {
		t.Fatalf("without captures, the monitors got %d and %d frames, want %d and %d", len(before0), len(before1), n0, n1)
	}

	s0 := startLive(t, b, LiveService, "s0", 0)
	s0cut := startLive(t, b, LiveService, "s0", 80) // a second capture of the same frames
	s1 := startLive(t, b, LiveService, "s1", 0)
	f0 := startLive(t, b, LiveFlow, "f0", 64)
	f1 := startLive(t, b, LiveFlow, "f1", 0)
	from := time.Now()
	mon0, mon1 := run()
	to := time.Now()
	for i, c := range []struct {
		what      string
		got, want [][]byte
	}{{tp.mons[0], mon0, before0}, {tp.mons[1], mon1, before1}} {
		if len(c.got) != len(c.want) {
			t.Fatalf("monitor %d: %d frames with live captures, %d without", i, len(c.got), len(c.want))
		}
		for j := range c.got {
			if !bytes.Equal(c.got[j], c.want[j]) {
				t.Errorf("monitor %s: frame %d differs with live captures:\n got %x\nwant %x", c.what, j, c.got[j], c.want[j])
			}
		}
	}
	wantLive(t, "service s0", liveRead(s0, n0, 10*time.Second), mon0, lengths, from, to)
	wantLive(t, "service s0, snaplen 80", liveRead(s0cut, n0, 10*time.Second), cutAll(mon0, 80), lengths, from, to)
	wantLive(t, "service s1", liveRead(s1, n1, 10*time.Second), mon1, lengths, from, to)
	wantLive(t, "flow f0, snaplen 64", liveRead(f0, n0, 10*time.Second), cutAll(fromA, 64), lengths, from, to)
	wantLive(t, "flow f1 (filtered)", liveRead(f1, n1, 10*time.Second), mon1, lengths, from, to)
	for _, c := range []*LiveCapture{s0, s0cut, s1, f0, f1} {
		if st := c.Stats(); st.Dropped != 0 {
			t.Errorf("capture of %v %s: %+v, want nothing dropped", c.target.Kind, c.target.ID, st)
		}
	}
	if lt := b.LiveTotals(); lt.Running != 5 || lt.Captured != uint64(3*n0+2*n1) || lt.Dropped != 0 {
		t.Errorf("LiveTotals() = %+v, want 5 running, %d captured", lt, 3*n0+2*n1)
	}
}

// TestLiveCaptureMirror: a live capture of a tap mirror reads the inner
// frames its tunnels send, cut to the mirror's snaplen, as the collector's
// router receives them inside the outer headers; IN and OUT copies of one
// frame (A to A) are read once.
func TestLiveCaptureMirror(t *testing.T) { forEachPath(t, testLiveCaptureMirror) }

func testLiveCaptureMirror(t *testing.T, fast bool) {
	l := newMirrorLab(t, 0)
	b := newBroker(t, Config{FastPath: fast})
	const snap = 100
	plan := l.mirrorPlan(1, TunnelGRE, l.Col4, 1001, 1002)
	plan.Mirrors[0].Snaplen = snap
	waitStatus(t, b, plan, "mirror ACTIVE", mirrorActive)
	wantPath(t, b, l.capIf, fast)
	oh := overhead(TunnelGRE, false)
	wire := packettest.NewCapture(t, l.RouterNS, l.RouterIf, encapTest(oh))
	m := startLive(t, b, LiveMirror, "m", 0)
	mcut := startLive(t, b, LiveMirror, "m", 64)
	lengths := map[uint32]int{}
	var want [][]byte // inner frames, once each
	copies := 0
	from := time.Now()
	for i, fs := range []struct {
		dst, src []byte
		size     int
		n        int // copies: 0, 1, or 2 (IN and OUT)
	}{{hwB, hwA, 60, 1}, {hwA, hwB, 500, 1}, {hwB, hwC, 500, 0}, {hwA, hwA, 1000, 2}, {hwBcast, hwB, 200, 1}, {hwB, hwA, 1514, 1}} {
		f := packettest.Frame(fs.dst, fs.src, nil, uint32(i+1), fs.size)
		lengths[uint32(i+1)] = len(f)
		if fs.n > 0 {
			want = append(want, f[:min(len(f), snap)])
		}
		copies += fs.n
		l.send(t, f)
	}
	onWire := wire.WaitN(copies, 10*time.Second)
	to := time.Now()
	if len(onWire) != copies {
		t.Fatalf("the router got %d tunnel copies, want %d", len(onWire), copies)
	}
	// The inner frames on the wire are the capture's, the second copy of
	// A to A aside.
	var inner [][]byte
	for _, f := range onWire {
		if len(inner) > 0 && bytes.Equal(inner[len(inner)-1], f[oh:]) {
			continue
		}
		inner = append(inner, f[oh:])
	}
	if len(inner) != len(want) {
		t.Fatalf("%d distinct inner frames on the wire, want %d", len(inner), len(want))
	}
	for i := range inner {
		if !bytes.Equal(inner[i], want[i]) {
			t.Fatalf("inner frame %d on the wire:\n got %x\nwant %x", i, inner[i], want[i])
		}
	}
	wantLive(t, "mirror m", liveRead(m, len(want), 10*time.Second), inner, lengths, from, to)
	wantLive(t, "mirror m, snaplen 64", liveRead(mcut, len(want), 10*time.Second), cutAll(inner, 64), lengths, from, to)
}

// TestLiveCaptureLifecycle: the 9th capture is refused (ErrLiveLimit)
// until one stops; a capture whose target leaves the plan ends (Packets
// closed), one whose target is not in the plan yet waits for it; Close
// ends the rest; LiveTotals counts them all.
func TestLiveCaptureLifecycle(t *testing.T) {
	tp := newTopo(t, 1, 1)
	b := newBroker(t, Config{})
	early := startLive(t, b, LiveFlow, "f", 0) // before any plan
	plan := &Plan{Version: 1, Services: []Service{{ID: "s", Iface: tp.mons[0]}},
		Flows: []Flow{{ID: "f", ServiceID: "s", SourcePortID: "pa", Iface: tp.capIf, MAC: mac6(hwA), Direction: DirOut}}}
	wantActive(t, apply(t, b, plan))
	var caps []*LiveCapture
	for i := range MaxLive - 1 {
		caps = append(caps, startLive(t, b, LiveService, "s", 64+i))
	}
	if _, err := b.StartLive(LiveTarget{Kind: LiveService, ID: "s"}, 0); !errors.Is(err, ErrLiveLimit) {
		t.Fatalf("StartLive with %d running: %v, want ErrLiveLimit", MaxLive, err)
	}
	caps[0].Stop()
	caps[0] = startLive(t, b, LiveService, "s", 0)
	if lt := b.LiveTotals(); lt.Running != MaxLive {
		t.Fatalf("LiveTotals().Running = %d, want %d", lt.Running, MaxLive)
	}
	if _, err := b.StartLive(LiveTarget{Kind: 9, ID: "s"}, 0); err == nil || errors.Is(err, ErrLiveLimit) {
		t.Errorf("StartLive(kind 9) = %v, want a refusal", err)
	}

	f := packettest.Frame(hwB, hwA, nil, 1, 60)
	tp.send(t, f)
	if got := liveRead(early, 1, 10*time.Second); len(got) != 1 || !bytes.Equal(got[0].Data, f) {
		t.Fatalf("capture started before the plan read %d packets, want the frame", len(got))
	}

	// The flow leaves the plan: its capture ends; the service's go on.
	plan = &Plan{Version: 2, Services: plan.Services}
	apply(t, b, plan)
	if got := liveRead(early, 1, 5*time.Second); len(got) != 0 {
		t.Errorf("capture of a deleted flow read %d more packets", len(got))
	}
	select {
	case _, ok := <-early.Packets():
		if ok {
			t.Fatal("capture of a deleted flow: a packet, want Packets closed")
		}
	default:
		t.Fatal("capture of a deleted flow: Packets not closed")
	}
	if lt := b.LiveTotals(); lt.Running != MaxLive-1 || lt.Captured != MaxLive {
		t.Errorf("LiveTotals() = %+v, want %d running and the frame captured by %d", lt, MaxLive-1, MaxLive)
	}
	startLive(t, b, LiveFlow, "f", 0).Stop() // a free bit again

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range caps {
		if _, ok := <-c.Packets(); ok {
			// The frame of before may still be there: drain it.
			for range c.Packets() {
			}
		}
	}
	if _, err := b.StartLive(LiveTarget{Kind: LiveService, ID: "s"}, 0); err == nil {
		t.Error("StartLive after Close: no error")
	}
	if lt := b.LiveTotals(); lt.Running != 0 {
		t.Errorf("after Close: LiveTotals() = %+v, want none running", lt)
	}
}

// TestLiveCaptureSlowReader: a capture nobody reads under a burst holds
// its fixed buffers and counts the rest dropped (captured + dropped ==
// the service's copies), the monitor gets every copy, and Stop during
// traffic (run with -race) ends it cleanly.
func TestLiveCaptureSlowReader(t *testing.T) { forEachPath(t, testLiveCaptureSlowReader) }

func testLiveCaptureSlowReader(t *testing.T, fast bool) {
	tp := newTopo(t, 1, 1)
	b := newBroker(t, Config{FastPath: fast})
	plan := &Plan{Version: 1, Services: []Service{{ID: "s", Iface: tp.mons[0]}},
		Flows: []Flow{{ID: "f", ServiceID: "s", SourcePortID: "pa", Iface: tp.capIf, MAC: mac6(hwA), Direction: DirOut}}}
	wantActive(t, apply(t, b, plan))
	wantPath(t, b, tp.capIf, fast)
	const snap = 1024
	c := startLive(t, b, LiveService, "s", snap)
	c.mu.Lock()
	buffers := cap(c.free)
	c.mu.Unlock()
	burst := buffers + 1000
	for i := range burst {
		tp.send(t, packettest.Frame(hwB, hwA, nil, uint32(i+1), 1500))
	}
	got := tp.caps[0].WaitN(burst, 20*time.Second)
	delivered := serviceDelivered(b, "s")
	// The fast path's reader takes the kernel's frames within its wait.
	st := c.Stats()
	for end := time.Now().Add(5 * time.Second); st.Captured+st.Dropped < uint64(burst) && time.Now().Before(end); st = c.Stats() {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%d frames, %d buffers of %d bytes: monitor got %d, captured %d, dropped %d", burst, buffers, c.bufLen, len(got),
		st.Captured, st.Dropped)
	if len(got) != burst || delivered != uint64(burst) {
		t.Errorf("monitor got %d frames, service delivered %d, want %d", len(got), delivered, burst)
	}
	if st.Captured != uint64(buffers) || st.Captured+st.Dropped != uint64(burst) {
		t.Errorf("capture: %+v, want %d captured (its buffers) and %d in all", st, buffers, burst)
	}
	for end := time.Now().Add(5 * time.Second); len(c.Packets()) < buffers && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	if len(c.Packets()) != buffers {
		t.Errorf("Packets holds %d, want %d", len(c.Packets()), buffers)
	}

	// Stop while frames flow and a reader reads.
	r := startLive(t, b, LiveService, "s", 0)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for p := range r.Packets() {
			r.Release(p)
		}
	}()
	stop := make(chan struct{})
	sent := make(chan int)
	go func() {
		n := 0
		defer func() { sent <- n }()
		for n < 20000 {
			select {
			case <-stop:
				return
			default:
			}
			if err := tp.inject.Send(packettest.Frame(hwB, hwA, nil, uint32(n), 200)); err != nil {
				return
			}
			n++
		}
	}()
	time.Sleep(100 * time.Millisecond)
	c.Stop()
	r.Stop()
	close(stop)
	wg.Wait()
	t.Logf("stopped during traffic: %d sent, the reader's capture %+v", <-sent, r.Stats())
	if lt := b.LiveTotals(); lt.Running != 0 {
		t.Errorf("LiveTotals() = %+v, want none running", lt)
	}
}

// TestLiveCaptureNotSent: a frame no copy left with (here: over the
// monitor's MTU, a monitor_mtu drop) is not captured, not even by its
// flow's capture: the kernel's rule (xdp.c), on the AF_XDP path that
// such a monitor takes.
func TestLiveCaptureNotSent(t *testing.T) {
	tp := newTopo(t, 1, 1)
	setMTU(t, tp, 1000, 1000)
	b := newBroker(t, Config{FastPath: true})
	plan := &Plan{Version: 1, Services: []Service{{ID: "s", Iface: tp.mons[0]}},
		Flows: []Flow{{ID: "f", ServiceID: "s", SourcePortID: "p", Iface: tp.capIf, MAC: mac6(hwA), Direction: DirOut}}}
	apply(t, b, plan)
	wantPath(t, b, tp.capIf, false)
	f := startLive(t, b, LiveFlow, "f", 0)
	s := startLive(t, b, LiveService, "s", 0)
	lengths := map[uint32]int{}
	var small [][]byte
	from := time.Now()
	for i := uint32(1); i <= 6; i++ {
		size := 60
		if i%2 == 0 {
			size = 1400 // over the monitor's 1000 + 18
		}
		fr := packettest.Frame(hwB, hwA, nil, i, size)
		lengths[i] = len(fr)
		if size == 60 {
			small = append(small, fr)
		}
		tp.send(t, fr)
	}
	got := tp.caps[0].WaitN(len(small), 10*time.Second)
	waitCounter(t, "monitor_mtu", func() uint64 { return serviceDrops(b, "s", "monitor_mtu") }, 3)
	to := time.Now()
	if len(got) != len(small) {
		t.Fatalf("monitor got %d frames, want %d", len(got), len(small))
	}
	wantLive(t, "flow f", liveRead(f, len(small), 10*time.Second), small, lengths, from, to)
	wantLive(t, "service s", liveRead(s, len(small), 10*time.Second), small, lengths, from, to)
}

// TestLiveCaptureMirrorMTU: the uplink and the capture have an MTU of
// 600: a mirror's capture holds the inner frame as the tunnel sends it,
// a 610-byte frame cut to the 572 bytes GRE leaves room for, on both
// paths.
func TestLiveCaptureMirrorMTU(t *testing.T) { forEachPath(t, testLiveCaptureMirrorMTU) }

func testLiveCaptureMirrorMTU(t *testing.T, fast bool) {
	l := newMirrorLab(t, 0)
	b := newBroker(t, Config{FastPath: fast})
	const mtu = 600
	testutil.Run(t, "ip", "link", "set", l.Uplink, "mtu", strconv.Itoa(mtu))
	testutil.Run(t, "ip", "link", "set", l.capIf, "mtu", strconv.Itoa(mtu))
	plan := l.outPlan(1, TunnelGRE, 2)
	waitStatus(t, b, plan, "mirror ACTIVE", mirrorActive)
	wantPath(t, b, l.capIf, fast)
	oh := overhead(TunnelGRE, false)
	wire := packettest.NewCapture(t, l.RouterNS, l.RouterIf, encapTest(oh))
	m := startLive(t, b, LiveMirror, "m", 0)
	small, big := packettest.Frame(hwB, hwA, nil, 1, 100), packettest.Frame(hwB, hwA, nil, 2, 610)
	from := time.Now()
	l.send(t, small, big)
	onWire := wire.WaitN(2, 10*time.Second)
	to := time.Now()
	if len(onWire) != 2 || len(onWire[1]) != 14+mtu {
		t.Fatalf("the router got %d copies (the second %d bytes), want 2, the second %d", len(onWire), len(onWire[len(onWire)-1]), 14+mtu)
	}
	want := [][]byte{small, big[:14+mtu-oh]}
	for i := range want {
		if !bytes.Equal(onWire[i][oh:], want[i]) {
			t.Fatalf("inner frame %d on the wire: %d bytes, want %d", i, len(onWire[i])-oh, len(want[i]))
		}
	}
	// Two frames may come from two CPUs: times slightly out of order.
	got := liveRead(m, 2, 10*time.Second)
	slices.SortFunc(got, func(a, b LivePacket) int {
		x, _ := packettest.Seq(a.Data)
		y, _ := packettest.Seq(b.Data)
		return int(x) - int(y)
	})
	wantLive(t, "mirror m", got, want, map[uint32]int{1: len(small), 2: len(big)}, from, to)
}

// TestLiveCaptureBitReuse: on the fast path, a capture that takes the
// bit another one had a moment before reads none of the frames the kernel handed over for the
// other (still in the perf buffer), while a third capture keeps the
// interface's reader open throughout.
func TestLiveCaptureBitReuse(t *testing.T) {
	tp := newTopo(t, 2, 1)
	b := newBroker(t, Config{FastPath: true})
	plan := &Plan{Version: 1, Services: []Service{{ID: "s0", Iface: tp.mons[0]}, {ID: "s1", Iface: tp.mons[1]}},
		Flows: []Flow{
			{ID: "f0", ServiceID: "s0", SourcePortID: "pa", Iface: tp.capIf, MAC: mac6(hwA), Direction: DirOut},
			{ID: "f1", ServiceID: "s1", SourcePortID: "pc", Iface: tp.capIf, MAC: mac6(hwC), Direction: DirOut},
		}}
	wantActive(t, apply(t, b, plan))
	wantPath(t, b, tp.capIf, true)
	keep := startLive(t, b, LiveService, "s1", 0)
	// One bit left free: each round's two captures take the same one.
	for range MaxLive - 2 {
		startLive(t, b, LiveService, "s1", 0)
	}
	var frames [][]byte
	for i := range 20 {
		frames = append(frames, packettest.Frame(hwB, hwA, nil, uint32(i+1), 60))
	}
	const rounds = 10
	leaked := 0
	for r := range rounds {
		s0 := startLive(t, b, LiveService, "s0", 0)
		tp.send(t, frames...)
		s0.Stop()
		s1 := startLive(t, b, LiveService, "s1", 0)
		if got := liveRead(s1, 0, 2*time.Second); len(got) > 0 {
			leaked++
			t.Errorf("round %d: the new capture of s1 (bit %d, s0's was %d) read %d of s0's frames", r, s1.bit, s0.bit, len(got))
		}
		s1.Stop()
	}
	t.Logf("%d of %d rounds leaked; the capture kept open: %+v", leaked, rounds, keep.Stats())
}
