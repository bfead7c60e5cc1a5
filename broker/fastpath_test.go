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
