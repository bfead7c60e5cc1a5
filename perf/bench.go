package perf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Scenario is one benchmark case, run the same way for every peer.
type Scenario struct {
	Name string
	// Size is the L2 frame size without FCS (60 is "64 B" on the wire).
	Size   int
	Fanout int
	// Select: one frame in Select is from the source port (wanted); the
	// others come from MACs no one wants. 0 and 1 mean every frame.
	Select int
	// Churn creates and deletes another flow, on a second source MAC that
	// makes up every other frame, while the wanted flow runs.
	Churn bool
	// Load is the offered rate as a fraction of the peer's own median
	// "64B" delivered rate in the same run; 0 sends flat out.
	Load float64
	// Seconds of traffic per repetition; 0 means BenchConfig.Seconds.
	Seconds time.Duration
	// Tunnel, when not empty, sends the copies to the lab's collector
	// encapsulated (a tap mirror of this mirror_type, tunnel id
	// BenchTunnelID) instead of to monitors; the collector's sink counts
	// them, outer headers in the bytes.
	Tunnel string
	// Sources, above 0, sends mixed traffic (Traffic.Mix) from so many
	// source ports in turn, each with a flow of its own: flow i copies to
	// monitor i % Fanout, and the first selects with FlowFilter (a
	// pcap-filter expression; empty: every frame of its source).
	Sources    int
	FlowFilter string
	// Capture runs each repetition twice, the same way: without, then
	// with one live capture of the tap service (issue 12) read as fast as
	// it comes; then searches for the highest offered rate at which that
	// capture drops nothing (measureLive, liveZeroDrop).
	Capture bool
}

// FilterExpr is the filter scenario's expression (issue 11): with
// Traffic.Mix it accepts 1 frame in 10.
const FilterExpr = "tcp port 443"

// BenchTunnelID is the tunnel scenarios' tunnel id (the VXLAN VNI).
const BenchTunnelID = 5001

// Scenarios are the cases, in the order they run (Load needs "64B"
// first).
var Scenarios = []Scenario{
	{Name: "64B", Size: 60, Fanout: 1},
	{Name: "1518B", Size: 1514, Fanout: 1},
	{Name: "vxlan64B", Size: 60, Fanout: 1, Tunnel: "vxlan"},
	{Name: "vxlan1518B", Size: 1514, Fanout: 1, Tunnel: "vxlan"},
	{Name: "fanout4", Size: 60, Fanout: 4},
	{Name: "select1of6", Size: 60, Fanout: 1, Select: 6},
	{Name: "lossless80", Size: 60, Fanout: 1, Load: 0.8, Seconds: 10 * time.Second},
	{Name: "churn", Size: 60, Fanout: 1, Select: 2, Churn: true, Load: 0.5, Seconds: 5 * time.Second},
	// Issue 11: 8 flows on 8 sources, mixed traffic; in filter8 the first
	// flow keeps only `tcp port 443` (1 of its frames in 10), mixed8 is the
	// same without the filter.
	{Name: "mixed8", Size: 60, Fanout: 4, Sources: 8},
	{Name: "filter8", Size: 60, Fanout: 4, Sources: 8, FlowFilter: FilterExpr},
	// Issue 12: one flow, one service, one live capture of the service.
	// Each repetition runs twice and the search adds 4 probes: 2 s of
	// traffic keep the pair of scenarios near 3 minutes for both of
	// taasd's paths.
	{Name: "capture64B", Size: 60, Fanout: 1, Capture: true, Seconds: 2 * time.Second},
	{Name: "capture1518B", Size: 1514, Fanout: 1, Capture: true, Seconds: 2 * time.Second},
}

// MACs of the benchmark's traffic.
var (
	benchPortMAC  = net.HardwareAddr{0xfa, 0x16, 0x3e, 0xbe, 0x00, 0x01}
	benchChurnMAC = net.HardwareAddr{0xfa, 0x16, 0x3e, 0xbe, 0x00, 0x02}
	benchDstMAC   = net.HardwareAddr{0xfa, 0x16, 0x3e, 0xbe, 0x00, 0xff}
)

// BenchConfig is one `make bench` run.
type BenchConfig struct {
	Peers     []Peer
	Scenarios []Scenario
	// Reps per scenario; 0 means 3.
	Reps int
	// Seconds of traffic per repetition; 0 means 3 s.
	Seconds time.Duration
	// Log receives progress lines; nil discards them.
	Log io.Writer
	// LiveProbes is how many offered rates the capture scenarios try in
	// their search for the highest one without drops, LiveProbeSeconds
	// how long each; 0 means 4 probes of 1 s.
	LiveProbes       int
	LiveProbeSeconds time.Duration
}

// Rep is one repetition's measurement.
type Rep struct {
	OfferedFrames   uint64  `json:"offered_frames"`
	WantedCopies    uint64  `json:"wanted_copies"`
	DeliveredCopies uint64  `json:"delivered_copies"`
	DeliveredBytes  uint64  `json:"delivered_bytes"`
	Seconds         float64 `json:"seconds"`
	OfferedMpps     float64 `json:"offered_mpps"`
	DeliveredMpps   float64 `json:"delivered_mpps"`
	Gbps            float64 `json:"gbps"`
	LossPct         float64 `json:"loss_pct"`
	CPUPct          float64 `json:"cpu_pct"`
	// PeerReported is what the peer itself counted as delivered (taasd's
	// tap service counters), to cross-check the sinks' count.
	PeerReported *uint64 `json:"peer_reported,omitempty"`
	// MonitorTxDropped is how many copies the monitor links dropped (kernel
	// tx_dropped): handed over by the peer, never reaching the sink.
	MonitorTxDropped uint64 `json:"monitor_tx_dropped"`
	// PeerDrops are the peer's own drop counters that rose during the
	// repetition, by "role:reason".
	PeerDrops     map[string]uint64 `json:"peer_drops,omitempty"`
	ConfigChanges int               `json:"config_changes,omitempty"`
	// Live is the live capture of a capture scenario's repetition (the
	// figures above are with it running).
	Live *LiveRep `json:"live,omitempty"`
}

// Row is one peer × scenario: medians over the repetitions, with min and
// max, and the repetitions themselves.
type Row struct {
	Peer      string `json:"peer"`
	Scenario  string `json:"scenario"`
	FrameSize int    `json:"frame_size"` // on the wire, with FCS
	Fanout    int    `json:"fanout"`
	Layout    string `json:"layout"`
	// TargetMpps is the paced rate for Load scenarios, 0 for flat out.
	TargetMpps       float64 `json:"target_mpps,omitempty"`
	OfferedMpps      float64 `json:"offered_mpps"`
	DeliveredMpps    float64 `json:"delivered_mpps"`
	DeliveredMppsMin float64 `json:"delivered_mpps_min"`
	DeliveredMppsMax float64 `json:"delivered_mpps_max"`
	Gbps             float64 `json:"gbps"`
	GbpsMin          float64 `json:"gbps_min"`
	GbpsMax          float64 `json:"gbps_max"`
	LossPct          float64 `json:"loss_pct"`
	LossPctMin       float64 `json:"loss_pct_min"`
	LossPctMax       float64 `json:"loss_pct_max"`
	// CPUPct is the busy time of both CPUs (generator included), in % of
	// one core (0-200), median over repetitions.
	CPUPct float64 `json:"cpu_pct"`
	Reps   []Rep   `json:"reps"`
	// Live sums up a capture scenario's live capture.
	Live *LiveRow `json:"live,omitempty"`
}

// RunBench measures every peer on every scenario on lab, the peers one
// after another on the same traffic. A peer that fails a scenario is logged
// and the run goes on; ctx ends it early (the rows so far are returned).
func RunBench(ctx context.Context, lab *Lab, c BenchConfig) ([]Row, error) {
	if c.Reps == 0 {
		c.Reps = 3
	}
	if c.Seconds == 0 {
		c.Seconds = 3 * time.Second
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	var rows []Row
	var errs []error
	for _, p := range c.Peers {
		base := 0.0 // this peer's 64B median delivered Mpps
		for _, sc := range c.Scenarios {
			if ctx.Err() != nil {
				return rows, errors.Join(append(errs, ctx.Err())...)
			}
			rate := 0.0
			if sc.Load > 0 {
				if base == 0 {
					fmt.Fprintf(c.Log, "%s %s: skipped, no 64B figure to scale\n", p.Name(), sc.Name)
					continue
				}
				rate = sc.Load * base * 1e6
			}
			row, err := runScenario(ctx, lab, p, sc, rate, c)
			if errors.Is(err, ErrNoChurn) || errors.Is(err, ErrNoTunnel) || errors.Is(err, ErrNoFilter) || errors.Is(err, ErrNoLive) {
				fmt.Fprintf(c.Log, "%s %s: not applicable (%v)\n", p.Name(), sc.Name, err)
				continue
			}
			if err != nil {
				fmt.Fprintf(c.Log, "%s %s: FAILED: %v\n", p.Name(), sc.Name, err)
				errs = append(errs, fmt.Errorf("%s %s: %w", p.Name(), sc.Name, err))
				continue
			}
			if sc.Name == "64B" {
				base = row.DeliveredMpps
			}
			fmt.Fprintf(c.Log, "%-12s %-11s offered %6.3f Mpps  delivered %6.3f Mpps (%.3f-%.3f)  %6.2f Gbit/s  loss %6.2f%%  cpu %3.0f%%\n",
				p.Name(), sc.Name, row.OfferedMpps, row.DeliveredMpps, row.DeliveredMppsMin, row.DeliveredMppsMax, row.Gbps, row.LossPct, row.CPUPct)
			if row.Live != nil {
				fmt.Fprintf(c.Log, "%-12s %-11s %s\n", p.Name(), sc.Name, row.Live.summary(row))
			}
			rows = append(rows, row)
		}
	}
	return rows, errors.Join(errs...)
}

func runScenario(ctx context.Context, lab *Lab, p Peer, sc Scenario, rate float64, c BenchConfig) (row Row, err error) {
	if sc.Churn {
		// Ask first, before any setup: a peer without runtime changes
		// answers at once.
		if _, err := p.Churn(canceled()); errors.Is(err, ErrNoChurn) {
			return Row{}, err
		}
	}
	if t, ok := p.(tunnelPeer); sc.Tunnel != "" && (!ok || !t.Tunnels()) {
		return Row{}, ErrNoTunnel
	}
	lp, ok := p.(livePeer)
	if sc.Capture && !ok {
		return Row{}, ErrNoLive
	}
	s := Setup{Lab: lab, Fanout: sc.Fanout, PortMAC: benchPortMAC, Filter: sc.Select > 1, Tunnel: sc.Tunnel}
	tr := Traffic{Size: sc.Size, SrcMACs: []net.HardwareAddr{benchPortMAC}, DstMACs: []net.HardwareAddr{benchDstMAC}}
	switch {
	case sc.Churn:
		s.ChurnMAC = benchChurnMAC
		tr.SrcMACs = append(tr.SrcMACs, benchChurnMAC)
	case sc.Sources > 0:
		s.Sources, s.FlowFilter = benchSources(sc.Sources), sc.FlowFilter
		tr.SrcMACs, tr.Mix = s.Sources, true
	default:
		for i := 1; i < sc.Select; i++ {
			tr.SrcMACs = append(tr.SrcMACs, net.HardwareAddr{0x02, 0xbe, 0, 0, 0, byte(i)})
		}
	}
	per, err := copiesPerEntry(tr, s.flows())
	if err != nil {
		return Row{}, err
	}
	if err := p.Start(ctx, s); err != nil {
		return Row{}, errors.Join(err, p.Stop())
	}
	defer func() { err = errors.Join(err, p.Stop()) }()
	if err := warmUp(ctx, lab, tr, lab.sinks(sc)); err != nil {
		return Row{}, fmt.Errorf("warm-up: %w", err)
	}
	secs := sc.Seconds
	if secs == 0 {
		secs = c.Seconds
	}
	row = Row{Peer: p.Name(), Scenario: sc.Name, FrameSize: sc.Size + 4, Fanout: sc.Fanout, Layout: p.Layout(), TargetMpps: rate / 1e6}
	for range c.Reps {
		var r Rep
		if sc.Capture {
			r, err = measureLive(ctx, lab, lp, tr, sc, secs, per)
		} else {
			r, err = measure(ctx, lab, p, tr, sc, rate, secs, per)
		}
		if err != nil {
			return Row{}, err
		}
		row.Reps = append(row.Reps, r)
	}
	summarise(&row)
	if sc.Capture {
		if row.Live, err = liveZeroDrop(ctx, lab, lp, tr, sc, per, row, c); err != nil {
			return Row{}, err
		}
	}
	return row, nil
}

// benchSources are the filter scenarios' source MACs, benchPortMAC first.
func benchSources(n int) []net.HardwareAddr {
	macs := []net.HardwareAddr{benchPortMAC}
	for i := 1; i < n; i++ {
		macs = append(macs, net.HardwareAddr{0xfa, 0x16, 0x3e, 0xbe, 0x01, byte(i)})
	}
	return macs
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// warmUp sends a little traffic until every sink in use has received
// some (the peer is ready), for at most 10 s. Its frames carry a mark of
// their own, so none that the peer still holds counts in a measurement.
func warmUp(ctx context.Context, lab *Lab, tr Traffic, sinks []*Sink) error {
	deadline := time.Now().Add(10 * time.Second)
	mark, err := lab.NewMark()
	if err != nil {
		return err
	}
	tr.Mark = mark
	for {
		if _, err := Generate(ctx, Config{Iface: lab.Gen, Netns: lab.GenNS, Traffic: tr, Count: 2000, Rate: 200e3, CPU: genCPU}); err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
		ready := true
		for _, s := range sinks {
			if f, _, err := s.Count(); err != nil || f == 0 {
				ready = false
			}
		}
		if ready {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return errors.New("no frame reached the sinks in 10 s")
		}
	}
}

// settle waits until the sinks have counted nothing new for half a second
// (the peer has sent all it still held: netsniff-ng's 64 MiB ring takes a
// while, daemonlogger's libpcap hands over whole blocks), checking every
// 100 ms, for at most 5 s. With expectSome, a count still at zero is not
// quiet: a peer whose process was starved of its core may hold every frame
// of a short measurement in one ring block for longer than half a second
// (CI's TestBenchSmoke once counted 0 of 7849 from netsniff-ng that way).
func settle(ctx context.Context, lab *Lab, expectSome bool) error {
	const quiet = 5 // samples in a row without a new frame
	last, same := ^uint64(0), 0
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; {
		n, _, err := delivered(lab.allSinks())
		if err != nil {
			return err
		}
		if n == last && (n > 0 || !expectSome) {
			if same++; same == quiet {
				return nil
			}
		} else {
			last, same = n, 0
		}
		time.Sleep(100 * time.Millisecond)
	}
	return ctx.Err()
}

// burstPeer is a Peer that takes paced traffic in bursts larger than the
// generator's default (Config.Burst).
type burstPeer interface {
	PacedBurst() uint64
}

// measure runs one repetition; per is how many copies each entry of tr
// should yield (copiesPerEntry).
func measure(ctx context.Context, lab *Lab, p Peer, tr Traffic, sc Scenario, rate float64, secs time.Duration, per []uint64) (Rep, error) {
	// Let the peer drain what it still holds of the previous repetition:
	// those frames would load this one (the new mark keeps them out of its
	// count).
	if err := settle(ctx, lab, false); err != nil {
		return Rep{}, err
	}
	mark, err := lab.NewMark()
	if err != nil {
		return Rep{}, err
	}
	tr.Mark = mark
	before, reported, err := p.Reported(ctx)
	if err != nil {
		return Rep{}, err
	}
	txDropped0, err := lab.MonitorTxDropped()
	if err != nil {
		return Rep{}, err
	}
	var (
		wg       sync.WaitGroup
		changes  int
		churnErr error
	)
	churnCtx, stopChurn := context.WithCancel(ctx)
	if sc.Churn {
		wg.Add(1)
		go func() {
			defer wg.Done()
			changes, churnErr = p.Churn(churnCtx)
		}()
	}
	cpu0, err := readCPU()
	if err != nil {
		stopChurn()
		return Rep{}, err
	}
	gc := Config{Iface: lab.Gen, Netns: lab.GenNS, Traffic: tr, Duration: secs, Rate: rate, CPU: genCPU, Realtime: rate > 0}
	if b, ok := p.(burstPeer); ok {
		gc.Burst = b.PacedBurst()
	}
	res, err := Generate(ctx, gc)
	// The rate is what arrived while the generator ran; loss is counted
	// once the peer has drained what it still holds.
	inWindow, inWindowBytes, derr := delivered(lab.sinks(sc))
	cpu1, cerr := readCPU()
	stopChurn()
	wg.Wait()
	if err := errors.Join(err, derr, cerr); err != nil {
		return Rep{}, err
	}
	if churnErr != nil {
		return Rep{}, fmt.Errorf("churn: %w", churnErr)
	}
	if err := settle(ctx, lab, res.Frames > 0); err != nil {
		return Rep{}, err
	}
	// Churn: only monitor 0, the untouched flow's, counts.
	frames, bytes, err := delivered(lab.sinks(sc))
	if err != nil {
		return Rep{}, err
	}
	txDropped1, err := lab.MonitorTxDropped()
	if err != nil {
		return Rep{}, err
	}
	wanted := wantedCopies(per, res.Frames)
	s := res.Elapsed.Seconds()
	r := Rep{
		OfferedFrames:    res.Frames,
		WantedCopies:     wanted,
		DeliveredCopies:  frames,
		DeliveredBytes:   bytes,
		Seconds:          s,
		OfferedMpps:      res.Mpps(),
		DeliveredMpps:    float64(inWindow) / s / 1e6,
		Gbps:             float64(inWindowBytes) * 8 / s / 1e9,
		CPUPct:           cpu1.busyPct(cpu0),
		ConfigChanges:    changes,
		MonitorTxDropped: txDropped1 - txDropped0,
	}
	if wanted > 0 {
		r.LossPct = 100 * (1 - float64(frames)/float64(wanted))
	}
	if reported {
		after, _, err := p.Reported(ctx)
		if err != nil {
			return Rep{}, err
		}
		d := after.Delivered - before.Delivered
		r.PeerReported = &d
		for k, v := range after.Drops {
			if v > before.Drops[k] {
				if r.PeerDrops == nil {
					r.PeerDrops = map[string]uint64{}
				}
				r.PeerDrops[k] = v - before.Drops[k]
			}
		}
	}
	return r, nil
}

func summarise(row *Row) {
	pick := func(f func(Rep) float64) (med, lo, hi float64) {
		v := make([]float64, len(row.Reps))
		for i, r := range row.Reps {
			v[i] = f(r)
		}
		return median(row.Reps, f), slices.Min(v), slices.Max(v)
	}
	row.OfferedMpps, _, _ = pick(func(r Rep) float64 { return r.OfferedMpps })
	row.DeliveredMpps, row.DeliveredMppsMin, row.DeliveredMppsMax = pick(func(r Rep) float64 { return r.DeliveredMpps })
	row.Gbps, row.GbpsMin, row.GbpsMax = pick(func(r Rep) float64 { return r.Gbps })
	row.LossPct, row.LossPctMin, row.LossPctMax = pick(func(r Rep) float64 { return r.LossPct })
	row.CPUPct, _, _ = pick(func(r Rep) float64 { return r.CPUPct })
}

// cpuTimes is the first line of /proc/stat: jiffies over all CPUs.
type cpuTimes struct{ busy, total uint64 }

func readCPU() (cpuTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return cpuTimes{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var t cpuTimes
	for i, s := range f[1:9] { // user..steal; guest time is already in user
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("/proc/stat: %w", err)
		}
		t.total += v
		if i != 3 && i != 4 { // idle, iowait
			t.busy += v
		}
	}
	return t, nil
}

// busyPct is the busy share of all CPUs since before, in % of one core.
func (t cpuTimes) busyPct(before cpuTimes) float64 {
	dt := t.total - before.total
	if dt == 0 {
		return 0
	}
	return 100 * float64(t.busy-before.busy) / float64(dt) * float64(runtime.NumCPU())
}
