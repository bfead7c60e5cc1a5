package xdpprog

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/taas-appliance/taas/internal/testutil"
)

// TestFastDecides runs the loaded program on frames against a fast table:
// a decided frame counts its flows and services and is redirected (one copy
// or a broadcast set), a frame whose services are down is counted, a frame
// no decision covers is unmatched, and SetFast(nil) goes back to the early
// filter. lo (ifindex 1) stands in for monitors: BPF_PROG_TEST_RUN does not
// deliver the redirect.
func TestFastDecides(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	c, err := Load(Config{})
	testutil.SkipIfNotSupported(t, err)
	t.Cleanup(func() { c.Close() })
	// A's OUT flow 3 goes to service bit 0 (slot 5); B's IN flow 4 to bits
	// 0 and 1 (slot 6, the same monitor: a second copy); a broadcast from
	// elsewhere to bit 2 (slot 7, monitor down).
	tab := &FastTable{Ports: map[[6]byte]uint32{macA: 1, macB: 2},
		Decisions: map[FastKey]Decision{
			{VIDClass: 0, Src: 1, Dst: 0}:             {Services: 0b001, Flows: []uint16{3}},
			{VIDClass: 0, Src: 0, Dst: 2}:             {Services: 0b011, Flows: []uint16{4}},
			{VIDClass: 0, Src: 0, Dst: MulticastPort}: {Services: 0b100, Flows: []uint16{4}},
		},
		Copies: map[uint64]Copies{
			0b001: {Outputs: []int{1}, Services: []DecisionService{{Slot: 5}}},
			0b011: {Outputs: []int{1, 1}, Services: []DecisionService{{Slot: 5}, {Slot: 6}}},
			0b100: {Services: []DecisionService{{Slot: 7, Down: true}}},
		}}
	tab.VIDClass[10] = 1                 // VID 10 is wanted by no decision
	for round := 0; round < 2; round++ { // the second round applies the same table again: nothing to write
		if err := c.SetFast(tab); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name  string
			frame []byte
			want  Outcome
		}{
			{"out of A", frame(t, macOther, macA, nil, 46, 0), FastRedirected},
			{"A to B: both sides, two copies", frame(t, macB, macA, nil, 46, 0), FastRedirected},
			{"B to elsewhere: no side", frame(t, macOther, macB, nil, 46, 0), Unmatched},
			{"broadcast from elsewhere: service down", frame(t, macBcast, macOther, nil, 46, 0), FastNoOutput},
			{"out of A on VID 10: no decision", frame(t, macOther, macA, []tag{{0x8100, 10}}, 46, 0), Unmatched},
			{"C to C", frame(t, macOther, macOther, nil, 46, 0), Unmatched},
		}
		for _, tc := range cases {
			if o, err := c.Run(tc.frame); err != nil || o != tc.want {
				t.Errorf("round %d: Run(%s) = %v, %v; want %v", round, tc.name, o, err, tc.want)
			}
		}
	}
	f3, _ := c.FastFlow(3)
	f4, _ := c.FastFlow(4)
	s5, _ := c.FastService(5)
	s6, _ := c.FastService(6)
	s7, _ := c.FastService(7)
	if f3.Packets != 4 || f4.Packets != 4 || s5.Packets != 4 || s6.Packets != 2 || s7.Down != 2 || f3.Bytes != 240 {
		t.Errorf("counters: flow3 %+v flow4 %+v svc5 %+v svc6 %+v svc7 %+v; want 4, 4, 4, 2, 2 down", f3, f4, s5, s6, s7)
	}
	if n := len(c.fast.sets); n != 1 {
		t.Errorf("%d output sets, want 1", n)
	}
	if c.fast.gen != 1 {
		t.Errorf("generation %d after the same table twice, want 1 (written once)", c.fast.gen)
	}
	if err := c.SetFast(nil); err != nil {
		t.Fatal(err)
	}
	if o, err := c.Run(frame(t, macOther, macA, nil, 46, 0)); err != nil || o != Unmatched {
		t.Errorf("after SetFast(nil): Run = %v, %v; want unmatched (empty early filter)", o, err)
	}
	f := &c.fast
	if len(f.sets) != 0 || len(f.tx) != 0 || len(f.decs[0])+len(f.decs[1])+len(f.copies[0])+len(f.copies[1])+len(f.ports[0])+len(f.ports[1]) != 0 {
		t.Errorf("after SetFast(nil): state %+v, want empty", c.fast)
	}
	big := &FastTable{Decisions: map[FastKey]Decision{{Src: 1}: {Services: 1, Flows: make([]uint16, MaxDecisionFlows+1)}},
		Copies: map[uint64]Copies{1: {}}}
	if err := c.SetFast(big); !errors.Is(err, ErrFastLimit) {
		t.Errorf("SetFast(%d flows per decision) = %v, want ErrFastLimit", MaxDecisionFlows+1, err)
	}
	// Sides of one class whose union has no copies: refused, not a limit.
	holes := &FastTable{Decisions: map[FastKey]Decision{{Src: 1}: {Services: 1}, {Dst: 2}: {Services: 2}},
		Copies: map[uint64]Copies{1: {}, 2: {}}}
	if err := c.SetFast(holes); err == nil || errors.Is(err, ErrFastLimit) {
		t.Errorf("SetFast(union without copies) = %v, want an error that is not ErrFastLimit", err)
	}
}

// TestFastSwapNeverMisses runs the program on one frame without pause on
// another goroutine while SetFast swaps between two tables that decide the
// frame under different port ids, VLAN classes and outputs: every run must
// be redirected (the generation flip never exposes a half-written or
// half-deleted table).
func TestFastSwapNeverMisses(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	c, err := Load(Config{})
	testutil.SkipIfNotSupported(t, err)
	t.Cleanup(func() { c.Close() })
	one := &FastTable{Ports: map[[6]byte]uint32{macA: 1},
		Decisions: map[FastKey]Decision{{Src: 1}: {Services: 1, Flows: []uint16{0}}},
		Copies:    map[uint64]Copies{1: {Outputs: []int{1}, Services: []DecisionService{{Slot: 0}}}}}
	two := &FastTable{Ports: map[[6]byte]uint32{macA: 7, macB: 3},
		Decisions: map[FastKey]Decision{
			{VIDClass: 2, Src: 7}: {Services: 0b01, Flows: []uint16{1}},
			{VIDClass: 2, Dst: 3}: {Services: 0b10, Flows: []uint16{2}},
		},
		Copies: map[uint64]Copies{
			0b01: {Outputs: []int{1}, Services: []DecisionService{{Slot: 1}}},
			0b10: {Outputs: []int{1}, Services: []DecisionService{{Slot: 2}}},
			0b11: {Outputs: []int{1, 1}, Services: []DecisionService{{Slot: 1}, {Slot: 2}}},
		}}
	for v := range two.VIDClass {
		two.VIDClass[v] = 2
	}
	if err := c.SetFast(one); err != nil {
		t.Fatal(err)
	}
	checkSwaps(t, c, frame(t, macB, macA, nil, 46, 0), 100, two, one)
}

// checkSwaps runs c's program on fr without pause while SetFast goes
// through tables, rounds times: every run must be redirected.
func checkSwaps(t *testing.T, c *Capture, fr []byte, rounds int, tables ...*FastTable) {
	t.Helper()
	runs, missed, err := runDuring(c, fr, func() error {
		for i := 0; i < rounds; i++ {
			for _, tab := range tables {
				if err := c.SetFast(tab); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	n := rounds * len(tables)
	if missed > 0 || runs == 0 {
		t.Fatalf("%d of %d runs during %d table swaps not redirected", missed, runs, n)
	}
	t.Logf("%d runs during %d table swaps, all redirected", runs, n)
}

// runDuring runs c's program on fr without pause on another goroutine
// while fn runs, and counts the runs and those not redirected.
func runDuring(c *Capture, fr []byte, fn func() error) (runs, missed int, err error) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			ret, err := c.objs.XdpCapture.Run(&ebpf.RunOptions{Data: fr})
			if err != nil || ret != xdpRedirect {
				missed++
			}
			runs++
		}
	}()
	err = fn()
	close(stop)
	<-done
	return runs, missed, err
}

// TestFastOutputSetsCachedAndEvicted swaps through more distinct output
// sets than fast_sets has slots: sets are kept for reuse across tables and
// evicted only when a new one needs the room, never one the live table
// uses, and every table decides the frame.
func TestFastOutputSetsCachedAndEvicted(t *testing.T) {
	testutil.RequireRoot(t, needVeth)
	v := vethInNetns(t, 1)
	err := testutil.InNetns(v.ns, func() error {
		c, err := Load(Config{})
		if err != nil {
			return err
		}
		defer c.Close()
		// Distinct multisets of the pair's two ifindexes: i copies to a and
		// j to b, 2 <= i+j <= 40.
		tables := 0
		for n := 2; n <= 40 && tables < 2*MaxOutputSets+10; n++ {
			for i := 0; i <= n && tables < 2*MaxOutputSets+10; i++ {
				var outs []int
				for k := 0; k < n; k++ {
					if k < i {
						outs = append(outs, v.ai)
					} else {
						outs = append(outs, v.bi)
					}
				}
				tab := &FastTable{Ports: map[[6]byte]uint32{macA: 1},
					Decisions: map[FastKey]Decision{{Src: 1}: {Services: 1, Flows: []uint16{0}}},
					Copies:    map[uint64]Copies{1: {Outputs: outs, Services: []DecisionService{{Slot: 0}}}}}
				if err := c.SetFast(tab); err != nil {
					return fmt.Errorf("table %d: %w", tables, err)
				}
				if o, err := c.Run(frame(t, macOther, macA, nil, 46, 0)); err != nil || o != FastRedirected {
					return fmt.Errorf("table %d: Run = %v, %v; want fast_redirected", tables, o, err)
				}
				tables++
			}
		}
		if n := len(c.fast.sets); n < 2 || n > outSets-1 {
			return fmt.Errorf("%d output sets cached after %d tables, want 2..%d", n, tables, outSets-1)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
