package broker_test

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/internal/testutil"
	"github.com/taas-appliance/taas/perf"
)

// BenchmarkMirror measures the whole data path, one source to one monitor,
// in the layout of afxdp-notes gotcha 8: perf's XDP live-frames generator
// on CPU 0 (where the capture veth's NAPI then runs too) sends flat out
// into the capture interface; the broker's one worker is pinned to CPU 1;
// what arrives at the monitor's peer is counted by one of two sinks:
//
//   - xdpsink: perf's XDP program on the peer counts and drops. On veth the
//     peer's NAPI runs on the sending CPU, so the sink's cost (an skb turned
//     into an XDP buffer) lands on the data-path core.
//   - stack: the peer has no program and steers its receive work with RPS
//     to the core the data path leaves free, as a monitor NIC would take it
//     off the appliance's core; mirrored counts the monitor interface's
//     kernel TX counter.
//
// Each op is one run of runFor; use -benchtime 1x. worker_cpu_% is the
// worker thread's own CPU time (softirq work done on its core, such as the
// peer's NAPI, is not in it: cpu1_busy_% shows the whole core).
//
// Each of those runs on both paths: afxdp (AF_XDP workers) and fast
// (the XDP program decides and redirects through a DEVMAP; the stack sink's
// peer then needs GRO, gotcha 10). fanout4 sends each frame to four
// services on four monitors, each with an xdpsink; mirrored counts copies.
func BenchmarkMirror(b *testing.B) {
	for _, path := range []string{"afxdp", "fast"} {
		fast := path == "fast"
		for _, sink := range []string{"xdpsink", "stack"} {
			for _, size := range []int{60, 1514} {
				b.Run(fmt.Sprintf("%s/%s/%dB/flat", path, sink, size+4), func(b *testing.B) {
					benchMirror(b, mirrorRun{fast: fast, size: size, sink: sink, monitors: 1})
				})
			}
		}
		b.Run(path+"/xdpsink/64B/fanout4", func(b *testing.B) {
			benchMirror(b, mirrorRun{fast: fast, size: 60, sink: "xdpsink", monitors: 4})
		})
		// A tap mirror instead of a flow: the copies are encapsulated and
		// leave through an uplink, whose peer's xdpsink counts them.
		for _, typ := range []broker.TunnelType{broker.TunnelGRE, broker.TunnelVXLAN} {
			b.Run(fmt.Sprintf("%s/xdpsink/64B/%s", path, typ), func(b *testing.B) {
				benchMirror(b, mirrorRun{fast: fast, size: 60, sink: "xdpsink", monitors: 1, tunnel: typ})
			})
		}
		// The mirror has IN and OUT ids (the frames are OUT: one copy
		// each); then the destination port is mirrored too (IN and OUT),
		// so each frame has two tunnel copies through the one uplink.
		b.Run(path+"/xdpsink/64B/gre-inout", func(b *testing.B) {
			benchMirror(b, mirrorRun{fast: fast, size: 60, sink: "xdpsink", monitors: 1, tunnel: broker.TunnelGRE, inOut: true})
		})
		b.Run(path+"/xdpsink/64B/gre-2ports", func(b *testing.B) {
			benchMirror(b, mirrorRun{fast: fast, size: 60, sink: "xdpsink", monitors: 1, tunnel: broker.TunnelGRE, inOut: true,
				dstMirror: true})
		})
		// Paced runs: the loss at a given offered rate, without the
		// overload of a flat-out generator sharing CPU 0 with the capture
		// NAPI.
		// The fast path's rates are about 80 % and 100 % of what it
		// mirrored flat out here. Its stack-sink runs are not paced: all of
		// its work (the monitor peer's skb building included) runs in the
		// generator's softirq on CPU 0, which starves the pacing loop.
		rates := map[string][]float64{"stack": {0.8e6, 1e6, 1.2e6, 1.4e6}}
		if fast {
			rates = map[string][]float64{"xdpsink": {2.6e6, 3.2e6}}
		}
		for _, sink := range []string{"stack", "xdpsink"} {
			for _, rate := range rates[sink] {
				b.Run(fmt.Sprintf("%s/%s/64B/%.1fMpps", path, sink, rate/1e6), func(b *testing.B) {
					benchMirror(b, mirrorRun{fast: fast, size: 60, sink: sink, rate: rate, monitors: 1})
				})
			}
		}
	}
}

// mirrorRun is one BenchmarkMirror configuration.
type mirrorRun struct {
	fast     bool    // broker.Config.FastPath
	size     int     // frame bytes without FCS
	sink     string  // "xdpsink" or "stack"
	rate     float64 // offered frames/s, 0 = flat out
	monitors int     // services, one monitor each, all fed by the one flow's MAC
	// tunnel, when set, makes the one monitor an uplink and the flow a tap
	// mirror (OUT) in this encapsulation.
	tunnel broker.TunnelType
	// inOut gives the tap mirror an IN id too; dstMirror mirrors the
	// destination port as well (IN and OUT ids), through the same uplink.
	inOut, dstMirror bool
}

const runFor = 4 * time.Second

// mirrorRing sets broker.Config.RxRingSize in BenchmarkMirror, to compare
// ring sizes: go test -bench Mirror -args -mirror.ring 2048
var mirrorRing = flag.Int("mirror.ring", 0, "BenchmarkMirror: broker RxRingSize (0 = default)")

// mirrorBusy sets broker.Config.BusyPoll in BenchmarkMirror.
var mirrorBusy = flag.Bool("mirror.busy", false, "BenchmarkMirror: busy-poll workers instead of poll(2)")

// mirrorBench is the lab of one mirrorRun: a generator's veth into the
// capture interface, the monitors (or an uplink) and their sinks, and a
// broker with the run's plan applied on the run's path.
type mirrorBench struct {
	br       *broker.Broker
	sinks    []*perf.Sink
	mons     []string
	gen      string // the generator's interface, in namespace span
	span     string
	src, dst net.HardwareAddr
}

func newMirrorBench(b *testing.B, run mirrorRun) *mirrorBench {
	testutil.RequireRoot(b, "CAP_NET_ADMIN, CAP_BPF and CAP_SYS_ADMIN for namespaces, veth pairs, XDP and AF_XDP")
	sinkMode := run.sink
	p := testutil.Prefix(b)
	span := testutil.Netns(b, p+"span")
	testutil.Veth(b, p+"cap", p+"gen", testutil.VethOpts{NetnsB: span})
	var sinks []*perf.Sink
	var mons []string
	for i := 0; i < run.monitors; i++ {
		name := fmt.Sprintf("%smon%d", p, i)
		ns := testutil.Netns(b, name)
		testutil.Veth(b, name, name+"p", testutil.VethOpts{NetnsB: ns})
		mons = append(mons, name)
		if sinkMode == "xdpsink" {
			sink, err := perf.AttachSink(ns, name+"p")
			testutil.SkipIfNotSupported(b, err)
			b.Cleanup(func() { sink.Close() })
			sinks = append(sinks, sink)
			continue
		}
		// The peer's receive work goes to the core the data path leaves
		// free: CPU 0 beside the userspace worker on CPU 1; CPU 1 on the
		// fast path, whose work all runs in CPU 0's NAPI with the
		// generator.
		rps := 1
		if run.fast {
			rps = 2
			// The fast path's redirect into a veth needs GRO (or XDP) on
			// its peer (gotcha 10).
			testutil.Run(b, "ip", "netns", "exec", ns, "ethtool", "-K", name+"p", "gro", "on")
		}
		testutil.Run(b, "ip", "netns", "exec", ns, "sh", "-c",
			fmt.Sprintf("echo %d > /sys/class/net/%sp/queues/rx-0/rps_cpus", rps, name))
	}

	br, err := broker.New(broker.Config{CPUs: []int{1}, RxRingSize: *mirrorRing, BusyPoll: *mirrorBusy, FastPath: run.fast})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { br.Close() })
	src, _ := net.ParseMAC("fa:16:3e:00:00:0a")
	dst, _ := net.ParseMAC("fa:16:3e:00:00:0b")
	var mac [6]byte
	copy(mac[:], src)
	plan := &broker.Plan{Version: 1}
	for i, m := range mons {
		id := fmt.Sprint(i)
		plan.Services = append(plan.Services, broker.Service{ID: "s" + id, Iface: m})
		plan.Flows = append(plan.Flows, broker.Flow{ID: "f" + id, ServiceID: "s" + id, SourcePortID: "p", Iface: p + "cap", MAC: mac, Direction: broker.DirOut})
	}
	if run.tunnel != 0 {
		// The monitor is an uplink towards a collector behind a next hop
		// whose MAC is known (the sink's): TEST-NET-2, in the veth alone (TEST-NET-1
		// may be the machine's own network).
		peer := strings.Fields(testutil.Run(b, "ip", "-n", mons[0], "-o", "link", "show", mons[0]+"p"))
		peerMAC := peer[slices.Index(peer, "link/ether")+1]
		testutil.Run(b, "ip", "addr", "add", "198.51.100.253/30", "dev", mons[0])
		testutil.Run(b, "ip", "neigh", "replace", "198.51.100.254", "lladdr", peerMAC, "dev", mons[0], "nud", "permanent")
		testutil.Run(b, "ip", "route", "replace", "198.51.100.249/32", "via", "198.51.100.254", "dev", mons[0])
		plan = &broker.Plan{Version: 1, Uplinks: mons[:1], Mirrors: []broker.Mirror{{ID: "m", PortID: "p", Iface: p + "cap",
			MAC: mac, Type: run.tunnel, RemoteIP: netip.MustParseAddr("198.51.100.249"), Tunnels: []broker.Tunnel{{Direction: broker.DirOut, ID: 7}}}}}
		if run.inOut {
			plan.Mirrors[0].Tunnels = append(plan.Mirrors[0].Tunnels, broker.Tunnel{Direction: broker.DirIn, ID: 8})
		}
		if run.dstMirror {
			m := plan.Mirrors[0]
			m.ID, m.PortID, m.Tunnels = "m2", "q", []broker.Tunnel{{Direction: broker.DirIn, ID: 9}, {Direction: broker.DirOut, ID: 10}}
			copy(m.MAC[:], dst)
			plan.Mirrors = append(plan.Mirrors, m)
		}
	}
	rep, err := br.Apply(context.Background(), plan)
	if err != nil || (run.tunnel == 0 && rep.Flows["f0"].State != broker.StateActive) ||
		(run.tunnel != 0 && rep.Mirrors["m"].State != broker.StateActive) {
		b.Fatalf("Apply: %v %+v", err, rep)
	}
	for _, is := range br.Stats().Interfaces {
		if is.Role == "capture" && (is.Path == "fast") != run.fast {
			b.Fatalf("capture takes path %q (%s), want fast=%v", is.Path, is.PathReason, run.fast)
		}
	}
	return &mirrorBench{br: br, sinks: sinks, mons: mons, gen: p + "gen", span: span, src: src, dst: dst}
}

// generate offers frames of the run's size at rate (0: flat out) for d
// and returns what the generator sent and the copies the sinks (or the
// first monitor's TX counter) counted, and their bytes.
func (mb *mirrorBench) generate(b *testing.B, size int, rate float64, d time.Duration) (res perf.Result, n, bytes uint64) {
	for _, sink := range mb.sinks {
		if err := sink.Reset(); err != nil {
			b.Fatal(err)
		}
	}
	tx0 := monTx(b, mb.br, mb.mons[0])
	res, err := perf.Generate(context.Background(), perf.Config{Iface: mb.gen, Netns: mb.span, CPU: 0, Duration: d, Rate: rate,
		Realtime: rate > 0, Traffic: perf.Traffic{Size: size, SrcMACs: []net.HardwareAddr{mb.src}, DstMACs: []net.HardwareAddr{mb.dst}}})
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the last batches drain
	for _, sink := range mb.sinks {
		sn, sby, err := sink.Count()
		if err != nil {
			b.Fatal(err)
		}
		n, bytes = n+sn, bytes+sby
	}
	if mb.sinks == nil {
		tx1 := monTx(b, mb.br, mb.mons[0])
		n, bytes = tx1[0]-tx0[0], tx1[1]-tx0[1]
	}
	return res, n, bytes
}

func benchMirror(b *testing.B, run mirrorRun) {
	mb := newMirrorBench(b, run)
	br := mb.br
	var mirrored, offered, bytes uint64
	var elapsed, workerCPU time.Duration
	var cpuBusy [2]float64
	runs := 0
	for b.Loop() {
		b.Logf("worker threads %v, benchmark thread %d", broker.WorkerTIDs(br), unix.Gettid())
		cpu0 := threadsCPU(b, broker.WorkerTIDs(br))
		stat0 := cpuStat(b)
		res, n, by := mb.generate(b, run.size, run.rate, runFor)
		workerCPU += threadsCPU(b, broker.WorkerTIDs(br)) - cpu0
		stat1 := cpuStat(b)
		for i := range cpuBusy {
			busy, total := stat1[i][0]-stat0[i][0], stat1[i][1]-stat0[i][1]
			cpuBusy[i] += 100 * float64(busy) / float64(total)
		}
		mirrored += n
		runs++
		bytes += by
		offered += res.Frames
		elapsed += res.Elapsed
	}
	s := elapsed.Seconds()
	b.ReportMetric(float64(offered)/s/1e6, "offered_Mpps")
	b.ReportMetric(float64(mirrored)/s/1e6, "mirrored_Mpps")
	// Each offered frame owes one copy per monitor (two tunnel copies
	// with dstMirror).
	per := run.monitors
	if run.dstMirror {
		per = 2
	}
	b.ReportMetric(100*(1-float64(mirrored)/float64(offered)/float64(per)), "loss_%")
	b.ReportMetric(float64(bytes)*8/s/1e9, "mirrored_Gbit/s")
	b.ReportMetric(100*workerCPU.Seconds()/s, "worker_cpu_%")
	b.ReportMetric(cpuBusy[0]/float64(runs), "cpu0_busy_%")
	b.ReportMetric(cpuBusy[1]/float64(runs), "cpu1_busy_%")
	st := br.Stats()
	for _, is := range st.Interfaces {
		b.Logf("%s %s drops %v", is.Role, is.Name, is.Drops)
	}
}

// threadsCPU is the user+system CPU time the threads have used so far.
func threadsCPU(b *testing.B, tids []int) time.Duration {
	var ticks uint64
	for _, tid := range tids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
		if err != nil {
			b.Fatal(err)
		}
		// Fields after the command (which may hold spaces) start after ')';
		// utime and stime are fields 14 and 15, i.e. 12 and 13 after it.
		f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
		for _, i := range []int{11, 12} {
			v, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			ticks += v
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ is 100 on Linux
}

// cpuStat returns, for CPUs 0 and 1, the busy and total jiffies from
// /proc/stat (busy = total - idle - iowait). The whole machine's, so other
// work on it shows too.
func cpuStat(b *testing.B) [2][2]uint64 {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	var out [2][2]uint64
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || (f[0] != "cpu0" && f[0] != "cpu1") {
			continue
		}
		var total uint64
		for _, v := range f[1:] {
			n, _ := strconv.ParseUint(v, 10, 64)
			total += n
		}
		idle, _ := strconv.ParseUint(f[4], 10, 64)
		iowait, _ := strconv.ParseUint(f[5], 10, 64)
		i := int(f[0][3] - '0')
		out[i] = [2]uint64{total - idle - iowait, total}
	}
	return out
}

// monTx is the monitor interface's kernel TX packets and bytes.
func monTx(b *testing.B, br *broker.Broker, name string) [2]uint64 {
	for _, is := range br.Stats().Interfaces {
		if is.Name == name {
			return [2]uint64{is.TxPackets, is.TxBytes}
		}
	}
	b.Fatalf("no stats of %s", name)
	return [2]uint64{}
}
