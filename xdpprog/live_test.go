package xdpprog

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

// liveSample is one frame a LiveReader handed over, copied.
type liveSample struct {
	m    LiveMeta
	data []byte
}

// readLive reads r's frames until the kernel has nothing more for 50 ms
// and returns them and the lost count.
func readLive(t testing.TB, r *LiveReader) ([]liveSample, uint64) {
	t.Helper()
	var got []liveSample
	lost, err := r.Read(time.Now().Add(50*time.Millisecond), func(m LiveMeta, data []byte) {
		got = append(got, liveSample{m, bytes.Clone(data)})
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, lost
}

// liveTable is a fast table for live captures, copies to lo (ifindex 1):
//
//   - out of A: flow 3, service bit 0 (slot 5);
//   - into B: flow 4, service bit 1 (slot 6);
//   - a broadcast: flow 7, service bit 2 (slot 8), its monitor down.
func liveTable() *FastTable {
	return &FastTable{Ports: map[[6]byte]uint32{macA: 1, macB: 2},
		Decisions: map[FastKey]Decision{
			{Src: 1}:                     {Services: 0b001, Flows: []uint16{3}},
			{Dst: 2}:                     {Services: 0b010, Flows: []uint16{4}},
			{Src: 0, Dst: MulticastPort}: {Services: 0b100, Flows: []uint16{7}},
		},
		Copies: map[uint64]Copies{
			0b001: {Outputs: []int{1}, Services: []DecisionService{{Slot: 5}}},
			0b010: {Outputs: []int{1}, Services: []DecisionService{{Slot: 6}}},
			0b011: {Outputs: []int{1, 1}, Services: []DecisionService{{Slot: 5}, {Slot: 6}}},
			0b100: {Services: []DecisionService{{Slot: 8, Down: true}}},
		}}
}

// TestLiveCapture runs frames through fast decisions, unfiltered and
// filtered, with live masks on flow and service slots, and reads what the
// program hands over: each wanted frame once, byte-exact (whole or cut by
// the snap), with its length, the mask of every capture that wants it and
// a time within the run; nothing for a frame whose service is down, that
// every filter rejects, or whose slots have no mask.
func TestLiveCapture(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	c, err := Load(Config{})
	testutil.SkipIfNotSupported(t, err)
	t.Cleanup(func() { c.Close() })
	r, err := c.OpenLive(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if _, err := c.OpenLive(4096); !errors.Is(err, ErrLiveOpen) {
		t.Errorf("second OpenLive = %v, want ErrLiveOpen", err)
	}
	tcp, udp := layers.IPProtocolTCP, layers.IPProtocolUDP
	outA := frame(t, macOther, macA, nil, 46, 0)
	outABig := frame(t, macOther, macA, nil, 1504, 0)
	aToB := frame(t, macB, macA, nil, 1504, 0)
	intoB := frame(t, macB, macOther, nil, 46, 0)
	bcast := frame(t, macBcast, macOther, nil, 46, 0)
	type want struct {
		frame []byte
		mask  uint8
	}
	cases := []struct {
		name         string
		filtered     bool
		flows, svcs  map[uint16]uint8
		snap         uint32
		frames       [][]byte
		want         []want
		wantOutcomes []Outcome
	}{
		{name: "flow, whole", flows: map[uint16]uint8{3: 0b1},
			frames: [][]byte{outA, outABig, intoB}, want: []want{{outA, 1}, {outABig, 1}},
			wantOutcomes: []Outcome{FastRedirected, FastRedirected, FastRedirected}},
		{name: "service, cut by the snap", svcs: map[uint16]uint8{6: 0b100}, snap: 100,
			frames: [][]byte{aToB, outA, intoB}, want: []want{{aToB, 0b100}, {intoB, 0b100}},
			wantOutcomes: []Outcome{FastRedirected, FastRedirected, FastRedirected}},
		{name: "a flow and a service of one frame: one sample, both bits",
			flows: map[uint16]uint8{3: 0b1}, svcs: map[uint16]uint8{6: 0b1000_0000},
			frames: [][]byte{aToB}, want: []want{{aToB, 0b1000_0001}}, wantOutcomes: []Outcome{FastRedirected}},
		{name: "two captures of one slot", svcs: map[uint16]uint8{5: 0b11},
			frames: [][]byte{outA}, want: []want{{outA, 0b11}}, wantOutcomes: []Outcome{FastRedirected}},
		{name: "service down: no copy, nothing even for the flow", flows: map[uint16]uint8{7: 1}, svcs: map[uint16]uint8{8: 2},
			frames: [][]byte{bcast}, wantOutcomes: []Outcome{FastNoOutput}},
		{name: "slots without a mask", flows: map[uint16]uint8{4: 1}, svcs: map[uint16]uint8{6: 2},
			frames: [][]byte{outA}, wantOutcomes: []Outcome{FastRedirected}},
		{name: "off", frames: [][]byte{outA, aToB, intoB},
			wantOutcomes: []Outcome{FastRedirected, FastRedirected, FastRedirected}},
		// filterTable: out of A flows 10 (unfiltered, service 0: slot
		// 20), 11 "tcp port 443" and 12 "port 443" (service 1: slot
		// 21); into B flow 13 "tcp port 443" (service 2: slot 22).
		{name: "filtered flow", filtered: true, flows: map[uint16]uint8{11: 1, 13: 2},
			frames: [][]byte{
				l4Frame(t, macOther, macA, tcp, 443), // 11 matches
				l4Frame(t, macOther, macA, udp, 443), // 11 rejects, 10 and 12 match: unmasked
				l4Frame(t, macB, macA, tcp, 443),     // 11 and 13
				l4Frame(t, macB, macOther, tcp, 80),  // 13 rejects: fast_filtered
			},
			want:         []want{{l4Frame(t, macOther, macA, tcp, 443), 1}, {l4Frame(t, macB, macA, tcp, 443), 3}},
			wantOutcomes: []Outcome{FastRedirected, FastRedirected, FastRedirected, FastFiltered}},
		{name: "filtered flow's service", filtered: true, svcs: map[uint16]uint8{21: 4}, snap: 20,
			frames: [][]byte{
				l4Frame(t, macOther, macA, udp, 443), // 12 matches: service 1
				l4Frame(t, macOther, macA, udp, 53),  // only 10: service 0
			},
			want:         []want{{l4Frame(t, macOther, macA, udp, 443), 4}},
			wantOutcomes: []Outcome{FastRedirected, FastRedirected}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tab := liveTable()
			if tc.filtered {
				tab = filterTable(t, 1)
			}
			if err := c.SetFast(tab); err != nil {
				t.Fatal(err)
			}
			if err := c.SetLive(tc.flows, tc.svcs, tc.snap); err != nil {
				t.Fatal(err)
			}
			before := Monotonic()
			for i, fr := range tc.frames {
				if o, err := c.Run(fr); err != nil || o != tc.wantOutcomes[i] {
					t.Errorf("Run(frame %d) = %v, %v; want %v", i, o, err, tc.wantOutcomes[i])
				}
			}
			after := Monotonic()
			got, lost := readLive(t, r)
			if lost != 0 {
				t.Errorf("lost %d", lost)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("read %d frames, want %d: %+v", len(got), len(tc.want), got)
			}
			for i, w := range tc.want {
				g := got[i]
				data := w.frame
				if tc.snap != 0 && len(data) > int(tc.snap) {
					data = data[:tc.snap]
				}
				if g.m.Mask != w.mask || g.m.Len != uint32(len(w.frame)) || !bytes.Equal(g.data, data) {
					t.Errorf("frame %d: mask %#b, len %d, %d bytes; want mask %#b, len %d, %d bytes (equal: %v)",
						i, g.m.Mask, g.m.Len, len(g.data), w.mask, len(w.frame), len(data), bytes.Equal(g.data, data))
				}
				if g.m.Mono < before || g.m.Mono > after {
					t.Errorf("frame %d: time %d, want within the run %d..%d", i, g.m.Mono, before, after)
				}
			}
		})
	}
	cnt, err := c.Counters()
	if err != nil {
		t.Fatal(err)
	}
	var sum uint64
	cnt.Each(func(name string, v uint64) {
		if name != "seen" && name != "seen_bytes" && name != "passed" && name != "dropped" && name != "live_failed" {
			sum += v
		}
	})
	if cnt.Seen != sum || cnt.LiveFailed != 0 {
		t.Errorf("counters %+v: want seen == the sum of the outcomes, no live_failed", cnt)
	}

	// The kernel holds the masks and settings SetLive mirrors; off clears
	// every mask.
	if err := c.SetLive(map[uint16]uint8{1: 1, 2: 2}, map[uint16]uint8{3: 4, 4: 0}, 64); err != nil {
		t.Fatal(err)
	}
	if err := c.SetLive(map[uint16]uint8{2: 2, 9: 8}, map[uint16]uint8{3: 16}, 128); err != nil {
		t.Fatal(err)
	}
	checkLiveMaps(t, c, map[uint16]uint8{2: 2, 9: 8}, map[uint16]uint8{3: 16}, 1, 128)
	if err := c.SetLive(nil, nil, 0); err != nil {
		t.Fatal(err)
	}
	checkLiveMaps(t, c, nil, nil, 0, 0)
	if err := c.SetLive(map[uint16]uint8{MaxFastSlots: 1}, nil, 0); err == nil {
		t.Errorf("SetLive(slot %d) = nil, want an error", MaxFastSlots)
	}

	// Closing the Capture closes its reader.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Read(time.Now().Add(time.Second), func(LiveMeta, []byte) {}); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after the Capture's Close = %v, want ErrClosed", err)
	}
}

// checkLiveMaps compares the kernel's live maps and settings with what is
// wanted.
func checkLiveMaps(t *testing.T, c *Capture, flows, svcs map[uint16]uint8, on, snap uint32) {
	t.Helper()
	for _, m := range []struct {
		name string
		m    *ebpf.Map
		want map[uint16]uint8
	}{{"flows", c.objs.LiveFlows, flows}, {"services", c.objs.LiveSvcs, svcs}} {
		for slot := uint32(0); slot < MaxFastSlots; slot++ {
			var v uint8
			if err := m.m.Lookup(slot, &v); err != nil {
				t.Fatal(err)
			}
			if v != m.want[uint16(slot)] {
				t.Errorf("live %s slot %d = %d, want %d", m.name, slot, v, m.want[uint16(slot)])
			}
		}
	}
	for slot, want := range map[uint32]uint32{settingLive: on, settingLiveSnap: snap} {
		var v uint32
		if err := c.objs.Settings.Lookup(slot, &v); err != nil {
			t.Fatal(err)
		}
		if v != want {
			t.Errorf("setting %d = %d, want %d", slot, v, want)
		}
	}
}

// TestLiveLostAndAllocs fills a one-page buffer nobody reads: the kernel
// loses frames, Read reports them and the program counts them
// live_failed; then Read hands a full buffer's frames over without
// allocating. A capture without a reader counts every wanted frame
// live_failed and goes on deciding.
func TestLiveLostAndAllocs(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	c, err := Load(Config{})
	testutil.SkipIfNotSupported(t, err)
	t.Cleanup(func() { c.Close() })
	if err := c.SetFast(liveTable()); err != nil {
		t.Fatal(err)
	}
	if err := c.SetLive(map[uint16]uint8{3: 1}, nil, 0); err != nil {
		t.Fatal(err)
	}
	big := frame(t, macOther, macA, nil, 1504, 0)
	// Every run on one CPU: the kernel writes the count of frames a ring
	// lost into that CPU's ring, in front of its next frame, so the frame
	// that brings the count must run where the frames were lost (a
	// thread locked by each run alone may move between runs).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var all, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	for cpu := 0; cpu < 1024; cpu++ {
		if all.IsSet(cpu) {
			one.Set(cpu)
			break
		}
	}
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.SchedSetaffinity(0, &all) }()
	runN := func(fr []byte, n int) {
		t.Helper()
		runtime.LockOSThread() // one CPU, one ring, as far as the scheduler lets
		defer runtime.UnlockOSThread()
		if _, err := c.objs.XdpCapture.Run(&ebpf.RunOptions{Data: fr, Repeat: uint32(n)}); err != nil {
			t.Fatal(err)
		}
	}
	runN(big, 10)
	if cnt, _ := c.Counters(); cnt.LiveFailed != 10 || cnt.FastRedirected != 10 {
		t.Errorf("no reader: %d live_failed, %d fast_redirected; want 10, 10", cnt.LiveFailed, cnt.FastRedirected)
	}

	r, err := c.OpenLive(1)
	if err != nil {
		t.Fatal(err)
	}
	runN(big, 100)
	got, lost := readLive(t, r)
	// The kernel writes its count of lost frames in front of the next
	// frame that fits: one more frame brings it.
	runN(big, 1)
	more, lost2 := readLive(t, r)
	got, lost = append(got, more...), lost+lost2
	cnt, _ := c.Counters()
	t.Logf("one-page buffer, 101 frames of %d bytes: read %d, lost %d, live_failed %d", len(big), len(got), lost, cnt.LiveFailed-10)
	if lost == 0 || uint64(len(got))+lost != 101 || cnt.LiveFailed-10 != lost {
		t.Errorf("read %d, lost %d, live_failed %d; want some lost, read + lost = 101, lost = live_failed",
			len(got), lost, cnt.LiveFailed-10)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	// Read allocates nothing per frame: each Read past its deadline hands
	// over up to liveCheckEvery frames of a full buffer.
	r, err = c.OpenLive(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	small := frame(t, macOther, macA, nil, 46, 0)
	const runs = 5
	runN(small, (runs+1)*liveCheckEvery+100)
	n, total := 0, 0
	count := func(LiveMeta, []byte) { n++ }
	past := time.Now()
	allocs := testing.AllocsPerRun(runs, func() {
		n = 0
		if _, err := r.Read(past, count); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatal("Read handed over no frame")
		}
		total += n
	})
	t.Logf("%d Reads handed over %d frames, %v allocations per Read", runs+1, total, allocs)
	if allocs != 0 {
		t.Errorf("Read allocates %v times per call (of about %d frames), want 0", allocs, total/(runs+1))
	}
}

// TestPinTurnsLiveOff: a pinned program outlives the process's live reader,
// so Pin turns live capture off.
func TestPinTurnsLiveOff(t *testing.T) {
	testutil.RequireRoot(t, needVeth)
	v := vethInNetns(t, 1)
	dir := testutil.BPFFS(t)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join(dir, v.b)
	err := testutil.InNetns(v.ns, func() error {
		c, err := Attach(v.bi, Config{})
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.SetLive(map[uint16]uint8{1: 1}, map[uint16]uint8{2: 2}, 100); err != nil {
			return err
		}
		if err := c.Pin(pin); err != nil {
			return err
		}
		checkLiveMaps(t, c, nil, nil, 0, 0)
		return RemovePin(pin)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzDecodeLive: decodeLive never panics, and what it accepts lies within
// the sample.
func FuzzDecodeLive(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, liveMetaSize))
	f.Add(append(make([]byte, liveMetaSize), 1, 2, 3, 4, 5, 6, 7, 8))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, data, ok := decodeLive(raw)
		if !ok {
			return
		}
		if len(data)+liveMetaSize > len(raw) || (len(data) > 0 && &data[0] != &raw[liveMetaSize]) {
			t.Fatalf("decodeLive(% x) = %+v, % x: not the sample's bytes", raw, m, data)
		}
		if m.Mask != raw[16] {
			t.Fatalf("mask %d, want %d", m.Mask, raw[16])
		}
	})
}

// TestLiveVeth captures live on a real capture interface, in native and
// generic mode: the monitor gets every copy as it would without a capture
// (cut to its snaplen), and the reader gets each frame once, whole, with
// the bits of the flow's and the service's captures and a time within the
// sending.
func TestLiveVeth(t *testing.T) {
	testutil.RequireRoot(t, needVeth)
	for _, mode := range []Mode{Native, Generic} {
		t.Run(mode.String(), func(t *testing.T) { testLiveVeth(t, mode) })
	}
}

func testLiveVeth(t *testing.T, mode Mode) {
	v := vethInNetns(t, 1)
	monIndex, got := outputVeths(t, v, []string{"m"}, func(fr []byte) bool {
		return len(fr) >= 14 && [6]byte(fr[6:12]) == macA
	})
	c := attachCapture(t, v, mode)
	r, err := c.OpenLive(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	inj := packettest.NewInjector(t, v.ns, v.a)
	m := monIndex[0]
	tab := &FastTable{Ports: map[[6]byte]uint32{macA: 1},
		Decisions: map[FastKey]Decision{{Src: 1}: {Services: 1, Flows: []uint16{0}}},
		Copies:    map[uint64]Copies{1: {Outputs: []int{m}, Services: []DecisionService{{Slot: 0, Snaplen: 64}}}},
		Snaplens:  map[int]uint32{m: 64}}
	if err := testutil.InNetns(v.ns, func() error { return c.SetFast(tab) }); err != nil {
		t.Fatal(err)
	}
	if err := c.SetLive(map[uint16]uint8{0: 0b01}, map[uint16]uint8{0: 0b10}, 0); err != nil {
		t.Fatal(err)
	}
	var frames [][]byte
	for _, n := range []int{6, 300, 1400} {
		frames = append(frames, l4FrameLen(t, macOther, macA, layers.IPProtocolUDP, 53, n))
	}
	before := Monotonic()
	for _, fr := range frames {
		if err := inj.Send(fr); err != nil {
			t.Fatal(err)
		}
	}
	copies := got[0].WaitN(len(frames), 5*time.Second)
	copies = append(copies, got[0].Quiet(200*time.Millisecond, 2*time.Second)[len(copies):]...)
	after := Monotonic()
	if len(copies) != len(frames) {
		t.Fatalf("monitor got %d copies, want %d", len(copies), len(frames))
	}
	for i, fr := range frames {
		if want := fr[:min(len(fr), 64)]; !bytes.Equal(copies[i], want) {
			t.Errorf("monitor's copy %d =\n%x\nwant\n%x", i, copies[i], want)
		}
	}
	var live []liveSample
	for end := time.Now().Add(5 * time.Second); len(live) < len(frames) && time.Now().Before(end); {
		more, lost := readLive(t, r)
		if lost != 0 {
			t.Errorf("lost %d", lost)
		}
		live = append(live, more...)
	}
	if more, _ := readLive(t, r); len(live) != len(frames) || len(more) != 0 {
		t.Fatalf("read %d frames, then %d more; want %d", len(live), len(more), len(frames))
	}
	for i, fr := range frames {
		s := live[i]
		if s.m.Mask != 0b11 || s.m.Len != uint32(len(fr)) || !bytes.Equal(s.data, fr) || s.m.Mono < before || s.m.Mono > after {
			t.Errorf("live frame %d: mask %#b, len %d, time %d, %d bytes (equal %v); want mask 0b11, len %d, time in %d..%d",
				i, s.m.Mask, s.m.Len, s.m.Mono, len(s.data), bytes.Equal(s.data, fr), len(fr), before, after)
		}
	}
}
