package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
	"github.com/taas-appliance/taas/xdpprog"
)

// A plan beyond the program's tables (here one frame matching more flows
// than a decision counts) keeps its capture on the AF_XDP path with the
// reason in Stats, and every frame still arrives once; a plan that fits
// again takes the fast path again, without loss in between.
func TestBrokerFastFallsBackWhenTablesOverflow(t *testing.T) {
	tp := newTopo(t, 1, 1)
	b := newBroker(t, Config{FastPath: true})
	plan := func(v uint64, flows int) *Plan {
		p := &Plan{Version: v, Services: []Service{{ID: "s", Iface: tp.mons[0]}}}
		for i := 0; i < flows; i++ {
			p.Flows = append(p.Flows, Flow{ID: fmt.Sprintf("f%d", i), ServiceID: "s", SourcePortID: "p", Iface: tp.capIf,
				MAC: mac6(hwA), Direction: DirOut})
		}
		return p
	}
	seq := uint32(0)
	roundTrip := func(what string) {
		t.Helper()
		tp.reset()
		sent := map[uint32][]byte{}
		var seqs []uint32
		for i := 0; i < 5; i++ {
			seq++
			sent[seq] = packettest.Frame(hwB, hwA, nil, seq, 60)
			seqs = append(seqs, seq)
			tp.send(t, sent[seq])
		}
		expect(t, tp.caps[0], what, sent, seqs...)
	}

	wantActive(t, apply(t, b, plan(1, xdpprog.MaxDecisionFlows+1)))
	wantPath(t, b, tp.capIf, false)
	if why := capturePathReason(b, tp.capIf); !strings.Contains(why, "fast table does not fit") {
		t.Errorf("path_reason = %q, want the table limit named", why)
	}
	roundTrip("overflowing plan on the AF_XDP path")
	if got := flowMatched(b, "f8"); got != 5 {
		t.Errorf("flow f8 matched %d, want 5", got)
	}

	wantActive(t, apply(t, b, plan(2, 2)))
	wantPath(t, b, tp.capIf, true)
	roundTrip("plan that fits, on the fast path")
	// Counters carried over the change of path.
	if got := flowMatched(b, "f0"); got != 10 {
		t.Errorf("flow f0 matched %d, want 10 (5 per path)", got)
	}
	for _, s := range b.Stats().Services {
		if s.ID == "s" && s.DeliveredPackets != 10 {
			t.Errorf("service s delivered %d, want 10 (5 per path)", s.DeliveredPackets)
		}
	}
}

func capturePathReason(b *Broker, name string) string {
	for _, is := range b.Stats().Interfaces {
		if is.Name == name {
			return is.PathReason
		}
	}
	return ""
}

// A veth monitor whose peer has neither XDP nor GRO cannot take redirected
// frames (gotcha 10): its capture stays on the AF_XDP path, with a warning
// that names the fix and the reason in Stats, and the frames arrive. Once
// the peer is fixed the watch notices and the next Apply takes the fast
// path; when the peer is broken again, the AF_XDP path again.
func TestBrokerFastMonitorRefusingRedirect(t *testing.T) {
	tp := newTopo(t, 1, 1)
	monNS, peer := tp.p+"mon0", tp.mons[0]+"p"
	gro := func(on string) { testutil.Run(t, "ip", "netns", "exec", monNS, "ethtool", "-K", peer, "gro", on) }
	gro("off")
	var logs testutil.LogBuffer
	b := newBroker(t, Config{FastPath: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	plan := &Plan{Version: 1, Services: []Service{{ID: "s", Iface: tp.mons[0]}},
		Flows: []Flow{{ID: "f", ServiceID: "s", SourcePortID: "p", Iface: tp.capIf, MAC: mac6(hwA), Direction: DirOut}}}
	wantActive(t, apply(t, b, plan))
	if _, err := takesRedirect(1); errors.Is(err, errNoXDPFeatures) {
		t.Skipf("cannot tell which monitors take redirected frames: %v", err)
	}
	wantPath(t, b, tp.capIf, false)
	if l := logs.String(); !strings.Contains(l, "gro on") || !strings.Contains(l, tp.mons[0]) {
		t.Errorf("log does not name the monitor and the fix:\n%s", l)
	}
	if why := capturePathReason(b, tp.capIf); !strings.Contains(why, "does not take frames redirected") {
		t.Errorf("path_reason = %q, want the refusing monitor named", why)
	}
	seq := uint32(0)
	roundTrip := func(what string) {
		t.Helper()
		tp.reset()
		seq++
		f := packettest.Frame(hwB, hwA, nil, seq, 60)
		tp.send(t, f)
		expect(t, tp.caps[0], what, map[uint32][]byte{seq: f}, seq)
	}
	roundTrip("refusing monitor, AF_XDP path")

	for _, step := range []struct {
		gro  string
		fast bool
	}{{"on", true}, {"off", false}} {
		gro(step.gro)
		waitStatus(t, b, plan, "path after gro "+step.gro, func(Report) bool {
			for _, is := range b.Stats().Interfaces {
				if is.Name == tp.capIf {
					return (is.Path == PathFast) == step.fast
				}
			}
			return false
		})
		roundTrip("gro " + step.gro)
	}
}

// TestBrokerFastFiltersPerCapture: a capture with a filtered flow and one
// without both take the fast path when the filters fit the program; when
// the filtered capture's table stops fitting (more filters than
// xdpprog.MaxFastFilters), that capture alone goes to the AF_XDP path,
// saying why, and the other's traffic stays in the kernel. Frames arrive
// right throughout.
func TestBrokerFastFiltersPerCapture(t *testing.T) {
	t1, t2 := newTopo(t, 1, 1), newTopo(t, 1, 1)
	b := newBroker(t, Config{FastPath: true})
	plan := &Plan{Version: 1, Services: []Service{{ID: "s1", Iface: t1.mons[0]}, {ID: "s2", Iface: t2.mons[0]}},
		Flows: []Flow{
			{ID: "fa", ServiceID: "s1", SourcePortID: "pa", Iface: t1.capIf, MAC: mac6(hwA), Direction: DirOut, Filter: "ether[25] & 1 = 1"},
			{ID: "fb", ServiceID: "s2", SourcePortID: "pb", Iface: t2.capIf, MAC: mac6(hwB), Direction: DirOut},
		}}
	seq := uint32(0)
	round := func(what string) {
		t.Helper()
		t1.reset()
		t2.reset()
		s1, s2 := map[uint32][]byte{}, map[uint32][]byte{}
		var odd uint32
		for range 2 {
			seq++
			s1[seq] = packettest.Frame(hwC, hwA, nil, seq, 60)
			t1.send(t, s1[seq])
			if seq%2 == 1 {
				odd = seq
			}
		}
		seq++
		s2[seq] = packettest.Frame(hwC, hwB, nil, seq, 60)
		t2.send(t, s2[seq])
		expect(t, t1.caps[0], what+": "+t1.mons[0], s1, odd)
		expect(t, t2.caps[0], what+": "+t2.mons[0], s2, seq)
	}
	wantActive(t, apply(t, b, plan))
	wantPath(t, b, t1.capIf, true)
	wantPath(t, b, t2.capIf, true)
	round("both fast")
	if fs := flowStats(b, "fa"); fs.MatchedPackets != 1 || fs.RejectedPackets != 1 {
		t.Errorf("flow fa matched %d rejected %d, want 1 and 1", fs.MatchedPackets, fs.RejectedPackets)
	}

	// Other ports of the first capture, each with a filter of its own.
	for i := range xdpprog.MaxFastFilters {
		mac := [6]byte{0x02, 0, 0, 0, 1, byte(i)}
		plan.Flows = append(plan.Flows, Flow{ID: fmt.Sprintf("x%d", i), ServiceID: "s1", SourcePortID: "px", Iface: t1.capIf,
			MAC: mac, Direction: DirOut, Filter: fmt.Sprintf("ether[25] = %d", i)})
	}
	plan.Version++
	wantActive(t, apply(t, b, plan))
	wantPath(t, b, t1.capIf, false)
	wantPath(t, b, t2.capIf, true)
	if why := capturePathReason(b, t1.capIf); !strings.Contains(why, "filters") {
		t.Errorf("path_reason = %q, want the filters named", why)
	}
	round("filtered capture on the AF_XDP path")
	if fs := flowStats(b, "fa"); fs.MatchedPackets != 2 || fs.RejectedPackets != 2 {
		t.Errorf("flow fa matched %d rejected %d, want 2 and 2 (1 and 1 per path)", fs.MatchedPackets, fs.RejectedPackets)
	}
	if got := flowMatched(b, "fb"); got != 2 {
		t.Errorf("flow fb matched %d, want 2", got)
	}
}
