package broker

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

// waitStatus re-applies plan on every link event until check accepts the
// report, as the reconciler does; it fails after a generous bound.
func waitStatus(t *testing.T, b *Broker, plan *Plan, what string, check func(Report) bool) Report {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		r := apply(t, b, plan)
		if check(r) {
			return r
		}
		select {
		case <-b.LinkEvents():
		case <-time.After(500 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%s: never reached; last report %+v", what, r)
		}
	}
}

func TestBrokerLinkDownUpAndInterfaceGone(t *testing.T) {
	forEachPath(t, testBrokerLinkDownUpAndInterfaceGone)
}

func testBrokerLinkDownUpAndInterfaceGone(t *testing.T, fast bool) {
	tp := newTopo(t, 1, 1)
	b := newBroker(t, Config{FastPath: fast})
	plan := &Plan{Version: 1, Services: []Service{{ID: "s", Iface: tp.mons[0]}},
		Flows: []Flow{{ID: "f", ServiceID: "s", SourcePortID: "p", Iface: tp.capIf, MAC: mac6(hwA), Direction: DirOut}}}
	wantActive(t, apply(t, b, plan))
	wantPath(t, b, tp.capIf, fast)
	seq := uint32(0)
	// roundTrip sends one frame and expects it at the monitor, after the
	// frames of stale (queued on the TX ring while the link was down).
	roundTrip := func(what string, stale ...uint32) {
		t.Helper()
		// The kernel activates a link's qdisc only when its operational
		// state turns UP, a moment after the carrier: until then the span
		// end drops what the injector sends.
		testutil.WaitOperUp(t, tp.span, tp.p+"capp")
		tp.reset()
		seq++
		f := packettest.Frame(hwB, hwA, nil, seq, 60)
		tp.send(t, f)
		expect(t, tp.caps[0], what, map[uint32][]byte{seq: f}, append([]uint32{seq}, stale...)...)
	}
	roundTrip("before any fault")

	// Monitor link down: the service and its flow go DOWN with the reason,
	// copies are counted, never sent, and nothing crashes.
	testutil.Run(t, "ip", "link", "set", tp.mons[0], "down")
	// Before the next Apply the data path still sends. AF_XDP: the kernel
	// refuses the kick with ENETDOWN, which is counted, not fatal, and the
	// frame waits on the TX ring. Fast path: the redirect to a down device
	// fails in the kernel, which counts the frame in the capture's
	// rx_dropped.
	tp.send(t, packettest.Frame(hwB, hwA, nil, 999, 60))
	var stale []uint32
	if fast {
		waitCounter(t, "kernel_rx_dropped", func() uint64 { return ifaceDrop(b, tp.capIf, "kernel_rx_dropped") }, 1)
	} else {
		waitCounter(t, "kick_errors", func() uint64 { return ifaceCounter(b, tp.mons[0], "kick_errors") }, 1)
		stale = append(stale, 999)
	}
	r := waitStatus(t, b, plan, "service DOWN after monitor down", func(r Report) bool { return r.Services["s"].State == StateDown })
	if want := fmt.Sprintf("interface %s is down", tp.mons[0]); r.Services["s"].Reason != want ||
		r.Flows["f"].State != StateDown || !strings.Contains(r.Flows["f"].Reason, want) {
		t.Fatalf("after monitor down: %+v, want reason %q on service and flow", r, want)
	}
	tp.send(t, packettest.Frame(hwB, hwA, nil, 1000, 60))
	waitCounter(t, "monitor_down drops", func() uint64 { return serviceDrops(b, "s", "monitor_down") }, 1)

	testutil.Run(t, "ip", "link", "set", tp.mons[0], "up")
	waitStatus(t, b, plan, "ACTIVE after monitor up", func(r Report) bool {
		return r.Services["s"].State == StateActive && r.Flows["f"].State == StateActive
	})
	// On the AF_XDP path frame 999 waited on the TX ring and goes out with
	// the next kick; frame 1000, sent once the link was known down, was
	// never queued.
	roundTrip("after monitor down and up", stale...)

	// Capture link down and up.
	testutil.Run(t, "ip", "link", "set", tp.capIf, "down")
	r = waitStatus(t, b, plan, "flow DOWN after capture down", func(r Report) bool { return r.Flows["f"].State == StateDown })
	if want := fmt.Sprintf("interface %s is down", tp.capIf); r.Flows["f"].Reason != want {
		t.Fatalf("after capture down: flow %+v, want %q", r.Flows["f"], want)
	}
	testutil.Run(t, "ip", "link", "set", tp.capIf, "up")
	waitStatus(t, b, plan, "ACTIVE after capture up", func(r Report) bool { return r.Flows["f"].State == StateActive })
	roundTrip("after capture down and up")

	// The capture interface disappears and comes back (a new ifindex): the
	// workers stop cleanly and the next Apply rebuilds them.
	testutil.Run(t, "ip", "link", "del", tp.capIf)
	r = waitStatus(t, b, plan, "flow DOWN after capture deleted", func(r Report) bool { return r.Flows["f"].State == StateDown })
	if want := fmt.Sprintf("interface %s does not exist", tp.capIf); r.Flows["f"].Reason != want {
		t.Fatalf("after capture deleted: flow %+v, want %q", r.Flows["f"], want)
	}
	testutil.Veth(t, tp.capIf, tp.p+"capp", testutil.VethOpts{NetnsB: tp.span})
	tp.inject = packettest.NewInjector(t, tp.span, tp.p+"capp")
	waitStatus(t, b, plan, "ACTIVE after capture recreated", func(r Report) bool { return r.Flows["f"].State == StateActive })
	roundTrip("after capture recreated")

	// The monitor disappears and comes back.
	testutil.Run(t, "ip", "link", "del", tp.mons[0])
	r = waitStatus(t, b, plan, "service DOWN after monitor deleted", func(r Report) bool { return r.Services["s"].State == StateDown })
	if want := fmt.Sprintf("interface %s does not exist", tp.mons[0]); r.Services["s"].Reason != want {
		t.Fatalf("after monitor deleted: service %+v, want %q", r.Services["s"], want)
	}
	monNS := tp.p + "mon0"
	testutil.Veth(t, tp.mons[0], tp.mons[0]+"p", testutil.VethOpts{NetnsB: monNS})
	testutil.Run(t, "ip", "netns", "exec", monNS, "ethtool", "-K", tp.mons[0]+"p", "gro", "on")
	tp.caps[0] = packettest.NewCapture(t, monNS, tp.mons[0]+"p", packettest.IsTest)
	waitStatus(t, b, plan, "ACTIVE after monitor recreated", func(r Report) bool { return r.Services["s"].State == StateActive })
	roundTrip("after monitor recreated")
	wantPath(t, b, tp.capIf, fast)

	// Matched counters never went backwards across the rebuilds.
	if got := flowMatched(b, "f"); got < uint64(seq) {
		t.Errorf("flow f matched %d, want at least %d (one per round trip)", got, seq)
	}
}

func TestBrokerUnboundAndMissing(t *testing.T) {
	testutil.RequireRoot(t, rootWhy)
	b := newBroker(t, Config{})
	p := testutil.Prefix(t)
	plan := &Plan{Version: 1,
		Services: []Service{{ID: "unbound"}, {ID: "missing", Iface: p + "nomon"}},
		Flows: []Flow{
			{ID: "f-unbound", ServiceID: "missing", SourcePortID: "port-1", MAC: mac6(hwA), Direction: DirIn},
			{ID: "f-missing", ServiceID: "unbound", SourcePortID: "port-2", Iface: p + "nocap", MAC: mac6(hwA), Direction: DirIn},
			{ID: "f-badvlan", ServiceID: "unbound", SourcePortID: "port-3", Iface: p + "nocap", MAC: mac6(hwA), VLANFilter: "1,,2"},
			// A filter that matches nothing says so whatever else is wrong.
			{ID: "f-novlan", ServiceID: "missing", SourcePortID: "port-4", Iface: p + "nocap", MAC: mac6(hwA), VLANFilter: "10-5"},
		}}
	r := apply(t, b, plan)
	want := map[string]Status{
		"unbound":   {StateDown, "tap service's port has no interface binding"},
		"missing":   {StateDown, fmt.Sprintf("interface %snomon does not exist", p)},
		"f-unbound": {StateDown, "port port-1 has no interface binding"},
		"f-missing": {StateDown, fmt.Sprintf("interface %snocap does not exist", p)},
		"f-novlan":  {StateDown, "vlan_filter 10-5 matches no VLAN id (0-4095)"},
	}
	for id, w := range want {
		got, ok := r.Services[id]
		if !ok {
			got = r.Flows[id]
		}
		if got != w {
			t.Errorf("status of %s = %+v, want %+v", id, got, w)
		}
	}
	if s := r.Flows["f-badvlan"]; s.State != StateError || !strings.Contains(s.Reason, "vlan_filter") {
		t.Errorf("status of f-badvlan = %+v, want ERROR naming vlan_filter", s)
	}
}

// Creating and deleting other flows, services and monitors while a steady
// stream flows loses nothing of the untouched flow.
func TestBrokerChurnKeepsUntouchedFlow(t *testing.T) {
	forEachPath(t, testBrokerChurnKeepsUntouchedFlow)
}

func testBrokerChurnKeepsUntouchedFlow(t *testing.T, fast bool) {
	tp := newTopo(t, 2, 1)
	b := newBroker(t, Config{FastPath: fast})
	base := &Plan{Version: 1, Services: []Service{{ID: "s0", Iface: tp.mons[0]}},
		Flows: []Flow{{ID: "steady", ServiceID: "s0", SourcePortID: "p", Iface: tp.capIf, MAC: mac6(hwA), Direction: DirOut}}}
	wantActive(t, apply(t, b, base))
	wantPath(t, b, tp.capIf, fast)

	// Churn in the background: other flows on the same capture interface
	// and MACs, another service on a second monitor that appears and
	// disappears, a plan every few milliseconds.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	churnErr := make(chan error, 1)
	var plans atomic.Int64
	go func() {
		defer wg.Done()
		version := uint64(1)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			version++
			// Other flows come and go every plan; the second monitor's
			// service (and with it its TX socket) every tenth.
			p := &Plan{Version: version, Services: base.Services, Flows: base.Flows}
			if i%10 != 9 {
				p.Services = append([]Service{{ID: "x", Iface: tp.mons[1]}}, base.Services...)
			}
			if i%2 == 0 {
				p.Flows = append([]Flow{
					{ID: fmt.Sprintf("in%d", i), ServiceID: "x", Iface: tp.capIf, MAC: mac6(hwB), Direction: DirIn},
					{ID: fmt.Sprintf("both%d", i), ServiceID: "s0", Iface: tp.capIf, MAC: mac6(hwC), Direction: DirBoth, VLANFilter: "5"},
				}, base.Flows...)
			}
			if _, err := b.Apply(context.Background(), p); err != nil {
				churnErr <- err
				return
			}
			plans.Add(1)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	// The steady stream goes in chunks, each sent once the previous one
	// arrived: a starved worker on a loaded machine then slows the test
	// down instead of overflowing rings, so a loss can only be the churn's.
	// At least 3000 frames, and as many more as it takes for the churn to
	// apply 10 plans while they flow (a quiet machine sends 3000 frames
	// faster than a loaded one applies plans), bounded at 30000.
	const minFrames, maxFrames, chunk, minPlans = 3000, 30000, 100, 10
	total := 0
	for sent := 0; sent < maxFrames && (sent < minFrames || plans.Load() < minPlans); sent += chunk {
		total = sent + chunk
		for i := sent + 1; i <= sent+chunk; i++ {
			if err := tp.inject.Send(packettest.Frame(hwB, hwA, nil, uint32(i), 60)); err != nil {
				t.Fatal(err)
			}
		}
		if got := tp.caps[0].WaitN(sent+chunk, 10*time.Second); len(got) < sent+chunk {
			t.Errorf("steady flow under churn: %d of %d frames arrived (stats %+v)", len(got), sent+chunk, b.Stats().Interfaces)
			break
		}
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-churnErr:
		t.Fatal(err)
	default:
	}
	if n := plans.Load(); n < minPlans {
		t.Fatalf("only %d plans applied during %d frames, want at least %d", n, total, minPlans)
	}
	tp.caps[0].WaitN(total, 20*time.Second)
	got := tp.caps[0].Quiet(300*time.Millisecond, 5*time.Second)
	seen := make([]int, total+1)
	for _, f := range got {
		if s, ok := packettest.Seq(f); ok && s <= uint32(total) {
			seen[s]++
		}
	}
	var missing, dup []int
	for s := 1; s <= total; s++ {
		switch {
		case seen[s] == 0:
			missing = append(missing, s)
		case seen[s] > 1:
			dup = append(dup, s)
		}
	}
	if len(missing) > 0 || len(dup) > 0 {
		t.Fatalf("steady flow under churn: %d of %d missing (first %v), %d duplicated (first %v); stats %+v",
			len(missing), total, missing[:min(len(missing), 10)], len(dup), dup[:min(len(dup), 10)], b.Stats().Interfaces)
	}
	if got := flowMatched(b, "steady"); got != uint64(total) {
		t.Errorf("flow steady matched %d, want %d", got, total)
	}
	wantPath(t, b, tp.capIf, fast)
}

// A frame larger than a UMEM chunk holds, and a frame cut inside its VLAN
// tag, are counted by the XDP program and never reach (or crash) a worker;
// the flow keeps working.
func TestBrokerOversizeAndTruncated(t *testing.T) { forEachPath(t, testBrokerOversizeAndTruncated) }

func testBrokerOversizeAndTruncated(t *testing.T, fast bool) {
	tp := newTopo(t, 1, 1)
	// veth runs native XDP up to about 3.5 KB of MTU; 2500 lets a 2000-byte
	// frame through the pair and the program.
	testutil.Run(t, "ip", "link", "set", tp.capIf, "mtu", "2500")
	testutil.Run(t, "ip", "-n", tp.span, "link", "set", tp.p+"capp", "mtu", "2500")
	testutil.Run(t, "ip", "link", "set", tp.mons[0], "mtu", "2500")
	testutil.Run(t, "ip", "-n", tp.p+"mon0", "link", "set", tp.mons[0]+"p", "mtu", "2500")
	b := newBroker(t, Config{FastPath: fast})
	plan := &Plan{Version: 1, Services: []Service{{ID: "s", Iface: tp.mons[0]}},
		Flows: []Flow{{ID: "f", ServiceID: "s", SourcePortID: "p", Iface: tp.capIf, MAC: mac6(hwA), Direction: DirOut}}}
	wantActive(t, apply(t, b, plan))
	wantPath(t, b, tp.capIf, fast)
	big := packettest.Frame(hwB, hwA, nil, 1, 2000)
	trunc := packettest.Frame(hwB, hwA, []packettest.Tag{{TPID: 0x8100, VID: 3}}, 2, 60)[:16]
	ok := packettest.Frame(hwB, hwA, nil, 3, 1792) // the largest that fits a 2048-byte chunk
	tp.send(t, big, trunc, ok)
	expect(t, tp.caps[0], "oversize and truncated", map[uint32][]byte{3: ok}, 3)
	waitCounter(t, "xdp_oversize", func() uint64 { return ifaceDrop(b, tp.capIf, "xdp_oversize") }, 1)
	waitCounter(t, "xdp_truncated_tag", func() uint64 { return ifaceDrop(b, tp.capIf, "xdp_truncated_tag") }, 1)
}

// A two-queue capture interface gets a socket and a worker per queue, and
// each worker forwards the frames of its queue: XPS on the span end maps
// CPU i to TX queue i, which veth turns into RX queue i of the capture end,
// and the test sends from each CPU in turn.
func TestBrokerMultiQueue(t *testing.T) { forEachPath(t, testBrokerMultiQueue) }

func testBrokerMultiQueue(t *testing.T, fast bool) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs 2 CPUs to steer frames to 2 queues")
	}
	tp := newTopo(t, 1, 2)
	for q := 0; q < 2; q++ {
		testutil.Run(t, "ip", "netns", "exec", tp.span, "sh", "-c",
			fmt.Sprintf("echo %x > /sys/class/net/%scapp/queues/tx-%d/xps_cpus", 1<<q, tp.p, q))
	}
	b := newBroker(t, Config{FastPath: fast})
	plan := &Plan{Version: 1, Services: []Service{{ID: "s", Iface: tp.mons[0]}},
		Flows: []Flow{{ID: "f", ServiceID: "s", SourcePortID: "p", Iface: tp.capIf, MAC: mac6(hwA), Direction: DirBoth}}}
	wantActive(t, apply(t, b, plan))
	wantPath(t, b, tp.capIf, fast)
	sent := map[uint32][]byte{}
	var seqs []uint32
	for cpu := 0; cpu < 2; cpu++ {
		errc := make(chan error, 1)
		go func() {
			runtime.LockOSThread() // the thread ends with the goroutine, pinned
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				errc <- err
				return
			}
			for i := 1; i <= 25; i++ {
				seq := uint32(cpu*100 + i)
				f := packettest.Frame(hwB, hwA, nil, seq, 60)
				if err := tp.inject.Send(f); err != nil {
					errc <- err
					return
				}
				sent[seq] = f
				seqs = append(seqs, seq)
			}
			errc <- nil
		}()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	expect(t, tp.caps[0], "two queues", sent, seqs...)
	if fast {
		// The program decided every frame in the kernel on whichever
		// queue it came (the span end's own multicast, IPv6 ND, may add
		// some); the workers saw none.
		if got := ifaceCounter(b, tp.capIf, "xdp_fast_redirected"); got < uint64(len(seqs)) {
			t.Fatalf("xdp_fast_redirected = %d, want at least %d", got, len(seqs))
		}
		if got := ifaceCounter(b, tp.capIf, "frames"); got != 0 {
			t.Fatalf("workers received %d frames, want 0 on the fast path", got)
		}
		return
	}
	b.mu.Lock()
	c := b.captures[tp.capIf]
	var perQueue []uint64
	for _, w := range c.workers {
		perQueue = append(perQueue, w.wctr[wcFrames].Load())
	}
	b.mu.Unlock()
	if len(perQueue) != 2 || perQueue[0] == 0 || perQueue[1] == 0 {
		t.Fatalf("frames per queue worker = %v, want both queues used", perQueue)
	}
}

func waitCounter(t *testing.T, what string, get func() uint64, atLeast uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for get() < atLeast {
		if time.Now().After(deadline) {
			t.Fatalf("counter %s = %d, want at least %d", what, get(), atLeast)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func serviceDrops(b *Broker, id, reason string) uint64 {
	for _, s := range b.Stats().Services {
		if s.ID == id {
			return s.Drops[reason]
		}
	}
	return 0
}

func flowMatched(b *Broker, id string) uint64 { return flowStats(b, id).MatchedPackets }

// flowStats returns the stats of flow id.
func flowStats(b *Broker, id string) FlowStats {
	for _, f := range b.Stats().Flows {
		if f.ID == id {
			return f
		}
	}
	return FlowStats{ID: id}
}

func ifaceCounter(b *Broker, name, counter string) uint64 {
	for _, is := range b.Stats().Interfaces {
		if is.Name == name {
			return is.Counters[counter]
		}
	}
	return 0
}

func ifaceDrop(b *Broker, name, reason string) uint64 {
	for _, is := range b.Stats().Interfaces {
		if is.Name == name {
			return is.Drops[reason]
		}
	}
	return 0
}

// When realising fails (here: a second broker on interfaces the first one
// holds), the flow and service are ERROR with the kernel's reason, the
// broker keeps running, and the first broker's traffic is untouched.
func TestBrokerRealiseFailureIsError(t *testing.T) { forEachPath(t, testBrokerRealiseFailureIsError) }

func testBrokerRealiseFailureIsError(t *testing.T, fast bool) {
	tp := newTopo(t, 1, 1)
	first := newBroker(t, Config{FastPath: fast})
	plan := &Plan{Version: 1, Services: []Service{{ID: "s", Iface: tp.mons[0]}},
		Flows: []Flow{{ID: "f", ServiceID: "s", SourcePortID: "p", Iface: tp.capIf, MAC: mac6(hwA), Direction: DirOut}}}
	wantActive(t, apply(t, first, plan))
	second := newBroker(t, Config{FastPath: fast})
	r := apply(t, second, plan)
	if s := r.Services["s"]; s.State != StateError || !strings.Contains(s.Reason, "open monitor "+tp.mons[0]) {
		t.Errorf("second broker's service = %+v, want ERROR opening the monitor", s)
	}
	if s := r.Flows["f"]; s.State != StateError || !strings.Contains(s.Reason, "attach xdp to "+tp.capIf) {
		t.Errorf("second broker's flow = %+v, want ERROR attaching xdp", s)
	}
	f := packettest.Frame(hwB, hwA, nil, 1, 60)
	tp.send(t, f)
	expect(t, tp.caps[0], "first broker after the second failed", map[uint32][]byte{1: f}, 1)
}
