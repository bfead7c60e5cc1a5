package broker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/taas-appliance/taas/broker"
)

// BenchmarkLive measures a live capture of the one service of
// BenchmarkMirror's lab (xdpsink monitor, worker on CPU 1, generator on
// CPU 0), on both paths, for 64 and 1518-byte frames, with a reader that
// takes and releases every packet (the API's pcapng writer does more):
//
//   - monitor_Mpps without and with the capture, flat out, in one run: the
//     capture's cost to the monitor's rate;
//   - captured_0drop_kfps: the highest of a ladder of paced rates at which
//     the capture dropped nothing (0 when it drops at every rate); the
//     ladder stops when a tenth of the frames are dropped. On a machine
//     others use too, a stall of the reader drops frames at any rate:
//     each rung is logged.
//
// Each op is one set of runs; use -benchtime 1x.
func BenchmarkLive(b *testing.B) {
	for _, path := range []string{"afxdp", "fast"} {
		for _, size := range []int{60, 1514} {
			b.Run(fmt.Sprintf("%s/%dB", path, size+4), func(b *testing.B) {
				benchLive(b, mirrorRun{fast: path == "fast", size: size, sink: "xdpsink", monitors: 1})
			})
		}
	}
}

// liveRates are the paced rates of BenchmarkLive, in frames/s.
var liveRates = []float64{25e3, 50e3, 100e3, 200e3, 400e3, 800e3, 1.6e6}

const liveRunFor = 2 * time.Second

func benchLive(b *testing.B, run mirrorRun) {
	mb := newMirrorBench(b, run)
	// Without a capture, flat out.
	var without, with, capturedFlat, droppedFlat, best float64
	for b.Loop() {
		res, n, _ := mb.generate(b, run.size, 0, liveRunFor)
		without = float64(n) / res.Elapsed.Seconds()
		b.Logf("without a capture: offered %.3f Mpps, monitor %.3f Mpps", float64(res.Frames)/res.Elapsed.Seconds()/1e6, without/1e6)

		c, st := liveRun(b, mb, func() (float64, uint64) {
			res, n, _ := mb.generate(b, run.size, 0, liveRunFor)
			return res.Elapsed.Seconds(), n
		})
		with = float64(st.n) / st.secs
		capturedFlat, droppedFlat = float64(c.Captured)/st.secs, float64(c.Dropped)/st.secs
		b.Logf("with a capture: monitor %.3f Mpps, captured %.0f frames/s, dropped %.0f frames/s", with/1e6, capturedFlat, droppedFlat)

		best = 0
		for _, rate := range liveRates {
			c, st := liveRun(b, mb, func() (float64, uint64) {
				res, n, _ := mb.generate(b, run.size, rate, liveRunFor)
				return res.Elapsed.Seconds(), n
			})
			b.Logf("paced %.0f frames/s: monitor %d, captured %d (%.0f frames/s), dropped %d", rate, st.n, c.Captured,
				float64(c.Captured)/st.secs, c.Dropped)
			if c.Dropped == 0 {
				best = float64(c.Captured) / st.secs
			}
			if c.Dropped*10 > c.Captured {
				break
			}
		}
	}
	b.ReportMetric(without/1e6, "monitor_Mpps_without")
	b.ReportMetric(with/1e6, "monitor_Mpps_with")
	b.ReportMetric(capturedFlat/1e3, "captured_flat_kfps")
	b.ReportMetric(droppedFlat/1e3, "dropped_flat_kfps")
	b.ReportMetric(best/1e3, "captured_0drop_kfps")
}

type liveRunStats struct {
	secs float64
	n    uint64 // copies the monitor got
}

// liveRun runs gen with a live capture of service s0 read by a goroutine
// that releases every packet, and returns the capture's counters.
func liveRun(b *testing.B, mb *mirrorBench, gen func() (secs float64, n uint64)) (broker.LiveStats, liveRunStats) {
	c, err := mb.br.StartLive(broker.LiveTarget{Kind: broker.LiveService, ID: "s0"}, 0)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for p := range c.Packets() {
			c.Release(p)
		}
	}()
	secs, n := gen()
	time.Sleep(100 * time.Millisecond) // the reader catches up
	st := c.Stats()
	c.Stop()
	<-done
	return st, liveRunStats{secs: secs, n: n}
}
