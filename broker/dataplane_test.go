package broker

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

const rootWhy = "CAP_NET_ADMIN, CAP_BPF and CAP_SYS_ADMIN for namespaces, veth pairs, XDP and AF_XDP"

// MACs of the source ports of the root tests.
var (
	hwA     = packettest.MustMAC("02:00:00:00:00:0a")
	hwB     = packettest.MustMAC("02:00:00:00:00:0b")
	hwC     = packettest.MustMAC("02:00:00:00:00:0c")
	hwBcast = packettest.MustMAC("ff:ff:ff:ff:ff:ff")
	hwMcast = packettest.MustMAC("01:00:5e:00:00:01")
)

func mac6(hw net.HardwareAddr) (m [6]byte) { copy(m[:], hw); return m }

// topo is a capture interface (P+"cap", in the test's namespace) fed from a
// "span" namespace, and monitor interfaces P+"mon<i>" whose peers sit in
// namespaces where captures read what the broker sends.
type topo struct {
	p      string
	span   string
	capIf  string
	inject *packettest.Injector
	mons   []string
	caps   []*packettest.Capture
}

func newTopo(t *testing.T, monitors, queues int) *topo {
	t.Helper()
	return newTopoKeep(t, monitors, queues, packettest.IsTest)
}

// newTopoKeep is newTopo whose monitor captures record the frames keep
// accepts.
func newTopoKeep(t *testing.T, monitors, queues int, keep func([]byte) bool) *topo {
	t.Helper()
	testutil.RequireRoot(t, rootWhy)
	p := testutil.Prefix(t)
	tp := &topo{p: p, span: testutil.Netns(t, p+"span"), capIf: p + "cap"}
	// The span end sends no IPv6 chatter of its own (router and neighbour
	// solicitations, MLD reports), which flows IN of a port would count:
	// the capture interface sees only the frames a test sends.
	testutil.Run(t, "ip", "netns", "exec", tp.span, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
		"net.ipv6.conf.default.disable_ipv6=1")
	testutil.Veth(t, tp.capIf, p+"capp", testutil.VethOpts{NetnsB: tp.span, Queues: queues})
	for i := 0; i < monitors; i++ {
		ns := testutil.Netns(t, fmt.Sprintf("%smon%d", p, i))
		name := fmt.Sprintf("%smon%d", p, i)
		testutil.Veth(t, name, name+"p", testutil.VethOpts{NetnsB: ns})
		// The fast path's redirect into a veth needs XDP or GRO on its peer
		// (gotcha 10); the AF_XDP path does not care.
		testutil.Run(t, "ip", "netns", "exec", ns, "ethtool", "-K", name+"p", "gro", "on")
		tp.mons = append(tp.mons, name)
		tp.caps = append(tp.caps, packettest.NewCapture(t, ns, name+"p", keep))
	}
	tp.inject = packettest.NewInjector(t, tp.span, p+"capp")
	testutil.WaitOperUp(t, tp.span, p+"capp")
	return tp
}

// send injects frames into the capture interface.
func (tp *topo) send(t *testing.T, frames ...[]byte) {
	t.Helper()
	for _, f := range frames {
		if err := tp.inject.Send(f); err != nil {
			t.Fatal(err)
		}
	}
}

func (tp *topo) reset() {
	for _, c := range tp.caps {
		c.Reset()
	}
}

// newBroker starts a broker and checks, when the test ends, that closing it
// leaves no goroutine or file descriptor behind.
func newBroker(t *testing.T, cfg Config) *Broker {
	t.Helper()
	leaks := testutil.Leaks(t)
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		leaks()
	})
	return b
}

func apply(t *testing.T, b *Broker, p *Plan) Report {
	t.Helper()
	r, err := b.Apply(context.Background(), p)
	if err != nil {
		t.Fatalf("Apply(%d): %v", p.Version, err)
	}
	return r
}

func wantActive(t *testing.T, r Report) {
	t.Helper()
	for id, s := range r.Services {
		if s.State != StateActive {
			t.Fatalf("service %s: %v %q, want ACTIVE", id, s.State, s.Reason)
		}
	}
	for id, s := range r.Flows {
		if s.State != StateActive {
			t.Fatalf("flow %s: %v %q, want ACTIVE", id, s.State, s.Reason)
		}
	}
}

// expect waits for the monitor capture to hold exactly the frames of seqs,
// each once and byte-identical to what was sent.
func expect(t *testing.T, c *packettest.Capture, what string, sent map[uint32][]byte, seqs ...uint32) {
	t.Helper()
	c.WaitN(len(seqs), 10*time.Second)
	got := c.Quiet(200*time.Millisecond, 3*time.Second)
	var gotSeqs []uint32
	for _, f := range got {
		s, _ := packettest.Seq(f)
		gotSeqs = append(gotSeqs, s)
		if want, ok := sent[s]; ok && !bytes.Equal(f, want) {
			t.Errorf("%s: frame %d differs:\n got %x\nwant %x", what, s, f, want)
		}
	}
	slices.Sort(gotSeqs)
	if !slices.Equal(gotSeqs, seqs) {
		t.Fatalf("%s: got frames %v, want %v", what, gotSeqs, seqs)
	}
}

// forEachPath runs test on the AF_XDP path and on the fast path: the same
// frames must reach the same monitors byte for byte either way.
func forEachPath(t *testing.T, test func(t *testing.T, fast bool)) {
	for _, fast := range []bool{false, true} {
		name := PathAFXDP
		if fast {
			name = PathFast
		}
		t.Run(name, func(t *testing.T) { test(t, fast) })
	}
}

// wantPath fails unless capture interface name takes the path asked for,
// so that a fast-path test cannot pass on the AF_XDP fallback.
func wantPath(t *testing.T, b *Broker, name string, fast bool) {
	t.Helper()
	want := PathAFXDP
	if fast {
		want = PathFast
	}
	for _, is := range b.Stats().Interfaces {
		if is.Name == name {
			if is.Path != want {
				t.Fatalf("capture %s takes path %q (%s), want %q", name, is.Path, is.PathReason, want)
			}
			return
		}
	}
	t.Fatalf("no stats of capture %s", name)
}

func TestBrokerClassifiesAndFansOut(t *testing.T) { forEachPath(t, testBrokerClassifiesAndFansOut) }

func testBrokerClassifiesAndFansOut(t *testing.T, fast bool) {
	tp := newTopo(t, 2, 1)
	b := newBroker(t, Config{FastPath: fast})
	a, c := mac6(hwA), mac6(hwC)
	svcs := []Service{{ID: "s0", Iface: tp.mons[0]}, {ID: "s1", Iface: tp.mons[1]}, {ID: "s2", Iface: tp.mons[0]}}
	type frameSpec struct {
		dst, src net.HardwareAddr
		tags     []packettest.Tag
	}
	dot1q := func(v uint16) []packettest.Tag { return []packettest.Tag{{TPID: 0x8100, VID: v}} }
	qinq := func(o, i uint16) []packettest.Tag {
		return []packettest.Tag{{TPID: 0x88a8, VID: o}, {TPID: 0x8100, VID: i}}
	}
	cases := []struct {
		name   string
		flows  []Flow
		frames []frameSpec // seq = index + 1
		mon0   []uint32
		mon1   []uint32
	}{
		{
			name:   "out",
			flows:  []Flow{{ID: "f", ServiceID: "s0", MAC: a, Direction: DirOut}},
			frames: []frameSpec{{hwB, hwA, nil}, {hwA, hwB, nil}, {hwBcast, hwB, nil}, {hwBcast, hwA, nil}},
			mon0:   []uint32{1, 4},
		},
		{
			name:   "in",
			flows:  []Flow{{ID: "f", ServiceID: "s0", MAC: a, Direction: DirIn}},
			frames: []frameSpec{{hwB, hwA, nil}, {hwA, hwB, nil}, {hwBcast, hwB, nil}, {hwBcast, hwA, nil}, {hwMcast, hwB, nil}, {hwMcast, hwA, nil}},
			mon0:   []uint32{2, 3, 5},
		},
		{
			name:   "both",
			flows:  []Flow{{ID: "f", ServiceID: "s0", MAC: a, Direction: DirBoth}},
			frames: []frameSpec{{hwB, hwA, nil}, {hwA, hwB, nil}, {hwBcast, hwB, nil}, {hwBcast, hwA, nil}, {hwB, hwC, nil}},
			mon0:   []uint32{1, 2, 3, 4},
		},
		{
			name:  "vlan ranges with 0 and a qinq outer tag",
			flows: []Flow{{ID: "f", ServiceID: "s0", MAC: a, Direction: DirBoth, VLANFilter: "0,100-200"}},
			frames: []frameSpec{{hwB, hwA, nil}, {hwB, hwA, dot1q(150)}, {hwB, hwA, dot1q(99)},
				{hwB, hwA, qinq(150, 5)}, {hwB, hwA, qinq(5, 150)}, {hwB, hwA, dot1q(200)}},
			mon0: []uint32{1, 2, 4, 6},
		},
		{
			name: "one copy per service when several flows match",
			flows: []Flow{{ID: "f1", ServiceID: "s0", MAC: a, Direction: DirOut}, {ID: "f2", ServiceID: "s0", MAC: a, Direction: DirBoth},
				{ID: "f3", ServiceID: "s0", MAC: a, Direction: DirOut, VLANFilter: "0"}},
			frames: []frameSpec{{hwB, hwA, nil}, {hwA, hwB, nil}},
			mon0:   []uint32{1, 2},
		},
		{
			name:   "fan-out to two monitors",
			flows:  []Flow{{ID: "f1", ServiceID: "s0", MAC: a, Direction: DirOut}, {ID: "f2", ServiceID: "s1", MAC: a, Direction: DirBoth}},
			frames: []frameSpec{{hwB, hwA, nil}, {hwA, hwB, nil}},
			mon0:   []uint32{1},
			mon1:   []uint32{1, 2},
		},
		{
			name:   "two services on one monitor get a copy each",
			flows:  []Flow{{ID: "f1", ServiceID: "s0", MAC: a, Direction: DirOut}, {ID: "f2", ServiceID: "s2", MAC: a, Direction: DirBoth}},
			frames: []frameSpec{{hwB, hwA, nil}, {hwA, hwB, nil}},
			mon0:   []uint32{1, 1, 2},
		},
		{
			name:   "two sources into one service",
			flows:  []Flow{{ID: "f1", ServiceID: "s0", MAC: a, Direction: DirOut}, {ID: "f2", ServiceID: "s0", MAC: c, Direction: DirOut}},
			frames: []frameSpec{{hwB, hwA, nil}, {hwB, hwC, nil}, {hwB, hwB, nil}},
			mon0:   []uint32{1, 2},
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			plan := &Plan{Version: uint64(i + 1), Services: svcs}
			for _, f := range tc.flows {
				// Fresh IDs per case, so the counters checked below are this
				// case's alone.
				f.ID = fmt.Sprintf("%d-%s", i, f.ID)
				f.Iface, f.SourcePortID = tp.capIf, "port-"+f.ID
				plan.Flows = append(plan.Flows, f)
			}
			wantActive(t, apply(t, b, plan))
			wantPath(t, b, tp.capIf, fast)
			tp.reset()
			sent := map[uint32][]byte{}
			for j, fs := range tc.frames {
				seq := uint32(j + 1)
				sent[seq] = packettest.Frame(fs.dst, fs.src, fs.tags, seq, 60+4*len(fs.tags))
				tp.send(t, sent[seq])
			}
			expect(t, tp.caps[0], tp.mons[0], sent, tc.mon0...)
			expect(t, tp.caps[1], tp.mons[1], sent, tc.mon1...)
		})
	}

	// The counters saw it all: the last case's flows matched and its
	// service delivered.
	st := b.Stats()
	var delivered uint64
	for _, s := range st.Services {
		if s.ID == "s0" {
			delivered = s.DeliveredPackets
		}
	}
	if delivered == 0 {
		t.Errorf("Stats: service s0 delivered nothing: %+v", st.Services)
	}
	for _, f := range st.Flows {
		if f.MatchedPackets != 1 {
			t.Errorf("Stats: flow %s matched %d, want 1 (two sources case)", f.ID, f.MatchedPackets)
		}
	}
	if len(st.Interfaces) != 3 {
		t.Errorf("Stats: %d interfaces, want 3: %+v", len(st.Interfaces), st.Interfaces)
	}
}
