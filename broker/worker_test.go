package broker

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taas-appliance/taas/broker/xsk"
	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
	"github.com/taas-appliance/taas/xdpprog"
)

// rig is one capture queue and one monitor wired by hand, with the worker
// driven synchronously by the test instead of its goroutine: the allocation
// test and the benchmark measure exactly the per-batch path. With an encap,
// the flow is a tap mirror's tunnel instead, whose copies the monitor
// carries as if it were the uplink.
type rig struct {
	w      *worker
	inject *packettest.Injector
	prog   *xdpprog.Capture
	frame  []byte
}

func newRig(t testing.TB, batch int, encap xdpprog.Encap) *rig {
	t.Helper()
	return newRigTx(t, batch, encap, xsk.Config{TxOnly: true})
}

// newRigTx is newRig with the monitor's (or uplink's) socket opened with
// txCfg.
func newRigTx(t testing.TB, batch int, encap xdpprog.Encap, txCfg xsk.Config) *rig {
	t.Helper()
	testutil.RequireRoot(t, rootWhy)
	p := testutil.Prefix(t)
	span, mon := testutil.Netns(t, p+"span"), testutil.Netns(t, p+"mon")
	testutil.Veth(t, p+"cap", p+"capp", testutil.VethOpts{NetnsB: span})
	testutil.Veth(t, p+"mon", p+"monp", testutil.VethOpts{NetnsB: mon})
	ifindex := func(name string) int {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			t.Fatal(err)
		}
		return ifi.Index
	}
	cfg := Config{BatchSize: batch}
	cfg.setDefaults()
	prog, err := xdpprog.Attach(ifindex(p+"cap"), xdpprog.Config{MaxFrame: cfg.FrameSize - 256})
	testutil.SkipIfNotSupported(t, err)
	t.Cleanup(func() { prog.Close() })
	rx, err := xsk.Open(ifindex(p+"cap"), 0, xsk.Config{RxOnly: true})
	testutil.SkipIfNotSupported(t, err)
	t.Cleanup(func() { rx.Close() })
	tx, err := xsk.Open(ifindex(p+"mon"), 0, txCfg)
	testutil.SkipIfNotSupported(t, err)
	o := &output{name: p + "mon", sock: tx}
	o.up.Store(true)
	t.Cleanup(func() { o.close() })
	if err := prog.SetSocket(0, rx.FD()); err != nil {
		t.Fatal(err)
	}
	flows := []compiledFlow{{mac: macKey(mac6(hwA)), dir: DirBoth, slot: 0, svc: 0}}
	if err := prog.SetFilter(xdpFilter(flows)); err != nil {
		t.Fatal(err)
	}
	if encap != 0 {
		hdr, err := xdpprog.NewTunnelHeader(xdpprog.TunnelSpec{Encap: encap, ID: 7, PortMAC: mac6(hwA),
			SrcMAC: mac6(hwC), DstMAC: mac6(hwB), Src: netip.MustParseAddr("198.51.100.1"),
			Dst: netip.MustParseAddr("192.0.2.1"), MTU: 1500})
		if err != nil {
			t.Fatal(err)
		}
		flows[0] = compiledFlow{mac: flows[0].mac, dir: DirBoth, slot: -1, tun: &tunnel{slot: 0, hdr: hdr, out: o, seq: new(atomic.Uint32)}}
	}
	c := &capture{name: p + "cap", prog: prog}
	c.table.Store(buildTable(1, flows, func(int32) *output { return o }, 1, 1))
	w := newWorker(c, rx, 0, &cfg, -1)
	rx.Fill()
	return &rig{w: w, inject: packettest.NewInjector(t, span, p+"capp"), prog: prog,
		frame: packettest.Frame(hwB, hwA, nil, 1, 60)}
}

// startLive gives the rig's capture two live captures, each read by a
// goroutine that releases what it takes: one of the flow (none for a
// tunnel: its pseudo flow has no slot), one of the service or tunnel, cut
// to 128 bytes.
func (r *rig) startLive(t testing.TB) []*LiveCapture {
	caps := []*LiveCapture{newLiveCapture(LiveTarget{Kind: LiveFlow, ID: "f"}, 0, 1792),
		newLiveCapture(LiveTarget{Kind: LiveService, ID: "s"}, 128, 1792)}
	ls := &liveSet{flows: []uint8{1}, svcs: []uint8{2}, tuns: []uint8{2}}
	for i, c := range caps {
		ls.caps[i], ls.cut[i] = c, c.bufLen
		go func() {
			for p := range c.Packets() {
				c.Release(p)
			}
		}()
		t.Cleanup(c.Stop)
	}
	live := new(atomic.Pointer[liveSet])
	live.Store(ls)
	r.w.cap.live = live
	return caps
}

// load injects n frames and waits until the XDP program redirected them
// all to the socket, so that batches then find them on the RX ring.
func (r *rig) load(t testing.TB, n int) {
	t.Helper()
	before, err := r.prog.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := r.inject.Send(r.frame); err != nil {
			t.Fatal(err)
		}
		if i%64 == 63 {
			r.settle(t, before.Redirected+uint64(i+1))
		}
	}
	r.settle(t, before.Redirected+uint64(n))
}

func (r *rig) settle(t testing.TB, redirected uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := r.prog.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if c.Redirected >= redirected {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("XDP redirected %d frames, want %d (counters %+v)", c.Redirected, redirected, c)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestWorkerBatchAllocs proves the per-batch path (receive, classify,
// gather, copy into the monitor's UMEM or encapsulate into the uplink's,
// transmit, kick, complete, free, fill) allocates nothing.
//
// With live captures (live.go), offering the frames to them allocates
// nothing either, and each gets every frame once.
func TestWorkerBatchAllocs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		encap xdpprog.Encap
		live  bool
	}{{"monitor", 0, false}, {"erspanv3", xdpprog.EncapERSPAN3, false}, {"vxlan", xdpprog.EncapVXLAN, false},
		{"monitor-live", 0, true}, {"vxlan-live", xdpprog.EncapVXLAN, true}} {
		t.Run(tc.name, func(t *testing.T) {
			const batch, runs = 64, 16
			r := newRig(t, batch, tc.encap)
			var caps []*LiveCapture
			if tc.live {
				caps = r.startLive(t)
			}
			r.load(t, batch*(runs+1)) // AllocsPerRun runs once more to warm up
			processed := 0
			allocs := testing.AllocsPerRun(runs, func() {
				for n := 0; n < batch; {
					n += r.w.batch()
				}
				processed += batch
			})
			if allocs != 0 {
				t.Fatalf("worker batch allocates %v times per %d-frame batch, want 0", allocs, batch)
			}
			got := r.w.ctr.Load().svcs[0].pkts.Load()
			if tc.encap != 0 {
				got = r.w.ctr.Load().tuns[0].pkts.Load()
			}
			if got != uint64(processed) {
				t.Fatalf("sent %d copies, want %d", got, processed)
			}
			for i, c := range caps {
				st, want := c.Stats(), uint64(processed)
				if i == 0 && tc.encap != 0 {
					want = 0 // a tunnel has no flow slot
				}
				if st.Captured+st.Dropped != want {
					t.Errorf("live capture of %v: %+v, want %d frames in all", c.target.Kind, st, want)
				}
			}
		})
	}
}

// TestWorkerEncapFails gives the uplink's socket TX frames too small for
// the copies (a UMEM headroom compileMirrors would refuse): every copy is
// dropped as encap_failed and its TX frame freed, none sent as an empty
// frame and counted as sent.
func TestWorkerEncapFails(t *testing.T) {
	const n = 8
	r := newRigTx(t, n, xdpprog.EncapERSPAN3, xsk.Config{TxOnly: true, Headroom: 1024})
	r.frame = packettest.Frame(hwB, hwA, nil, 1, 1200)
	tx := r.w.cap.table.Load().services[0].tun.out.sock
	free := tx.FreeFrames()
	t.Logf("TX frames hold %d bytes, the copy of a %d-byte frame needs more", tx.MaxTxFrame(), len(r.frame))
	r.load(t, n)
	for done := 0; done < n; {
		done += r.w.batch()
	}
	tc := &r.w.ctr.Load().tuns[0]
	if got := tc.drops[tdEncapFailed].Load(); got != n {
		t.Errorf("encap_failed = %d, want %d", got, n)
	}
	if got := tc.pkts.Load(); got != 0 {
		t.Errorf("sent %d copies, want 0", got)
	}
	tx.Complete()
	if got := tx.FreeFrames(); got != free {
		t.Errorf("uplink has %d free TX frames, want %d", got, free)
	}
}

// BenchmarkWorkerBatch is the cost of one batch of 256 60-byte frames
// through the worker (one flow, one monitor; the flow with a filter that
// accepts the frames; or one tap mirror's tunnel, encapsulated), kernel
// copy-mode TX included; injecting the frames is outside the measurement.
// It reports ns/frame and the Mpps one core would sustain at that cost.
func BenchmarkWorkerBatch(b *testing.B) {
	for _, tc := range []struct {
		name   string
		encap  xdpprog.Encap
		filter string
		live   bool
	}{{"monitor", 0, "", false}, {"monitor-filtered", 0, "ether proto 0x88b5 and ether src 02:00:00:00:00:0a", false},
		{"gre", xdpprog.EncapGRE, "", false}, {"erspanv3", xdpprog.EncapERSPAN3, "", false}, {"vxlan", xdpprog.EncapVXLAN, "", false},
		{"monitor-live2", 0, "", true}} {
		b.Run(tc.name, func(b *testing.B) { benchWorkerBatch(b, tc.encap, tc.filter, tc.live) })
	}
}

// benchWorkerBatch runs BenchmarkWorkerBatch; live adds two live captures
// (rig.startLive): the flow's and the service's, each frame offered to
// both.
func benchWorkerBatch(b *testing.B, encap xdpprog.Encap, filter string, live bool) {
	const batch = 256
	r := newRig(b, batch, encap)
	if live {
		r.startLive(b)
	}
	if filter != "" {
		// The rig's flow, with the filter.
		out := r.w.cap.table.Load().outputs[0]
		flows := []compiledFlow{{mac: macKey(mac6(hwA)), dir: DirBoth, slot: 0, svc: 0, filter: mustFilter(b, filter)}}
		r.w.cap.table.Store(buildTable(1, flows, func(int32) *output { return out }, 1, 1))
	}
	b.ReportAllocs()
	var busy time.Duration
	frames := 0
	for b.Loop() {
		b.StopTimer()
		r.load(b, batch)
		b.StartTimer()
		start := time.Now()
		for n := 0; n < batch; {
			n += r.w.batch()
		}
		busy += time.Since(start)
		frames += batch
	}
	ns := float64(busy.Nanoseconds()) / float64(frames)
	b.ReportMetric(ns, "ns/frame")
	b.ReportMetric(1e3/ns, "Mpps/core")
	// The span end's own IPv6 chatter (multicast, IN of the port) is all
	// the filter may reject.
	if c := r.w.ctr.Load(); encap == 0 && c.flows[0].pkts.Load() < uint64(frames)*99/100 {
		b.Fatalf("the flow matched %d of %d frames (rejected %d)", c.flows[0].pkts.Load(), frames, c.flows[0].rejected.Load())
	}
}

// TestEncapRoom checks the plan-time guard that keeps the workers'
// Encapsulate from failing: an uplink's TX frames must hold the outer
// headers plus the largest received frame (or the header's truncation).
func TestEncapRoom(t *testing.T) {
	hdr := func(t *testing.T, mtu int) *xdpprog.TunnelHeader {
		h, err := xdpprog.NewTunnelHeader(xdpprog.TunnelSpec{Encap: xdpprog.EncapERSPAN3, ID: 7, PortMAC: mac6(hwA),
			SrcMAC: mac6(hwC), DstMAC: mac6(hwB), Src: netip.MustParseAddr("2001:db8::1"),
			Dst: netip.MustParseAddr("2001:db8::2"), MTU: mtu})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	for _, tc := range []struct {
		name        string
		tx, rx, mtu int
		wantOK      bool
	}{
		{"default frames", 2048, 2048 - 256, 9000, true},
		{"exactly enough", 1792 + xdpprog.MaxTunnelOverhead, 1792, 9000, true},
		{"one byte short", 1792 + xdpprog.MaxTunnelOverhead - 1, 1792, 9000, false},
		{"truncated to fit", 1400, 1792, 1280, true},
		{"headroom", 1024, 1792, 1500, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			why := encapRoom(tc.tx, tc.rx, hdr(t, tc.mtu))
			if (why == "") != tc.wantOK {
				t.Fatalf("encapRoom(%d, %d, mtu %d) = %q, want ok %v", tc.tx, tc.rx, tc.mtu, why, tc.wantOK)
			}
		})
	}
}
