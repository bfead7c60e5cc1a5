package xdpprog

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/google/gopacket/layers"
	"golang.org/x/net/bpf"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

// TestHandoff: a pinned link outlives its Capture; AttachOver takes it
// over without detaching (the old program runs until Activate, then the
// new one), removes the pin, and Close detaches; a pin of another
// interface is detached rather than taken; RemovePin detaches.
func TestHandoff(t *testing.T) {
	testutil.RequireRoot(t, needVeth)
	v := vethInNetns(t, 1)
	dir := testutil.BPFFS(t)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join(dir, v.b)
	progID := func(name string) uint32 {
		t.Helper()
		if x := v.link(t, name).Attrs().Xdp; x != nil && x.Attached {
			return x.ProgId
		}
		return 0
	}
	inNS := func(fn func() error) {
		t.Helper()
		if err := testutil.InNetns(v.ns, fn); err != nil {
			t.Fatal(err)
		}
	}
	pinned := func(ifindex int) uint32 {
		t.Helper()
		var c *Capture
		inNS(func() (err error) {
			c, err = Attach(ifindex, Config{})
			return err
		})
		if err := c.Pin(pin); err != nil {
			c.Close()
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		return progID(v.b)
	}

	old := pinned(v.bi)
	if old == 0 {
		t.Fatalf("no program on %s after Pin and Close: the pin did not keep it", v.b)
	}
	var c *Capture
	var taken bool
	inNS(func() (err error) {
		c, taken, err = AttachOver(v.bi, Config{}, pin)
		return err
	})
	t.Cleanup(func() { c.Close() })
	if !taken {
		t.Fatal("AttachOver did not take the pinned link over")
	}
	if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin after AttachOver: %v, want it removed", err)
	}
	if got := progID(v.b); got != old {
		t.Errorf("program on %s before Activate = %d, want the previous one, %d", v.b, got, old)
	}
	if err := c.Activate(); err != nil {
		t.Fatal(err)
	}
	if got := progID(v.b); got == old || got == 0 {
		t.Errorf("program on %s after Activate = %d, want a new one (old %d)", v.b, got, old)
	}
	if err := c.Activate(); err != nil {
		t.Errorf("second Activate: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := progID(v.b); got != 0 {
		t.Errorf("program %d still on %s after Close", got, v.b)
	}

	// A pin of b offered to a: b's program goes, a gets a fresh link.
	pinned(v.bi)
	inNS(func() (err error) {
		c, taken, err = AttachOver(v.ai, Config{}, pin)
		return err
	})
	if taken {
		t.Error("AttachOver took over another interface's link")
	}
	if got := progID(v.b); got != 0 {
		t.Errorf("program %d still on %s after AttachOver on %s dropped its pin", got, v.b, v.a)
	}
	if progID(v.a) == 0 {
		t.Errorf("AttachOver without a usable pin left %s without a program", v.a)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	pinned(v.bi)
	if err := RemovePin(pin); err != nil {
		t.Fatal(err)
	}
	if got := progID(v.b); got != 0 {
		t.Errorf("program %d still on %s after RemovePin", got, v.b)
	}
	if err := RemovePin(pin); err != nil {
		t.Errorf("RemovePin without a pin = %v, want nil", err)
	}

	// Another program's link pinned in the same directory (an operator
	// who gave --pin-dir /sys/fs/bpf): RemovePin and AttachOver leave it
	// pinned and attached.
	foreign := filepath.Join(dir, "foreign")
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, Name: "not_taasd", License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}}) // XDP_PASS
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	inNS(func() error {
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: v.bi})
		if err != nil {
			return err
		}
		defer l.Close()
		return l.Pin(foreign)
	})
	t.Cleanup(func() {
		if l, err := link.LoadPinnedLink(foreign, nil); err == nil {
			_ = l.Unpin()
			_ = l.Close()
		}
	})
	want := progID(v.b)
	if err := RemovePin(foreign); !errors.Is(err, ErrNotCapture) {
		t.Errorf("RemovePin of another program's link = %v, want ErrNotCapture", err)
	}
	inNS(func() error {
		c, taken, err := AttachOver(v.bi, Config{}, foreign)
		if err == nil {
			c.Close()
		}
		if taken {
			t.Error("AttachOver took over another program's link")
		}
		return nil
	})
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("another program's pin: %v, want it left", err)
	}
	if got := progID(v.b); got != want || got == 0 {
		t.Errorf("program on %s = %d, want the other program, %d, still attached", v.b, got, want)
	}
}

// TestHandoffKeepsFilters hands over a capture whose fast path filters
// frames: after the old process's Close, after AttachOver and after
// Activate, the monitor gets exactly the frames the filter accepts (the
// kernel empties a program array no file holds, so without its pin the
// old program would send nothing). RemovePin removes both pins.
func TestHandoffKeepsFilters(t *testing.T) {
	testutil.RequireRoot(t, needVeth)
	v := vethInNetns(t, 1)
	mon, got := outputVeths(t, v, []string{"m"}, func(fr []byte) bool {
		return len(fr) >= 14 && [6]byte(fr[6:12]) == macA
	})
	dir := testutil.BPFFS(t)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join(dir, v.b)
	tab := &FastTable{Ports: map[[6]byte]uint32{macA: 1},
		Filters:   [][]bpf.Instruction{libpcap(t, "tcp port 443")},
		Decisions: map[FastKey]Decision{{Src: 1}: {Flows: []uint16{0}, FlowServices: []uint8{0}, FlowFilters: []int{0}}},
		Copies:    map[uint64]Copies{1: {Outputs: []int{mon[0]}, Services: []DecisionService{{Slot: 0}}}}}
	inNS := func(fn func() error) {
		t.Helper()
		if err := testutil.InNetns(v.ns, fn); err != nil {
			t.Fatal(err)
		}
	}
	inj := packettest.NewInjector(t, v.ns, v.a)
	match := l4Frame(t, macOther, macA, layers.IPProtocolTCP, 443)
	check := func(step string) {
		t.Helper()
		got[0].Reset()
		for _, fr := range [][]byte{l4Frame(t, macOther, macA, layers.IPProtocolUDP, 443), match} {
			if err := inj.Send(fr); err != nil {
				t.Fatal(err)
			}
		}
		got[0].WaitN(1, 5*time.Second)
		frames := got[0].Quiet(200*time.Millisecond, 2*time.Second)
		if len(frames) != 1 || !bytes.Equal(frames[0], match) {
			t.Errorf("%s: the monitor got %d frames, want the one tcp port 443 accepts", step, len(frames))
		}
	}
	var old *Capture
	inNS(func() (err error) {
		if old, err = Attach(v.bi, Config{Unmatched: Drop}); err != nil {
			return err
		}
		return old.SetFast(tab)
	})
	check("before the handoff")
	if err := old.Pin(pin); err != nil {
		old.Close()
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	check("after the old owner's Close")
	var c *Capture
	inNS(func() (err error) {
		var taken bool
		c, taken, err = AttachOver(v.bi, Config{Unmatched: Drop}, pin)
		if err == nil && !taken {
			err = errors.New("AttachOver did not take the pinned link over")
		}
		return err
	})
	t.Cleanup(func() { c.Close() })
	if _, err := os.Stat(pin + progsSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("programs' pin after AttachOver: %v, want it removed", err)
	}
	check("after AttachOver")
	inNS(func() error { return c.SetFast(tab) })
	if err := c.Activate(); err != nil {
		t.Fatal(err)
	}
	check("after Activate")
	if err := c.Pin(pin); err != nil {
		t.Fatal(err)
	}
	if err := RemovePin(pin); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{pin, pin + progsSuffix} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after RemovePin: %v, want it removed", p, err)
		}
	}
}
