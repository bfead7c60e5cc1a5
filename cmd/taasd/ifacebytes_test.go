package main

// Issue 13: interfaces count RX and TX bytes the same way (whole Ethernet
// frames as on the wire, without FCS: tcpdump's length), so that equal
// traffic shows equal bit/s on the dashboard, in taas/stats and in
// /metrics, on both data paths.

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

// ifaceCounts are an interface's rx/tx counters in taas/stats.
type ifaceCounts struct {
	Name      string `json:"name"`
	Role      string `json:"role"`
	RxPackets uint64 `json:"rx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
}

// byteStats is the part of taas/stats TestInterfaceBytes reads.
type byteStats struct {
	TaasStats struct {
		Interfaces  []ifaceCounts `json:"interfaces"`
		TapServices []struct {
			DeliveredPackets uint64 `json:"delivered_packets"`
			DeliveredBytes   uint64 `json:"delivered_bytes"`
		} `json:"tap_services"`
		TapFlows []struct {
			MatchedPackets uint64 `json:"matched_packets"`
			MatchedBytes   uint64 `json:"matched_bytes"`
		} `json:"tap_flows"`
	} `json:"taas_stats"`
}

func (s byteStats) iface(name string) ifaceCounts {
	for _, is := range s.TaasStats.Interfaces {
		if is.Name == name {
			return is
		}
	}
	return ifaceCounts{Name: name}
}

// TestInterfaceBytes sends frames of known sizes from a source port into a
// tap service, on both paths: the capture's RX, the monitor's TX, the
// service's delivered and the flow's matched bytes are all the frames'
// lengths summed, in taas/stats and /metrics alike. Before issue 13 the
// capture veth's RX (the kernel's rx_bytes, counted by veth's XDP receive
// path after eth_type_trans) was 14 bytes a frame short.
func TestInterfaceBytes(t *testing.T) { onBothPaths(t, testInterfaceBytes) }

func testInterfaceBytes(t *testing.T, bin string, fast bool) {
	p := testutil.Prefix(t)
	span, mon := testutil.Netns(t, p+"span"), testutil.Netns(t, p+"mon")
	capIf, monIf := p+"cap", p+"mon"
	// No IPv6: the kernel's own router solicitations and MLD reports would
	// add frames to the counters.
	testutil.Veth(t, capIf, capIf+"p", testutil.VethOpts{NetnsB: span, NoIPv6: true})
	testutil.Veth(t, monIf, monIf+"p", testutil.VethOpts{NetnsB: mon, NoIPv6: true})
	testutil.WaitOperUp(t, span, capIf+"p")
	if fast {
		// A redirect into a veth needs GRO or XDP on its peer.
		testutil.Run(t, "ip", "netns", "exec", mon, "ethtool", "-K", monIf+"p", "gro", "on")
	}
	inject := packettest.NewInjector(t, span, capIf+"p")
	monitor := packettest.NewCapture(t, mon, monIf+"p", packettest.IsTest)
	td := startLiveTaasd(t, bin, fast)
	d := &xdpDaemon{url: td.URL}
	vmA, vmB := "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b"
	hwA, hwB := packettest.MustMAC(vmA), packettest.MustMAC(vmB)
	src := d.createPort(t, "vm-a", vmA, capIf)
	svc := d.createService(t, "svc", d.createPort(t, "monitor", "fa:16:3e:00:00:99", monIf))
	flow := d.createFlow(t, "out", svc, src, "OUT", nil)
	d.waitStatus(t, "tap_flow", flow, "ACTIVE")
	waitFastPath(t, d.url, capIf, fast)

	var before byteStats
	d.call(t, "GET", "/v2.0/taas/stats", nil, 200, &before)
	const n = 120
	sizes := []int{60, 64, 128, 512, 1000, 1514}
	want := uint64(0)
	for i := range n {
		size := sizes[i%len(sizes)]
		if err := inject.Send(packettest.Frame(hwB, hwA, nil, uint32(i+1), size)); err != nil {
			t.Fatal(err)
		}
		want += uint64(size)
	}
	monitor.WaitN(n, 10*time.Second)
	var got int
	for _, f := range monitor.Quiet(200*time.Millisecond, 3*time.Second) {
		got += len(f)
	}
	t.Logf("%d frames, %d bytes sent; the monitor's peer read %d bytes", n, want, got)

	// The counters, once both interfaces have counted every frame.
	var after byteStats
	deadline := time.Now().Add(10 * time.Second)
	for {
		d.call(t, "GET", "/v2.0/taas/stats", nil, 200, &after)
		c, m := after.iface(capIf), monIf
		if c.RxPackets-before.iface(capIf).RxPackets >= n && after.iface(m).TxPackets-before.iface(m).TxPackets >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: capture %+v, monitor %+v; want %d more frames on each", c, after.iface(m), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c0, c1 := before.iface(capIf), after.iface(capIf)
	m0, m1 := before.iface(monIf), after.iface(monIf)
	t.Logf("capture %s RX %d frames, %d bytes; monitor %s TX %d frames, %d bytes (want %d frames, %d bytes)",
		capIf, c1.RxPackets-c0.RxPackets, c1.RxBytes-c0.RxBytes, monIf, m1.TxPackets-m0.TxPackets, m1.TxBytes-m0.TxBytes, n, want)
	for _, tc := range []struct {
		what      string
		got, want uint64
	}{
		{"capture rx_packets", c1.RxPackets - c0.RxPackets, n},
		{"capture rx_bytes", c1.RxBytes - c0.RxBytes, want},
		{"monitor tx_packets", m1.TxPackets - m0.TxPackets, n},
		{"monitor tx_bytes", m1.TxBytes - m0.TxBytes, want},
		{"tap service delivered_bytes", after.TaasStats.TapServices[0].DeliveredBytes, want},
		{"tap flow matched_bytes", after.TaasStats.TapFlows[0].MatchedBytes, want},
	} {
		if tc.got != tc.want {
			t.Errorf("%s grew by %d, want %d", tc.what, tc.got, tc.want)
		}
	}

	// /metrics serves the same figures (read after taas/stats: counters
	// only grow, and nothing else is sent).
	metrics := metricsText(t, d.url)
	for _, tc := range []struct {
		metric, iface, role string
		want                uint64
	}{
		{"taas_interface_rx_bytes_total", capIf, "capture", c1.RxBytes},
		{"taas_interface_rx_packets_total", capIf, "capture", c1.RxPackets},
		{"taas_interface_tx_bytes_total", monIf, "monitor", m1.TxBytes},
		{"taas_interface_tx_packets_total", monIf, "monitor", m1.TxPackets},
	} {
		re := regexp.MustCompile(fmt.Sprintf(`(?m)^%s\{iface="%s",role="%s"\} (\S+)$`, tc.metric, tc.iface, tc.role))
		m := re.FindStringSubmatch(metrics)
		if m == nil {
			t.Errorf("GET /metrics has no %s of %s", tc.metric, tc.iface)
			continue
		}
		if v, err := strconv.ParseFloat(m[1], 64); err != nil || uint64(v) != tc.want {
			t.Errorf("%s{iface=%q} = %s, want %d as in taas/stats", tc.metric, tc.iface, m[1], tc.want)
		}
	}
}
