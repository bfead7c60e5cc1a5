package xsk_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/taas-appliance/taas/broker/xsk"
	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

const needXSK = "CAP_NET_ADMIN, CAP_BPF and CAP_IPC_LOCK for netns, veth, XDP and AF_XDP sockets"

// The test frames are packettest's (EtherType 0x88b5, a sequence number),
// so anything else the stack emits on the pair is ignored.
var (
	macA = packettest.MustMAC("02:00:00:00:00:0a")
	macB = packettest.MustMAC("02:00:00:00:00:0b")
)

// vethPair is a veth pair a <-> b, both ends in a namespace of the test's
// own. The sockets under test sit on a; b is the peer that sends or receives.
type vethPair struct {
	ns     string
	a, b   string
	ia, ib int
}

// newVethPair creates the pair in a namespace of its own, with IPv6 off.
// Every privileged test starts with one, so here the test is checked for
// leaks (testutil.Leaks) once everything it registered after, its sockets,
// programs, links and the namespace, is closed: a socket's descriptor, its
// ring mappings, a goroutine.
func newVethPair(t testing.TB, queues int, mtu int) vethPair {
	t.Helper()
	t.Cleanup(testutil.Leaks(t))
	p := testutil.Prefix(t)
	v := vethPair{ns: testutil.Netns(t, p+"x"), a: p + "a", b: p + "b"}
	// No IPv6: no router solicitations or MLD reports on the pair.
	testutil.Run(t, "ip", "netns", "exec", v.ns, "sysctl", "-qw",
		"net.ipv6.conf.default.disable_ipv6=1", "net.ipv6.conf.all.disable_ipv6=1")
	testutil.Veth(t, v.a, v.b, testutil.VethOpts{NetnsA: v.ns, NetnsB: v.ns, Queues: queues,
		MACA: macA.String(), MACB: macB.String()})
	if mtu > 0 {
		for _, l := range []string{v.a, v.b} {
			testutil.Run(t, "ip", "-n", v.ns, "link", "set", l, "mtu", fmt.Sprint(mtu))
		}
	}
	err := testutil.InNetns(v.ns, func() error {
		la, err := net.InterfaceByName(v.a)
		if err != nil {
			return err
		}
		lb, err := net.InterfaceByName(v.b)
		if err != nil {
			return err
		}
		v.ia, v.ib = la.Index, lb.Index
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// open opens a socket in the pair's namespace and closes it when t ends.
func (v vethPair) open(t testing.TB, ifindex, queue int, cfg xsk.Config) *xsk.Socket {
	t.Helper()
	var s *xsk.Socket
	err := testutil.InNetns(v.ns, func() (err error) {
		s, err = xsk.Open(ifindex, queue, cfg)
		return err
	})
	testutil.SkipIfNotSupported(t, err)
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, xsk.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// attach attaches prog to the link in the pair's namespace with a bpf_link
// (gotcha 9) and detaches it when t ends.
func (v vethPair) attach(t testing.TB, ifindex int, prog *ebpf.Program) {
	t.Helper()
	var l link.Link
	err := testutil.InNetns(v.ns, func() (err error) {
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex})
		return err
	})
	if err != nil {
		t.Fatalf("attach xdp to ifindex %d: %v", ifindex, err)
	}
	t.Cleanup(func() { l.Close() })
}

// redirectToSockets attaches to ifindex a tiny XDP program that redirects
// every frame to the XSKMAP slot of its rx_queue_index and passes it when
// the slot is empty; socks[i] goes into slot i.
func (v vethPair) redirectToSockets(t testing.TB, ifindex int, socks ...*xsk.Socket) {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 8})
	if err != nil {
		t.Fatalf("create xskmap: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	for i, s := range socks {
		if err := m.Put(uint32(i), uint32(s.FD())); err != nil {
			t.Fatalf("put socket of queue %d in xskmap: %v", i, err)
		}
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.XDP,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 16, asm.Word), // xdp_md.rx_queue_index
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Imm(asm.R3, 2), // XDP_PASS when the slot is empty
			asm.FnRedirectMap.Call(),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatalf("load redirect program: %v", err)
	}
	t.Cleanup(func() { prog.Close() })
	v.attach(t, ifindex, prog)
}

// dropAll attaches an XDP_DROP program to ifindex: a sink that costs the
// receiving side almost nothing (and makes veth use its NAPI path).
func (v vethPair) dropAll(t testing.TB, ifindex int) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
	})
	if err != nil {
		t.Fatalf("load drop program: %v", err)
	}
	t.Cleanup(func() { prog.Close() })
	v.attach(t, ifindex, prog)
}

// receiveAll runs the RX loop (Fill, Poll, Receive, Frame, Free) on s
// until want frames of the test's EtherType arrived or the deadline passed,
// and returns them by sequence number. The loop is bounded in time; what
// is missing then fails the caller's comparison, not a timer.
func receiveAll(t testing.TB, s *xsk.Socket, want int, deadline time.Time) map[uint32][]byte {
	t.Helper()
	got := make(map[uint32][]byte)
	descs := make([]xsk.Desc, 64)
	for len(got) < want && time.Now().Before(deadline) {
		s.Fill()
		if _, err := s.Poll(50 * time.Millisecond); err != nil {
			t.Fatalf("Poll: %v", err)
		}
		n := s.Receive(descs)
		for _, d := range descs[:n] {
			f := s.Frame(d)
			if seq, ok := packettest.Seq(f); ok {
				if _, dup := got[seq]; dup {
					t.Errorf("frame %d received twice", seq)
				}
				got[seq] = bytes.Clone(f)
			}
		}
		s.Free(descs[:n])
	}
	return got
}

// TestReceive redirects frames sent by an AF_PACKET socket on the peer to
// an RX socket and checks every one arrives byte-exact. With 2048-byte
// frames that includes one of exactly MaxRxFrame (1792) bytes, while one
// byte more is dropped by the kernel and counted (gotcha 6); 4096-byte
// frames take a 3014-byte frame (a veth with XDP allows an MTU of about
// 3500, below MaxRxFrame 3840).
func TestReceive(t *testing.T) {
	testutil.RequireRoot(t, needXSK)
	tests := []struct {
		name      string
		frameSize int
		mtu       int
		biggest   int  // largest frame sent
		overflow  bool // also send MaxRxFrame+1 and expect a drop
	}{
		{"2048-byte frames", 2048, 2000, 1792, true},
		{"4096-byte frames", 4096, 3000, 3014, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { testReceive(t, tc.frameSize, tc.mtu, tc.biggest, tc.overflow) })
	}
}

func testReceive(t *testing.T, frameSize, mtu, biggest int, overflow bool) {
	v := newVethPair(t, 1, mtu)
	s := v.open(t, v.ia, 0, xsk.Config{RxOnly: true, FrameSize: frameSize})
	v.redirectToSockets(t, v.ia, s)
	if s.Fill() == 0 {
		t.Fatal("Fill() = 0 on a fresh socket")
	}
	if biggest > s.MaxRxFrame() {
		t.Fatalf("test frame of %d bytes > MaxRxFrame %d", biggest, s.MaxRxFrame())
	}
	inj := packettest.NewInjector(t, v.ns, v.b)

	sizes := []int{60, 61, 64, 100, 128, 512, 1000, 1514, biggest}
	sent := make(map[uint32][]byte)
	seq := uint32(0)
	// Windows of 32 frames, each received before the next is sent, stay
	// far below veth's 256-frame receive ring (gotcha 11).
	for round := 0; round < 8; round++ {
		window := make(map[uint32][]byte)
		for i := 0; i < 32; i++ {
			f := packettest.Frame(macA, macB, nil, seq, sizes[int(seq)%len(sizes)])
			if err := inj.Send(f); err != nil {
				t.Fatalf("frame %d from %s: %v", seq, v.b, err)
			}
			window[seq], sent[seq] = f, f
			seq++
		}
		got := receiveAll(t, s, len(window), time.Now().Add(5*time.Second))
		for sq, f := range window {
			if !bytes.Equal(got[sq], f) {
				t.Fatalf("frame %d: received %d bytes %x..., want %d bytes %x...", sq, len(got[sq]), head(got[sq]), len(f), head(f))
			}
		}
		if len(got) != len(window) {
			t.Fatalf("round %d: received %d frames, want %d", round, len(got), len(window))
		}
	}

	if !overflow {
		return
	}
	// One byte more than MaxRxFrame does not fit: the kernel drops it and
	// says so only in XDP_STATISTICS.
	before, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	big := packettest.Frame(macA, macB, nil, seq, s.MaxRxFrame()+1)
	if err := inj.Send(big); err != nil {
		t.Fatal(err)
	}
	var after xsk.Statistics
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if after, err = s.Stats(); err != nil {
			t.Fatal(err)
		}
		if after.RxDropped > before.RxDropped {
			break
		}
	}
	if after.RxDropped != before.RxDropped+1 {
		t.Errorf("RxDropped = %d after a %d-byte frame (MaxRxFrame %d), want %d", after.RxDropped, len(big), s.MaxRxFrame(), before.RxDropped+1)
	}
	if got := receiveAll(t, s, 1, time.Now().Add(100*time.Millisecond)); len(got) != 0 {
		t.Errorf("a frame larger than MaxRxFrame was received: %d frames", len(got))
	}
	if after.Received < uint64(len(sent)) || after.BadFree != 0 {
		t.Errorf("stats %+v: want Received >= %d and BadFree 0", after, len(sent))
	}
}

func head(b []byte) []byte { return b[:min(len(b), 20)] }

// bySeq indexes frames by their sequence number; a frame seen twice is an
// error (nothing here may duplicate one).
func bySeq(t testing.TB, frames [][]byte) map[uint32][]byte {
	t.Helper()
	m := make(map[uint32][]byte, len(frames))
	for _, f := range frames {
		seq, _ := packettest.Seq(f)
		if _, dup := m[seq]; dup {
			t.Errorf("frame %d seen twice", seq)
		}
		m[seq] = f
	}
	return m
}

// queue puts frames on s's TX ring with AllocTx, Frame and Transmit, frees
// what did not fit, and returns how many went on the ring.
func queue(s *xsk.Socket, frames [][]byte) int {
	descs := make([]xsk.Desc, len(frames))
	n := s.AllocTx(descs)
	for i := range descs[:n] {
		descs[i].Len = uint32(copy(s.Frame(descs[i]), frames[i]))
	}
	m := s.Transmit(descs[:n])
	s.Free(descs[m:n])
	return m
}

// transmit queues frames and kicks, and returns how many went on the ring.
func transmit(t testing.TB, s *xsk.Socket, frames [][]byte) int {
	t.Helper()
	m := queue(s, frames)
	if err := s.Kick(); err != nil {
		t.Fatalf("Kick: %v", err)
	}
	return m
}

// seqFrames returns n 60-byte test frames numbered from 0.
func seqFrames(n int) [][]byte {
	fs := make([][]byte, n)
	for i := range fs {
		fs[i] = packettest.Frame(macB, macA, nil, uint32(i), 60)
	}
	return fs
}

// TestTransmit sends frames of many sizes with AllocTx/Transmit/Kick,
// receives them on the peer with an AF_PACKET socket, compares the bytes and
// checks that every frame comes back on the completion ring.
func TestTransmit(t *testing.T) {
	testutil.RequireRoot(t, needXSK)
	tests := []struct {
		name string
		cfg  xsk.Config
	}{
		{"tx only", xsk.Config{TxOnly: true, NumFrames: 256}},
		{"without need_wakeup", xsk.Config{TxOnly: true, NumFrames: 256, NoNeedWakeup: true}},
		// RX and TX share the UMEM: Fill keeps FillSize frames, the rest
		// serve AllocTx.
		{"rx and tx", xsk.Config{NumFrames: 512, FillSize: 256}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { testTransmit(t, tc.cfg) })
	}
}

func testTransmit(t *testing.T, cfg xsk.Config) {
	v := newVethPair(t, 1, 0)
	s := v.open(t, v.ia, 0, cfg)
	s.Fill()
	wantFree := s.FreeFrames() // all but the fill ring's
	capture := packettest.NewCapture(t, v.ns, v.b, packettest.IsTest)

	sizes := []int{60, 64, 65, 128, 333, 1000, 1514}
	sent := make(map[uint32][]byte)
	seq := uint32(0)
	const windows, per = 16, 64
	for w := 0; w < windows; w++ {
		frames := make([][]byte, per)
		for i := range frames {
			frames[i] = packettest.Frame(macB, macA, nil, seq, sizes[int(seq)%len(sizes)])
			sent[seq] = frames[i]
			seq++
		}
		if n := transmit(t, s, frames); n != per {
			t.Fatalf("window %d: %d of %d frames went on the TX ring (free frames %d)", w, n, per, s.FreeFrames())
		}
		capture.WaitN(len(sent), 5*time.Second)
	}
	got := bySeq(t, capture.Frames())
	if len(got) != len(sent) {
		t.Fatalf("peer received %d frames, want %d", len(got), len(sent))
	}
	for sq, f := range sent {
		if !bytes.Equal(got[sq], f) {
			t.Fatalf("frame %d: peer got %d bytes %x..., want %d bytes %x...", sq, len(got[sq]), head(got[sq]), len(f), head(f))
		}
	}
	// Every frame comes back once the peer freed its skb (gotcha 4).
	for deadline := time.Now().Add(5 * time.Second); s.FreeFrames() < wantFree && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		s.Complete()
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Transmitted != uint64(len(sent)) || st.Completed != uint64(len(sent)) || s.FreeFrames() != wantFree {
		t.Errorf("Transmitted %d, Completed %d, FreeFrames %d; want %d, %d, %d", st.Transmitted, st.Completed, s.FreeFrames(), len(sent), len(sent), wantFree)
	}
	if st.TxInvalidDescs != 0 || st.KickErrNetDown+st.KickErrNxio+st.KickErrOther != 0 || st.BadFree != 0 {
		t.Errorf("stats %+v: want no invalid descriptors, kick errors or bad frees", st)
	}
	if st.Kicks == 0 {
		t.Errorf("Kicks = 0 after sending %d frames", len(sent))
	}
}

// TestKickLinkDownAndGone brings the TX link down mid-stream, up again, then
// deletes it: Kick returns ENETDOWN and then ENXIO as errors, the pending
// descriptors go out once the link is back, nothing panics, Close works.
func TestKickLinkDownAndGone(t *testing.T) {
	testutil.RequireRoot(t, needXSK)
	v := newVethPair(t, 1, 0)
	s := v.open(t, v.ia, 0, xsk.Config{TxOnly: true, NumFrames: 256})
	capture := packettest.NewCapture(t, v.ns, v.b, packettest.IsTest)
	frames := func(base uint32) [][]byte {
		fs := make([][]byte, 8)
		for i := range fs {
			fs[i] = packettest.Frame(macB, macA, nil, base+uint32(i), 60)
		}
		return fs
	}
	kick := func(fs [][]byte) error {
		queue(s, fs)
		return s.Kick()
	}
	if err := kick(frames(0)); err != nil {
		t.Fatalf("Kick on a link that is up: %v", err)
	}

	testutil.Run(t, "ip", "-n", v.ns, "link", "set", v.a, "down")
	err := kick(frames(100))
	var ke *xsk.KickError
	if !errors.Is(err, unix.ENETDOWN) || !errors.As(err, &ke) {
		t.Fatalf("Kick on a link that is down = %v, want a *KickError wrapping ENETDOWN", err)
	}
	if p := s.TxPending(); p != 8 {
		t.Errorf("TxPending = %d while down, want 8 (descriptors stay on the ring)", p)
	}

	testutil.Run(t, "ip", "-n", v.ns, "link", "set", v.a, "up")
	testutil.Run(t, "ip", "-n", v.ns, "link", "set", v.b, "up")
	if err := s.Kick(); err != nil {
		t.Fatalf("Kick after the link came back: %v", err)
	}
	if p := s.TxPending(); p != 0 {
		t.Errorf("TxPending = %d after the link came back, want 0", p)
	}
	got := bySeq(t, capture.WaitN(16, 5*time.Second))
	for _, sq := range []uint32{0, 7, 100, 107} {
		if _, ok := got[sq]; !ok {
			t.Errorf("frame %d never reached the peer (got %d frames)", sq, len(got))
		}
	}

	testutil.Run(t, "ip", "-n", v.ns, "link", "del", v.a)
	err = kick(frames(200))
	if !errors.Is(err, unix.ENXIO) {
		t.Fatalf("Kick on a deleted link = %v, want a *KickError wrapping ENXIO", err)
	}
	if !errors.Is(err, xsk.ErrUnbound) {
		t.Errorf("Kick on a deleted link = %v, want errors.Is(err, ErrUnbound)", err)
	}
	if _, err := s.Poll(10 * time.Millisecond); !errors.Is(err, xsk.ErrUnbound) {
		t.Errorf("Poll on a deleted link = %v, want ErrUnbound", err)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatalf("Stats on a socket whose link is gone: %v", err)
	}
	if st.KickErrNetDown == 0 || st.KickErrNxio+st.KickErrNetDown < 2 {
		t.Errorf("kick error counters %d netdown, %d nxio: want both errors counted", st.KickErrNetDown, st.KickErrNxio)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close after the link was deleted: %v", err)
	}
	if err := s.Kick(); !errors.Is(err, xsk.ErrClosed) {
		t.Errorf("Kick after Close = %v, want ErrClosed", err)
	}
}

// TestTxBudget checks gotcha 3: with the default budget one sendto(2) sends
// 32 descriptors; with the budget raised one sendto sends the whole batch.
func TestTxBudget(t *testing.T) {
	testutil.RequireRoot(t, needXSK)
	const batch = 200
	tests := []struct {
		name   string
		budget int
		want   int // descriptors one sendto(2) takes off the ring
	}{
		{"kernel default", -1, 32},
		{"raised to 256", 256, batch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newVethPair(t, 1, 0)
			v.dropAll(t, v.ib)
			s := v.open(t, v.ia, 0, xsk.Config{TxOnly: true, NumFrames: 512, TxBudget: tc.budget})
			if tc.budget > 0 {
				testutil.SkipIfNotSupported(t, s.TxBudgetErr())
				if s.TxBudget() != tc.budget {
					t.Fatalf("TxBudget() = %d, want %d", s.TxBudget(), tc.budget)
				}
			}
			if n := queue(s, seqFrames(batch)); n != batch {
				t.Fatalf("%d frames went on the TX ring, want %d", n, batch)
			}
			// One raw sendto(2), as Kick makes it, to see what one call sends.
			err := unix.Sendto(s.FD(), nil, unix.MSG_DONTWAIT, nil)
			if err != nil && !errors.Is(err, unix.EAGAIN) {
				t.Fatalf("sendto: %v", err)
			}
			if sent := batch - s.TxPending(); sent != tc.want {
				t.Errorf("one sendto sent %d descriptors, want %d", sent, tc.want)
			}
			if err := s.Kick(); err != nil {
				t.Fatal(err)
			}
			if p := s.TxPending(); p != 0 {
				t.Errorf("TxPending = %d after Kick, want 0: Kick must loop over the budget", p)
			}
			st, _ := s.Stats()
			t.Logf("budget %d: Kick made %d sendto calls for the remaining %d descriptors", s.TxBudget(), st.Kicks, batch-tc.want)
		})
	}
}

// TestMultiQueue binds one socket per RX queue of a two-queue veth; an XSK
// TX socket on each peer queue sends frames that must arrive on the
// matching queue's socket only (gotcha 2). A third queue does not exist.
func TestMultiQueue(t *testing.T) {
	testutil.RequireRoot(t, needXSK)
	v := newVethPair(t, 2, 0)
	rx := []*xsk.Socket{
		v.open(t, v.ia, 0, xsk.Config{RxOnly: true, NumFrames: 512}),
		v.open(t, v.ia, 1, xsk.Config{RxOnly: true, NumFrames: 512}),
	}
	v.redirectToSockets(t, v.ia, rx...)
	err := testutil.InNetns(v.ns, func() error {
		s, err := xsk.Open(v.ia, 2, xsk.Config{RxOnly: true, NumFrames: 64})
		if err == nil {
			s.Close()
		}
		return err
	})
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("Open on queue 2 of a two-queue veth = %v, want EINVAL", err)
	}
	err = testutil.InNetns(v.ns, func() error {
		s, err := xsk.Open(1<<20, 0, xsk.Config{RxOnly: true, NumFrames: 64})
		if err == nil {
			s.Close()
		}
		return err
	})
	if !errors.Is(err, unix.ENODEV) {
		t.Errorf("Open on a missing ifindex = %v, want ENODEV", err)
	}
	// A queue takes one socket (without a shared UMEM).
	err = testutil.InNetns(v.ns, func() error {
		s, err := xsk.Open(v.ia, 0, xsk.Config{RxOnly: true, NumFrames: 64})
		if err == nil {
			s.Close()
		}
		return err
	})
	if !errors.Is(err, unix.EBUSY) {
		t.Errorf("second Open on queue 0 = %v, want EBUSY", err)
	}
	for q := range rx {
		tx := v.open(t, v.ib, q, xsk.Config{TxOnly: true, NumFrames: 64})
		frames := make([][]byte, 20)
		for i := range frames {
			frames[i] = packettest.Frame(macA, macB, nil, uint32(q*1000+i), 60+q)
		}
		rx[q].Fill()
		if n := transmit(t, tx, frames); n != len(frames) {
			t.Fatalf("queue %d: %d frames on the TX ring, want %d", q, n, len(frames))
		}
		got := receiveAll(t, rx[q], len(frames), time.Now().Add(5*time.Second))
		for i, f := range frames {
			if !bytes.Equal(got[uint32(q*1000+i)], f) {
				t.Errorf("queue %d frame %d: received %x, want %x", q, i, head(got[uint32(q*1000+i)]), head(f))
			}
		}
		other := rx[1-q]
		if stray := receiveAll(t, other, 1, time.Now().Add(50*time.Millisecond)); len(stray) != 0 {
			t.Errorf("frames sent on queue %d arrived on queue %d's socket: %d", q, 1-q, len(stray))
		}
	}
}

// TestNoLeaks opens and closes sockets that moved traffic and checks that
// nothing of them is left behind: no file descriptor or mapping of the
// socket (found by its inode), no UMEM mapping (mincore); and that Close
// twice says ErrClosed. newVethPair's testutil.Leaks adds that no
// goroutine, descriptor or mapping is left, of an Open that failed at bind
// too.
func TestNoLeaks(t *testing.T) {
	testutil.RequireRoot(t, needXSK)
	v := newVethPair(t, 1, 0)
	v.dropAll(t, v.ib)
	for i := 0; i < 5; i++ {
		var s *xsk.Socket
		if err := testutil.InNetns(v.ns, func() (err error) {
			s, err = xsk.Open(v.ia, 0, xsk.Config{NumFrames: 256})
			return err
		}); err != nil {
			testutil.SkipIfNotSupported(t, err)
		}
		transmit(t, s, seqFrames(2))
		if _, err := s.Stats(); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(s.FD(), &st); err != nil {
			t.Fatal(err)
		}
		sock := fmt.Sprintf("socket:[%d]", st.Ino)
		// The UMEM's first page, to ask mincore(2) whether it is mapped.
		umem := unsafe.Slice(&s.Frame(xsk.Desc{Addr: 0, Len: 1})[0], os.Getpagesize())
		if err := mincore(umem); err != nil {
			t.Fatalf("mincore of the open socket's UMEM: %v", err)
		}
		if !strings.Contains(readFile(t, "/proc/self/maps"), sock) {
			t.Fatalf("no ring mapping of %s in /proc/self/maps while open: the check below would prove nothing", sock)
		}

		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		maps := readFile(t, "/proc/self/maps")
		if strings.Contains(maps, sock) {
			t.Errorf("a ring of %s is still mapped after Close", sock)
		}
		if err := mincore(umem); !errors.Is(err, unix.ENOMEM) {
			t.Errorf("mincore of the UMEM after Close = %v, want ENOMEM (unmapped)", err)
		}
		if fds := fdsOf(t, sock); fds != 0 {
			t.Errorf("%d fds still refer to %s after Close", fds, sock)
		}
		if err := s.Close(); !errors.Is(err, xsk.ErrClosed) {
			t.Fatalf("second Close = %v, want ErrClosed", err)
		}
	}
	// An Open that fails at bind, its socket set up and its rings mapped,
	// releases them too (newVethPair's check finds what it would not).
	err := testutil.InNetns(v.ns, func() error {
		s, err := xsk.Open(v.ia, 7, xsk.Config{NumFrames: 256})
		if err == nil {
			s.Close()
		}
		return err
	})
	if err == nil {
		t.Errorf("Open on queue 7 of a one-queue veth succeeded")
	}
}

// mincore calls mincore(2) on p, a page: ENOMEM means it is not mapped.
func mincore(p []byte) error {
	var vec [1]byte
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		return e
	}
	return nil
}

func readFile(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fdsOf counts this process's file descriptors that are link.
func fdsOf(t testing.TB, link string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l == link {
			n++
		}
	}
	return n
}

// TestKernelPathNoAllocs asserts that the calls a worker makes per batch
// against a real socket (AllocTx, Frame, Transmit, Kick with its sendto,
// Complete, Fill, Receive, Free, Poll) do not allocate.
func TestKernelPathNoAllocs(t *testing.T) {
	testutil.RequireRoot(t, needXSK)
	v := newVethPair(t, 1, 0)
	v.dropAll(t, v.ib)
	s := v.open(t, v.ia, 0, xsk.Config{NumFrames: 512})
	descs := make([]xsk.Desc, 32)
	rxd := make([]xsk.Desc, 32)
	frame := packettest.Frame(macB, macA, nil, 1, 60)
	var kickErr error
	allocs := testing.AllocsPerRun(100, func() {
		n := s.AllocTx(descs)
		for i := range descs[:n] {
			descs[i].Len = uint32(copy(s.Frame(descs[i]), frame))
		}
		m := s.Transmit(descs[:n])
		s.Free(descs[m:n])
		if err := s.Kick(); err != nil {
			kickErr = err
		}
		s.Complete()
		s.Fill()
		s.Free(rxd[:s.Receive(rxd)])
		s.Poll(0)
	})
	if kickErr != nil {
		t.Fatal(kickErr)
	}
	if allocs != 0 {
		t.Errorf("one batch against a real socket allocates %v times, want 0", allocs)
	}
	if st, _ := s.Stats(); st.Kicks == 0 || st.Transmitted == 0 {
		t.Errorf("stats %+v: no frames were sent", st)
	}
}

// BenchmarkTransmit64 measures AF_XDP copy-mode TX of 60-byte frames (64 B
// on the wire with FCS) into a veth whose peer drops them in XDP, one Kick
// per batch, for batch sizes and TX budgets (gotcha 3). Reports Mpps and
// sendto(2) calls per batch.
func BenchmarkTransmit64(b *testing.B) {
	testutil.RequireRoot(b, needXSK)
	for _, bc := range []struct{ batch, budget int }{{64, -1}, {64, 256}, {256, -1}, {256, 256}} {
		name := fmt.Sprintf("batch=%d/budget=%d", bc.batch, bc.budget)
		if bc.budget < 0 {
			name = fmt.Sprintf("batch=%d/budget=kernel", bc.batch)
		}
		b.Run(name, func(b *testing.B) { benchTransmit(b, bc.batch, bc.budget) })
	}
}

func benchTransmit(b *testing.B, batch, budget int) {
	v := newVethPair(b, 1, 0)
	v.dropAll(b, v.ib)
	s := v.open(b, v.ia, 0, xsk.Config{TxOnly: true, TxBudget: budget})
	frame := packettest.Frame(macB, macA, nil, 1, 60)
	descs := make([]xsk.Desc, batch)
	b.ReportAllocs()
	b.ResetTimer()
	sent, batches := 0, 0
	for sent < b.N {
		n := s.AllocTx(descs[:min(batch, b.N-sent)])
		for i := range descs[:n] {
			descs[i].Len = uint32(copy(s.Frame(descs[i]), frame))
		}
		m := s.Transmit(descs[:n])
		s.Free(descs[m:n])
		if err := s.Kick(); err != nil {
			b.Fatal(err)
		}
		sent += m
		batches++
	}
	for deadline := time.Now().Add(time.Second); s.TxPending() > 0 && time.Now().Before(deadline); {
		if err := s.Kick(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(sent)/b.Elapsed().Seconds()/1e6, "Mpps")
	st, _ := s.Stats()
	b.ReportMetric(float64(st.Kicks)/float64(max(batches, 1)), "sendto/batch")
}

// TestStatsFromAnotherGoroutine reads Stats while the owner sends: the
// counters are atomics (run with -race).
func TestStatsFromAnotherGoroutine(t *testing.T) {
	testutil.RequireRoot(t, needXSK)
	v := newVethPair(t, 1, 0)
	v.dropAll(t, v.ib)
	s := v.open(t, v.ia, 0, xsk.Config{TxOnly: true, NumFrames: 256})
	done, started := make(chan struct{}), make(chan struct{})
	reads := make(chan int)
	go func() {
		n := 0
		for {
			if n == 1 {
				close(started)
			}
			select {
			case <-done:
				reads <- n
				return
			default:
			}
			if _, err := s.Stats(); err != nil {
				t.Error(err)
			}
			n++
		}
	}()
	<-started // reads overlap the sends below
	frames := [][]byte{packettest.Frame(macB, macA, nil, 1, 60), packettest.Frame(macB, macA, nil, 2, 60)}
	for i := 0; i < 200; i++ {
		transmit(t, s, frames)
	}
	close(done)
	if n := <-reads; n < 1 {
		t.Errorf("the reader read %d times, want >= 1", n)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Transmitted != 400 {
		t.Errorf("Transmitted = %d, want 400", st.Transmitted)
	}
}

// BenchmarkForward64 measures the RX -> copy -> TX path this package gives
// a worker: an XSK generator on b1 sends 60-byte frames, a redirect program
// on a1 hands them to an RX socket, the loop copies each into a TX socket on
// a2 whose peer b2 drops them in XDP. Reports forwarded Mpps. The generator
// shares the machine's 2 cores with the loop: read the figure as a floor.
func BenchmarkForward64(b *testing.B) {
	testutil.RequireRoot(b, needXSK)
	in, out := newVethPair(b, 1, 0), newVethPair(b, 1, 0)
	out.dropAll(b, out.ib)
	rx := in.open(b, in.ia, 0, xsk.Config{RxOnly: true})
	in.redirectToSockets(b, in.ia, rx)
	tx := out.open(b, out.ia, 0, xsk.Config{TxOnly: true})
	gen := in.open(b, in.ib, 0, xsk.Config{TxOnly: true})

	stop := make(chan struct{})
	genDone := make(chan error, 1)
	go func() {
		frame := packettest.Frame(macA, macB, nil, 1, 60)
		descs := make([]xsk.Desc, 64)
		for {
			select {
			case <-stop:
				genDone <- nil
				return
			default:
			}
			n := gen.AllocTx(descs)
			for i := range descs[:n] {
				descs[i].Len = uint32(copy(gen.Frame(descs[i]), frame))
			}
			m := gen.Transmit(descs[:n])
			gen.Free(descs[m:n])
			if err := gen.Kick(); err != nil {
				genDone <- err
				return
			}
		}
	}()

	rxd := make([]xsk.Desc, 64)
	txd := make([]xsk.Desc, 64)
	forwarded := 0
	b.ReportAllocs()
	b.ResetTimer()
	deadline := time.Now().Add(20 * time.Second)
	for forwarded < b.N && time.Now().Before(deadline) {
		rx.Fill()
		n := rx.Receive(rxd)
		if n == 0 {
			continue
		}
		m := tx.AllocTx(txd[:n])
		for i := range txd[:m] {
			txd[i].Len = uint32(copy(tx.Frame(txd[i]), rx.Frame(rxd[i])))
		}
		rx.Free(rxd[:n])
		k := tx.Transmit(txd[:m])
		tx.Free(txd[k:m])
		if err := tx.Kick(); err != nil {
			b.Fatal(err)
		}
		forwarded += k
	}
	b.StopTimer()
	close(stop)
	if err := <-genDone; err != nil {
		b.Fatalf("generator: %v", err)
	}
	b.ReportMetric(float64(forwarded)/b.Elapsed().Seconds()/1e6, "Mpps")
	rs, _ := rx.Stats()
	if rs.Received > 0 {
		b.ReportMetric(float64(rs.RxFillRingEmptyDescs+rs.RxRingFull)/float64(rs.Received+rs.RxFillRingEmptyDescs+rs.RxRingFull), "rx-loss-ratio")
	}
}

// TestKickSmallCompletionRing sends more frames than the completion ring
// holds in one Kick: the kernel stops with EAGAIN when it cannot reserve a
// completion slot, and Kick must reap completions to let it go on.
func TestKickSmallCompletionRing(t *testing.T) {
	testutil.RequireRoot(t, needXSK)
	v := newVethPair(t, 1, 0)
	v.dropAll(t, v.ib)
	const batch = 200
	s := v.open(t, v.ia, 0, xsk.Config{TxOnly: true, NumFrames: 256, CompletionSize: 32, TxSize: 256})
	if n := queue(s, seqFrames(batch)); n != batch {
		t.Fatalf("%d frames went on the TX ring, want %d", n, batch)
	}
	// Kick gives up after a few calls without progress; a worker kicks
	// again next batch. Bound the batches.
	for i := 0; i < 100 && (s.TxPending() > 0 || s.FreeFrames() < 256); i++ {
		if err := s.Kick(); err != nil {
			t.Fatal(err)
		}
		s.Complete()
		if s.TxPending() > 0 || s.FreeFrames() < 256 {
			time.Sleep(time.Millisecond)
		}
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.TxPending() != 0 || st.Completed != batch || s.FreeFrames() != 256 {
		t.Errorf("TxPending %d, Completed %d, FreeFrames %d; want 0, %d, 256", s.TxPending(), st.Completed, s.FreeFrames(), batch)
	}
	t.Logf("%d frames through a 32-entry completion ring: %d sendto calls, %d retries", batch, st.Kicks, st.KickRetries)
}

// TestReceiveLinkGone deletes the link under an RX socket while the caller
// holds received frames: they stay readable, the calls keep working,
// nothing panics, Poll reports the socket unbound, and Close releases
// everything.
func TestReceiveLinkGone(t *testing.T) {
	testutil.RequireRoot(t, needXSK)
	v := newVethPair(t, 1, 0)
	s := v.open(t, v.ia, 0, xsk.Config{RxOnly: true, NumFrames: 256})
	v.redirectToSockets(t, v.ia, s)
	s.Fill()
	inj := packettest.NewInjector(t, v.ns, v.b)
	sent := make([][]byte, 4)
	for i := range sent {
		sent[i] = packettest.Frame(macA, macB, nil, uint32(i), 60+i)
		if err := inj.Send(sent[i]); err != nil {
			t.Fatal(err)
		}
	}
	// Take the frames (bounded in time) and hold them over the deletion.
	held := make([]xsk.Desc, 0, 4)
	descs := make([]xsk.Desc, 4)
	for deadline := time.Now().Add(5 * time.Second); len(held) < 4 && time.Now().Before(deadline); {
		if _, err := s.Poll(10 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
		held = append(held, descs[:s.Receive(descs[:4-len(held)])]...)
	}
	if len(held) != 4 {
		t.Fatalf("received %d of 4 frames", len(held))
	}
	testutil.Run(t, "ip", "-n", v.ns, "link", "del", v.a)
	for _, d := range held {
		f := s.Frame(d)
		seq, ok := packettest.Seq(f)
		if !ok || seq >= 4 || !bytes.Equal(f, sent[seq]) {
			t.Errorf("held frame after the link was deleted = %x, want one of the frames sent", head(f))
		}
	}
	s.Free(held)
	if n := s.Fill(); n != 4 {
		t.Errorf("Fill after the link was deleted = %d, want 4 (the freed frames)", n)
	}
	if n := s.Receive(descs); n != 0 {
		t.Errorf("Receive after the link was deleted = %d, want 0", n)
	}
	// The kernel unbinds the socket when the link is unregistered: Poll
	// reports it once its wait times out, and keeps reporting it.
	for i := 0; i < 2; i++ {
		if _, err := s.Poll(10 * time.Millisecond); !errors.Is(err, xsk.ErrUnbound) || !errors.Is(err, unix.ENETDOWN) {
			t.Errorf("Poll %d after the link was deleted = %v, want ErrUnbound wrapping ENETDOWN", i, err)
		}
	}
	if _, err := s.Stats(); err != nil {
		t.Errorf("Stats after the link was deleted: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close after the link was deleted: %v", err)
	}
}

// TestStatsDuringClose calls Stats from another goroutine while the socket
// is closed: it must return the counters and either nil or ErrClosed, never
// read a closed (or reused) FD.
func TestStatsDuringClose(t *testing.T) {
	testutil.RequireRoot(t, needXSK)
	v := newVethPair(t, 1, 0)
	for i := 0; i < 20; i++ {
		s := v.open(t, v.ia, 0, xsk.Config{TxOnly: true, NumFrames: 64})
		errc := make(chan error, 1)
		started := make(chan struct{})
		go func() {
			for n := 0; ; n++ {
				if n == 1 {
					close(started)
				}
				_, err := s.Stats()
				if errors.Is(err, xsk.ErrClosed) {
					errc <- nil
					return
				}
				if err != nil {
					errc <- err
					return
				}
			}
		}()
		<-started
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("Stats during Close = %v, want nil or ErrClosed", err)
		}
	}
}

// TestMemlock checks gotcha 7: without CAP_IPC_LOCK the UMEM is charged to
// RLIMIT_MEMLOCK, and a limit too small for it is an error that names the
// limit, not a crash. It drops CAP_IPC_LOCK on one locked OS thread only
// (capabilities are per thread) and lets that thread die with its
// goroutine, and lowers RLIMIT_MEMLOCK for the process only while it runs.
func TestMemlock(t *testing.T) {
	testutil.RequireRoot(t, needXSK)
	v := newVethPair(t, 1, 0)
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &old); err != nil {
		t.Fatal(err)
	}
	// Raising the hard limit needs CAP_SYS_RESOURCE, which containers may
	// lack: the "large" limit is the hard one (8 MiB by default).
	large := unix.Rlimit{Cur: old.Max, Max: old.Max}
	if large.Cur < 1<<20 {
		t.Fatalf("RLIMIT_MEMLOCK hard limit is %d bytes: below the 1 MiB this test needs", large.Cur)
	}
	t.Cleanup(func() {
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &old); err != nil {
			t.Errorf("restore RLIMIT_MEMLOCK: %v", err)
		}
	})
	cfg := xsk.Config{TxOnly: true, NumFrames: 256} // 512 KiB of UMEM
	type result struct{ small, large error }
	resc := make(chan result, 1)
	go func() {
		// Never unlocked: the thread, with its capability dropped and its
		// namespace changed, exits with the goroutine.
		runtime.LockOSThread()
		var r result
		fail := func(err error) { r.small = err; r.large = err; resc <- r }
		ns, err := netnsFD(v.ns)
		if err != nil {
			fail(err)
			return
		}
		defer unix.Close(ns)
		if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
			fail(err)
			return
		}
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			fail(err)
			return
		}
		data[0].Effective &^= 1 << unix.CAP_IPC_LOCK
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			fail(err)
			return
		}
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: 64 << 10, Max: old.Max}); err != nil {
			fail(err)
			return
		}
		s, err := xsk.Open(v.ia, 0, cfg)
		if err == nil {
			s.Close()
		}
		r.small = err
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &large); err != nil {
			fail(err)
			return
		}
		s, r.large = xsk.Open(v.ia, 0, cfg)
		if r.large == nil {
			r.large = s.Close()
		}
		resc <- r
	}()
	r := <-resc
	if r.small == nil || !strings.Contains(r.small.Error(), "RLIMIT_MEMLOCK") || !errors.Is(r.small, unix.ENOBUFS) {
		t.Errorf("Open of a 512 KiB UMEM under a 64 KiB RLIMIT_MEMLOCK without CAP_IPC_LOCK = %v, want ENOBUFS naming RLIMIT_MEMLOCK", r.small)
	}
	if r.large != nil {
		t.Errorf("Open under RLIMIT_MEMLOCK %d without CAP_IPC_LOCK = %v, want success", large.Cur, r.large)
	}
}

func netnsFD(name string) (int, error) {
	return unix.Open("/var/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
}

// TestWake: Wake ends a Poll that would otherwise sleep its whole timeout
// (taasd's stop waited for that, issue 9), and a Wake before Poll makes the
// next Poll return at once.
func TestWake(t *testing.T) {
	testutil.RequireRoot(t, needXSK)
	v := newVethPair(t, 1, 0)
	s := v.open(t, v.ia, 0, xsk.Config{NumFrames: 256, RxOnly: true})
	s.Fill()
	poll := func(timeout time.Duration) (bool, time.Duration) {
		t.Helper()
		type result struct {
			readable bool
			err      error
		}
		done := make(chan result, 1)
		start := time.Now()
		go func() {
			r, err := s.Poll(timeout)
			done <- result{r, err}
		}()
		select {
		case r := <-done:
			if r.err != nil {
				t.Fatalf("Poll(%v): %v", timeout, r.err)
			}
			return r.readable, time.Since(start)
		case <-time.After(10 * time.Second):
			t.Fatalf("Poll(%v) still sleeping after 10s", timeout)
			return false, 0
		}
	}

	go func() {
		time.Sleep(20 * time.Millisecond) // most likely inside poll(2) by now
		s.Wake()
	}()
	readable, took := poll(time.Minute)
	t.Logf("Poll(1m) woken after %v", took)
	if readable {
		t.Error("woken Poll says readable, want false")
	}
	s.Wake()
	if readable, _ := poll(time.Minute); readable {
		t.Error("Poll after a pending Wake says readable, want false")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.Wake() // a closed socket ignores it
}
