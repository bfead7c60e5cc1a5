package perf

import (
	"encoding/json"
	"fmt"
	"html"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Results is what one `make bench` run writes to perf/results.
type Results struct {
	// Start is when the run began (RFC 3339, UTC).
	Start string `json:"start"`
	// Host describes the machine and its load, for the reader.
	Host string `json:"host"`
	Rows []Row  `json:"rows"`
	// Control is the control-plane benchmark, when it ran.
	Control []ControlRow `json:"control,omitempty"`
}

// Write writes latest.json, latest.md and latest.svg into dir.
func (r Results) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.md"), []byte(r.Markdown()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "latest.svg"), []byte(r.SVG()), 0o644)
}

// Markdown renders the table, the goals and the control-plane figures.
func (r Results) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run %s on %s. Medians of %s; min–max in brackets. Delivered = copies counted by an XDP\n", r.Start, r.Host, repsText(r.Rows))
	b.WriteString("sink on each monitor link's far end (kernel count, not the peer's); for the vxlan scenarios on the link of a\n")
	b.WriteString("collector behind a router, the copies encapsulated (outer headers counted); Gbit/s of L2 bytes without FCS;\n")
	b.WriteString("CPU = busy time of both cores (generator included), % of one core.\n\n")
	b.WriteString("| scenario | peer | offered Mpps | delivered Mpps | Gbit/s | loss % | CPU % |\n|---|---|---|---|---|---|---|\n")
	for _, sc := range Scenarios {
		for _, w := range r.Rows {
			if w.Scenario != sc.Name {
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %.3f | **%.3f** (%.3f–%.3f) | %.2f (%.2f–%.2f) | %.2f (%.2f–%.2f) | %.0f |\n",
				scenarioLabel(w), w.Peer, w.OfferedMpps, w.DeliveredMpps, w.DeliveredMppsMin, w.DeliveredMppsMax,
				w.Gbps, w.GbpsMin, w.GbpsMax, w.LossPct, w.LossPctMin, w.LossPctMax, w.CPUPct)
		}
	}
	b.WriteString("\nLayouts (CPU placement, afxdp-notes gotcha 8):\n\n")
	seen := map[string]bool{}
	for _, w := range r.Rows {
		if !seen[w.Peer] {
			seen[w.Peer] = true
			fmt.Fprintf(&b, "- %s: %s\n", w.Peer, w.Layout)
		}
	}
	if g := r.goals(); g != "" {
		b.WriteString("\nGoals for taasd (this run):\n\n" + g)
	}
	if f := r.filterRatios(); f != "" {
		b.WriteString("\nFilters (this run): 8 flows on 8 sources, mixed traffic; in filter8 the first flow keeps only `" + FilterExpr + "`\n" +
			"(1 of its frames in 10), mixed8 is the same traffic unfiltered. Capture rate = offered × (1 − loss), the\n" +
			"frames a peer handled in full per second, filtered against unfiltered:\n\n" + f)
	}
	if t := r.tunnelRatios(); t != "" {
		b.WriteString("\nTunnels (this run): a tap mirror in VXLAN to the collector, against the same peer's local mirroring\nand kernel tc mirred into a VXLAN device:\n\n" + t)
	}
	b.WriteString(r.liveSection())
	var drops strings.Builder
	for _, w := range r.Rows {
		sum := map[string]uint64{}
		for _, rep := range w.Reps {
			for k, v := range rep.PeerDrops {
				sum[k] += v
			}
		}
		var tx uint64
		for _, rep := range w.Reps {
			tx += rep.MonitorTxDropped
		}
		if tx > 0 {
			sum["kernel:monitor_tx_dropped"] = tx
		}
		if len(sum) == 0 {
			continue
		}
		keys := slices.Sorted(maps.Keys(sum))
		fmt.Fprintf(&drops, "- %s %s:", w.Peer, w.Scenario)
		for _, k := range keys {
			fmt.Fprintf(&drops, " %s %d", k, sum[k])
		}
		drops.WriteString("\n")
	}
	if drops.Len() > 0 {
		b.WriteString("\nWhere the loss happened, summed over the repetitions: the peer's own drop counters, and the\nkernel's tx_dropped of the monitor links (copies handed over that never reached the sink):\n\n" + drops.String())
	}
	if len(r.Control) > 0 {
		b.WriteString("\nControl plane (taasd API over loopback, concurrent clients):\n\n")
		b.WriteString("| operation | clients | requests | req/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|---|\n")
		for _, c := range r.Control {
			fmt.Fprintf(&b, "| %s | %d | %d | %.0f | %.2f | %.2f | %d |\n", c.Op, c.Clients, c.Requests, c.PerSecond, c.P50ms, c.P99ms, c.Errors)
		}
	}
	return b.String()
}

func repsText(rows []Row) string {
	if len(rows) == 0 {
		return "no repetitions"
	}
	return fmt.Sprintf("%d repetitions", len(rows[0].Reps))
}

func scenarioLabel(w Row) string {
	l := fmt.Sprintf("%s (%d B, 1→%d", w.Scenario, w.FrameSize, w.Fanout)
	for _, sc := range Scenarios {
		if sc.Name == w.Scenario && sc.Capture {
			l += ", 1 live capture"
		}
		if sc.Name == w.Scenario && sc.Sources > 0 {
			l = fmt.Sprintf("%s (%d B, %d flows→%d, mixed", w.Scenario, w.FrameSize, sc.Sources, w.Fanout)
			if sc.FlowFilter != "" {
				l += ", `" + sc.FlowFilter + "` on 1"
			}
		}
	}
	if w.TargetMpps > 0 {
		l += fmt.Sprintf(", paced %.3f Mpps", w.TargetMpps)
	}
	return l + ")"
}

func (r Results) find(peer, scenario string) (Row, bool) {
	for _, w := range r.Rows {
		if w.Peer == peer && w.Scenario == scenario {
			return w, true
		}
	}
	return Row{}, false
}

// goals checks the goals for taasd against this run's rows.
func (r Results) goals() string {
	var b strings.Builder
	mark := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	t64, ok := r.find("taasd", "64B")
	if !ok {
		return ""
	}
	for _, other := range []string{"tc-mirred", "daemonlogger"} {
		if o, ok := r.find(other, "64B"); ok && o.DeliveredMpps > 0 {
			x := t64.DeliveredMpps / o.DeliveredMpps
			fmt.Fprintf(&b, "- 64 B: taasd %.3f Mpps = %.2f× %s (%.3f); goal ≥ 2×: %s\n", t64.DeliveredMpps, x, other, o.DeliveredMpps, mark(x >= 2))
		}
	}
	// Open vSwitch has no goal of its own (issue 11 adds it because
	// operators of upstream TaaS will compare against it).
	for _, other := range []string{"ovs", "ovs-afxdp"} {
		if o, ok := r.find(other, "64B"); ok && o.DeliveredMpps > 0 {
			fmt.Fprintf(&b, "- 64 B: taasd %.3f Mpps = %.2f× %s (%.3f)\n", t64.DeliveredMpps, t64.DeliveredMpps/o.DeliveredMpps, other, o.DeliveredMpps)
		}
	}
	if w, ok := r.find("taasd", "1518B"); ok {
		fmt.Fprintf(&b, "- 1518 B: %.2f Gbit/s mirrored; goal ≥ 12: %s\n", w.Gbps, mark(w.Gbps >= 12))
	}
	if w, ok := r.find("taasd", "lossless80"); ok {
		var lost uint64
		for _, rep := range w.Reps {
			lost += rep.WantedCopies - min(rep.WantedCopies, rep.DeliveredCopies)
		}
		fmt.Fprintf(&b, "- lossless at 80%% of max (%.3f Mpps, %d × %.0f s): %d frames lost in all; goal 0: %s\n",
			w.TargetMpps, len(w.Reps), w.Reps[0].Seconds, lost, mark(lost == 0))
	}
	if w, ok := r.find("taasd", "fanout4"); ok {
		x := w.DeliveredMpps / t64.DeliveredMpps
		fmt.Fprintf(&b, "- 1→4: %.3f M copies/s = %.2f× the 1→1 figure; goal ≥ 0.8×: %s\n", w.DeliveredMpps, x, mark(x >= 0.8))
	}
	var own, sink uint64
	for _, w := range r.Rows {
		for _, rep := range w.Reps {
			if w.Peer == "taasd" && rep.PeerReported != nil {
				own += *rep.PeerReported
				sink += rep.DeliveredCopies
			}
		}
	}
	if sink > 0 {
		fmt.Fprintf(&b, "- cross-check: taasd's own tap-service and tap-mirror counters say %d copies delivered over all runs, the sinks counted %d (%+.3f%%)\n",
			own, sink, 100*(float64(own)-float64(sink))/float64(sink))
	}
	if w, ok := r.find("taasd", "churn"); ok {
		var lost uint64
		changes := 0
		for _, rep := range w.Reps {
			lost += rep.WantedCopies - min(rep.WantedCopies, rep.DeliveredCopies)
			changes += rep.ConfigChanges
		}
		fmt.Fprintf(&b, "- churn: %d flow creates+deletes during the runs, %d frames of the untouched flow lost; goal 0: %s\n",
			changes, lost, mark(lost == 0))
	}
	return b.String()
}

// captureRate is the frames per second a peer handled in full: the
// offered rate less the share of wanted copies lost.
func captureRate(w Row) float64 { return w.OfferedMpps * (1 - w.LossPct/100) }

// filterRatios compares each peer's filter8 row with its mixed8 row; for
// taasd's fast path against the goal (filtering costs at most 20%).
func (r Results) filterRatios() string {
	var b strings.Builder
	for _, w := range r.Rows {
		if w.Scenario != "filter8" {
			continue
		}
		fmt.Fprintf(&b, "- %s: filtered %.3f Mpps offered, %.3f delivered, loss %.2f%%", w.Peer, w.OfferedMpps, w.DeliveredMpps, w.LossPct)
		u, ok := r.find(w.Peer, "mixed8")
		if !ok || captureRate(u) == 0 {
			b.WriteString("\n")
			continue
		}
		x := captureRate(w) / captureRate(u)
		fmt.Fprintf(&b, "; unfiltered %.3f offered, %.3f delivered, loss %.2f%%; capture rate filtered/unfiltered %.2f×",
			u.OfferedMpps, u.DeliveredMpps, u.LossPct, x)
		if w.Peer == "taasd" {
			ok := "met"
			if x < 0.8 {
				ok = "NOT met"
			}
			fmt.Fprintf(&b, "; goal ≥ 0.8×: %s", ok)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// tunnelRatios compares each taasd path's vxlan rows with its local rows
// and with tc mirred into a kernel VXLAN device.
func (r Results) tunnelRatios() string {
	var b strings.Builder
	for _, peer := range []string{"taasd", "taasd-afxdp"} {
		for _, c := range []struct {
			tunnel, local, unit string
			v                   func(Row) float64
		}{
			{"vxlan64B", "64B", "Mpps", func(w Row) float64 { return w.DeliveredMpps }},
			{"vxlan1518B", "1518B", "Gbit/s", func(w Row) float64 { return w.Gbps }},
		} {
			w, ok := r.find(peer, c.tunnel)
			if !ok {
				continue
			}
			fmt.Fprintf(&b, "- %s %s: %.3f %s encapsulated", peer, c.tunnel, c.v(w), c.unit)
			if l, ok := r.find(peer, c.local); ok && c.v(l) > 0 {
				fmt.Fprintf(&b, " = %.2f× its local %s (%.3f)", c.v(w)/c.v(l), c.local, c.v(l))
			}
			if t, ok := r.find("tc-mirred", c.tunnel); ok && c.v(t) > 0 {
				fmt.Fprintf(&b, " = %.2f× tc-mirred to a VXLAN device (%.3f)", c.v(w)/c.v(t), c.v(t))
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// Peer colours in the chart.
var peerColour = map[string]string{"taasd": "#1b7837", "taasd-afxdp": "#7fbf7b", "tc-mirred": "#2166ac", "daemonlogger": "#b2182b",
	"netsniff-ng": "#8c6bb1", "ovs": "#e08214", "ovs-afxdp": "#fdb863"}

// SVG draws delivered Mpps per scenario, one bar per peer, as a grouped
// bar chart. Hand-written: a few rectangles and labels; the chart
// libraries would add a font rasteriser and image packages to the module
// for nothing an SVG viewer does not already do.
func (r Results) SVG() string {
	const (
		w, h           = 900, 420
		left, bottom   = 60, 70
		top, plotRight = 40, 760
	)
	var peers []string
	seen := map[string]bool{}
	for _, row := range r.Rows {
		if !seen[row.Peer] {
			seen[row.Peer] = true
			peers = append(peers, row.Peer)
		}
	}
	var scen []string
	for _, sc := range Scenarios {
		for _, row := range r.Rows {
			if row.Scenario == sc.Name {
				scen = append(scen, sc.Name)
				break
			}
		}
	}
	top1 := 0.0
	for _, row := range r.Rows {
		top1 = max(top1, row.DeliveredMppsMax)
	}
	if top1 == 0 {
		top1 = 1
	}
	ymax := niceCeil(top1)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15">Delivered copies, Mpps (median; whisker = min–max) — %s</text>`+"\n", left, html.EscapeString(r.Start))
	plotH := float64(h - bottom - top)
	y := func(v float64) float64 { return float64(h-bottom) - v/ymax*plotH }
	for i := 0; i <= 5; i++ {
		v := ymax * float64(i) / 5
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%.2f</text>`+"\n",
			left, plotRight, y(v), y(v), left-6, y(v)+4, v)
	}
	if len(scen) > 0 && len(peers) > 0 {
		group := float64(plotRight-left) / float64(len(scen))
		bar := group * 0.8 / float64(len(peers))
		for si, sc := range scen {
			x0 := float64(left) + group*float64(si) + group*0.1
			for pi, p := range peers {
				row, ok := r.find(p, sc)
				if !ok {
					continue
				}
				x := x0 + bar*float64(pi)
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %.3f Mpps</title></rect>`+"\n",
					x, y(row.DeliveredMpps), bar-2, float64(h-bottom)-y(row.DeliveredMpps), peerColour[p], p, sc, row.DeliveredMpps)
				cx := x + (bar-2)/2
				fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="black"/>`+"\n", cx, cx, y(row.DeliveredMppsMin), y(row.DeliveredMppsMax))
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x0+group*0.4, h-bottom+18, html.EscapeString(sc))
		}
	}
	for pi, p := range peers {
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			plotRight+15, top+pi*20, peerColour[p], plotRight+32, top+pi*20+10, html.EscapeString(p))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", left, h-20, html.EscapeString(r.Host))
	b.WriteString("</svg>\n")
	return b.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	p := 1.0
	for p*10 <= v {
		p *= 10
	}
	for p > v*10 {
		p /= 10
	}
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// README markers between which UpdateReadme writes the benchmark table.
const (
	readmeStart = "<!-- bench:start (pasted from perf/results/latest.md) -->"
	readmeEnd   = "<!-- bench:end -->"
)

// UpdateReadme replaces what lies between the benchmark markers of the
// README at path with md. It leaves the README alone and says so when the
// markers are missing.
func UpdateReadme(path, md string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, readmeStart), strings.Index(s, readmeEnd)
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %q ... %q markers", path, readmeStart, readmeEnd)
	}
	s = s[:i+len(readmeStart)] + "\n" + md + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}
