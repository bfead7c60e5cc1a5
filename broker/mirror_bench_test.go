package broker_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/internal/testutil"
	"github.com/taas-appliance/taas/perf"
)

// BenchmarkMirror measures the whole data path, one source to one monitor,
// in the layout of afxdp-notes gotcha 8: perf's XDP live-frames generator
// on CPU 0 (where the capture veth's NAPI then runs too) sends flat out
// into the capture interface; the broker's one worker is pinned to CPU 1;
// an XDP program on the monitor's peer counts what arrives. Each op is one
// run of runFor; use -benchtime 1x. Mirrored Mpps and Gbit/s count what
// reached the monitor; worker_cpu_% is the worker thread's CPU time over the
// run (100 = one core).
func BenchmarkMirror(b *testing.B) {
	for _, busy := range []bool{false, true} {
		for _, size := range []int{60, 1514} {
			mode := "poll"
			if busy {
				mode = "busy"
			}
			b.Run(fmt.Sprintf("%s/%dB", mode, size+4), func(b *testing.B) { benchMirror(b, size, busy) })
		}
	}
}

const runFor = 5 * time.Second

func benchMirror(b *testing.B, size int, busy bool) {
	testutil.RequireRoot(b, "CAP_NET_ADMIN, CAP_BPF and CAP_SYS_ADMIN for namespaces, veth pairs, XDP and AF_XDP")
	p := testutil.Prefix(b)
	span, mon := testutil.Netns(b, p+"span"), testutil.Netns(b, p+"mon")
	testutil.Veth(b, p+"cap", p+"gen", testutil.VethOpts{NetnsB: span})
	testutil.Veth(b, p+"mon", p+"monp", testutil.VethOpts{NetnsB: mon})
	sink, err := perf.AttachSink(mon, p+"monp")
	testutil.SkipIfNotSupported(b, err)
	b.Cleanup(func() { sink.Close() })

	br, err := broker.New(broker.Config{CPUs: []int{1}, BusyPoll: busy})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { br.Close() })
	src, _ := net.ParseMAC("fa:16:3e:00:00:0a")
	dst, _ := net.ParseMAC("fa:16:3e:00:00:0b")
	var mac [6]byte
	copy(mac[:], src)
	rep, err := br.Apply(context.Background(), &broker.Plan{Version: 1,
		Services: []broker.Service{{ID: "s", Iface: p + "mon"}},
		Flows:    []broker.Flow{{ID: "f", ServiceID: "s", SourcePortID: "p", Iface: p + "cap", MAC: mac, Direction: broker.DirOut}}})
	if err != nil || rep.Flows["f"].State != broker.StateActive {
		b.Fatalf("Apply: %v %+v", err, rep)
	}
	var mirrored, offered, bytes uint64
	var elapsed, workerCPU time.Duration
	var cpuBusy [2]float64
	runs := 0
	for b.Loop() {
		if err := sink.Reset(); err != nil {
			b.Fatal(err)
		}
		cpu0 := threadsCPU(b, broker.WorkerTIDs(br))
		stat0 := cpuStat(b)
		res, err := perf.Generate(context.Background(), perf.Config{Iface: p + "gen", Netns: span, CPU: 0, Duration: runFor,
			Traffic: perf.Traffic{Size: size, SrcMACs: []net.HardwareAddr{src}, DstMACs: []net.HardwareAddr{dst}}})
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // let the last batches drain
		workerCPU += threadsCPU(b, broker.WorkerTIDs(br)) - cpu0
		stat1 := cpuStat(b)
		for i := range cpuBusy {
			busy, total := stat1[i][0]-stat0[i][0], stat1[i][1]-stat0[i][1]
			cpuBusy[i] += 100 * float64(busy) / float64(total)
		}
		n, by, err := sink.Count()
		if err != nil {
			b.Fatal(err)
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
