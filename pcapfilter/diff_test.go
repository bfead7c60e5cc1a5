package pcapfilter

import (
	"math/rand"
	"testing"
	"time"

	"golang.org/x/net/bpf"

	"github.com/taas-appliance/taas/internal/packettest"
)

// plainProgram decodes f's Program without Match's superinstructions:
// instruction by instruction, as xdpprog translates it.
func plainProgram(t testing.TB, f *Filter) []vmInsn {
	t.Helper()
	raw, err := bpf.Assemble(f.Program())
	if err != nil {
		t.Fatal(err)
	}
	prog, err := decode(raw, false)
	if err != nil {
		t.Fatal(err)
	}
	return prog
}

// interpreters runs f's Program two more ways than Match: instruction by
// instruction without Match's superinstructions (what xdpprog translates),
// and with x/net/bpf's VM when it takes the program (it refuses backward
// jumps: nil then).
func interpreters(t *testing.T, f *Filter) (plain, xvm func([]byte) bool) {
	t.Helper()
	prog := plainProgram(t, f)
	plain = func(fr []byte) bool { return run(prog, fr) != 0 }
	if vm, err := bpf.NewVM(f.Program()); err == nil {
		xvm = func(fr []byte) bool {
			n, err := vm.Run(fr)
			return err == nil && n > 0
		}
	}
	return plain, xvm
}

// TestDifferentialTcpdump compares Match on random frames with 0, 1 and 2
// VLAN tags against the real tcpdump on the untagged frames, for every
// expression of the corpus (issue 11's differential test). The frames
// include packettest.ChainFrames up to MaxBackJumps+3 extension headers:
// a run that needs more than MaxBackJumps backward jumps is the one
// deviation from tcpdump (which follows any number): those pairs must be
// rejected, whatever tcpdump says, and the others decided as tcpdump does.
func TestDifferentialTcpdump(t *testing.T) {
	start := time.Now()
	exprs := packettest.FilterCorpus(t)
	if len(exprs) < 40 {
		t.Fatalf("corpus has %d expressions, want at least 40", len(exprs))
	}
	frames := packettest.RandomFrames(rand.New(rand.NewSource(11)), 1000)
	frames = append(frames, packettest.ChainFrames(MaxBackJumps+3)...)
	pairs, accepted, beyond, deviations := 0, 0, 0, 0
	for _, expr := range exprs {
		f, err := Compile(expr)
		if err != nil {
			t.Errorf("Compile(%q): %v", expr, err)
			continue
		}
		want := packettest.TcpdumpAccepts(t, expr, frames)
		plain, xvm := interpreters(t, f)
		prog := plainProgram(t, f)
		bad := 0
		for i, fr := range frames {
			if want[i] {
				accepted++
			}
			for tags, tf := range packettest.TagVariants(fr) {
				pairs++
				got := map[string]bool{"Match": f.Match(tf), "Program (plain)": plain(tf)}
				if xvm != nil {
					got["Program (x/net/bpf VM)"] = xvm(tf)
				}
				w := want[i]
				// How many backward jumps libpcap's semantics take on tf,
				// unbounded (each turn of protochain's loop moves on at
				// least 8 bytes, so this ends).
				if _, back := runLimit(prog, tf, 1<<20); back > MaxBackJumps {
					beyond++
					if w {
						deviations++
					}
					w = false
				}
				for who, g := range got {
					if g != w && bad < 3 {
						bad++
						t.Errorf("%q: %s on frame %d with %d tags (% x) = %v, tcpdump says %v, want %v", expr, who, i, tags,
							tf, g, want[i], w)
					}
				}
			}
		}
	}
	t.Logf("%d expressions x %d frames x 3 tag variants = %d pairs checked (%d frame/expression "+
		"pairs accepted) in %v", len(exprs), len(frames), pairs, accepted, time.Since(start).Round(time.Millisecond))
	t.Logf("%d pairs need more than %d backward jumps: rejected, %d of them where tcpdump accepts", beyond,
		MaxBackJumps, deviations)
	if deviations == 0 {
		t.Error("no pair where the bound on backward jumps rejects what tcpdump accepts: the corpus or the frames " +
			"miss protochain chains longer than MaxBackJumps")
	}
}
