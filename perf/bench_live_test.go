package perf

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/testutil"
)

// TestBenchLiveSmoke runs the capture scenario briefly on both of taasd's
// paths: each repetition must deliver copies without and with the
// capture, the capture must end with its final statistics block and hold
// frames, never more than the data plane says it captured, and one probe
// of the zero-drop search must run. Rates and drops are logged, not
// asserted (see TestBenchSmoke). A peer without live captures says so.
func TestBenchLiveSmoke(t *testing.T) {
	lab := newTestLab(t, 2)
	dir, bin := t.TempDir(), testutil.BuildTaasd(t)
	cfg := BenchConfig{Reps: 1, Seconds: 500 * time.Millisecond, LiveProbes: 1, LiveProbeSeconds: 300 * time.Millisecond}
	sc := Scenario{Name: "capture64B", Size: 60, Fanout: 1, Capture: true}
	for _, p := range []Peer{&Taasd{Bin: bin, Dir: dir}, &Taasd{Bin: bin, Dir: dir, AFXDP: true}} {
		t.Run(p.Name(), func(t *testing.T) {
			start := time.Now()
			row, err := runScenario(context.Background(), lab, p, sc, 0, cfg)
			if err != nil {
				t.Fatal(err)
			}
			r := row.Reps[0]
			t.Logf("%s in %v: %+v, live %+v", sc.Name, time.Since(start).Round(time.Millisecond), r, *r.Live)
			t.Logf("%s", row.Live.summary(row))
			if r.DeliveredCopies == 0 || r.Live.BaseDeliveredMpps == 0 {
				t.Errorf("no copies delivered: %d with the capture, %.3f Mpps without", r.DeliveredCopies, r.Live.BaseDeliveredMpps)
			}
			if !r.Live.Final || r.Live.Captured == 0 || r.Live.Captured > r.Live.Received {
				t.Errorf("live capture: final %v, %d frames in the stream, %d captured by the data plane", r.Live.Final, r.Live.Captured, r.Live.Received)
			}
			// The search goes on past LiveProbes while no probe is clean.
			if len(row.Live.Probes) == 0 || slices.ContainsFunc(row.Live.Probes, func(p LiveProbe) bool { return !p.Final }) {
				t.Errorf("zero-drop search: probes %+v, want at least 1, each ended with its final statistics block", row.Live.Probes)
			}
		})
	}
	if _, err := runScenario(context.Background(), lab, &TC{}, sc, 0, cfg); !errors.Is(err, ErrNoLive) {
		t.Errorf("tc-mirred in %s: %v, want ErrNoLive", sc.Name, err)
	}
}
