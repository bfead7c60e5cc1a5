//go:build !no_ui

package web

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/gopacket/pcapgo"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

// TestBrowserDataPlane runs taasd with the real data plane on a capture, a
// monitor and an uplink veth of its own, injects frames from the source
// port's MAC into the capture side (at most 100 a second, for at most 3
// minutes), and runs e2e/dataplane.mjs: counters rise on the page, and
// taking the monitor link down turns the flow DOWN without a reload; a tap
// mirror to the uplink's peer (a collector in a namespace of the test)
// turns ACTIVE with rising counters, and DOWN and back with the uplink.
func TestBrowserDataPlane(t *testing.T) {
	testutil.RequireRoot(t, "CAP_NET_ADMIN, CAP_BPF and CAP_SYS_ADMIN for namespaces, veth pairs, XDP and AF_XDP")
	node := browserTools(t)
	bin := testutil.BuildTaasd(t)

	p, span, _, capIf, monIf := spanAndMonitor(t)
	// The collector is the uplink's peer, on a random /29 of TEST-NET-2.
	collector := testutil.Netns(t, p+"col")
	upIf, colIf := p+"up", p+"upp"
	testutil.Veth(t, upIf, colIf, testutil.VethOpts{NetnsB: collector})
	n := rand.IntN(32)
	testutil.Run(t, "ip", "addr", "add", fmt.Sprintf("198.51.100.%d/29", 8*n+1), "dev", upIf)
	remote := fmt.Sprintf("198.51.100.%d", 8*n+2)
	testutil.Run(t, "ip", "-n", collector, "addr", "add", remote+"/29", "dev", colIf)
	// A redirect into a veth needs GRO or XDP on its peer (the fast path).
	testutil.Run(t, "ip", "netns", "exec", collector, "ethtool", "-K", colIf, "gro", "on")
	testutil.WaitOperUp(t, "", upIf)

	conf := filepath.Join(t.TempDir(), "taasd.toml")
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`dataplane = "xdp"
[[interfaces]]
name = %q
role = "capture"
[[interfaces]]
name = %q
role = "monitor"
[[interfaces]]
name = %q
role = "uplink"
`, capIf, monIf, upIf)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	base := startTaasd(t, bin, "--config", conf)

	// Frames from the source port (direction OUT, so BOTH matches), sent
	// until the test ends; bounded in rate, count and time.
	srcMAC := packettest.MustMAC("fa:16:3e:00:00:0a")
	inject := packettest.NewInjector(t, span, p+"capp")
	stop := make(chan struct{})
	sent := make(chan int, 1)
	go func() {
		n := 0
		defer func() { sent <- n }()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for deadline := time.Now().Add(3 * time.Minute); n < 18000 && time.Now().Before(deadline); n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			frame := packettest.Frame(packettest.MustMAC("fa:16:3e:00:00:0b"), srcMAC, nil, uint32(n), 128)
			if err := inject.Send(frame); err != nil {
				// The capture link may be briefly unable to queue; the page
				// only needs the counters to keep rising.
				continue
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		t.Logf("injected %d frames", <-sent)
	})

	setLink := func(dev, state string) func() error {
		return func() error {
			out, err := exec.Command("ip", "link", "set", "dev", dev, state).CombinedOutput()
			if err != nil {
				return fmt.Errorf("ip link set dev %s %s: %v: %s", dev, state, err, out)
			}
			return nil
		}
	}
	runScript(t, node, "dataplane", base, []string{
		"TAAS_CAPTURE_IFACE=" + capIf, "TAAS_MONITOR_IFACE=" + monIf, "TAAS_SOURCE_MAC=" + srcMAC.String(),
		"TAAS_UPLINK_IFACE=" + upIf, "TAAS_REMOTE_IP=" + remote,
	}, map[string]func() error{"link-down": setLink(monIf, "down"), "link-up": setLink(monIf, "up"),
		"uplink-down": setLink(upIf, "down"), "uplink-up": setLink(upIf, "up")})
}

// TestBrowserDataPlaneCapture runs taasd with the real data plane on a
// capture and a monitor veth of its own, on each path (the in-kernel fast
// path, then AF_XDP only), and e2e/dpcapture.mjs: the Capture dialog of the
// tap service, then of its flow, asks for captureFrames packets, and this
// test injects exactly that many frames from the source port (action
// inject: 1 every 2 ms, bounded in count and time). The dialog must count
// them all and tshark read them; here each saved file must hold the
// injected frames, each once, byte for byte.
func TestBrowserDataPlaneCapture(t *testing.T) {
	testutil.RequireRoot(t, "CAP_NET_ADMIN, CAP_BPF and CAP_SYS_ADMIN for namespaces, veth pairs, XDP and AF_XDP")
	node := browserTools(t)
	bin := testutil.BuildTaasd(t)
	for _, path := range []string{"fast", "afxdp"} {
		t.Run(path, func(t *testing.T) { browserCapture(t, node, bin, path) })
	}
}

func browserCapture(t *testing.T, node, bin, path string) {
	const captureFrames, frameSize = 200, 128
	p, span, sensor, capIf, monIf := spanAndMonitor(t)
	// The fast path redirects into the monitor veth only with GRO (or XDP)
	// on its peer; without, taasd keeps the capture on the AF_XDP path.
	testutil.Run(t, "ip", "netns", "exec", sensor, "ethtool", "-K", p+"monp", "gro", "on")
	conf := filepath.Join(t.TempDir(), "taasd.toml")
	err := os.WriteFile(conf, []byte(fmt.Sprintf("dataplane = \"xdp\"\n[broker]\nfast_path = %v\n"+
		"[[interfaces]]\nname = %q\nrole = \"capture\"\n[[interfaces]]\nname = %q\nrole = \"monitor\"\n",
		path == "fast", capIf, monIf)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	base := startTaasd(t, bin, "--config", conf)

	srcMAC := packettest.MustMAC("fa:16:3e:00:00:0c")
	dstMAC := packettest.MustMAC("fa:16:3e:00:00:0d")
	inject := packettest.NewInjector(t, span, p+"capp")
	frame := func(seq int) []byte { return packettest.Frame(dstMAC, srcMAC, nil, uint32(seq), frameSize) }
	round := 0
	injectRound := func() error {
		first := round * captureFrames
		round++
		for seq := first; seq < first+captureFrames; seq++ {
			var err error
			// The link may be briefly unable to queue: a few tries, then
			// the test fails (it needs every frame).
			for try := 0; try < 50; try++ {
				if err = inject.Send(frame(seq)); err == nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err != nil {
				return fmt.Errorf("inject frame %d: %w", seq, err)
			}
			time.Sleep(2 * time.Millisecond)
		}
		return nil
	}
	runScript(t, node, "dpcapture", base, []string{
		"TAAS_CAPTURE_IFACE=" + capIf, "TAAS_MONITOR_IFACE=" + monIf, "TAAS_SOURCE_MAC=" + srcMAC.String(),
		"TAAS_FRAMES=" + strconv.Itoa(captureFrames), "TAAS_FRAME_SIZE=" + strconv.Itoa(frameSize), "TAAS_PATH=" + path,
	}, map[string]func() error{"inject": injectRound})

	for i, kind := range []string{"service", "flow"} {
		got := readPcapng(t, filepath.Join(artifactsDir(t), fmt.Sprintf("dpcapture-%s-%s.pcapng", path, kind)))
		if len(got) != captureFrames {
			t.Fatalf("%s capture: %d frames, want %d", kind, len(got), captureFrames)
		}
		// Frames the kernel handled on different CPUs may come out of
		// order (one buffer per CPU): each must be there once, whole.
		first := uint32(i * captureFrames)
		seen := map[uint32]bool{}
		for j, f := range got {
			seq, ok := packettest.Seq(f)
			if !ok || seq < first || seq >= first+captureFrames || seen[seq] {
				t.Errorf("%s capture, frame %d: not an injected frame of this round, or twice (seq %d, ok %v): %x", kind, j, seq, ok, f)
				continue
			}
			seen[seq] = true
			if want := frame(int(seq)); !bytes.Equal(f, want) {
				t.Errorf("%s capture, frame %d:\n got %x\nwant %x", kind, j, f, want)
			}
		}
	}
}

// spanAndMonitor builds the test's capture veth capIf, whose peer p+"capp"
// is in the namespace span (frames are injected there), and its monitor
// veth monIf, whose peer p+"monp" is in the namespace sensor; p is the
// test's name prefix.
func spanAndMonitor(t *testing.T) (p, span, sensor, capIf, monIf string) {
	p = testutil.Prefix(t)
	span = testutil.Netns(t, p+"span")
	sensor = testutil.Netns(t, p+"sens")
	capIf, monIf = p+"cap", p+"mon"
	// No IPv6: the span end's own router solicitations would match the
	// flow (its MAC is the source port's) and be counted with the
	// injected frames.
	testutil.Veth(t, capIf, p+"capp", testutil.VethOpts{NetnsB: span, NoIPv6: true})
	testutil.Veth(t, monIf, p+"monp", testutil.VethOpts{NetnsB: sensor, NoIPv6: true})
	return p, span, sensor, capIf, monIf
}

// readPcapng returns the frames of the pcapng file at path.
func readPcapng(t *testing.T, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var frames [][]byte
	for {
		data, _, err := r.ReadPacketData()
		if err == io.EOF {
			return frames
		}
		if err != nil {
			t.Fatalf("%s, frame %d: %v", path, len(frames), err)
		}
		frames = append(frames, data)
	}
}
