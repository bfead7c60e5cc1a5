package xdpprog

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

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
