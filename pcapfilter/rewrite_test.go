package pcapfilter

import (
	"math/rand"
	"strings"
	"testing"

	"golang.org/x/net/bpf"

	"github.com/taas-appliance/taas/internal/packettest"
)

// asm builds a raw program from x/net/bpf instructions.
func asm(t *testing.T, ins ...bpf.Instruction) []bpf.RawInstruction {
	t.Helper()
	raw, err := bpf.Assemble(ins)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestRewriteCases runs hand-written programs that reach the rewrite's
// paths libpcap rarely or never emits (X or A live across a rewritten
// load, ldx len, an X so large that adding the tag length wraps, jumps
// that outgrow 8 bits) on random frames: the rewritten program on each
// frame with 0, 1 and 2 tags must return what the original returns on the
// untagged frame.
func TestRewriteCases(t *testing.T) {
	long := []bpf.Instruction{ // a jump over 250 loads with X live: they grow, the jump needs a trampoline
		bpf.LoadConstant{Dst: bpf.RegX, Val: 1},
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800, SkipTrue: 250},
	}
	for i := 0; i < 250; i++ {
		long = append(long, bpf.LoadAbsolute{Off: uint32(14 + i%30), Size: 1})
	}
	long = append(long, bpf.TXA{}, bpf.ALUOpConstant{Op: bpf.ALUOpAdd, Val: 1}, bpf.RetA{})
	for _, tc := range []struct {
		name string
		prog []bpf.Instruction
	}{
		{"X live across an absolute load", []bpf.Instruction{
			bpf.LoadConstant{Dst: bpf.RegX, Val: 3},
			bpf.LoadAbsolute{Off: 23, Size: 1},
			bpf.ALUOpX{Op: bpf.ALUOpAdd},
			bpf.RetA{},
		}},
		{"X live across len", []bpf.Instruction{
			bpf.LoadConstant{Dst: bpf.RegX, Val: 7},
			bpf.LoadExtension{Num: bpf.ExtLen},
			bpf.ALUOpX{Op: bpf.ALUOpSub},
			bpf.RetA{},
		}},
		{"ldx len with A live", []bpf.Instruction{
			bpf.LoadAbsolute{Off: 14, Size: 1},
			bpf.RawInstruction{Op: clsLDX | sizeW | modeLEN},
			bpf.ALUOpX{Op: bpf.ALUOpAdd},
			bpf.RetA{},
		}},
		{"MSH with A live, X read by txa", []bpf.Instruction{
			bpf.LoadAbsolute{Off: 12, Size: 2},
			bpf.LoadMemShift{Off: 14},
			bpf.ALUOpX{Op: bpf.ALUOpAdd},
			bpf.TXA{},
			bpf.ALUOpX{Op: bpf.ALUOpAdd},
			bpf.RetA{},
		}},
		{"indirect load, X not from MSH and live after", []bpf.Instruction{
			bpf.LoadAbsolute{Off: 14, Size: 1},
			bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x1f},
			bpf.TAX{},
			bpf.LoadIndirect{Off: 14, Size: 2},
			bpf.ALUOpX{Op: bpf.ALUOpAdd},
			bpf.RetA{},
		}},
		{"indirect load whose x+t wraps", []bpf.Instruction{
			bpf.LoadConstant{Dst: bpf.RegX, Val: 0xfffffffc},
			bpf.LoadIndirect{Off: 20, Size: 1},
			bpf.RetConstant{Val: 1},
		}},
		{"indirect load below 12, x+k wraps", []bpf.Instruction{
			bpf.LoadConstant{Dst: bpf.RegX, Val: 0xfffffffe},
			bpf.LoadIndirect{Off: 4, Size: 1},
			bpf.RetConstant{Val: 1},
		}},
		{"indirect loads below 12 at every offset", func() []bpf.Instruction {
			p := []bpf.Instruction{bpf.LoadConstant{Dst: bpf.RegA, Val: 0}, bpf.StoreScratch{Src: bpf.RegA, N: 1}}
			for _, size := range []int{1, 2, 4} {
				for x := uint32(0); x < 20; x++ {
					p = append(p, bpf.LoadConstant{Dst: bpf.RegX, Val: x}, bpf.LoadIndirect{Off: 2, Size: size},
						bpf.ALUOpX{Op: bpf.ALUOpAdd}, bpf.StoreScratch{Src: bpf.RegA, N: 0},
						bpf.LoadScratch{Dst: bpf.RegA, N: 1}, bpf.ALUOpConstant{Op: bpf.ALUOpMul, Val: 31},
						bpf.StoreScratch{Src: bpf.RegA, N: 2}, bpf.LoadScratch{Dst: bpf.RegX, N: 0},
						bpf.LoadScratch{Dst: bpf.RegA, N: 2}, bpf.ALUOpX{Op: bpf.ALUOpXor},
						bpf.StoreScratch{Src: bpf.RegA, N: 1})
				}
			}
			return append(p, bpf.LoadScratch{Dst: bpf.RegA, N: 1}, bpf.RetA{})
		}()},
		{"absolute loads straddling 12", []bpf.Instruction{
			bpf.LoadAbsolute{Off: 9, Size: 4}, bpf.StoreScratch{Src: bpf.RegA, N: 0},
			bpf.LoadAbsolute{Off: 11, Size: 2}, bpf.ALUOpConstant{Op: bpf.ALUOpShiftLeft, Val: 3},
			bpf.LoadScratch{Dst: bpf.RegX, N: 0}, bpf.ALUOpX{Op: bpf.ALUOpXor},
			bpf.RetA{},
		}},
		{"straddling load then shifted loads, X dead", []bpf.Instruction{
			bpf.LoadAbsolute{Off: 12, Size: 2}, bpf.StoreScratch{Src: bpf.RegA, N: 0},
			bpf.LoadAbsolute{Off: 10, Size: 4}, bpf.StoreScratch{Src: bpf.RegA, N: 1},
			bpf.LoadAbsolute{Off: 14, Size: 1}, bpf.LoadScratch{Dst: bpf.RegX, N: 0}, bpf.ALUOpX{Op: bpf.ALUOpXor},
			bpf.LoadScratch{Dst: bpf.RegX, N: 1}, bpf.ALUOpX{Op: bpf.ALUOpAdd},
			bpf.RetA{},
		}},
		{"long jumps", long},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := asm(t, tc.prog...)
			want, err := decode(orig, false)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := rewrite(orig)
			if err != nil {
				t.Fatalf("rewrite: %v", err)
			}
			got, err := decode(raw, false)
			if err != nil {
				t.Fatalf("rewritten program: %v", err)
			}
			frames := packettest.RandomFrames(rand.New(rand.NewSource(3)), 300)
			for i, fr := range frames {
				w := run(want, fr)
				for tags, tf := range packettest.TagVariants(fr) {
					if g := run(got, tf); g != w {
						t.Fatalf("frame %d with %d tags (% x): rewritten program returns %d, original %d on the untagged frame",
							i, tags, tf, g, w)
					}
				}
			}
			t.Logf("%d instructions -> %d", len(orig), len(raw))
		})
	}
}

func TestRewriteRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		prog []bpf.Instruction
		want string
	}{
		{"scratch slot 13", []bpf.Instruction{bpf.StoreScratch{Src: bpf.RegA, N: 13}, bpf.RetConstant{Val: 1}},
			"scratch memory"},
		{"scratch slot 15 read", []bpf.Instruction{bpf.LoadScratch{Dst: bpf.RegX, N: 15}, bpf.RetConstant{Val: 1}},
			"scratch memory"},
		{"scratch slot read before written", []bpf.Instruction{
			bpf.LoadAbsolute{Off: 12, Size: 2},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800, SkipTrue: 1},
			bpf.StoreScratch{Src: bpf.RegA, N: 2},
			bpf.LoadScratch{Dst: bpf.RegA, N: 2},
			bpf.RetA{},
		}, "reads scratch memory it may not have written (instruction 3)"},
		{"ancillary load", []bpf.Instruction{bpf.LoadExtension{Num: bpf.ExtType}, bpf.RetA{}}, "packet metadata"},
		{"jump outside", []bpf.Instruction{bpf.Jump{Skip: 5}, bpf.RetA{}}, "outside the program"},
		{"falls off the end", []bpf.Instruction{bpf.LoadAbsolute{Off: 12, Size: 2}}, "outside the program"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rewrite(asm(t, tc.prog...))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("rewrite = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// TestMatchShortFrames: frames too short for their Ethernet header or
// tags are rejected (the XDP program counts them before any filter), never
// a panic.
func TestMatchShortFrames(t *testing.T) {
	f, err := Compile("not tcp port 443")
	if err != nil {
		t.Fatal(err)
	}
	full := tagged(tcpFrame(t, 80, false), 0x88a8, 0x8100)
	for n := 0; n < 22; n++ {
		fr := full[:n]
		if f.Match(fr) {
			t.Errorf("Match(% x) = true, want false: the frame ends inside its headers", fr)
		}
		if got := run(plainProgram(t, f), fr); got != 0 {
			t.Errorf("Program on % x returns %d, want 0", fr, got)
		}
	}
	if !f.Match(full) {
		t.Errorf("Match(the whole frame) = false, want true")
	}
}
