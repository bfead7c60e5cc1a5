package broker

// PROPOSAL from xdpprog (not in the repo; broker owns broker/). Drop it into
// broker/ if you want it; adjust names if your internals moved.

import (
	"os"
	"sync"
	"testing"

	"github.com/taas-appliance/taas/xdpprog"
)

// earlyFilter is one loaded (not attached) XDP program per fuzzing process.
var earlyFilter struct {
	once sync.Once
	c    *xdpprog.Capture
	err  error
}

// FuzzEarlyFilterKeepsWanted checks the contract between the XDP program and
// the classifier: every frame the classifier sends to at least one service
// is kept by the real XDP program (run with BPF_PROG_TEST_RUN) loaded with
// the xdpFilter of the same flows. Flows and frame come from the fuzz input,
// MACs from a small pool so that they meet.
func FuzzEarlyFilterKeepsWanted(f *testing.F) {
	f.Add([]byte{0, 3, 0, 0, 0, 1, 2, 0, 10, 20, 1}, byte(0), byte(1), uint16(0), byte(0), uint16(46))
	f.Add([]byte{1, 1, 5, 5, 0}, byte(4), byte(2), uint16(5), byte(1), uint16(46))
	f.Add([]byte{2, 2, 0, 0, 1}, byte(5), byte(0), uint16(7), byte(2), uint16(0))
	pool := [][6]byte{
		{0xfa, 0x16, 0x3e, 0, 0, 1}, {0xfa, 0x16, 0x3e, 0, 0, 2}, {0xfa, 0x16, 0x3e, 0, 0, 3},
		{0x02, 0, 0, 0, 0, 9}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, {0x01, 0x00, 0x5e, 0, 0, 1},
	}
	f.Fuzz(func(t *testing.T, spec []byte, src, dst byte, vid uint16, tags byte, payload uint16) {
		if os.Geteuid() != 0 {
			t.Skip("requires root: CAP_BPF to load and test-run the XDP program")
		}
		// Flows: 5 bytes each: mac index, direction (1..3), vlan lo, vlan hi
		// (lo > hi: every VID), service slot.
		var flows []compiledFlow
		for i := 0; i+5 <= len(spec) && len(flows) < 16; i += 5 {
			fl := compiledFlow{
				mac:  macKey(pool[int(spec[i])%3]), // ports are unicast
				dir:  Direction(spec[i+1]%3 + 1),
				slot: int32(len(flows)),
				svc:  int32(spec[i+4] % 4),
			}
			if lo, hi := uint16(spec[i+2]), uint16(spec[i+3]); lo <= hi {
				fl.vlans = new(xdpprog.VLANSet)
				fl.vlans.AddRange(lo, hi)
			}
			flows = append(flows, fl)
		}
		// Frame: dst, src, 0..2 tags (outer VID vid%4096, small VIDs likely), payload.
		s, d := pool[int(src)%len(pool)], pool[int(dst)%len(pool)]
		frame := append(append([]byte{}, d[:]...), s[:]...)
		for i := 0; i < int(tags%3); i++ {
			tpid := []byte{0x81, 0x00}
			if i == 0 && tags&4 != 0 {
				tpid = []byte{0x88, 0xa8}
			}
			v := (vid + uint16(i)) % 4096
			frame = append(frame, tpid[0], tpid[1], byte(v>>8), byte(v))
		}
		frame = append(frame, 0x08, 0x00)
		frame = append(frame, make([]byte, int(payload)%1500)...)

		ef := &earlyFilter
		ef.once.Do(func() { ef.c, ef.err = xdpprog.Load(xdpprog.Config{}) })
		if ef.err != nil {
			t.Fatal(ef.err)
		}
		if err := ef.c.SetFilter(xdpFilter(flows)); err != nil {
			t.Fatal(err)
		}
		o, err := ef.c.Run(frame)
		if err != nil {
			t.Fatal(err)
		}

		tbl := buildTable(1, flows, func(int32) *output { return nil }, 16, 4)
		var h frameHeader
		if parseFrame(frame, &h) != parseOK {
			if o.Kept() {
				t.Fatalf("parseFrame refuses % x, XDP keeps it (%v)", frame, o)
			}
			return
		}
		var cl classifier
		cl.resize(tbl)
		ctr := (&counterSet{}).grown(16, 4)
		if hits := cl.classify(tbl, &h, frame, ctr); len(hits) > 0 && !o.Kept() {
			t.Fatalf("classify(% x) = services %v, but the XDP early filter says %v (flows %+v)", frame[:min(len(frame), 22)], hits, o, flows)
		}
	})
}
