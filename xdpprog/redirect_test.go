package xdpprog

import (
	"bytes"
	"testing"
	"time"

	"github.com/taas-appliance/taas/broker/xsk"
	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

// TestRedirectToSocket is the first stage of the path of a frame end to
// end: the program attached to a veth end redirects wanted frames into a
// real AF_XDP socket (broker/xsk) bound to queue 0, byte for byte, and
// drops the rest.
func TestRedirectToSocket(t *testing.T) {
	testutil.RequireRoot(t, needVeth+", AF_XDP sockets")
	for _, mode := range []Mode{Native, Generic} {
		t.Run(mode.String(), func(t *testing.T) { testRedirectToSocket(t, mode) })
	}
}

func testRedirectToSocket(t *testing.T, mode Mode) {
	v := vethInNetns(t, 1)
	// Room for a frame one byte larger than the socket's UMEM chunk takes.
	for _, l := range []string{v.a, v.b} {
		if err := v.nl.LinkSetMTU(v.link(t, l), 2000); err != nil {
			t.Fatal(err)
		}
	}

	var c *Capture
	var s *xsk.Socket
	err := testutil.InNetns(v.ns, func() (err error) {
		if s, err = xsk.Open(v.bi, 0, xsk.Config{RxOnly: true, NumFrames: 256, FillSize: 256, RxSize: 256}); err != nil {
			return err
		}
		c, err = Attach(v.bi, Config{Unmatched: Drop, Mode: mode, MaxFrame: s.MaxRxFrame()})
		return err
	})
	if s != nil {
		t.Cleanup(func() { s.Close() })
	}
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	testutil.SkipIfNotSupported(t, err)
	inj := packettest.NewInjector(t, v.ns, v.a)

	if err := c.SetSocket(0, s.FD()); err != nil {
		t.Fatal(err)
	}
	s.Fill()
	var vlans VLANSet
	vlans.Add(0)
	vlans.Add(10)
	if err := c.SetFilter(Filter{MACs: map[[6]byte]Want{macA: WantSrc, macB: WantDst}, VLANs: &vlans}); err != nil {
		t.Fatal(err)
	}

	const n = 16
	wanted := [][]byte{
		frame(t, macOther, macA, nil, 46, 0),
		frame(t, macB, macOther, []tag{{0x8100, 10}}, 100, 0),
		frame(t, macOther, macA, []tag{{0x88a8, 10}, {0x8100, 4000}}, 1400, 0),
	}
	unwanted := [][]byte{
		frame(t, macOther, macOther, nil, 46, 0),
		frame(t, macOther, macA, []tag{{0x8100, 11}}, 46, 0),
		frame(t, macOther, macA, nil, s.MaxRxFrame()+1-14, 0), // would not fit the UMEM chunk
	}
	for i := range n {
		for _, fr := range [][]byte{wanted[i%len(wanted)], unwanted[i%len(unwanted)]} {
			if err := inj.Send(fr); err != nil {
				t.Fatalf("send on %s: %v", v.a, err)
			}
		}
	}

	descs := make([]xsk.Desc, 64)
	got := 0
	for deadline := time.Now().Add(10 * time.Second); got < n && time.Now().Before(deadline); {
		if _, err := s.Poll(100 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
		k := s.Receive(descs)
		for _, d := range descs[:k] {
			if want := wanted[got%len(wanted)]; !bytes.Equal(s.Frame(d), want) {
				t.Errorf("frame %d from the socket = % x, want % x", got, s.Frame(d), want)
			}
			got++
		}
		s.Free(descs[:k])
		s.Fill()
	}
	if got != n {
		t.Errorf("socket received %d frames, want %d", got, n)
	}
	cnt, err := c.Counters()
	if err != nil {
		t.Fatal(err)
	}
	var sent uint64
	for i := range n {
		sent += uint64(len(wanted[i%len(wanted)]) + len(unwanted[i%len(unwanted)]))
	}
	want := Counters{Seen: 2 * n, SeenBytes: sent, Redirected: n, Unmatched: (n + 2) / 3, VLANFiltered: (n + 1) / 3, Oversize: n / 3, Dropped: n}
	if cnt != want {
		t.Errorf("counters = %+v, want %+v", cnt, want)
	}
}
