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
	tx, err := xsk.Open(ifindex(p+"mon"), 0, xsk.Config{TxOnly: true})
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
func TestWorkerBatchAllocs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		encap xdpprog.Encap
	}{{"monitor", 0}, {"erspanv3", xdpprog.EncapERSPAN3}, {"vxlan", xdpprog.EncapVXLAN}} {
		t.Run(tc.name, func(t *testing.T) {
			const batch, runs = 64, 16
			r := newRig(t, batch, tc.encap)
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
		})
	}
}

// BenchmarkWorkerBatch is the cost of one batch of 256 60-byte frames
// through the worker (one flow, one monitor; or one tap mirror's tunnel,
// encapsulated), kernel copy-mode TX included; injecting the frames is
// outside the measurement. It reports ns/frame and the Mpps one core would
// sustain at that cost.
func BenchmarkWorkerBatch(b *testing.B) {
	for _, tc := range []struct {
		name  string
		encap xdpprog.Encap
	}{{"monitor", 0}, {"gre", xdpprog.EncapGRE}, {"erspanv3", xdpprog.EncapERSPAN3}, {"vxlan", xdpprog.EncapVXLAN}} {
		b.Run(tc.name, func(b *testing.B) { benchWorkerBatch(b, tc.encap) })
	}
}

func benchWorkerBatch(b *testing.B, encap xdpprog.Encap) {
	const batch = 256
	r := newRig(b, batch, encap)
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
}
