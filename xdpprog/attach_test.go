package xdpprog

import (
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

const needVeth = "CAP_NET_ADMIN and CAP_BPF for netns, veth and XDP attach"

// TestAttachVeth attaches the program to one end of a veth pair inside a
// namespace of its own, sends raw frames from the other end, and checks that
// the bpf_link is attached, refuses a second program, moves the counters,
// applies the unmatched action, and detaches on Close.
func TestAttachVeth(t *testing.T) {
	testutil.RequireRoot(t, needVeth)
	for _, mode := range []Mode{Native, Generic} {
		for _, action := range []Action{Pass, Drop} {
			t.Run(mode.String()+"/"+action.String(), func(t *testing.T) { testAttachVeth(t, mode, action) })
		}
	}
}

// testVeth is a veth pair a <-> b alone in a namespace of its own.
type testVeth struct {
	ns, a, b string
	// ai and bi are the ends' interface indexes inside ns.
	ai, bi int
	nl     *netlink.Handle // in ns
}

// vethInNetns creates a namespace holding a veth pair with this many RX and
// TX queues per end, with IPv6 off so that the kernel sends no router
// solicitations or MLD reports the counters would see. Everything goes when
// t ends, and then the test is checked for leaks (testutil.Leaks): what it
// attached, opened or pinned since is closed.
func vethInNetns(t *testing.T, queues int) *testVeth {
	t.Cleanup(testutil.Leaks(t))
	p := testutil.Prefix(t)
	v := &testVeth{ns: p + "ns", a: p + "a", b: p + "b"}
	testutil.Netns(t, v.ns)
	testutil.Run(t, "ip", "netns", "exec", v.ns, "sysctl", "-qw",
		"net.ipv6.conf.default.disable_ipv6=1", "net.ipv6.conf.all.disable_ipv6=1")
	testutil.Veth(t, v.a, v.b, testutil.VethOpts{NetnsA: v.ns, NetnsB: v.ns, Queues: queues})
	nsh, err := netns.GetFromName(v.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	if v.nl, err = netlink.NewHandleAt(nsh); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.nl.Close)
	v.ai, v.bi = v.link(t, v.a).Attrs().Index, v.link(t, v.b).Attrs().Index
	return v
}

func (v *testVeth) link(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := v.nl.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func testAttachVeth(t *testing.T, mode Mode, action Action) {
	v := vethInNetns(t, 1)
	a, b := v.a, v.b

	var c *Capture
	var second error
	err := testutil.InNetns(v.ns, func() (err error) {
		if c, err = Attach(v.bi, Config{Unmatched: action, Mode: mode}); err != nil {
			return err
		}
		_, second = Attach(v.bi, Config{Mode: mode})
		return nil
	})
	if c != nil {
		t.Cleanup(func() { c.Close() }) // a no-op after the Close below
	}
	if err != nil {
		t.Fatal(err)
	}
	inj := packettest.NewInjector(t, v.ns, a)
	// What b's stack sees of the test's frames: XDP runs before its taps.
	stack := packettest.NewCapture(t, v.ns, b, func(fr []byte) bool {
		return len(fr) >= 12 && ([6]byte(fr[6:12]) == macA || [6]byte(fr[6:12]) == macOther)
	})

	if x := v.link(t, b).Attrs().Xdp; x == nil || !x.Attached {
		t.Fatalf("link %s: no XDP program attached after Attach (%+v)", b, x)
	}
	if second == nil {
		t.Errorf("a second Attach to %s succeeded, want an error (a bpf_link never replaces a program)", b)
	}

	untagged := new(VLANSet)
	untagged.Add(0)
	if err := c.SetFilter(Filter{MACs: map[[6]byte]Want{macA: WantSrc}, VLANs: untagged}); err != nil {
		t.Fatal(err)
	}
	const n = 20
	wanted := frame(t, macOther, macA, nil, 46, 0)
	unwanted := frame(t, macOther, macOther, []tag{{0x8100, 7}}, 46, 0)
	// A raw tagged frame keeps its tag in the bytes XDP sees.
	wrongVLAN := frame(t, macOther, macA, []tag{{0x8100, 7}}, 46, 0)
	for range n {
		for _, fr := range [][]byte{wanted, unwanted, wrongVLAN} {
			if err := inj.Send(fr); err != nil {
				t.Fatalf("send on %s: %v", a, err)
			}
		}
	}
	// veth delivers through the peer's NAPI: wait, bounded, for the counts.
	var got Counters
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got, err = c.Counters(); err != nil {
			t.Fatal(err)
		}
		if got.Seen >= 3*n {
			break
		}
	}
	// SeenBytes: whole frames, native and generic alike (the veth's own
	// rx_bytes counts 14 less a frame natively).
	want := Counters{Seen: 3 * n, SeenBytes: n * uint64(len(wanted)+len(unwanted)+len(wrongVLAN)),
		RedirectFailed: n, Unmatched: n, VLANFiltered: n}
	if action == Drop {
		want.Dropped = 3 * n
	} else {
		want.Passed = 3 * n
	}
	if got != want {
		t.Errorf("counters after %d each of wanted, unwanted and wrong-VLAN frames (no socket, %v) = %+v, want %+v", n, action, got, want)
	}
	// XDP runs before the stack's packet taps: passed frames arrive there,
	// dropped ones never do.
	if action == Pass {
		if got := len(stack.WaitN(3*n, 10*time.Second)); got != 3*n {
			t.Errorf("the stack of %s saw %d of %d passed frames", b, got, 3*n)
		}
	} else if got := len(stack.Quiet(200*time.Millisecond, 2*time.Second)); got != 0 {
		t.Errorf("the stack of %s saw %d frames, want 0 (all dropped by XDP)", b, got)
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if x := v.link(t, b).Attrs().Xdp; x != nil && x.Attached {
		t.Errorf("link %s: XDP program %d still attached after Close", b, x.ProgId)
	}
}

// TestCloseAfterLinkDeleted: a capture interface can vanish under an
// attached program (the broker sees it as a link event); the Capture must
// still read its counters and close cleanly.
func TestCloseAfterLinkDeleted(t *testing.T) {
	testutil.RequireRoot(t, needVeth)
	v := vethInNetns(t, 1)
	var c *Capture
	err := testutil.InNetns(v.ns, func() (err error) {
		c, err = Attach(v.bi, Config{Mode: Generic})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.nl.LinkDel(v.link(t, v.a)); err != nil {
		t.Fatal(err)
	}
	if _, err := v.nl.LinkByName(v.b); err == nil {
		t.Fatalf("link %s still exists after deleting its peer", v.b)
	}
	if _, err := c.Counters(); err != nil {
		t.Errorf("Counters after the link went away: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close after the link went away: %v", err)
	}
}

func TestAttachErrors(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	for _, ifindex := range []int{0, -1, 1 << 30} {
		c, err := Attach(ifindex, Config{})
		if err == nil {
			c.Close()
			t.Errorf("Attach(%d) = nil error, want one", ifindex)
			continue
		}
		if !strings.Contains(err.Error(), "attach xdp to ifindex") {
			t.Errorf("Attach(%d) = %q, want the ifindex named", ifindex, err)
		}
	}
	if _, err := Attach(1, Config{Mode: 7}); err == nil {
		t.Error("Attach with an unknown mode = nil error, want one")
	}
}
