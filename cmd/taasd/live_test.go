package main

// End-to-end tests of issue 12, live captures: a real taasd (StartTaasd)
// with the xdp data plane, frames injected on a capture veth, the capture
// endpoint read over HTTP and by tshark, on both paths.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket/pcapgo"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
	"github.com/taas-appliance/taas/perf"
)

// liveTopo is a capture veth whose peer (in namespace span) is where
// frames are injected, and a monitor veth whose peer is in namespace mon.
type liveTopo struct {
	span, mon    string
	capIf, monIf string
}

func newLiveTopo(t *testing.T) liveTopo {
	t.Helper()
	p := testutil.Prefix(t)
	tp := liveTopo{span: testutil.Netns(t, p+"span"), mon: testutil.Netns(t, p+"mon"), capIf: p + "cap", monIf: p + "mon"}
	testutil.Veth(t, tp.capIf, tp.capIf+"p", testutil.VethOpts{NetnsB: tp.span})
	testutil.Veth(t, tp.monIf, tp.monIf+"p", testutil.VethOpts{NetnsB: tp.mon})
	testutil.WaitOperUp(t, tp.span, tp.capIf+"p")
	return tp
}

// startLiveTaasd starts taasd with the xdp data plane, on the fast path
// or (fast false) with the fast path turned off.
func startLiveTaasd(t *testing.T, bin string, fast bool) *testutil.Taasd {
	t.Helper()
	args := []string{"--dataplane", "xdp"}
	if !fast {
		file := filepath.Join(t.TempDir(), "taasd.toml")
		if err := os.WriteFile(file, []byte("[broker]\nfast_path = false\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", file)
	}
	return testutil.StartTaasd(t, bin, args...)
}

// liveTshark runs tshark; it returns stdout, and fails the test on an
// error with stderr (where tshark also warns when it runs as root).
func liveTshark(t *testing.T, stdin io.Reader, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command("tshark", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("tshark %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// TestLiveCaptureEndToEnd: on both paths, a capture of a tap service
// holds exactly the frames its monitor got (read there by AF_PACKET and by
// tcpdump), byte for byte, as tshark reads the stream (from stdin and from
// the file), with timestamps within the time they were sent.
func TestLiveCaptureEndToEnd(t *testing.T) { onBothPaths(t, testLiveCaptureEndToEnd) }

// onBothPaths runs test as root on the AF_XDP path, then on the fast path.
func onBothPaths(t *testing.T, test func(t *testing.T, bin string, fast bool)) {
	testutil.RequireRoot(t, e2eRootWhy)
	bin := testutil.BuildTaasd(t)
	for _, tc := range []struct {
		name string
		fast bool
	}{{"af_xdp", false}, {"fast", true}} {
		t.Run(tc.name, func(t *testing.T) { test(t, bin, tc.fast) })
	}
}

func testLiveCaptureEndToEnd(t *testing.T, bin string, fast bool) {
	tp := newLiveTopo(t)
	if fast {
		testutil.Run(t, "ip", "netns", "exec", tp.mon, "ethtool", "-K", tp.monIf+"p", "gro", "on")
	}
	inject := packettest.NewInjector(t, tp.span, tp.capIf+"p")
	monitor := packettest.NewCapture(t, tp.mon, tp.monIf+"p", packettest.IsTest)
	td := startLiveTaasd(t, bin, fast)
	d := &xdpDaemon{url: td.URL}
	vmA, vmB, other := "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b", "fa:16:3e:00:00:0c"
	hwA, hwB, hwO := packettest.MustMAC(vmA), packettest.MustMAC(vmB), packettest.MustMAC(other)
	src := d.createPort(t, "vm-a", vmA, tp.capIf)
	svc := d.createService(t, "web", d.createPort(t, "monitor", "fa:16:3e:00:00:99", tp.monIf))
	flow := d.createFlow(t, "both", svc, src, "BOTH", "0,10-20")
	d.waitStatus(t, "tap_flow", flow, "ACTIVE")
	waitFastPath(t, d.url, tp.capIf, fast)

	// Frames of many sizes, both directions, VLANs in and out of the
	// filter, and frames of neither MAC: what the service delivers is the
	// capture's.
	sizes := []int{60, 64, 128, 512, 1000, 1514}
	var frames [][]byte
	want := map[uint32]bool{}
	for seq := uint32(1); seq <= 48; seq++ {
		var tags []packettest.Tag
		vid := []uint16{0, 15, 30, 10}[seq%4]
		if vid != 0 {
			tags = []packettest.Tag{{TPID: 0x8100, VID: vid}}
		}
		dst, srcMAC := hwB, hwA // OUT
		switch seq % 3 {
		case 1:
			dst, srcMAC = hwA, hwB // IN
		case 2:
			if seq%6 == 2 {
				dst, srcMAC = hwB, hwO // neither
			}
		}
		frames = append(frames, packettest.Frame(dst, srcMAC, tags, seq, sizes[int(seq)%len(sizes)]))
		if vid != 30 && !(dst.String() == hwB.String() && srcMAC.String() == hwO.String()) {
			want[seq] = true
		}
	}
	stopDump := packettest.Tcpdump(t, tp.mon, tp.monIf+"p", "ether proto 0x88b5 or (vlan and ether proto 0x88b5)")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/v2.0/taas/tap_services/%s/capture?count=%d&duration=60",
		d.url, svc, len(want)), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("capture = %d %s", resp.StatusCode, b)
	}
	file := filepath.Join(t.TempDir(), "live.pcapng")
	saved := make(chan error, 1)
	go func() {
		f, err := os.Create(file)
		if err == nil {
			_, err = io.Copy(f, resp.Body)
			err = errors.Join(err, f.Close())
		}
		saved <- err
	}()
	sendStart := time.Now()
	for _, f := range frames {
		if err := inject.Send(f); err != nil {
			t.Fatal(err)
		}
	}
	sendEnd := time.Now()
	select {
	case err := <-saved:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the capture did not end at count=%d within 30s", len(want))
	}
	monitor.WaitN(len(want), 10*time.Second)
	got := monitor.Quiet(200*time.Millisecond, 3*time.Second)
	var dumped [][]byte
	for _, f := range packettest.ReadPcap(t, stopDump(len(want), packettest.IsTest)) {
		if packettest.IsTest(f) {
			dumped = append(dumped, f)
		}
	}

	// tshark reads the stream: from stdin, and converted from the file.
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n := strings.Count(liveTshark(t, f, "-r", "-", "-T", "fields", "-e", "frame.number"), "\n"); n != len(want) {
		t.Errorf("tshark -r - lists %d frames, want %d", n, len(want))
	}
	conv := filepath.Join(t.TempDir(), "live.pcap")
	liveTshark(t, nil, "-r", file, "-F", "nsecpcap", "-w", conv)
	cf, err := os.Open(conv)
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	pr, err := pcapgo.NewReader(cf)
	if err != nil {
		t.Fatal(err)
	}
	var captured [][]byte
	for {
		data, ci, err := pr.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ci.Timestamp.Before(sendStart.Add(-time.Second)) || ci.Timestamp.After(sendEnd.Add(time.Second)) {
			t.Errorf("captured frame at %v, sent from %v to %v", ci.Timestamp, sendStart, sendEnd)
		}
		if ci.Length != len(data) {
			t.Errorf("captured frame of %d bytes, length %d", len(data), ci.Length)
		}
		captured = append(captured, data)
	}
	var wantSeqs []uint32
	for s := range want {
		wantSeqs = append(wantSeqs, s)
	}
	slices.Sort(wantSeqs)
	byMonitor := map[uint32][]byte{}
	for _, f := range got {
		n, _ := packettest.Seq(f)
		byMonitor[n] = f
	}
	for name, fs := range map[string][][]byte{"the capture (tshark)": captured, "AF_PACKET at the monitor": got, "tcpdump at the monitor": dumped} {
		if s := seqsOf(fs); !slices.Equal(s, wantSeqs) {
			t.Errorf("%s: frames %v, want %v", name, s, wantSeqs)
		}
	}
	for _, c := range captured {
		n, _ := packettest.Seq(c)
		if !bytes.Equal(c, byMonitor[n]) {
			t.Errorf("captured frame %d differs from the monitor's:\n got %x\nwant %x", n, c, byMonitor[n])
		}
	}
	t.Logf("%s path: %d frames sent, %d delivered and captured", map[bool]string{true: "fast", false: "AF_XDP"}[fast],
		len(frames), len(captured))
}

// TestLiveCaptureSlowReader: a client that reads 1 KB/s while 100 kpps
// flow for 10 s slows nothing: the monitor gets every copy, taasd's memory
// stays bounded, and the capture's final statistics block counts the
// frames it had no room for. Both paths.
func TestLiveCaptureSlowReader(t *testing.T) { onBothPaths(t, testLiveSlowReader) }

// vmRSS is a process's resident memory in KiB.
func vmRSS(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, errors.New("no VmRSS")
}

func testLiveSlowReader(t *testing.T, bin string, fast bool) {
	// A monitor short of copies is measured once more, from a fresh taasd and
	// topology: a slow reader that held the data path back would starve it
	// every time, while a CPU taken by the other packages' tests (go test
	// runs them at once on 2 cores) seldom does twice.
	for attempt := 1; attempt <= 2; attempt++ {
		var missed uint64
		t.Run(fmt.Sprintf("attempt %d", attempt), func(t *testing.T) { missed = liveSlowReaderOnce(t, bin, fast) })
		if missed == 0 || t.Failed() {
			return
		}
		if attempt == 2 {
			t.Errorf("the monitor missed %d copies in both attempts", missed)
		}
	}
}

// liveSlowReaderOnce is one measurement of testLiveSlowReader: it returns
// how many copies the monitor missed.
func liveSlowReaderOnce(t *testing.T, bin string, fast bool) (missed uint64) {
	const (
		rate     = 100_000
		seconds  = 10
		mark     = 0x5a
		readRate = 1024 // bytes a second
	)
	tp := newLiveTopo(t)
	sink, err := perf.AttachSink(tp.mon, tp.monIf+"p") // an XDP program: the veth takes redirects
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() }) // the namespace goes with the test anyway
	if err := sink.SetMark(mark); err != nil {
		t.Fatal(err)
	}
	td := startLiveTaasd(t, bin, fast)
	d := &xdpDaemon{url: td.URL}
	vmA := "fa:16:3e:00:00:0a"
	src := d.createPort(t, "vm-a", vmA, tp.capIf)
	svc := d.createService(t, "web", d.createPort(t, "monitor", "fa:16:3e:00:00:99", tp.monIf))
	flow := d.createFlow(t, "both", svc, src, "BOTH", nil)
	d.waitStatus(t, "tap_flow", flow, "ACTIVE")
	waitFastPath(t, d.url, tp.capIf, fast)

	// The slow client: a 4 KiB receive buffer, 1 KiB read a second.
	dialer := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); err != nil {
			return err
		}
		return serr
	}}
	hc := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext, DisableCompression: true}}
	resp, err := hc.Get(fmt.Sprintf("%s/v2.0/taas/tap_services/%s/capture?duration=%d", d.url, svc, seconds))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("capture = %d", resp.StatusCode)
	}
	rss0, err := vmRSS(td.Pid())
	if err != nil {
		t.Fatal(err)
	}
	rssMax := rss0
	genDone := make(chan struct{})
	var res perf.Result
	var genErr error
	go func() {
		defer close(genDone)
		res, genErr = perf.Generate(context.Background(), perf.Config{Iface: tp.capIf + "p", Netns: tp.span, CPU: -1,
			Duration: seconds * time.Second, Rate: rate,
			Traffic: perf.Traffic{SrcMACs: []net.HardwareAddr{packettest.MustMAC(vmA)}, Mark: mark}})
	}()
	br := bufio.NewReaderSize(resp.Body, readRate)
	var body bytes.Buffer
	buf := make([]byte, readRate)
	for start := time.Now(); time.Since(start) < seconds*time.Second; time.Sleep(time.Second) {
		n, err := io.ReadFull(br, buf)
		body.Write(buf[:n])
		if err != nil {
			t.Fatalf("slow read: %v", err)
		}
		if rss, err := vmRSS(td.Pid()); err == nil {
			rssMax = max(rssMax, rss)
		}
	}
	<-genDone
	if genErr != nil {
		t.Fatal(genErr)
	}
	// The rest at full speed: the capture has ended at its duration.
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("read the rest: %v", err)
	}
	body.Write(rest)
	if rss, err := vmRSS(td.Pid()); err == nil {
		rssMax = max(rssMax, rss)
	}

	var isbs []pcapgo.NgInterfaceStatistics
	opts := pcapgo.DefaultNgReaderOptions
	opts.StatisticsCallback = func(_ int, s pcapgo.NgInterfaceStatistics) { isbs = append(isbs, s) }
	ng, err := pcapgo.NewNgReader(bytes.NewReader(body.Bytes()), opts)
	if err != nil {
		t.Fatal(err)
	}
	epbs := 0
	for {
		if _, _, err := ng.ReadPacketData(); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("read the stream: %v", err)
			}
			break
		}
		epbs++
	}
	// The monitor's count settles once the last copies are out.
	var monitor uint64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if monitor, _, err = sink.Count(); err != nil {
			t.Fatal(err)
		}
		if monitor >= res.Frames {
			break
		}
	}
	if len(isbs) == 0 {
		t.Fatal("no statistics block in the stream")
	}
	final := isbs[len(isbs)-1]
	t.Logf("%s path, %s; the monitor got %d copies; the slow client got %d bytes, %d frames; final ISB: %d captured, %d dropped; taasd VmRSS %d KiB before, %d KiB at most (+%d KiB)",
		map[bool]string{true: "fast", false: "AF_XDP"}[fast], res, monitor, body.Len(), epbs, final.PacketsReceived,
		final.PacketsDropped, rss0, rssMax, rssMax-rss0)
	if monitor < res.Frames {
		missed = res.Frames - monitor
		t.Logf("the monitor got %d copies of %d frames sent", monitor, res.Frames)
	}
	if final.PacketsDropped == 0 || final.EndTime.IsZero() {
		t.Errorf("final statistics block %+v: want drops (a 1 KB/s reader of %d pps) and an end time", final, rate)
	}
	// /metrics: none runs now, and the totals hold this capture's frames.
	metrics := metricsText(t, d.url)
	for _, want := range []string{"taas_live_captures 0\n", fmt.Sprintf("taas_live_captured_packets_total %d\n", final.PacketsReceived)} {
		if !strings.Contains(metrics, want) {
			t.Errorf("GET /metrics lacks %q", want)
		}
	}
	// Unbounded buffering would hold every frame: 10 s at 100 kpps is
	// over 60 MB of 60-byte frames alone. The capture's budget is 4 MiB.
	if rssMax-rss0 > 64<<10 {
		t.Errorf("taasd's RSS grew by %d KiB during a slow capture", rssMax-rss0)
	}
	return missed
}
