package perf

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/testutil"
)

// newTestLab builds a bench lab with monitors monitor links (as root;
// the test is skipped otherwise) and removes it when t ends.
func newTestLab(t *testing.T, monitors int) *Lab {
	t.Helper()
	testutil.RequireRoot(t, "CAP_NET_ADMIN and CAP_BPF for namespaces, veths, XDP and AF_XDP")
	lab, err := NewLab(NewLabPrefix(), monitors)
	testutil.SkipIfNotSupported(t, err)
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("remove lab: %v", err)
		}
	})
	return lab
}

// TestBenchSmoke runs every peer briefly on the bench's own lab: each must
// deliver frames to its monitor (counted by the sink) in the 64B scenario,
// and tc and taasd must keep delivering the untouched flow during churn.
// Loss is logged, not asserted: on a loaded 2-core machine a starved
// thread drops frames whatever the peer does (tests never fail on timing);
// `make bench` measures it.
func TestBenchSmoke(t *testing.T) {
	lab := newTestLab(t, 2)
	dir, bin := t.TempDir(), testutil.BuildTaasd(t)
	peers := []Peer{
		&Taasd{Bin: bin, Dir: dir},
		&Taasd{Bin: bin, Dir: dir, AFXDP: true},
		&TC{},
		Daemonlogger(dir),
		NetsniffNG(dir),
		&OVS{Dir: dir},
		&OVS{Dir: dir, AFXDP: true},
	}
	smoke64 := Scenario{Name: "64B", Size: 60, Fanout: 1}
	churn := Scenario{Name: "churn", Size: 60, Fanout: 1, Select: 2, Churn: true, Seconds: 500 * time.Millisecond}
	for _, p := range peers {
		t.Run(p.Name(), func(t *testing.T) {
			// Paced well below any peer's capacity: every frame must arrive.
			row, err := runScenario(context.Background(), lab, p, smoke64, 20e3, BenchConfig{Reps: 1, Seconds: 500 * time.Millisecond})
			if err != nil {
				t.Fatalf("64B: %v", err)
			}
			r := row.Reps[0]
			t.Logf("64B at 20 kpps: %+v", r)
			if r.DeliveredCopies == 0 {
				// netsniff-ng, with the other test packages loading both
				// cores, twice forwarded its warm-up and then nothing of
				// the run for over 5 s (2 of 8 full-suite runs, never
				// alone). A peer that does not work fails the second try
				// too; one that was stalled once is logged.
				t.Logf("64B: no copy of %d arrived; trying once more with the peer restarted", r.WantedCopies)
				if row, err = runScenario(context.Background(), lab, p, smoke64, 20e3, BenchConfig{Reps: 1, Seconds: 500 * time.Millisecond}); err != nil {
					t.Fatalf("64B, second try: %v", err)
				}
				r = row.Reps[0]
				t.Logf("64B at 20 kpps, second try: %+v", r)
			}
			if r.DeliveredCopies == 0 || r.DeliveredCopies > r.WantedCopies {
				t.Errorf("64B: sink counted %d copies of %d wanted", r.DeliveredCopies, r.WantedCopies)
			}
			if r.PeerReported != nil && *r.PeerReported != r.DeliveredCopies {
				t.Errorf("64B: peer reports %d delivered, the sink counted %d", *r.PeerReported, r.DeliveredCopies)
			}
			row, err = runScenario(context.Background(), lab, p, churn, 20e3, BenchConfig{Reps: 1})
			if err == ErrNoChurn {
				return
			}
			if err != nil {
				t.Fatalf("churn: %v", err)
			}
			r = row.Reps[0]
			t.Logf("churn at 20 kpps: %+v", r)
			if r.ConfigChanges == 0 {
				t.Errorf("churn: no configuration change made")
			}
			if r.DeliveredCopies == 0 || r.DeliveredCopies > r.WantedCopies {
				t.Errorf("churn: untouched flow got %d of %d frames", r.DeliveredCopies, r.WantedCopies)
			}
		})
	}
}

// TestBenchFilterSmoke runs the filter scenario briefly (8 flows on 8
// sources over 2 monitors, mixed traffic, the first flow with
// `tcp port 443`): each peer that can express the filter must deliver
// copies and never more than the flows want (a peer that ignored the
// filter would copy the other 9 frames in 10 of the first source too).
// The unfiltered scenario runs on taasd's fast path only: for the other
// peers it differs from filter8 by the filter alone. Loss is logged, not
// asserted (see TestBenchSmoke).
func TestBenchFilterSmoke(t *testing.T) {
	lab := newTestLab(t, 2)
	dir, bin := t.TempDir(), testutil.BuildTaasd(t)
	cfg := BenchConfig{Reps: 1, Seconds: 500 * time.Millisecond}
	filtered := []Peer{&Taasd{Bin: bin, Dir: dir}, &Taasd{Bin: bin, Dir: dir, AFXDP: true}, &TC{}, &OVS{Dir: dir}, Daemonlogger(dir)}
	for _, c := range []struct {
		sc    Scenario
		peers []Peer
	}{
		{Scenario{Name: "mixed8", Size: 60, Fanout: 2, Sources: 8}, filtered[:1]},
		{Scenario{Name: "filter8", Size: 60, Fanout: 2, Sources: 8, FlowFilter: FilterExpr}, filtered},
	} {
		sc := c.sc
		for _, p := range c.peers {
			t.Run(sc.Name+"/"+p.Name(), func(t *testing.T) {
				smokeRun(t, lab, p, sc, cfg, "sinks")
			})
		}
	}
}

// smokeRun runs sc on p at 20 kpps: the sink (named in messages) must
// count copies, never more than wanted, and as many as the peer reports.
func smokeRun(t *testing.T, lab *Lab, p Peer, sc Scenario, cfg BenchConfig, sink string) Rep {
	t.Helper()
	row, err := runScenario(context.Background(), lab, p, sc, 20e3, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := row.Reps[0]
	t.Logf("%s at 20 kpps: %+v", sc.Name, r)
	if r.DeliveredCopies == 0 || r.DeliveredCopies > r.WantedCopies {
		t.Errorf("%s counted %d copies of %d wanted", sink, r.DeliveredCopies, r.WantedCopies)
	}
	if r.PeerReported != nil && *r.PeerReported != r.DeliveredCopies {
		t.Errorf("peer reports %d copies, the %s counted %d", *r.PeerReported, sink, r.DeliveredCopies)
	}
	return r
}

// TestCopiesPerEntry checks the count of wanted copies against the
// traffic: 8 sources in turn over 10 kinds, the first source filtered on
// `tcp port 443`.
func TestCopiesPerEntry(t *testing.T) {
	s := Setup{Fanout: 2, Sources: benchSources(8)}
	tr := Traffic{SrcMACs: s.Sources, Mix: true}
	for _, tc := range []struct {
		filter string
		cycle  uint64 // copies per 80 frames
	}{
		{"", 80},
		{FilterExpr, 70 + 1},
		{"udp", 70 + 5},
		{"tcp port 80 or tcp port 22", 70 + 2},
	} {
		t.Run(tc.filter, func(t *testing.T) {
			s.FlowFilter = tc.filter
			per, err := copiesPerEntry(tr, s.flows())
			if err != nil {
				t.Fatal(err)
			}
			if len(per) != 80 {
				t.Fatalf("copiesPerEntry: %d entries, want 80", len(per))
			}
			if got := wantedCopies(per, 80); got != tc.cycle {
				t.Errorf("wantedCopies(80) = %d, want %d", got, tc.cycle)
			}
			if got, want := wantedCopies(per, 801), 10*tc.cycle+per[0]; got != want {
				t.Errorf("wantedCopies(801) = %d, want %d", got, want)
			}
		})
	}
	if got := monitorExpr(s.flows(), 0); !strings.HasPrefix(got, "(ether src fa:16:3e:be:00:01 and (tcp port 80 or tcp port 22)) or (ether src fa:16:3e:be:01:02)") {
		t.Errorf("monitorExpr(0) = %q", got)
	}
	if _, err := compilePcap("tcp port"); err == nil {
		t.Errorf("compilePcap(%q): nil error", "tcp port")
	}
}

// TestBenchTunnelSmoke runs the vxlan scenarios briefly: taasd on both
// paths and tc mirred into a kernel VXLAN device must get copies to the
// collector's sink behind the router, and the peers without tunnels say
// so. Loss is logged, not asserted (see TestBenchSmoke).
func TestBenchTunnelSmoke(t *testing.T) {
	lab := newTestLab(t, 1)
	dir, bin := t.TempDir(), testutil.BuildTaasd(t)
	cfg := BenchConfig{Reps: 1, Seconds: 500 * time.Millisecond}
	for _, sc := range []Scenario{{Name: "vxlan64B", Size: 60, Fanout: 1, Tunnel: "vxlan"},
		{Name: "vxlan1518B", Size: 1514, Fanout: 1, Tunnel: "vxlan"}} {
		for _, p := range []Peer{&Taasd{Bin: bin, Dir: dir}, &Taasd{Bin: bin, Dir: dir, AFXDP: true}, &TC{}} {
			t.Run(sc.Name+"/"+p.Name(), func(t *testing.T) {
				r := smokeRun(t, lab, p, sc, cfg, "collector's sink")
				// Each copy carries VXLAN's 50 bytes of outer headers.
				if want := r.DeliveredCopies * uint64(sc.Size+50); r.DeliveredBytes != want {
					t.Errorf("collector sink counted %d bytes for %d copies, want %d", r.DeliveredBytes, r.DeliveredCopies, want)
				}
			})
		}
	}
	if _, err := runScenario(context.Background(), lab, Daemonlogger(dir), Scenarios[2], 20e3, cfg); !errors.Is(err, ErrNoTunnel) {
		t.Errorf("daemonlogger in %s: %v, want ErrNoTunnel", Scenarios[2].Name, err)
	}
}

// TestResultsWrite checks the files a run writes and the README update.
func TestResultsWrite(t *testing.T) {
	rep := Rep{OfferedFrames: 100, WantedCopies: 100, DeliveredCopies: 90, DeliveredMpps: 0.9, LossPct: 10, Seconds: 1}
	res := Results{Start: "2026-11-24T16:00:00Z", Host: "test host", Rows: []Row{
		{Peer: "taasd", Scenario: "64B", FrameSize: 64, Fanout: 1, Reps: []Rep{rep}},
		{Peer: "tc-mirred", Scenario: "64B", FrameSize: 64, Fanout: 1, Reps: []Rep{rep, rep, rep}},
	}}
	for i := range res.Rows {
		summarise(&res.Rows[i])
	}
	if got := res.Rows[1].LossPct; got != 10 {
		t.Errorf("summarise: median loss %v%%, want 10%%", got)
	}
	dir := t.TempDir()
	if err := res.Write(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"latest.json", "latest.md", "latest.svg"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || !strings.Contains(string(b), "tc-mirred") {
			t.Errorf("%s: %v, or no tc-mirred in it", f, err)
		}
	}
	readme := filepath.Join(dir, "README.md")
	os.WriteFile(readme, []byte("# x\n"+readmeStart+"\nold\n"+readmeEnd+"\ntail\n"), 0o644)
	if err := UpdateReadme(readme, "NEW TABLE\n"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(readme)
	if s := string(b); !strings.Contains(s, "NEW TABLE") || strings.Contains(s, "old") || !strings.HasSuffix(s, readmeEnd+"\ntail\n") {
		t.Errorf("UpdateReadme wrote %q", s)
	}
	if err := UpdateReadme(filepath.Join(dir, "latest.md"), "x"); err == nil {
		t.Errorf("UpdateReadme on a file without markers: nil error")
	}
}

// TestFilterRatios checks the filter section of the report: the capture
// rate of filter8 against mixed8, and the goal for taasd's fast path.
func TestFilterRatios(t *testing.T) {
	row := func(peer, sc string, offered, loss float64) Row {
		return Row{Peer: peer, Scenario: sc, FrameSize: 64, Fanout: 4, OfferedMpps: offered, LossPct: loss, Reps: []Rep{{}}}
	}
	for _, tc := range []struct {
		name string
		rows []Row
		want []string
	}{
		{"met", []Row{row("taasd", "mixed8", 2, 0), row("taasd", "filter8", 1.8, 0)},
			[]string{"- taasd: filtered 1.800 Mpps offered", "filtered/unfiltered 0.90×; goal ≥ 0.8×: met", "| filter8 (64 B, 8 flows→4, mixed, `tcp port 443` on 1)"}},
		{"not met", []Row{row("taasd", "mixed8", 2, 0), row("taasd", "filter8", 2, 25)},
			[]string{"filtered/unfiltered 0.75×; goal ≥ 0.8×: NOT met"}},
		{"no goal for tc", []Row{row("tc-mirred", "mixed8", 1, 50), row("tc-mirred", "filter8", 1, 0)},
			[]string{"filtered/unfiltered 2.00×\n"}},
		{"filtered only", []Row{row("ovs", "filter8", 1, 0)}, []string{"- ovs: filtered 1.000 Mpps offered, 0.000 delivered, loss 0.00%\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			md := Results{Rows: tc.rows}.Markdown()
			for _, w := range tc.want {
				if !strings.Contains(md, w) {
					t.Errorf("Markdown() lacks %q:\n%s", w, md)
				}
			}
		})
	}
}

// TestLiveSection checks the report's paragraph on the capture scenarios
// and the label of their rows.
func TestLiveSection(t *testing.T) {
	row := Row{Peer: "taasd", Scenario: "capture64B", FrameSize: 64, Fanout: 1, OfferedMpps: 3, DeliveredMpps: 2.7, Reps: []Rep{{}},
		Live: &LiveRow{BaseOfferedMpps: 3.1, BaseDeliveredMpps: 3, Ratio: 0.9, CapturedMfps: 0.5, Dropped: 1234, DropPct: 80,
			ZeroDropMpps: 0.25, Probes: []LiveProbe{{OfferedMpps: 0.5, Captured: 400, Dropped: 100}, {OfferedMpps: 0.25, Captured: 250}}}}
	none := Row{Peer: "taasd-afxdp", Scenario: "capture1518B", FrameSize: 1518, Fanout: 1, Reps: []Rep{{}},
		Live: &LiveRow{Probes: []LiveProbe{{OfferedMpps: 0.1, Captured: 9, Dropped: 1}}}}
	md := Results{Rows: []Row{row, none}}.Markdown()
	for _, w := range []string{
		"| capture64B (64 B, 1→1, 1 live capture) | taasd |",
		"- taasd capture64B: without a capture 3.100 Mpps offered, 3.000 delivered; with one 3.000 offered, 2.700 delivered (0.90×); " +
			"captured 0.500 M frames/s, dropped 1234 (80.00%); 0 drops up to 0.250 Mpps offered " +
			"(probes, Mpps offered: 0.500: 400 captured, 100 dropped; 0.250: 250 captured, 0 dropped)\n",
		"- taasd-afxdp capture1518B: ", "0 drops up to none of the probes",
		"Live capture (issue 12, this run)",
	} {
		if !strings.Contains(md, w) {
			t.Errorf("Markdown() lacks %q:\n%s", w, md)
		}
	}
	if md := (Results{Rows: []Row{{Peer: "taasd", Scenario: "64B", Reps: []Rep{{}}}}}).Markdown(); strings.Contains(md, "Live capture") {
		t.Errorf("Markdown() without capture rows has a live capture paragraph:\n%s", md)
	}
}
