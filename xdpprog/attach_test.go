package xdpprog

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/taas-appliance/taas/internal/testutil"
)

const needVeth = "CAP_NET_ADMIN and CAP_BPF for netns, veth and XDP attach"

// packetSocket opens an AF_PACKET socket on the link with this index, in
// the namespace of the calling thread: it sends raw frames, and with
// receive set it also receives every frame the link's stack sees.
func packetSocket(ifindex int, receive bool) (int, error) {
	var proto uint16
	if receive {
		proto = htons(unix.ETH_P_ALL)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(proto))
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifindex, Protocol: proto}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

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

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// received counts the frames waiting on a packet socket whose source MAC is
// one of srcs.
func received(t *testing.T, fd int, srcs ...[6]byte) int {
	t.Helper()
	buf := make([]byte, 2048)
	n := 0
	for {
		m, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, src := range srcs {
			if m >= 12 && [6]byte(buf[6:12]) == src {
				n++
			}
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
// t ends.
func vethInNetns(t *testing.T, queues int) *testVeth {
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
	var sock, rsock int
	var second error
	err := testutil.InNetns(v.ns, func() (err error) {
		if c, err = Attach(v.bi, Config{Unmatched: action, Mode: mode}); err != nil {
			return err
		}
		_, second = Attach(v.bi, Config{Mode: mode})
		if sock, err = packetSocket(v.ai, false); err != nil {
			return err
		}
		rsock, err = packetSocket(v.bi, true)
		return err
	})
	if c != nil {
		t.Cleanup(func() { c.Close() }) // a no-op after the Close below
	}
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sock)
	defer unix.Close(rsock)

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
			if _, err := unix.Write(sock, fr); err != nil {
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
	want := Counters{Seen: 3 * n, RedirectFailed: n, Unmatched: n, VLANFiltered: n}
	if action == Drop {
		want.Dropped = 3 * n
	} else {
		want.Passed = 3 * n
	}
	if got != want {
		t.Errorf("counters after %d each of wanted, unwanted and wrong-VLAN frames (no socket, %v) = %+v, want %+v", n, action, got, want)
	}
	// XDP runs before the stack's packet taps: once every frame is counted,
	// a dropped frame can no longer show up there; passed ones arrive.
	stack := received(t, rsock, macA, macOther)
	if action == Pass {
		for deadline := time.Now().Add(10 * time.Second); stack < 3*n && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			stack += received(t, rsock, macA, macOther)
		}
		if stack != 3*n {
			t.Errorf("the stack of %s saw %d of %d passed frames", b, stack, 3*n)
		}
	} else if stack != 0 {
		t.Errorf("the stack of %s saw %d frames, want 0 (all dropped by XDP)", b, stack)
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
