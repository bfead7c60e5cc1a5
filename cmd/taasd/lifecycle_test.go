package main

// Tests of taasd's process lifecycle (issue 9), on the real binary started
// by testutil.StartTaasd: what a restart costs the monitors.

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

// The restart-loss measurement's traffic: a paced stream, bounded in rate,
// count and time.
const (
	lossRate      = 20000 // frames per second
	lossMaxTime   = 10 * time.Second
	lossMaxFrames = lossRate * int(lossMaxTime/time.Second)
	lossBefore    = 500 * time.Millisecond // of traffic before the restart
	lossAfter     = 500 * time.Millisecond // of copies after they resume
)

// TestRestartLoss streams frames through taasd --dataplane xdp at 20 kpps
// while it is restarted (SIGTERM, then the same binary again on the same
// database), and counts the copies at the monitor: it prints how many
// frames the restart lost and the gap in ms, on the AF_XDP path (the
// monitor's peer takes no redirected frames) and on the fast path (GRO on
// the peer, gotcha 10). It asserts only that the copies resume.
func TestRestartLoss(t *testing.T) {
	testutil.RequireRoot(t, e2eRootWhy)
	bin := testutil.BuildTaasd(t)
	for _, tc := range []struct {
		name string
		fast bool
	}{{"af_xdp", false}, {"fast", true}} {
		t.Run(tc.name, func(t *testing.T) { measureRestartLoss(t, bin, tc.fast) })
	}
}

func measureRestartLoss(t *testing.T, bin string, fast bool) {
	var mu sync.Mutex
	got := make([]bool, lossMaxFrames)
	keep := func(f []byte) bool {
		if n, ok := packettest.Seq(f); ok && int(n) < lossMaxFrames {
			mu.Lock()
			got[n] = true
			mu.Unlock()
		}
		return false // counted here, not kept
	}
	tp := newE2ETopoKeep(t, keep)
	if fast {
		testutil.Run(t, "ip", "netns", "exec", tp.monNS, "ethtool", "-K", tp.monIf+"p", "gro", "on")
	}
	td := testutil.StartTaasd(t, bin, "--dataplane", "xdp")
	d := &xdpDaemon{url: td.URL}
	vmA, vmB := "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b"
	src := d.createPort(t, "vm-a", vmA, tp.capIf)
	mon := d.createPort(t, "monitor", "fa:16:3e:00:00:99", tp.monIf)
	svc := d.createService(t, "svc", mon)
	flow := d.createFlow(t, "both", svc, src, "BOTH", nil)
	d.waitStatus(t, "tap_flow", flow, "ACTIVE")
	waitFastPath(t, d.url, tp.capIf, fast)

	// The sender: frame seq goes at sent[seq] after start, in 1 ms bursts.
	frame := packettest.Frame(packettest.MustMAC(vmB), packettest.MustMAC(vmA), nil, 0, 60)
	sent := make([]time.Duration, lossMaxFrames)
	var stop atomic.Bool
	var nsent atomic.Int64
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		seq := 0
		for seq < lossMaxFrames && !stop.Load() {
			due := min(int(time.Since(start).Seconds()*lossRate)+1, lossMaxFrames)
			for ; seq < due; seq++ {
				binary.BigEndian.PutUint32(frame[14+8:], uint32(seq))
				if err := tp.inject.Send(frame); err != nil {
					done <- err
					return
				}
				sent[seq] = time.Since(start)
				nsent.Store(int64(seq + 1))
			}
			time.Sleep(time.Millisecond)
		}
		done <- nil
	}()
	received := func(from int) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, ok := range got[from:nsent.Load()] {
			if ok {
				return true
			}
		}
		return false
	}

	time.Sleep(lossBefore)
	tTerm := time.Since(start)
	if err := td.Stop(t); err != nil {
		t.Errorf("taasd after SIGTERM: %v", err)
	}
	tExited := time.Since(start)
	afterExit := int(nsent.Load())
	td = td.Restart(t)
	tServing := time.Since(start)
	for !received(afterExit) && time.Since(start) < lossMaxTime {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(lossAfter)
	stop.Store(true)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the last copies reach the capture
	n := int(nsent.Load())

	mu.Lock()
	defer mu.Unlock()
	copies, gapFrom, gapLen, run := 0, 0, 0, 0
	for i, ok := range got[:n] {
		if ok {
			copies++
			run = 0
			continue
		}
		if run++; run > gapLen {
			gapFrom, gapLen = i-run+1, run
		}
	}
	if gapFrom+gapLen == n {
		t.Fatalf("no copies after frame %d of %d: taasd did not resume copying within %v", gapFrom, n, lossMaxTime)
	}
	gapStart := time.Duration(0)
	if gapFrom > 0 {
		gapStart = sent[gapFrom-1]
	}
	gapEnd := sent[gapFrom+gapLen]
	path := "af_xdp"
	if fast {
		path = "fast"
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", d.Seconds()*1000) }
	t.Logf("restart loss on the %s path at %d pps: %d of %d frames lost, %d in one gap of %s (%s to %s), %d elsewhere",
		path, lossRate, n-copies, n, gapLen, ms(gapEnd-gapStart), ms(gapStart), ms(gapEnd), n-copies-gapLen)
	t.Logf("timeline: SIGTERM at %s, exited at %s (stop took %s), serving again at %s (start took %s)",
		ms(tTerm), ms(tExited), ms(tExited-tTerm), ms(tServing), ms(tServing-tExited))
}

// waitFastPath waits (boundedly) until /metrics says capture interface
// iface takes the fast path, or the AF_XDP path when fast is false.
func waitFastPath(t *testing.T, url, iface string, fast bool) {
	t.Helper()
	want := fmt.Sprintf("taas_interface_fast_path{iface=%q} 0", iface)
	if fast {
		want = fmt.Sprintf("taas_interface_fast_path{iface=%q} 1", iface)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(body), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /metrics lacks %q after 10s", want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
