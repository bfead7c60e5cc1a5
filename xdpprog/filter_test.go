package xdpprog

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/taas-appliance/taas/internal/testutil"
)

// TestSetFilterInPlace walks through filter changes and, after every single
// map write of every SetFilter, runs a set of probe frames: each frame that
// both the old and the new filter redirect must be redirected in that
// intermediate state too. After each change the maps must hold exactly the
// new filter.
func TestSetFilterInPlace(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	macX := [6]byte{0x02, 0, 0, 0, 0, 0x1f}
	vlans := func(add func(s *VLANSet)) *VLANSet { s := new(VLANSet); add(s); return s }
	steps := []struct {
		name string
		f    Filter
	}{
		{"standard", standardFilter()},
		{"rewant, remove, add, narrow vlans", Filter{
			MACs:  map[[6]byte]Want{macA: WantSrc | WantDst, macC: WantSrc, macX: WantDst},
			VLANs: vlans(func(s *VLANSet) { s.Add(10); s.AddRange(300, 400) }),
		}},
		{"all vlans, multicast, one mac", Filter{MACs: map[[6]byte]Want{macX: WantDst}, Multicast: true}},
		{"empty", Filter{}},
		{"standard again", standardFilter()},
		{"zero wants are no entries", Filter{MACs: map[[6]byte]Want{macA: 0, macB: WantDst}, VLANs: vlans(func(s *VLANSet) { s.Add(0) })}},
	}

	var probes [][]byte
	for _, src := range [][6]byte{macA, macB, macC, macX, macOther} {
		for _, dst := range [][6]byte{macA, macB, macC, macX, macOther, macBcast} {
			for _, vid := range []uint16{0, 10, 11, 150, 350} {
				var tags []tag
				if vid != 0 {
					tags = []tag{{0x8100, vid}}
				}
				probes = append(probes, frame(t, dst, src, tags, 46, 0))
			}
		}
	}

	c := load(t, Config{})
	if err := c.SetSocket(0, xskFD(t)); err != nil {
		t.Fatal(err)
	}
	prev := newModel(Filter{}, Config{}, true)
	for _, step := range steps {
		next := newModel(step.f, Config{}, true)
		var keep [][]byte // redirected before and after
		for _, p := range probes {
			pv, _ := prev.run(p)
			nv, _ := next.run(p)
			if pv == xdpRedirect && nv == xdpRedirect {
				keep = append(keep, p)
			}
		}
		writes := 0
		c.afterWrite = func() {
			writes++
			for _, p := range keep {
				v, err := c.objs.XdpCapture.Run(&ebpf.RunOptions{Data: p})
				if err != nil {
					t.Fatal(err)
				}
				if v != xdpRedirect {
					t.Errorf("%s: after map write %d: xdp_capture(% x) = %s, want XDP_REDIRECT (wanted before and after)",
						step.name, writes, p[:18], verdictName(v))
				}
			}
		}
		if err := c.SetFilter(step.f); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		c.afterWrite = nil
		if writes == 0 {
			t.Errorf("%s: SetFilter wrote nothing", step.name)
		}
		t.Logf("%s: %d map writes, %d probes kept throughout", step.name, writes, len(keep))
		checkMaps(t, step.name, c, next)
		// And the settled program agrees with the model on every probe.
		for _, p := range probes {
			want, _ := next.run(p)
			v, err := c.objs.XdpCapture.Run(&ebpf.RunOptions{Data: p})
			if err != nil {
				t.Fatal(err)
			}
			if v != want {
				t.Errorf("%s: xdp_capture(% x) = %s, want %s", step.name, p[:18], verdictName(v), verdictName(want))
			}
		}
		prev = next
	}
}

// checkMaps asserts that the kernel maps hold exactly what m describes.
func checkMaps(t *testing.T, step string, c *Capture, m *model) {
	t.Helper()
	got := map[[6]byte]Want{}
	var k xdpMacKey
	var w uint32
	it := c.objs.Macs.Iterate()
	for it.Next(&k, &w) {
		got[k.Addr] = Want(w)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(m.macs) {
		t.Errorf("%s: macs map has %d entries, want %d (%v vs %v)", step, len(got), len(m.macs), got, m.macs)
	}
	for mac, want := range m.macs {
		if got[mac] != want {
			t.Errorf("%s: macs[%x] = %d, want %d", step, mac, got[mac], want)
		}
	}
	for i := range vlanWords {
		var word uint64
		if err := c.objs.Vlans.Lookup(uint32(i), &word); err != nil {
			t.Fatal(err)
		}
		if word != m.vlans[i] {
			t.Errorf("%s: vlans[%d] = %#x, want %#x", step, i, word, m.vlans[i])
		}
	}
	hints := hintsOf(m.macs)
	for i := range hints {
		var word uint64
		if err := c.objs.Hints.Lookup(uint32(i), &word); err != nil {
			t.Fatal(err)
		}
		if word != hints[i] {
			t.Errorf("%s: hints[%d] = %#x, want %#x", step, i, word, hints[i])
		}
	}
	var mc uint32
	if err := c.objs.Settings.Lookup(settingMulticast, &mc); err != nil {
		t.Fatal(err)
	}
	if (mc == 1) != m.multicast {
		t.Errorf("%s: multicast setting = %d, want %v", step, mc, m.multicast)
	}
}

// TestSetFilterFull fills the filter to MaxMACs and replaces every entry at
// once: the map must hold old and new together while SetFilter widens.
func TestSetFilterFull(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	c := load(t, Config{})
	mk := func(base byte) Filter {
		f := Filter{MACs: map[[6]byte]Want{}}
		for i := range MaxMACs {
			f.MACs[[6]byte{2, base, 0, 0, byte(i >> 8), byte(i)}] = WantSrc
		}
		return f
	}
	for _, base := range []byte{1, 2} {
		if err := c.SetFilter(mk(base)); err != nil {
			t.Fatalf("SetFilter(%d MACs, base %d): %v", MaxMACs, base, err)
		}
	}
	var k xdpMacKey
	var w uint32
	n := 0
	it := c.objs.Macs.Iterate()
	for it.Next(&k, &w) {
		if k.Addr[1] != 2 {
			t.Fatalf("macs map still holds %x", k.Addr)
		}
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	if n != MaxMACs {
		t.Errorf("macs map holds %d entries, want %d", n, MaxMACs)
	}
	if err := c.objs.Macs.Lookup(xdpMacKey{Addr: [6]byte{2, 1, 0, 0, 0, 0}}, &w); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("lookup of a removed MAC: %v, want ErrKeyNotExist", err)
	}
}

// TestHintCollision checks the prefilter's false positives: a MAC whose
// hint bit is set by a wanted MAC must still be unmatched by the exact
// lookup, and a MAC wanted only as a destination must not pass as a source.
func TestHintCollision(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	var twin [6]byte
	for i := 0; ; i++ {
		twin = [6]byte{0x02, 0x99, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
		if macHint(twin) == macHint(macA) {
			break
		}
	}
	c, m := loadFiltered(t, Config{Unmatched: Drop}, standardFilter())
	checkFrame(t, c, m, frame(t, macOther, macA, nil, 46, 0), xdpRedirect, Redirected)
	checkFrame(t, c, m, frame(t, macOther, twin, nil, 46, 0), xdpDrop, Unmatched)
	checkFrame(t, c, m, frame(t, macOther, macB, nil, 46, 0), xdpDrop, Unmatched)
	checkFrame(t, c, m, frame(t, twin, macOther, nil, 46, 0), xdpDrop, Unmatched)
}
