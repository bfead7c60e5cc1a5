package xdpprog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
	"golang.org/x/sys/unix"
)

// tunnelXDPSpecs are tunnelSpecs plus each format at the smallest MTU of
// its family, where every test frame but the first is truncated, and with
// snaplens of 64 (every frame but the first cut) and 100 bytes.
func tunnelXDPSpecs() []TunnelSpec {
	specs := tunnelSpecs()
	for _, s := range tunnelSpecs() {
		s.MTU = 576
		if s.Src.Is6() {
			s.MTU = 1280
		}
		specs = append(specs, s)
	}
	for i, s := range tunnelSpecs() {
		s.Snaplen = 64 + 36*(i%2)
		specs = append(specs, s)
	}
	return specs
}

// tsOffset is where ERSPAN III's timestamp sits in a copy of h, -1 when h
// has none: the one field the XDP path and Encapsulate may differ in.
func tsOffset(h *TunnelHeader) int {
	if h.spec.Encap != EncapERSPAN3 {
		return -1
	}
	return h.l4 + greLen + 4
}

// testTunnel sets tunnel slot of c from spec s (uplink lo) and loads an
// xdp_tunnel instance for it that BPF_PROG_RUN takes, closed when tb ends.
func testTunnel(tb testing.TB, c *Capture, slot int, s TunnelSpec) (*TunnelHeader, *ebpf.Program) {
	tb.Helper()
	h, err := NewTunnelHeader(s)
	if err != nil {
		tb.Fatal(err)
	}
	if err := c.SetTunnel(slot, h, 1); err != nil {
		tb.Fatal(err)
	}
	prog, err := c.loadTunnelProg(slot, ebpf.AttachNone)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { prog.Close() })
	return h, prog
}

// runTunnel runs prog (xdp_tunnel for some slot, loaded as plain XDP) on
// frame and returns the copy it makes.
func runTunnel(t *testing.T, prog *ebpf.Program, frame []byte) []byte {
	t.Helper()
	out := make([]byte, len(frame)+MaxTunnelOverhead+64)
	opts := &ebpf.RunOptions{Data: frame, DataOut: out}
	ret, err := prog.Run(opts)
	if err != nil {
		t.Fatalf("run xdp_tunnel on %d bytes: %v", len(frame), err)
	}
	if ret != xdpPass {
		t.Fatalf("xdp_tunnel on %d bytes = %s, want pass", len(frame), verdictName(ret))
	}
	return opts.DataOut
}

// TestTunnelXDPMatchesGo is the differential test of the two encapsulation
// paths: for each format, family and MTU, xdp_tunnel (run with
// BPF_PROG_RUN: the same program and maps SetTunnel puts in a DEVMAP entry,
// loaded as plain XDP because test runs refuse DEVMAP programs) makes the
// same bytes as Encapsulate with the same sequence number, except ERSPAN
// III's timestamp (4 bytes at tsOffset: Overhead-8 .. Overhead-4), which
// must lie between the clock before and after the run, give or take 1 s.
// The counters count each copy, its bytes on the wire and the truncated
// ones.
func TestTunnelXDPMatchesGo(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	c, err := Load(Config{})
	testutil.SkipIfNotSupported(t, err)
	t.Cleanup(func() { c.Close() })
	for slot, s := range tunnelXDPSpecs() {
		t.Run(fmt.Sprintf("%s/mtu%d/snaplen%d", specName(s), s.MTU, s.Snaplen), func(t *testing.T) {
			h, prog := testTunnel(t, c, slot, s)
			var want FastTunnelCounter
			buf := make([]byte, 4096)
			for seq, fr := range append(tunnelFrames(), tunnelFrames()...) {
				before := ERSPANTimestamp(time.Now())
				got := runTunnel(t, prog, fr.frame)
				after := ERSPANTimestamp(time.Now())
				n, trunc := h.Encapsulate(buf, fr.frame, uint32(seq), 0)
				exp := buf[:n]
				if off := tsOffset(h); off >= 0 && len(got) >= off+4 {
					ts := binary.BigEndian.Uint32(got[off:])
					// The kernel's clock is boot time plus an offset read
					// once, two clock reads apart, which a busy machine may
					// preempt: allow 1 s (10000 units) of skew; a wrong
					// unit or epoch is off by far more.
					if ts+10000 < before || ts > after+10000 {
						t.Errorf("%s: timestamp %d, want %d..%d", fr.name, ts, before, after)
					}
					binary.BigEndian.PutUint32(exp[off:], ts)
				}
				if !bytes.Equal(got, exp) {
					t.Errorf("%s (seq %d): xdp_tunnel gives\n%x\nEncapsulate\n%x", fr.name, seq, got, exp)
				}
				want.Packets++
				want.Bytes += uint64(n)
				if trunc {
					want.Truncated++
				}
			}
			if got, err := c.FastTunnel(slot); err != nil || got != want {
				t.Errorf("FastTunnel(%d) = %+v, %v; want %+v", slot, got, err, want)
			}
		})
	}
}

// TestTunnelSeq sets a tunnel's ERSPAN sequence number just below the wrap
// and checks the copies count on from it, through 0.
func TestTunnelSeq(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	c, err := Load(Config{})
	testutil.SkipIfNotSupported(t, err)
	t.Cleanup(func() { c.Close() })
	h, prog := testTunnel(t, c, 3, tunnelSpecs()[1]) // erspanv1/ipv4
	if err := c.SetTunnelSeq(3, 0xfffffffe); err != nil {
		t.Fatal(err)
	}
	fr := frame(t, macOther, macA, nil, 46, 0)
	for _, want := range []uint32{0xfffffffe, 0xffffffff, 0} {
		got := runTunnel(t, prog, fr)
		if seq := binary.BigEndian.Uint32(got[h.l4+4:]); seq != want {
			t.Errorf("sequence number %#x, want %#x", seq, want)
		}
	}
	if seq, err := c.TunnelSeq(3); err != nil || seq != 1 {
		t.Errorf("TunnelSeq(3) = %d, %v; want 1", seq, err)
	}
	if _, err := c.TunnelSeq(MaxTunnels); err == nil {
		t.Errorf("TunnelSeq(%d) succeeded", MaxTunnels)
	}
}

// TestTunnelXDPOddChecksum runs IPv6 VXLAN over frames of every length
// from 14 to 600 bytes, so the checksum loop ends on each chunk size and on
// an odd byte.
func TestTunnelXDPOddChecksum(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	c, err := Load(Config{})
	testutil.SkipIfNotSupported(t, err)
	t.Cleanup(func() { c.Close() })
	h, prog := testTunnel(t, c, 0, tunnelSpecs()[7]) // vxlan/ipv6
	full := frame(t, macOther, macA, nil, 600, 0)
	for i := range full[14:] {
		full[14+i] = byte(i*7 + 3)
	}
	buf := make([]byte, 4096)
	for l := 14; l <= 600; l++ {
		got := runTunnel(t, prog, full[:l])
		n, _ := h.Encapsulate(buf, full[:l], 0, 0)
		if !bytes.Equal(got, buf[:n]) {
			t.Fatalf("%d-byte frame: xdp_tunnel gives\n%x\nEncapsulate\n%x", l, got, buf[:n])
		}
	}
}

// TestTunnelFastPath sends frames through the real fast path on veth: the
// capture program decides them in the kernel and redirects A's OUT frames
// to tunnel slot 0 (one copy, through fast_tx) and frames to A to slots 1,
// 2 and 3 (an output set, BPF_F_BROADCAST). Slots 0, 1 and 3 leave by
// uplink 1 (so the frames of one NAPI batch mix three tunnels on one
// device: xdp_tunnel must take each copy's tunnel from tun_meta, and tell
// the two copies of a frame to A apart by their order), slot 2 by uplink
// 2; each slot has its own id. Every tunnel of a frame gets one copy, and
// every copy the uplinks' peers receive must be what
// Encapsulate makes of its frame with its slot's header, except the ERSPAN
// sequence number (4 bytes at Overhead-12 for ERSPAN II, Overhead-16 for
// III) and ERSPAN III's timestamp (4 bytes at Overhead-8). The formats take turns on
// the same slots: SetTunnel changes a tunnel in place under the live table.
//
// Native mode runs one xdp_tunnel for every slot (the slot comes in
// tun_meta), generic mode one per slot; both must give the same bytes.
func TestTunnelFastPath(t *testing.T) {
	testutil.RequireRoot(t, needVeth)
	for _, mode := range []Mode{Native, Generic} {
		t.Run(mode.String(), func(t *testing.T) { testTunnelFastPath(t, mode) })
	}
}

func testTunnelFastPath(t *testing.T, mode Mode) {
	v := vethInNetns(t, 1)
	upIndex, got := outputVeths(t, v, []string{"u1", "u2"}, func(fr []byte) bool {
		return len(fr) >= 14 && [6]byte(fr[6:12]) == tunUplink
	})
	c := attachCapture(t, v, mode)
	if mode == Native {
		// Threaded NAPI (veth has NAPI once XDP is attached): the burst
		// below queues up while the capture's NAPI thread wakes, so one
		// poll, and one DEVMAP flush, takes several frames.
		testutil.Run(t, "ip", "netns", "exec", v.ns, "sh", "-c", "echo 1 > /sys/class/net/"+v.b+"/threaded")
	}
	inj := packettest.NewInjector(t, v.ns, v.a)
	// DEVMAP entries name their ifindex in the writer's netns.
	inNs := func(t *testing.T, fn func() error) {
		t.Helper()
		if err := testutil.InNetns(v.ns, fn); err != nil {
			t.Fatal(err)
		}
	}
	tab := &FastTable{Ports: map[[6]byte]uint32{macA: 1},
		Decisions: map[FastKey]Decision{
			{Src: 1}: {Services: 0b01, Flows: []uint16{0}},
			{Dst: 1}: {Services: 0b10, Flows: []uint16{1}},
		},
		Copies: map[uint64]Copies{
			0b01: {Outputs: []int{TunnelOutput(0)}, Services: []DecisionService{{Slot: 0}}},
			0b10: {Outputs: []int{TunnelOutput(1), TunnelOutput(2), TunnelOutput(3)}, Services: []DecisionService{{Slot: 1}}},
			// Never used (no frame is from A and to A); check wants it.
			0b11: {Outputs: []int{TunnelOutput(0), TunnelOutput(1), TunnelOutput(2), TunnelOutput(3)},
				Services: []DecisionService{{Slot: 0}, {Slot: 1}}},
		}}
	slotUplink := []int{upIndex[0], upIndex[0], upIndex[1], upIndex[0]}
	// The slots of each frame of tunnelFrames: from the VM, to it, from it.
	slotsOf := [][]int{{0}, {1, 2, 3}, {0}}
	first := true
	for _, s := range tunnelSpecs() {
		t.Run(specName(s), func(t *testing.T) {
			var hs []*TunnelHeader
			for slot := range slotUplink {
				sp := s
				sp.ID ^= uint32(slot)
				h, err := NewTunnelHeader(sp)
				if err != nil {
					t.Fatal(err)
				}
				hs = append(hs, h)
				inNs(t, func() error { return c.SetTunnel(slot, h, slotUplink[slot]) })
			}
			if first {
				inNs(t, func() error { return c.SetFast(tab) })
				first = false
			}
			var before [4]FastTunnelCounter
			for slot := range before {
				var err error
				if before[slot], err = c.FastTunnel(slot); err != nil {
					t.Fatal(err)
				}
			}
			for _, g := range got {
				g.Reset()
			}
			frames := tunnelFrames() // from the VM, to it (three copies), from it truncated
			for _, fr := range frames {
				if err := inj.Send(fr.frame); err != nil {
					t.Fatal(err)
				}
			}
			var wantCtr [4]FastTunnelCounter
			check := func(what string, sent []int) {
				t.Helper()
				for u := range upIndex {
					// The copies of each frame through uplink u, in the
					// order of the frames; a frame's copies in any order
					// (the DEVMAP's).
					var groups [][]int
					n := 0
					for _, f := range sent {
						var g []int
						for _, slot := range slotsOf[f] {
							if slotUplink[slot] == upIndex[u] {
								g = append(g, slot)
							}
						}
						groups, n = append(groups, g), n+len(g)
					}
					copies := got[u].WaitN(n, 5*time.Second)
					if len(copies) != n {
						t.Fatalf("%s: uplink %d's peer got %d copies, want %d", what, u+1, len(copies), n)
					}
					i := 0
					for j, g := range groups {
						fr := frames[sent[j]]
						left := slices.Clone(g)
						for range g {
							cp := copies[i]
							i++
							maskSeqTS(hs[0], cp)
							k := slices.IndexFunc(left, func(slot int) bool {
								buf := make([]byte, 2048)
								n, _ := hs[slot].Encapsulate(buf, fr.frame, 0, 0)
								maskSeqTS(hs[slot], buf[:n])
								return bytes.Equal(cp, buf[:n])
							})
							if k < 0 {
								t.Fatalf("%s: copy %d on uplink %d: not %s to any of slots %v (left of %v):\n%x", what, i-1, u+1, fr.name, left, g, cp)
							}
							slot := left[k]
							left = slices.Delete(left, k, k+1)
							buf := make([]byte, 2048)
							n, trunc := hs[slot].Encapsulate(buf, fr.frame, 0, 0)
							ctr := &wantCtr[slot]
							ctr.Packets++
							ctr.Bytes += uint64(n)
							if trunc {
								ctr.Truncated++
							}
						}
					}
				}
			}
			check("one of each", []int{0, 1, 2})
			// A burst, so that the capture's NAPI polls take several
			// frames at once and one DEVMAP flush mixes slots 0, 1 and 3
			// (more than the 16 frames of a bulk queue at a time).
			const burst = 60
			for _, g := range got {
				g.Reset()
			}
			var sent []int
			for i := range burst {
				if err := inj.Send(frames[i%2].frame); err != nil {
					t.Fatal(err)
				}
				sent = append(sent, i%2)
			}
			check("burst", sent)
			for slot := range before {
				after, err := c.FastTunnel(slot)
				if err != nil {
					t.Fatal(err)
				}
				b := before[slot]
				d := FastTunnelCounter{Packets: after.Packets - b.Packets, Bytes: after.Bytes - b.Bytes,
					Truncated: after.Truncated - b.Truncated, Failed: after.Failed - b.Failed}
				if d != wantCtr[slot] {
					t.Errorf("FastTunnel(%d) moved by %+v, want %+v", slot, d, wantCtr[slot])
				}
			}
		})
	}
	if u, err := c.FastTunnel(UnknownTunnel); err != nil || u != (FastTunnelCounter{}) {
		t.Errorf("FastTunnel(UnknownTunnel) = %+v, %v; want nothing", u, err)
	}
	if err := c.ClearTunnel(0); err == nil {
		t.Errorf("ClearTunnel(0) under a live table that sends to it succeeded")
	}
	inNs(t, func() error { return c.SetFast(nil) })
	for slot := range 3 {
		if err := c.ClearTunnel(slot); err != nil {
			t.Errorf("ClearTunnel(%d) = %v", slot, err)
		}
	}
}

// maskSeqTS zeroes the ERSPAN sequence number and ERSPAN III timestamp of
// a copy of h.
func maskSeqTS(h *TunnelHeader, b []byte) {
	switch h.spec.Encap {
	case EncapERSPAN2, EncapERSPAN3:
		clear(b[h.l4+4 : h.l4+8])
		if off := tsOffset(h); off >= 0 {
			clear(b[off : off+4])
		}
	}
}

// TestFastTunnelOutputsChecked checks what SetFast refuses about the
// tunnel outputs of one Copies: a tunnel not set, more than
// MaxTunnelCopies; tunnels through one uplink are fine.
func TestFastTunnelOutputsChecked(t *testing.T) {
	c := &Capture{tunnels: map[int]*tunnelState{}}
	for slot := range 6 {
		c.tunnels[slot] = &tunnelState{uplink: 100 + slot}
	}
	c.tunnels[6] = &tunnelState{uplink: 100} // slot 0's uplink
	c.tunnels[8] = &tunnelState{uplink: 100} // and again
	outs := func(slots ...int) Copies {
		var cp Copies
		for _, s := range slots {
			cp.Outputs = append(cp.Outputs, TunnelOutput(s))
		}
		return cp
	}
	cases := []struct {
		name   string
		cp     Copies
		refuse bool
		limit  bool // the error wraps ErrFastLimit
	}{
		{"tunnel and monitors", Copies{Outputs: []int{100, TunnelOutput(0), 100}}, false, false},
		{"four tunnels", outs(0, 1, 2, 3), false, false},
		{"five tunnels", outs(0, 1, 2, 3, 4), true, true},
		{"two on one uplink", outs(0, 6), false, false},
		{"four, three on one uplink", outs(0, 6, 1, 8), false, false},
		{"five on one uplink", outs(0, 6, 0, 6, 0), true, true},
		{"tunnel not set", outs(7), true, false},
	}
	for _, tc := range cases {
		err := c.checkTunnelsLocked(tc.cp)
		if (err != nil) != tc.refuse || errors.Is(err, ErrFastLimit) != tc.limit {
			t.Errorf("checkTunnels(%s) = %v, want refused %v (limit %v)", tc.name, err, tc.refuse, tc.limit)
		}
	}
}

// TestForeignMetadataStripped runs the capture program (BPF_PROG_RUN) on a
// frame that arrives with metadata another XDP program left, as veth keeps
// it for a frame redirected into it: none, 8 bytes of anything, another
// capture's tun_meta naming tunnel 1 (a collector this frame must never
// reach), 32 bytes. The frame goes to tunnel 0 only; whatever it brought,
// it leaves with exactly our tun_meta naming tunnel 0.
func TestForeignMetadataStripped(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	c, err := Load(Config{})
	testutil.SkipIfNotSupported(t, err)
	t.Cleanup(func() { c.Close() })
	spec := tunnelSpecs()[0]
	testTunnel(t, c, 0, spec)
	testTunnel(t, c, 1, spec)
	tab := &FastTable{Ports: map[[6]byte]uint32{macA: 1},
		Decisions: map[FastKey]Decision{{Src: 1}: {Services: 1, Flows: []uint16{0}}},
		Copies:    map[uint64]Copies{1: {Outputs: []int{TunnelOutput(0)}, Services: []DecisionService{{Slot: 0}}}}}
	if err := c.SetFast(tab); err != nil {
		t.Fatal(err)
	}
	theirs := make([]byte, 20) // a tun_meta: magic, frame, ntun, tun[4], pad
	binary.LittleEndian.PutUint32(theirs[0:], 0x54554e31)
	binary.LittleEndian.PutUint16(theirs[8:], 1)
	binary.LittleEndian.PutUint16(theirs[10:], 1)
	fr := frame(t, macOther, macA, nil, 46, 0)
	for _, tc := range []struct {
		name string
		meta []byte
	}{
		{"none", nil},
		{"8 bytes", bytes.Repeat([]byte{0xa5}, 8)},
		{"another capture's tun_meta", theirs},
		{"32 bytes", bytes.Repeat([]byte{0x5a}, 32)},
		{"252 bytes", bytes.Repeat([]byte{0x3c}, 252)}, // recent kernels
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := append(slices.Clone(tc.meta), fr...)
			var ctxOut xdpMD
			opts := &ebpf.RunOptions{Data: data, DataOut: make([]byte, len(data)+64),
				Context: xdpMD{Data: uint32(len(tc.meta)), DataEnd: uint32(len(data))}, ContextOut: &ctxOut}
			ret, err := c.objs.XdpCapture.Run(opts)
			if errors.Is(err, unix.EINVAL) && len(tc.meta) > 32 {
				t.Skipf("BPF_PROG_RUN here takes at most 32 bytes of metadata: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			if ret != xdpRedirect {
				t.Fatalf("xdp_capture = %s, want redirect", verdictName(ret))
			}
			meta := opts.DataOut[:ctxOut.Data-ctxOut.DataMeta]
			if len(meta) != 20 {
				t.Fatalf("frame leaves with %d bytes of metadata, want 20 (a tun_meta): % x", len(meta), meta)
			}
			magic, ntun, slot := binary.LittleEndian.Uint32(meta), binary.LittleEndian.Uint16(meta[8:]), binary.LittleEndian.Uint16(meta[10:])
			if magic != 0x54554e31 || ntun != 1 || slot != 0 {
				t.Fatalf("tun_meta magic %#x, %d copies, first to tunnel %d; want %#x, 1, 0", magic, ntun, slot, 0x54554e31)
			}
			if got := opts.DataOut[len(meta) : ctxOut.DataEnd-ctxOut.DataMeta]; !bytes.Equal(got, fr) {
				t.Fatalf("frame changed")
			}
		})
	}
}

// TestSyncClock steps the program's idea of the wall clock back an hour,
// as a stepped wall clock leaves it, and checks SyncClock brings it back.
func TestSyncClock(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	c, err := Load(Config{})
	testutil.SkipIfNotSupported(t, err)
	t.Cleanup(func() { c.Close() })
	offset := func() int64 {
		var off uint64
		if err := c.objs.ClockOffset.Lookup(uint32(0), &off); err != nil {
			t.Fatal(err)
		}
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
			t.Fatal(err)
		}
		return int64(off) - (time.Now().UnixNano() - ts.Nano()) // the error, in ns
	}
	var off uint64
	if err := c.objs.ClockOffset.Lookup(uint32(0), &off); err != nil {
		t.Fatal(err)
	}
	if err := c.objs.ClockOffset.Update(uint32(0), off-uint64(time.Hour), ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	if e := offset(); e > -int64(time.Minute) {
		t.Fatalf("stepped clock off by %v, want about -1h", time.Duration(e))
	}
	if err := c.SyncClock(); err != nil {
		t.Fatal(err)
	}
	if e := offset(); e < -int64(time.Second) || e > int64(time.Second) {
		t.Fatalf("after SyncClock the clock is off by %v, want under 1 s", time.Duration(e))
	}
	t.Logf("after SyncClock: off by %v", time.Duration(offset()))
}

// outputVeths adds a veth pair per name to v's namespace (the end named
// prefix+name is an output, its peer prefix+name+"p" runs a capture
// program that passes everything up, so that veth delivers XDP redirects,
// afxdp-notes gotcha 10) and records what reaches each peer that keep
// selects. It returns the outputs' ifindexes and the recordings.
func outputVeths(t *testing.T, v *testVeth, names []string, keep func([]byte) bool) ([]int, []*packettest.Capture) {
	t.Helper()
	p := testutil.Prefix(t)
	var index []int
	var got []*packettest.Capture
	for _, name := range names {
		out, peer := p+name, p+name+"p"
		testutil.Veth(t, out, peer, testutil.VethOpts{NetnsA: v.ns, NetnsB: v.ns})
		index = append(index, v.link(t, out).Attrs().Index)
		var sink *Capture
		err := testutil.InNetns(v.ns, func() (err error) {
			sink, err = Attach(v.link(t, peer).Attrs().Index, Config{Unmatched: Pass})
			return err
		})
		if sink != nil {
			t.Cleanup(func() { sink.Close() })
		}
		testutil.SkipIfNotSupported(t, err)
		got = append(got, packettest.NewCapture(t, v.ns, peer, keep))
	}
	return index, got
}

// attachCapture attaches a capture program dropping unmatched frames to
// v's b end, closed when t ends.
func attachCapture(t *testing.T, v *testVeth, mode Mode) *Capture {
	t.Helper()
	var c *Capture
	err := testutil.InNetns(v.ns, func() (err error) {
		c, err = Attach(v.bi, Config{Unmatched: Drop, Mode: mode})
		return err
	})
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	testutil.SkipIfNotSupported(t, err)
	return c
}
