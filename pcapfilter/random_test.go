package pcapfilter

import (
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcap"

	"github.com/taas-appliance/taas/internal/packettest"
)

// randomExpr builds an expression from the corpus' primitives and byte
// tests at random offsets (direct, indirect, across the EtherType),
// combined with and/or/not: shapes no corpus line has, for the rewrite's
// analyses (which registers are live, where X holds the tag length).
func randomExpr(rng *rand.Rand, corpus []string, depth int) string {
	if depth > 0 && rng.Intn(3) > 0 {
		a, b := randomExpr(rng, corpus, depth-1), randomExpr(rng, corpus, depth-1)
		switch rng.Intn(3) {
		case 0:
			return fmt.Sprintf("(%s) and (%s)", a, b)
		case 1:
			return fmt.Sprintf("(%s) or (%s)", a, b)
		}
		return fmt.Sprintf("not (%s)", a)
	}
	sizes := []int{1, 2, 4}
	ops := []string{"=", "!=", ">", "<", ">="}
	size := sizes[rng.Intn(3)]
	switch rng.Intn(7) {
	case 0, 1:
		return corpus[rng.Intn(len(corpus))]
	case 2:
		return fmt.Sprintf("ether[%d:%d] %s %d", rng.Intn(40), size, ops[rng.Intn(len(ops))], rng.Intn(1<<(8*min(size, 2))))
	case 3:
		return fmt.Sprintf("ether[%d:%d] & 0x%x != 0", 8+rng.Intn(8), size, rng.Intn(1<<16))
	case 4:
		protos := []string{"ip", "tcp", "udp", "icmp", "ip6"}
		p := protos[rng.Intn(len(protos))]
		if p == "ip6" {
			size = 1
		}
		return fmt.Sprintf("%s[%d:%d] %s %d", p, rng.Intn(24), size, ops[rng.Intn(len(ops))], rng.Intn(256))
	case 5:
		return fmt.Sprintf("ether[ether[%d] & %d + %d : %d] > %d", rng.Intn(20), rng.Intn(16), rng.Intn(16), size, rng.Intn(256))
	}
	return fmt.Sprintf("len %s %d", ops[rng.Intn(len(ops))], 14+rng.Intn(120))
}

// TestRandomExpressions compares Match and the plain run of Program on
// random frames with 0, 1 and 2 tags against libpcap's bpf_filter on the
// untagged frames, for random expressions.
func TestRandomExpressions(t *testing.T) {
	start := time.Now()
	rng := rand.New(rand.NewSource(42))
	corpus := packettest.FilterCorpus(t)
	frames := packettest.RandomFrames(rand.New(rand.NewSource(43)), 300)
	checked, refused := 0, 0
	const exprs = 1000
	for n := 0; n < exprs; n++ {
		expr := randomExpr(rng, corpus, 3)
		f, err := Compile(expr)
		if err != nil {
			refused++ // too long, too many port terms, libpcap's "rejects all packets", unwritten scratch reads
			continue
		}
		oracle, err := pcap.NewBPF(layers.LinkTypeEthernet, snaplen, expr)
		if err != nil {
			t.Fatalf("pcap.NewBPF(%q): %v", expr, err)
		}
		plain := plainProgram(t, f)
		for i, fr := range frames {
			want := oracle.Matches(gopacket.CaptureInfo{CaptureLength: len(fr), Length: len(fr)}, fr)
			for tags, tf := range packettest.TagVariants(fr) {
				checked++
				if got := f.Match(tf); got != want {
					t.Fatalf("%q: Match(frame %d with %d tags: % x) = %v, libpcap says %v", expr, i, tags, tf, got, want)
				}
				if got := run(plain, tf) != 0; got != want {
					t.Fatalf("%q: Program on frame %d with %d tags (% x) = %v, libpcap says %v", expr, i, tags, tf, got, want)
				}
			}
		}
	}
	t.Logf("%d (expression, tagged frame) pairs checked, %d of %d random expressions refused, in %v",
		checked, refused, exprs, time.Since(start).Round(time.Millisecond))
}
