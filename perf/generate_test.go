package perf

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/testutil"
)

const whyRoot = "CAP_NET_ADMIN and CAP_BPF for namespaces, veth and XDP live frames"

// genLink makes a namespace with a veth gen <-> rx; rx has GRO on so that
// frames redirected into gen are received (afxdp-notes.md gotcha 10).
func genLink(t *testing.T) (ns, gen, rx string) {
	t.Helper()
	p := testutil.Prefix(t)
	ns = testutil.Netns(t, p+"gen")
	// No IPv6 on links made from now on: no router solicitations, so the
	// peer's counters hold the generator's frames and nothing else.
	testutil.Run(t, "ip", "netns", "exec", ns, "sysctl", "-qw",
		"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	gen, rx = p+"g", p+"r"
	testutil.Veth(t, gen, rx, testutil.VethOpts{NetnsA: ns, NetnsB: ns})
	testutil.Run(t, "ip", "netns", "exec", ns, "ethtool", "-K", rx, "gro", "on")
	return ns, gen, rx
}

// rxPackets reads the kernel's rx_packets counter of iface in ns.
func rxPackets(t *testing.T, ns, iface string) uint64 {
	t.Helper()
	out := testutil.Run(t, "ip", "netns", "exec", ns, "cat", "/sys/class/net/"+iface+"/statistics/rx_packets")
	var n uint64
	if _, err := fmt.Sscan(out, &n); err != nil {
		t.Fatalf("rx_packets of %s: %q: %v", iface, out, err)
	}
	return n
}

// startTcpdump captures the first n frames on
// iface into a pcap file, and returns once tcpdump listens. wait returns the
// file when tcpdump has exited.
func startTcpdump(t *testing.T, ns, iface string, n int) (wait func() string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "cap.pcap")
	cmd := exec.Command("ip", "netns", "exec", ns, "tcpdump", "-i", iface, "-n", "-U", "-c", fmt.Sprint(n),
		"-w", file)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start tcpdump: %v", err)
	}
	t.Cleanup(func() {
		// Stopped by pid if it is still running (the test failed early).
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "listening on") {
			break
		}
	}
	go func() {
		for sc.Scan() { // drain the rest so tcpdump never blocks on stderr
		}
	}()
	return func() string {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("tcpdump: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("tcpdump did not see %d frames in 10 s", n)
		}
		return file
	}
}

// readPcap reads the frames of a classic pcap file as tcpdump -w writes it
// (little-endian, microsecond timestamps). pcapgo would pull in
// golang.org/x/net for its BPF filters; the format is two headers.
func readPcap(t *testing.T, file string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 24 || binary.LittleEndian.Uint32(b) != 0xa1b2c3d4 {
		t.Fatalf("%s: not a little-endian pcap file", file)
	}
	var frames [][]byte
	for off := 24; off+16 <= len(b); {
		n := int(binary.LittleEndian.Uint32(b[off+8:]))
		off += 16
		if off+n > len(b) {
			t.Fatalf("%s: truncated record", file)
		}
		frames = append(frames, b[off:off+n])
		off += n
	}
	return frames
}

// TestGenerateCount sends an exact count of tagged frames with varying MACs,
// VLANs and flows into a veth, and checks the peer's kernel counter and a
// tcpdump sample byte for byte against the traffic spec.
func TestGenerateCount(t *testing.T) {
	testutil.RequireRoot(t, whyRoot)
	for _, tc := range []struct {
		name  string
		tr    Traffic
		afxdp bool
	}{
		{"untagged 60", Traffic{}, false},
		{"dot1q 1514 macs flows", Traffic{
			Size:    1514,
			SrcMACs: []net.HardwareAddr{{2, 0, 0, 0, 0, 1}, {0xfa, 0x16, 0x3e, 0, 0, 1}},
			DstMACs: []net.HardwareAddr{{0xfa, 0x16, 0x3e, 0, 0, 1}, {2, 0, 0, 0, 0, 2}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
			VLANs:   VIDRange{100, 103},
			Flows:   6,
		}, false},
		{"qinq 128", Traffic{Size: 128, VLANs: VIDRange{10, 12}, OuterTag: true, Outer: VIDRange{300, 301}}, false},
		{"afxdp qinq 1514", Traffic{Size: 1514, VLANs: VIDRange{10, 12}, OuterTag: true, Outer: VIDRange{300, 301}, Flows: 4}, true},
		{"afxdp 60", Traffic{}, true},
		{"mixed 8 macs 60", Traffic{Mix: true, SrcMACs: eightMACs()}, false},
		{"mixed dot1q 1514", Traffic{Size: 1514, Mix: true, VLANs: VIDRange{7, 8}, Flows: 3}, false},
		{"afxdp mixed 60", Traffic{Mix: true, Flows: 2}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns, gen, rx := genLink(t)
			want, err := tc.tr.Frames()
			if err != nil {
				t.Fatal(err)
			}
			const count, sample = 5000, 96
			wait := startTcpdump(t, ns, rx, sample)
			before := rxPackets(t, ns, rx)
			r, err := Generate(context.Background(), Config{Iface: gen, Netns: ns, Traffic: tc.tr, Count: count, Rate: 200e3, CPU: genCPU, AFXDP: tc.afxdp})
			testutil.SkipIfNotSupported(t, err)
			t.Logf("%v", r)
			if r.Frames != count {
				t.Errorf("Generate offered %d frames, want %d", r.Frames, count)
			}
			if wantBytes := uint64(count * len(want[0])); r.Bytes != wantBytes {
				t.Errorf("Generate offered %d bytes, want %d", r.Bytes, wantBytes)
			}
			if got := rxPackets(t, ns, rx) - before; got != count {
				t.Errorf("%s rx_packets rose by %d, want %d", rx, got, count)
			}
			got := readPcap(t, wait())
			if len(got) != sample {
				t.Fatalf("tcpdump captured %d frames, want %d", len(got), sample)
			}
			// The generator cycles through want in order, starting at 0.
			for i, f := range got {
				if w := want[i%len(want)]; !bytes.Equal(f, w) {
					t.Errorf("frame %d:\n got % x\nwant % x", i, f, w)
				}
			}
		})
	}
}

// TestGeneratePacing checks that the token bucket never sends ahead of its
// rate (a bound that holds however slow the machine is) and logs the rate
// it held.
func TestGeneratePacing(t *testing.T) {
	testutil.RequireRoot(t, whyRoot)
	ns, gen, _ := genLink(t)
	const rate = 100e3
	r, err := Generate(context.Background(), Config{Iface: gen, Netns: ns, Duration: 500 * time.Millisecond, Rate: rate, CPU: -1, Realtime: true})
	testutil.SkipIfNotSupported(t, err)
	t.Logf("asked %.0f pps, held %.0f pps (%v)", rate, float64(r.Frames)/r.Elapsed.Seconds(), r)
	// Never ahead of the clock by more than the bucket (bucketDepth frames).
	if limit := rate*r.Elapsed.Seconds() + bucketDepth + 1; float64(r.Frames) > limit {
		t.Errorf("Generate sent %d frames in %v at %v pps, above the bucket's limit %.0f", r.Frames, r.Elapsed, rate, limit)
	}
	if r.Frames == 0 {
		t.Errorf("Generate sent nothing in %v", r.Elapsed)
	}
}

// sinkLink is genLink with a counting sink on the receiving end.
func sinkLink(t *testing.T) (ns, gen string, s *Sink) {
	t.Helper()
	testutil.RequireRoot(t, whyRoot)
	ns, gen, rx := genLink(t)
	s, err := AttachSink(ns, rx)
	testutil.SkipIfNotSupported(t, err)
	t.Cleanup(func() { s.Close() })
	return ns, gen, s
}

// TestGenerateFlatOutAndSink sends flat out for a short time into a peer with
// the counting sink, and checks that the sink counted every frame offered.
func TestGenerateFlatOutAndSink(t *testing.T) {
	ns, gen, s := sinkLink(t)
	// Pinned: a generator that migrates mid-run leaves the peer's NAPI
	// on the CPU it came from, and the veth ring can overflow there (one
	// CI run lost 3,584 of 1.3 M frames that way).
	r, err := Generate(context.Background(), Config{Iface: gen, Netns: ns, Duration: 300 * time.Millisecond, CPU: genCPU})
	if err != nil {
		t.Fatal(err)
	}
	frames, bytes, err := s.Count()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flat out: %v; sink counted %d frames", r, frames)
	// Same CPU for sender and the peer's NAPI: the veth ring cannot
	// overflow, so nothing offered may be missing.
	if frames != r.Frames || bytes != r.Bytes {
		t.Errorf("sink counted %d frames / %d bytes, generator offered %d / %d", frames, bytes, r.Frames, r.Bytes)
	}
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	if frames, _, _ := s.Count(); frames != 0 {
		t.Errorf("after Reset the sink counts %d frames", frames)
	}
}

// TestSinkMark checks that a sink with a mark counts only the frames that
// carry it in their last byte, whatever their size and tags, and that mark 0
// counts everything again.
func TestSinkMark(t *testing.T) {
	ns, gen, s := sinkLink(t)
	send := func(tr Traffic, n uint64) {
		t.Helper()
		r, err := Generate(context.Background(), Config{Iface: gen, Netns: ns, Traffic: tr, Count: n, CPU: genCPU})
		if err != nil {
			t.Fatal(err)
		}
		if r.Frames != n {
			t.Fatalf("Generate sent %d frames, asked %d", r.Frames, n)
		}
	}
	for _, tr := range []Traffic{
		{},
		{Size: 1514, Flows: 3},
		{Size: 61, VLANs: VIDRange{10, 12}, OuterTag: true},
	} {
		if err := s.SetMark(9); err != nil {
			t.Fatal(err)
		}
		if err := s.Reset(); err != nil {
			t.Fatal(err)
		}
		tr.Mark = 7
		send(tr, 100)
		tr.Mark = 9
		send(tr, 50)
		if frames, _, _ := s.Count(); frames != 50 {
			t.Errorf("size %d: sink with mark 9 counted %d frames, want the 50 marked 9 (of 150)", tr.Size, frames)
		}
		if err := s.SetMark(0); err != nil {
			t.Fatal(err)
		}
		send(tr, 10)
		if frames, _, _ := s.Count(); frames != 60 {
			t.Errorf("size %d: sink without a mark counted %d frames in all, want 50+10", tr.Size, frames)
		}
	}
}
