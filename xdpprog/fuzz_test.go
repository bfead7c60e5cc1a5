package xdpprog

import (
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// fuzzCapture is one program instance per run of FuzzFrame (per fuzzing
// process), loaded on first use: loading per input would dominate the run.
// The fuzz target closes it when it ends.
type fuzzCapture struct {
	once sync.Once
	c    *Capture
	xsk  int // the AF_XDP socket in slot 0; 0 for none
	m    *model
	err  error
}

func (fc *fuzzCapture) close() {
	if fc.c != nil {
		fc.c.Close()
	}
	if fc.xsk > 0 {
		unix.Close(fc.xsk)
	}
}

// maxTestRun is the largest input BPF_PROG_TEST_RUN takes for a program
// without frags support: a page less XDP headroom and skb_shared_info.
const maxTestRun = 3000

// FuzzFrame runs arbitrary bytes through the pure-Go model of the parser
// and, as root, through the loaded program itself, and asserts they agree on
// the verdict and on the one outcome counter the frame bumps. The model
// must never panic; the program must never fail to run or abort.
func FuzzFrame(f *testing.F) {
	f.Add(frame(f, macOther, macA, nil, 46, 0))
	f.Add(frame(f, macOther, macA, []tag{{0x88a8, 10}, {0x8100, 11}}, 46, 21))
	cfg := Config{Unmatched: Drop, MaxFrame: 1000}
	flt := standardFilter()
	root := os.Geteuid() == 0
	fc := &fuzzCapture{}
	f.Cleanup(fc.close)
	f.Fuzz(func(t *testing.T, b []byte) {
		fc.once.Do(func() {
			fc.m = newModel(flt, cfg, root)
			if !root {
				return
			}
			if fc.c, fc.err = Load(cfg); fc.err != nil {
				return
			}
			if fc.err = fc.c.SetFilter(flt); fc.err != nil {
				return
			}
			if fc.xsk, fc.err = newXSK(); fc.err != nil {
				return
			}
			fc.err = fc.c.SetSocket(0, fc.xsk)
		})
		if fc.err != nil {
			t.Fatal(fc.err)
		}
		mv, mo := fc.m.run(b)
		if fc.c == nil || len(b) < 14 || len(b) > maxTestRun {
			return // the kernel takes no input of this size (see TestRuntsNeverReachXDP)
		}
		v, delta := runFrame(t, fc.c, b)
		if v != mv {
			t.Fatalf("xdp_capture(% x) = %s, model says %s (%s)", b, verdictName(v), verdictName(mv), mo)
		}
		for name, n := range wantDelta(mv, mo, len(b)) {
			if delta[name] != n {
				t.Fatalf("xdp_capture(% x): counter %s moved by %d, model says %d (%s)", b, name, delta[name], n, mo)
			}
		}
	})
}
