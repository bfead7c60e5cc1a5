package perf

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The capture scenarios (issue 12): what one live capture of the tap
// service costs the monitor path, and what it sustains itself.
//
//  1. each repetition measures flat out without a capture, then the same
//     way with one (measureLive): the ratio of the delivered rates is the
//     capture's cost, in the same run;
//  2. the capture is read by LiveCapture as fast as it comes, and runs
//     liveTail past the traffic, so it ends at its duration and writes its
//     final statistics block: the drops are that block's;
//  3. then a few paced probes with a fresh capture each (liveZeroDrop)
//     look for the highest offered rate at which the capture drops
//     nothing, bisecting from the rate it captured flat out.

// ErrNoLive is what a capture scenario returns for a peer without live
// captures.
var ErrNoLive = errors.New("no live captures")

// livePeer is a Peer that can start a live capture of its (first) tap
// service.
type livePeer interface {
	Peer
	StartLive(ctx context.Context, d time.Duration) (*LiveCapture, error)
}

// liveTail is how long a capture runs past the traffic of a measurement
// (measure's first settle takes half a second of quiet, then the traffic):
// it then ends by itself, with its final statistics block.
const liveTail = 2 * time.Second

// LiveRep is the live capture of one repetition of a capture scenario,
// beside the same repetition without it.
type LiveRep struct {
	BaseOfferedMpps   float64 `json:"base_offered_mpps"`
	BaseDeliveredMpps float64 `json:"base_delivered_mpps"`
	// Captured frames came through the stream; Received and Dropped are
	// its final statistics block's.
	Captured     uint64  `json:"captured"`
	Received     uint64  `json:"received"`
	Dropped      uint64  `json:"dropped"`
	Final        bool    `json:"final"`
	CapturedMfps float64 `json:"captured_mfps"`
}

// LiveProbe is one paced run of the search for the highest rate without
// drops.
type LiveProbe struct {
	TargetMpps  float64 `json:"target_mpps"`
	OfferedMpps float64 `json:"offered_mpps"`
	Captured    uint64  `json:"captured"`
	Dropped     uint64  `json:"dropped"`
	Final       bool    `json:"final"`
}

// LiveRow sums up a capture scenario: medians over the repetitions, drops
// summed, and the search.
type LiveRow struct {
	BaseOfferedMpps   float64 `json:"base_offered_mpps"`
	BaseDeliveredMpps float64 `json:"base_delivered_mpps"`
	// Ratio is the delivered rate with the capture over the rate without.
	Ratio        float64 `json:"ratio"`
	CapturedMfps float64 `json:"captured_mfps"`
	Dropped      uint64  `json:"dropped"`
	DropPct      float64 `json:"drop_pct"`
	// ZeroDropMpps is the highest offered rate of the probes at which the
	// capture dropped nothing (0: none did).
	ZeroDropMpps float64     `json:"zero_drop_mpps"`
	Probes       []LiveProbe `json:"probes"`
}

// measureLive runs one repetition without, then with a live capture.
func measureLive(ctx context.Context, lab *Lab, p livePeer, tr Traffic, sc Scenario, secs time.Duration, per []uint64) (Rep, error) {
	base, err := measure(ctx, lab, p, tr, sc, 0, secs, per)
	if err != nil {
		return Rep{}, err
	}
	r, res, err := measureWithLive(ctx, lab, p, tr, sc, 0, secs, per)
	if err != nil {
		return Rep{}, err
	}
	r.Live = &LiveRep{BaseOfferedMpps: base.OfferedMpps, BaseDeliveredMpps: base.DeliveredMpps,
		Captured: res.Frames, Received: res.Received, Dropped: res.Dropped, Final: res.Final}
	if r.Seconds > 0 {
		r.Live.CapturedMfps = float64(res.Frames) / r.Seconds / 1e6
	}
	return r, nil
}

// measureWithLive measures at rate (0: flat out) with a live capture that
// starts once the sinks are quiet and ends liveTail after the traffic.
func measureWithLive(ctx context.Context, lab *Lab, p livePeer, tr Traffic, sc Scenario, rate float64, secs time.Duration, per []uint64) (Rep, LiveResult, error) {
	if err := settle(ctx, lab, false); err != nil {
		return Rep{}, LiveResult{}, err
	}
	lc, err := p.StartLive(ctx, secs+liveTail)
	if err != nil {
		return Rep{}, LiveResult{}, err
	}
	r, err := measure(ctx, lab, p, tr, sc, rate, secs, per)
	if err != nil {
		lc.Close()
		return Rep{}, LiveResult{}, err
	}
	res, err := lc.Wait(secs + liveTail + 10*time.Second)
	if err != nil {
		return Rep{}, LiveResult{}, err
	}
	return r, res, nil
}

// liveZeroDrop sums up row's repetitions and searches for the highest
// offered rate at which one capture drops nothing: c.LiveProbes paced
// runs (up to twice as many while none is clean), the first at the rate
// the capture took flat out, then bisecting between the highest rate
// without drops and the lowest with.
func liveZeroDrop(ctx context.Context, lab *Lab, p livePeer, tr Traffic, sc Scenario, per []uint64, row Row, c BenchConfig) (*LiveRow, error) {
	probes, psecs := c.LiveProbes, c.LiveProbeSeconds
	if probes == 0 {
		probes = 4
	}
	if psecs == 0 {
		psecs = time.Second
	}
	lr := &LiveRow{
		BaseOfferedMpps:   median(row.Reps, func(r Rep) float64 { return r.Live.BaseOfferedMpps }),
		BaseDeliveredMpps: median(row.Reps, func(r Rep) float64 { return r.Live.BaseDeliveredMpps }),
		CapturedMfps:      median(row.Reps, func(r Rep) float64 { return r.Live.CapturedMfps }),
		DropPct: median(row.Reps, func(r Rep) float64 {
			if n := r.Live.Captured + r.Live.Dropped; n > 0 {
				return 100 * float64(r.Live.Dropped) / float64(n)
			}
			return 0
		}),
	}
	for _, r := range row.Reps {
		lr.Dropped += r.Live.Dropped
	}
	if lr.BaseDeliveredMpps > 0 {
		lr.Ratio = row.DeliveredMpps / lr.BaseDeliveredMpps
	}
	lo, hi := 0.0, row.OfferedMpps*1e6
	rate := min(lr.CapturedMfps*1e6, hi)
	// While no probe has been clean, the search goes on halving, up to
	// twice the probes: a rate without drops says more than "none".
	for i := 0; i < probes || lr.ZeroDropMpps == 0 && i < 2*probes; i++ {
		if rate < 1000 || ctx.Err() != nil {
			break
		}
		r, res, err := measureWithLive(ctx, lab, p, tr, sc, rate, psecs, per)
		if err != nil {
			return nil, fmt.Errorf("probe at %.3f Mpps: %w", rate/1e6, err)
		}
		lr.Probes = append(lr.Probes, LiveProbe{TargetMpps: rate / 1e6, OfferedMpps: r.OfferedMpps,
			Captured: res.Frames, Dropped: res.Dropped, Final: res.Final})
		if res.Dropped == 0 && res.Final && res.Frames > 0 {
			lo = rate
			lr.ZeroDropMpps = max(lr.ZeroDropMpps, r.OfferedMpps)
		} else {
			hi = rate
		}
		rate = (lo + hi) / 2
	}
	return lr, nil
}

// median is the median of f over reps.
func median(reps []Rep, f func(Rep) float64) float64 {
	if len(reps) == 0 {
		return 0
	}
	v := make([]float64, len(reps))
	for i, r := range reps {
		v[i] = f(r)
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 0 {
		return (v[n/2-1] + v[n/2]) / 2
	}
	return v[n/2]
}

// summary is the capture scenario's line for the log and the report.
func (lr *LiveRow) summary(row Row) string {
	var b strings.Builder
	fmt.Fprintf(&b, "without a capture %.3f Mpps offered, %.3f delivered; with one %.3f offered, %.3f delivered (%.2f×); "+
		"captured %.3f M frames/s, dropped %d (%.2f%%); 0 drops up to ", lr.BaseOfferedMpps, lr.BaseDeliveredMpps,
		row.OfferedMpps, row.DeliveredMpps, lr.Ratio, lr.CapturedMfps, lr.Dropped, lr.DropPct)
	if lr.ZeroDropMpps > 0 {
		fmt.Fprintf(&b, "%.3f Mpps offered", lr.ZeroDropMpps)
	} else {
		b.WriteString("none of the probes")
	}
	var ps []string
	for _, p := range lr.Probes {
		ps = append(ps, fmt.Sprintf("%.3f: %d captured, %d dropped", p.OfferedMpps, p.Captured, p.Dropped))
	}
	if len(ps) > 0 {
		fmt.Fprintf(&b, " (probes, Mpps offered: %s)", strings.Join(ps, "; "))
	}
	return b.String()
}

// liveSection is the report's paragraph on the capture scenarios.
func (r Results) liveSection() string {
	var b strings.Builder
	for _, w := range r.Rows {
		if w.Live != nil {
			fmt.Fprintf(&b, "- %s %s: %s\n", w.Peer, w.Scenario, w.Live.summary(w))
		}
	}
	if b.Len() == 0 {
		return ""
	}
	return "\nLive capture (issue 12, this run): one flow, one tap service, one live capture of the service read as\n" +
		"fast as it comes (a Go client of GET .../capture, discarding). Each repetition runs flat out without the\n" +
		"capture, then with it; the ratio is delivered with / without. Drops are the capture's final statistics\n" +
		"block's (no room in its buffer, or lost in the kernel). 0 drops: the highest offered rate, of a few paced\n" +
		"probes with a capture each, at which the capture dropped nothing:\n\n" + b.String()
}
