package xdpprog

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/google/gopacket/layers"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/taas-appliance/taas/internal/testutil"
)

// BenchmarkProgram measures the XDP program itself per frame with
// BPF_PROG_TEST_RUN, as the kernel times it (ns/frame): parse, filter
// lookups, counters and the verdict. A redirect verdict is measured without
// the delivery to the socket, which test runs do not perform.
func BenchmarkProgram(b *testing.B) {
	testutil.RequireRoot(b, needBPF)
	cases := []struct {
		name   string
		action Action
		frame  []byte
	}{
		{"redirect", Drop, frame(b, macOther, macA, nil, 46, 0)},
		{"redirect_qinq", Drop, frame(b, macOther, macA, []tag{{0x88a8, 10}, {0x8100, 11}}, 46, 0)},
		{"unmatched_drop", Drop, frame(b, macOther, macOther, nil, 46, 0)},
		{"unmatched_pass", Pass, frame(b, macOther, macOther, nil, 46, 0)},
		{"vlan_filtered_drop", Drop, frame(b, macOther, macA, []tag{{0x8100, 11}}, 46, 0)},
		{"redirect_1514B", Drop, frame(b, macOther, macA, nil, 1500, 0)},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			c, m := loadFiltered(b, Config{Unmatched: bc.action}, standardFilter())
			want, _ := m.run(bc.frame)
			b.ResetTimer()
			v, per, err := c.objs.XdpCapture.Benchmark(bc.frame, b.N, b.ResetTimer)
			if err != nil {
				b.Fatal(err)
			}
			if v != want {
				b.Fatalf("xdp_capture = %s, want %s", verdictName(v), verdictName(want))
			}
			b.ReportMetric(float64(per.Nanoseconds()), "ns/frame")
		})
	}
}

// BenchmarkBaseline times an XDP program that only returns XDP_DROP, under
// the same BPF_PROG_TEST_RUN loop: the part of BenchmarkProgram's figures
// that is the test harness, not xdp_capture.
func BenchmarkBaseline(b *testing.B) {
	testutil.RequireRoot(b, needBPF)
	prog := dropProgram(b)
	b.ResetTimer()
	_, per, err := prog.Benchmark(frame(b, macOther, macOther, nil, 46, 0), b.N, b.ResetTimer)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(per.Nanoseconds()), "ns/frame")
}

// dropProgram is an XDP program that only returns XDP_DROP, closed when b
// ends: what the test harness costs of a benchmark.
func dropProgram(b *testing.B) *ebpf.Program {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, int32(xdpDrop)), asm.Return()},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { prog.Close() })
	return prog
}

// BenchmarkFast measures the fast path's decision per frame: port and
// decision lookups, flow and service counters, bpf_redirect_map (to lo,
// not delivered by test runs), for one copy and for a broadcast of four;
// and with the flow filtered by "tcp port 443" (the tail calls to the
// filter program and to xdp_resume), on a frame it accepts and on one it
// rejects.
func BenchmarkFast(b *testing.B) {
	testutil.RequireRoot(b, needBPF)
	svcs := []DecisionService{{Slot: 0}, {Slot: 1}, {Slot: 2}, {Slot: 3}}
	tcp443 := l4Frame(b, macOther, macA, layers.IPProtocolTCP, 443)
	cases := []struct {
		name   string
		mask   uint64
		cp     Copies
		filter string
		frame  []byte
		want   uint32
	}{
		{"one_copy", 0b1, Copies{Outputs: []int{1}, Services: svcs[:1]}, "", frame(b, macOther, macA, nil, 46, 0), xdpRedirect},
		{"four_copies", 0b1111, Copies{Outputs: []int{1, 1, 1, 1}, Services: svcs}, "", frame(b, macOther, macA, nil, 46, 0), xdpRedirect},
		{"one_copy_tcp", 0b1, Copies{Outputs: []int{1}, Services: svcs[:1]}, "", tcp443, xdpRedirect},
		{"filtered_match", 0b1, Copies{Outputs: []int{1}, Services: svcs[:1]}, "tcp port 443", tcp443, xdpRedirect},
		{"filtered_reject", 0b1, Copies{Outputs: []int{1}, Services: svcs[:1]}, "tcp port 443",
			l4Frame(b, macOther, macA, layers.IPProtocolUDP, 53), xdpPass},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			c, err := Load(Config{})
			testutil.SkipIfNotSupported(b, err)
			defer c.Close()
			tab := &FastTable{Ports: map[[6]byte]uint32{macA: 1},
				Decisions: map[FastKey]Decision{{Src: 1}: {Services: bc.mask, Flows: []uint16{0}}},
				Copies:    map[uint64]Copies{bc.mask: bc.cp}}
			if bc.filter != "" {
				tab.Filters = [][]bpf.Instruction{libpcap(b, bc.filter)}
				tab.Decisions[FastKey{Src: 1}] = Decision{Flows: []uint16{0}, FlowServices: []uint8{0}, FlowFilters: []int{0}}
			}
			if err := c.SetFast(tab); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			v, per, err := c.objs.XdpCapture.Benchmark(bc.frame, b.N, b.ResetTimer)
			if err != nil {
				b.Fatal(err)
			}
			if v != bc.want {
				b.Fatalf("xdp_capture = %s, want %s", verdictName(v), verdictName(bc.want))
			}
			b.ReportMetric(float64(per.Nanoseconds()), "ns/frame")
		})
	}
}

// BenchmarkEncapsulate is the AF_XDP workers' cost of one tunnelled copy,
// per format and family, at 64 and 1518 bytes.
func BenchmarkEncapsulate(b *testing.B) {
	buf := make([]byte, 2048)
	for _, s := range tunnelSpecs() {
		h, err := NewTunnelHeader(s)
		if err != nil {
			b.Fatal(err)
		}
		for _, size := range []int{64, 1518} {
			fr := make([]byte, size)
			b.Run(fmt.Sprintf("%s/%d", specName(s), size), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(size))
				for i := 0; b.Loop(); i++ {
					h.Encapsulate(buf, fr, uint32(i), uint32(i))
				}
			})
		}
	}
}

// BenchmarkTunnelXDP is the fast path's cost of one encapsulated copy next
// to a plain redirect of the same frame to the same veth: the capture
// program runs in BPF_PROG_RUN's live-frames mode (frames really
// redirected, and really sent: the veth's peer drops them in its XDP
// program), deciding one copy to the uplink as a monitor ("plain") or as a
// tunnel (xdp_tunnel then runs in the DEVMAP). ns/copy is wall time per
// frame, the peer's drop included; x_plain is the tunnel's over the
// plain redirect's, measured in the same sub-benchmark.
func BenchmarkTunnelXDP(b *testing.B) {
	testutil.RequireRoot(b, needVeth)
	p := testutil.Prefix(b)
	ns, up, peer := p+"ns", p+"u", p+"w"
	testutil.Netns(b, ns)
	testutil.Veth(b, up, peer, testutil.VethOpts{NetnsA: ns, NetnsB: ns})
	var plain, tun, sink *Capture
	var upIndex int
	err := testutil.InNetns(ns, func() (err error) {
		l, err := net.InterfaceByName(up)
		if err != nil {
			return err
		}
		upIndex = l.Index
		w, err := net.InterfaceByName(peer)
		if err != nil {
			return err
		}
		if sink, err = Attach(w.Index, Config{Unmatched: Drop}); err != nil {
			return err
		}
		if plain, err = Load(Config{}); err != nil {
			return err
		}
		tun, err = Load(Config{})
		return err
	})
	for _, c := range []*Capture{plain, tun, sink} {
		if c != nil {
			defer c.Close()
		}
	}
	testutil.SkipIfNotSupported(b, err)
	table := func(out int) *FastTable {
		return &FastTable{Ports: map[[6]byte]uint32{macA: 1},
			Decisions: map[FastKey]Decision{{Src: 1}: {Services: 1, Flows: []uint16{0}}},
			Copies:    map[uint64]Copies{1: {Outputs: []int{out}, Services: []DecisionService{{Slot: 0}}}}}
	}
	err = testutil.InNetns(ns, func() error {
		if err := plain.SetFast(table(upIndex)); err != nil {
			return err
		}
		return tun.SetFast(&FastTable{})
	})
	if err != nil {
		b.Fatal(err)
	}
	// run sends n frames through c and returns the wall time per frame.
	run := func(c *Capture, fr []byte, n int) time.Duration {
		start := time.Now()
		_, err := c.objs.XdpCapture.Run(&ebpf.RunOptions{Data: fr, Repeat: uint32(n), Flags: unix.BPF_F_TEST_XDP_LIVE_FRAMES})
		if err != nil {
			b.Fatal(err)
		}
		return time.Since(start) / time.Duration(n)
	}
	first := true
	for _, s := range tunnelSpecs() {
		s.MTU = 1500
		h, err := NewTunnelHeader(s)
		if err != nil {
			b.Fatal(err)
		}
		err = testutil.InNetns(ns, func() error {
			if err := tun.SetTunnel(0, h, upIndex); err != nil {
				return err
			}
			if first {
				first = false
				return tun.SetFast(table(TunnelOutput(0)))
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		for _, size := range []int{64, 1518} {
			fr := frame(b, macOther, macA, nil, size-14, 0)
			b.Run(fmt.Sprintf("%s/%d", specName(s), size), func(b *testing.B) {
				before, err := tun.FastTunnel(0)
				if err != nil {
					b.Fatal(err)
				}
				n := max(b.N, 1000)
				b.ResetTimer()
				perTun := run(tun, fr, n)
				b.StopTimer()
				perPlain := run(plain, fr, n)
				after, err := tun.FastTunnel(0)
				if err != nil {
					b.Fatal(err)
				}
				if sent := after.Packets - before.Packets; sent < uint64(n) {
					b.Fatalf("xdp_tunnel sent %d copies of %d frames (%d failed)", sent, n, after.Failed-before.Failed)
				}
				b.ReportMetric(float64(perTun.Nanoseconds()), "ns/copy")
				b.ReportMetric(float64(perPlain.Nanoseconds()), "plain_ns/copy")
				b.ReportMetric(float64(perTun)/float64(perPlain), "x_plain")
			})
		}
	}
}

// BenchmarkTunnelProgram is xdp_tunnel's own cost per copy as the kernel
// times it: BPF_PROG_RUN once per frame (a repeated run would push the
// headers onto the previous run's output), averaged over b.N runs; "drop"
// is a program that only returns XDP_DROP, timed alike: the harness's part
// of the figures. The 1518 B frames are truncated to the MTU of 1500 on
// the way.
func BenchmarkTunnelProgram(b *testing.B) {
	testutil.RequireRoot(b, needBPF)
	c, err := Load(Config{})
	testutil.SkipIfNotSupported(b, err)
	defer c.Close()
	drop := dropProgram(b)
	once := func(b *testing.B, prog *ebpf.Program, fr []byte, want uint32) {
		var total time.Duration
		for b.Loop() {
			v, per, err := prog.Benchmark(fr, 1, nil)
			if err != nil || v != want {
				b.Fatalf("run = %s, %v; want %s", verdictName(v), err, verdictName(want))
			}
			total += per
		}
		b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/frame")
	}
	for _, size := range []int{64, 1518} {
		fr := frame(b, macOther, macA, nil, size-14, 0)
		b.Run(fmt.Sprintf("drop/%d", size), func(b *testing.B) { once(b, drop, fr, xdpDrop) })
	}
	for slot, s := range tunnelSpecs() {
		_, prog := testTunnel(b, c, slot, s)
		for _, size := range []int{64, 1518} {
			fr := frame(b, macOther, macA, nil, size-14, 0)
			b.Run(fmt.Sprintf("%s/%d", specName(s), size), func(b *testing.B) { once(b, prog, fr, xdpPass) })
		}
	}
}

// BenchmarkLive is the fast path's cost of live capture per frame, an
// unfiltered one-copy decision as in BenchmarkFast/one_copy: live off (one
// setting read more than before live capture existed), live on but no
// capture wants this frame (the flow's and the service's masks read), and
// wanted (the perf output of the meta and the frame's bytes, whole or cut
// to 128), at 64 and 1518 bytes. A reader drains the buffer meanwhile;
// lost_% is the share of wanted frames the buffer refused (a refused
// output costs less than a written one).
func BenchmarkLive(b *testing.B) {
	testutil.RequireRoot(b, needBPF)
	cases := []struct {
		name  string
		flows map[uint16]uint8
		snap  uint32
		size  int
	}{
		{"off/64", nil, 0, 64},
		{"off/1518", nil, 0, 1518},
		{"unwanted/64", map[uint16]uint8{9: 1}, 0, 64},
		{"wanted/64", map[uint16]uint8{0: 1}, 0, 64},
		{"wanted/1518", map[uint16]uint8{0: 1}, 0, 1518},
		{"wanted_snap128/1518", map[uint16]uint8{0: 1}, 128, 1518},
	}
	c, err := Load(Config{})
	testutil.SkipIfNotSupported(b, err)
	defer c.Close()
	tab := &FastTable{Ports: map[[6]byte]uint32{macA: 1},
		Decisions: map[FastKey]Decision{{Src: 1}: {Services: 1, Flows: []uint16{0}}},
		Copies:    map[uint64]Copies{1: {Outputs: []int{1}, Services: []DecisionService{{Slot: 0}}}}}
	if err := c.SetFast(tab); err != nil {
		b.Fatal(err)
	}
	r, err := c.OpenLive(8 << 20)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			if err := c.SetLive(bc.flows, nil, bc.snap); err != nil {
				b.Fatal(err)
			}
			fr := frame(b, macOther, macA, nil, bc.size-14, 0)
			var read, lost uint64
			stop, done := make(chan struct{}), make(chan error)
			go func() {
				for {
					select {
					case <-stop:
						close(done)
						return
					default:
					}
					n, err := r.Read(time.Now().Add(10*time.Millisecond), func(LiveMeta, []byte) { read++ })
					lost += n
					if err != nil {
						done <- err
						return
					}
				}
			}()
			b.ResetTimer()
			v, per, err := c.objs.XdpCapture.Benchmark(fr, b.N, b.ResetTimer)
			b.StopTimer()
			close(stop)
			if rerr := <-done; rerr != nil {
				b.Fatal(rerr)
			}
			if err != nil {
				b.Fatal(err)
			}
			if v != xdpRedirect {
				b.Fatalf("xdp_capture = %s, want redirect", verdictName(v))
			}
			b.ReportMetric(float64(per.Nanoseconds()), "ns/frame")
			if bc.flows[0] != 0 {
				// Read's last call may end before the last frames: the
				// kernel's count is the sure one.
				b.ReportMetric(100*float64(lost)/float64(max(read+lost, 1)), "lost_%")
			}
		})
	}
}
