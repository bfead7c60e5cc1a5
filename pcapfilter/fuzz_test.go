package pcapfilter

import (
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcap"
	"golang.org/x/net/bpf"

	"github.com/taas-appliance/taas/internal/packettest"
)

// FuzzCompile: Compile never panics, refuses with *Error only, and an
// accepted program stays inside itself, ends every path in a return, fits
// MaxInstructions and runs on short and long frames.
//
// Fuzz it in a network namespace of its own (unshare -n): should an input
// get past the name checks, libpcap's lookup must find no network.
func FuzzCompile(f *testing.F) {
	for _, expr := range packettest.FilterCorpus(f) {
		f.Add(expr)
	}
	frames := [][]byte{make([]byte, 14), make([]byte, 60), make([]byte, 1514)}
	for _, fr := range frames[1:] {
		for i := range fr {
			fr[i] = byte(i * 7)
		}
	}
	f.Fuzz(func(t *testing.T, expr string) {
		flt, err := Compile(expr)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("Compile(%q) error %T %v, want an *Error", expr, err, err)
			}
			// libpcap says so only after a lookup the name checks must
			// have prevented.
			for _, lookup := range []string{"unknown host", "unknown network", "unknown ether host",
				"unknown port", "unknown ip proto", "unknown protocol:", "host name", " host '"} {
				if msg := err.Error(); strings.HasPrefix(msg, "invalid filter expression: ") && strings.Contains(msg, lookup) {
					t.Fatalf("Compile(%q) = %v: libpcap looked a name up", expr, err)
				}
			}
			return
		}
		prog := flt.Program()
		if len(prog) == 0 || len(prog) > MaxInstructions {
			t.Fatalf("Compile(%q): %d instructions", expr, len(prog))
		}
		raw, err := bpf.Assemble(prog)
		if err != nil {
			t.Fatalf("Compile(%q): program does not assemble: %v", expr, err)
		}
		if _, err := newFlow(raw); err != nil { // every jump lands inside, nothing falls off the end
			t.Fatalf("Compile(%q): %v", expr, err)
		}
		for _, fr := range frames {
			for _, tf := range packettest.TagVariants(fr) {
				flt.Match(tf)
			}
		}
	})
}

// FuzzMatch: for the corpus' expressions and fuzzed frames, Match and the
// plain run of Program on the frame with 0, 1 and 2 tags decide as
// libpcap's own bpf_filter on the untagged frame.
func FuzzMatch(f *testing.F) {
	exprs := packettest.FilterCorpus(f)
	type pair struct {
		flt    *Filter
		plain  []vmInsn
		oracle *pcap.BPF
	}
	compiled := make([]pair, len(exprs))
	for i, expr := range exprs {
		flt, err := Compile(expr)
		if err != nil {
			f.Fatalf("Compile(%q): %v", expr, err)
		}
		oracle, err := pcap.NewBPF(layers.LinkTypeEthernet, snaplen, expr)
		if err != nil {
			f.Fatalf("pcap.NewBPF(%q): %v", expr, err)
		}
		compiled[i] = pair{flt, plainProgram(f, flt), oracle}
	}
	f.Fuzz(func(t *testing.T, which uint8, frame []byte) {
		// Untagged frames only: at least an Ethernet header, and an
		// EtherType that is not a tag (such a frame is a tagged one).
		if len(frame) < 14 {
			return
		}
		if et := uint16(frame[12])<<8 | uint16(frame[13]); et == 0x8100 || et == 0x88a8 {
			return
		}
		p := compiled[int(which)%len(compiled)]
		want := p.oracle.Matches(gopacket.CaptureInfo{CaptureLength: len(frame), Length: len(frame)}, frame)
		for tags, tf := range packettest.TagVariants(frame) {
			if got := p.flt.Match(tf); got != want {
				t.Fatalf("%q: Match(frame with %d tags % x) = %v, libpcap says %v", p.flt.Expr(), tags, tf, got, want)
			}
			if got := run(p.plain, tf) != 0; got != want {
				t.Fatalf("%q: Program on frame with %d tags (% x) = %v, libpcap says %v", p.flt.Expr(), tags, tf, got, want)
			}
		}
	})
}
