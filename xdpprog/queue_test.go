package xdpprog

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/taas-appliance/taas/internal/testutil"
)

// xdpMD is struct xdp_md, the context BPF_PROG_TEST_RUN hands the program.
type xdpMD struct {
	Data, DataEnd, DataMeta uint32
	IngressIfindex          uint32
	RxQueueIndex            uint32
	EgressIfindex           uint32
}

// TestSocketPerQueue runs the program as if frames arrived on different RX
// queues of a 4-queue veth: each goes to the XSKMAP slot of its own queue,
// and a queue without a socket counts redirect_failed.
func TestSocketPerQueue(t *testing.T) {
	testutil.RequireRoot(t, needVeth)
	v := vethInNetns(t, 4)
	c, _ := loadFiltered(t, Config{Unmatched: Drop}, standardFilter()) // socket in slot 0
	if err := c.SetSocket(2, xskFD(t)); err != nil {
		t.Fatal(err)
	}
	fr := frame(t, macOther, macA, nil, 46, 0)
	want := map[uint32]Outcome{0: Redirected, 1: RedirectFailed, 2: Redirected, 3: RedirectFailed}
	got := map[uint32]uint32{}
	// The kernel looks the ingress interface up in the caller's namespace.
	err := testutil.InNetns(v.ns, func() error {
		for q := range uint32(4) {
			ctx := xdpMD{DataEnd: uint32(len(fr)), IngressIfindex: uint32(v.bi), RxQueueIndex: q}
			verdict, err := c.objs.XdpCapture.Run(&ebpf.RunOptions{Data: fr, Context: ctx})
			if err != nil {
				return err
			}
			got[q] = verdict
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for q, outcome := range want {
		wv := xdpRedirect
		if outcome != Redirected {
			wv = xdpDrop
		}
		if got[q] != wv {
			t.Errorf("xdp_capture on rx queue %d = %s, want %s (%s)", q, verdictName(got[q]), verdictName(wv), outcome)
		}
	}
	cnt, err := c.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if cnt.Redirected != 2 || cnt.RedirectFailed != 2 {
		t.Errorf("counters = %+v, want 2 redirected and 2 redirect_failed", cnt)
	}
}
