package pcapfilter

import (
	"math/rand"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/packettest"
)

// TestDifferentialTcpdump compares Match on random frames with 0, 1 and 2
// VLAN tags against the real tcpdump on the untagged frames, for every
// expression of the corpus (issue 11's differential test).
func TestDifferentialTcpdump(t *testing.T) {
	start := time.Now()
	exprs := packettest.FilterCorpus(t)
	if len(exprs) < 40 {
		t.Fatalf("corpus has %d expressions, want at least 40", len(exprs))
	}
	frames := packettest.RandomFrames(rand.New(rand.NewSource(11)), 600)
	pairs, accepted := 0, 0
	for _, expr := range exprs {
		f, err := Compile(expr)
		if err != nil {
			t.Errorf("Compile(%q): %v", expr, err)
			continue
		}
		want := packettest.TcpdumpAccepts(t, expr, frames)
		bad := 0
		for i, fr := range frames {
			if want[i] {
				accepted++
			}
			for tags, tf := range packettest.TagVariants(fr) {
				pairs++
				if got := f.Match(tf); got != want[i] && bad < 3 {
					bad++
					t.Errorf("%q: Match(frame %d with %d tags: % x) = %v, tcpdump says %v", expr, i, tags, tf, got, want[i])
				}
			}
		}
	}
	t.Logf("%d expressions x %d frames x 3 tag variants = %d pairs checked (%d frame/expression "+
		"pairs accepted) in %v", len(exprs), len(frames), pairs, accepted, time.Since(start).Round(time.Millisecond))
}
