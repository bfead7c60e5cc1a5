//go:build !no_ui

package web

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

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

	p := testutil.Prefix(t)
	span := testutil.Netns(t, p+"span")
	sensor := testutil.Netns(t, p+"sens")
	capIf, monIf := p+"cap", p+"mon"
	testutil.Veth(t, capIf, p+"capp", testutil.VethOpts{NetnsB: span})
	testutil.Veth(t, monIf, p+"monp", testutil.VethOpts{NetnsB: sensor})
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
