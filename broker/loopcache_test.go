package broker

import (
	"strings"
	"testing"

	"github.com/taas-appliance/taas/internal/testutil"
)

// TestLoopChecker checks that LoopChecker answers as FeedsBack does,
// keeps an answer while no link changes, and forgets it as soon as a link
// is added or joins a bridge, with no wait between the change and the
// question. It runs in a namespace of its own, so that links other tests
// add on the host do not reset its memory.
func TestLoopChecker(t *testing.T) {
	testutil.RequireRoot(t, "CAP_NET_ADMIN for a namespace, veth pairs and a bridge")
	p := testutil.Prefix(t)
	ns := testutil.Netns(t, p+"ns")
	in := func(fn func() error) {
		t.Helper()
		if err := testutil.InNetns(ns, fn); err != nil {
			t.Fatal(err)
		}
	}
	var lc *LoopChecker
	in(func() (err error) { lc, err = NewLoopChecker(); return err })
	t.Cleanup(func() { lc.Close() })
	ip := func(args ...string) { testutil.Run(t, "ip", append([]string{"-n", ns}, args...)...) }
	a, b, c, d, br := p+"a", p+"b", p+"c", p+"d", p+"br"

	for _, tc := range []struct {
		name          string
		change        func()
		monitor, capt string
		want          string // substring of the reason; "" for none
		lookupsAfter  int
	}{
		{"links that do not exist", nil, a, b, "", 1},
		{"the same question, nothing changed", nil, a, b, "", 1},
		{"the pair added", func() { ip("link", "add", a, "type", "veth", "peer", "name", b) }, a, b,
			"is the veth peer of capture interface " + b, 2},
		{"asked again", nil, a, b, "is the veth peer", 2},
		{"two pairs and a bridge added", func() {
			ip("link", "add", c, "type", "veth", "peer", "name", d)
			ip("link", "add", br, "type", "bridge")
		}, b, d, "", 3},
		{"both ports of the bridge", func() {
			ip("link", "set", b, "master", br)
			ip("link", "set", d, "master", br)
		}, b, d, "are ports of the same bridge or bond", 4},
		{"the first answer, after the change", nil, a, b, "is the veth peer", 5},
		{"same interface", nil, c, c, "is the capture interface itself", 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.change != nil {
				tc.change()
			}
			var why string
			in(func() (err error) { why, err = lc.FeedsBack(tc.monitor, tc.capt); return err })
			if tc.want == "" && why != "" || !strings.Contains(why, tc.want) {
				t.Errorf("FeedsBack(%s, %s) = %q, want %q", tc.monitor, tc.capt, why, tc.want)
			}
			if lc.lookups != tc.lookupsAfter {
				t.Errorf("lookups = %d, want %d", lc.lookups, tc.lookupsAfter)
			}
			plain, err := "", error(nil)
			in(func() error { plain, err = FeedsBack(tc.monitor, tc.capt); return nil })
			if err != nil || plain != why {
				t.Errorf("FeedsBack = %q, %v, the checker said %q", plain, err, why)
			}
		})
	}
}
