package xdpprog

import (
	"fmt"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/net/bpf"

	"github.com/taas-appliance/taas/pcapfilter"
)

// A classic BPF -> eBPF translator for the flow filters of the fast path
// (issue 11): pcapfilter.Filter.Program runs in the AF_XDP workers as
// classic BPF (Filter.Match) and, translated here, in the XDP program, so
// both paths decide alike (TestTranslatePcapfilter, TestTranslateLibpcap
// and TestTranslateRandom run the kernel and an interpreter on the same
// frames).
//
// The translation follows libpcap's semantics, which pcapfilter's
// interpreter and golang.org/x/net/bpf's VM share: A and X
// are 32-bit, unsigned, both 0 at the start; scratch memory M[0..15] lives
// on the stack and starts zeroed; a packet load past the end of the frame,
// or a division or modulo by X == 0, ends the program rejecting the frame;
// a shift by 32 or more gives 0; a return accepts when its value is not 0.
// Ancillary loads other than len are refused, and so is anything the VM
// does not run, NegateA aside (the VM lacks it; the kernel's classic BPF
// has it). A Jump may go backwards (its Skip read as an int32, as
// pcapfilter does: libpcap's protochain loops over extension headers); a
// run takes at most MaxBackJumps of them and is rejected at the next one,
// exactly as in pcapfilter's interpreter: the translator unrolls such a
// program MaxBackJumps+1 times (see translate).
//
// Registers of the emitted code: the frame is [rData, rEnd); A and X live
// in rA and rX, zero-extended (all ALU ops are 32-bit); rT is a temporary.
// The code never calls a helper, so it needs no other register and keeps
// rCtx and rScratch for the program around it.
const (
	rA       = asm.R2
	rX       = asm.R3
	rT       = asm.R4
	rCtx     = asm.R6
	rData    = asm.R7
	rEnd     = asm.R8
	rScratch = asm.R9
	// memOff is the stack offset of M[0]; M[n] is at memOff + 4n.
	memOff = -64
	// maxPacketOff bounds the packet offsets the verifier lets a program
	// compute (MAX_PACKET_OFF); no XDP frame is that long, so a load past
	// it rejects, as past the end of the frame.
	maxPacketOff = 0xffff
	// MaxFilterLen is the longest classic program translated
	// (BPF_MAXINSNS).
	MaxFilterLen = 4096
	// MaxBackJumps is pcapfilter's bound on the backward jumps of one run,
	// which the translation keeps.
	MaxBackJumps = pcapfilter.MaxBackJumps
)

// emitter builds an instruction list whose labels fall on the next
// instruction emitted.
type emitter struct {
	insns   asm.Instructions
	pending []string
}

// label puts name on the next instruction emitted.
func (e *emitter) label(name string) { e.pending = append(e.pending, name) }

func (e *emitter) emit(ins ...asm.Instruction) {
	for _, in := range ins {
		// Two labels on one spot: the first jumps to the second.
		for len(e.pending) > 1 {
			e.insns = append(e.insns, asm.Ja.Label(e.pending[1]).WithSymbol(e.pending[0]))
			e.pending = e.pending[1:]
		}
		if len(e.pending) == 1 {
			in = in.WithSymbol(e.pending[0])
			e.pending = nil
		}
		e.insns = append(e.insns, in)
	}
}

// normalize returns prog with every RawInstruction disassembled, so that
// the translator and the checks see the VM's instruction types.
func normalize(prog []bpf.Instruction) []bpf.Instruction {
	out := make([]bpf.Instruction, len(prog))
	for i, ins := range prog {
		if raw, ok := ins.(bpf.RawInstruction); ok {
			ins = raw.Disassemble()
		}
		out[i] = ins
	}
	return out
}

// checkFilter reports why classic program prog cannot be translated.
func checkFilter(prog []bpf.Instruction) error {
	_, err := translate(&emitter{}, prog, "c", "accept", "reject")
	return err
}

// translate appends the eBPF form of classic program prog to e: code that
// runs it on the frame [rData, rEnd) and jumps to accept or reject. Its
// labels start with p, which must be unique in e. It returns the scratch
// slots the program reads (bit n: M[n]), which the caller zeroes first.
func translate(e *emitter, prog []bpf.Instruction, p, accept, reject string) (mem uint16, err error) {
	if len(prog) == 0 {
		return 0, fmt.Errorf("empty program")
	}
	if len(prog) > MaxFilterLen {
		return 0, fmt.Errorf("%d instructions, at most %d", len(prog), MaxFilterLen)
	}
	prog = normalize(prog)
	// dest is the instruction a jump of instruction i over skip lands on.
	dest := func(i int, skip int64) (int, error) {
		d := int64(i) + 1 + skip
		if d < 0 || d >= int64(len(prog)) {
			return 0, fmt.Errorf("instruction %d: jump out of the program", i)
		}
		return int(d), nil
	}
	// Which instructions are jump targets: only those get a label. A Jump's
	// Skip is an int32 (pcapfilter's semantics): negative, it jumps
	// backwards.
	targets := map[int]bool{}
	backward := false
	for i, ins := range prog {
		var skips []int64
		switch ins := ins.(type) {
		case bpf.Jump:
			skips = []int64{int64(int32(ins.Skip))}
			backward = backward || int32(ins.Skip) < 0
		case bpf.JumpIf:
			skips = []int64{int64(ins.SkipTrue), int64(ins.SkipFalse)}
		case bpf.JumpIfX:
			skips = []int64{int64(ins.SkipTrue), int64(ins.SkipFalse)}
		}
		for _, s := range skips {
			d, err := dest(i, s)
			if err != nil {
				return 0, err
			}
			targets[d] = true
		}
	}
	switch prog[len(prog)-1].(type) {
	case bpf.RetA, bpf.RetConstant:
	default:
		return 0, fmt.Errorf("the last instruction is not a return")
	}
	// A program that jumps backwards (libpcap's protochain) is unrolled:
	// copy c of it runs after c backward jumps, so a backward jump goes to
	// its target in the next copy, and in the last one rejects, as
	// pcapfilter's interpreter does past MaxBackJumps. The code before the
	// targets of later copies is unreachable, and pruned.
	copies := 1
	if backward {
		copies = MaxBackJumps + 1
	}
	e.emit(asm.Mov.Imm32(rA, 0), asm.Mov.Imm32(rX, 0))
	for c := range copies {
		m, err := translateCopy(e, prog, targets, fmt.Sprintf("%s.%d", p, c), fmt.Sprintf("%s.%d", p, c+1),
			c+1 < copies, accept, reject)
		if err != nil {
			return 0, err
		}
		mem |= m
	}
	return mem, nil
}

// translateCopy emits one copy of prog (see translate): its labels start
// with p, those of the next copy with next, which a backward jump enters
// when more is true and rejects otherwise.
func translateCopy(e *emitter, prog []bpf.Instruction, targets map[int]bool, p, next string, more bool,
	accept, reject string) (mem uint16, err error) {
	at := func(i int) string { return fmt.Sprintf("%s.%d", p, i) }
	for i, ins := range prog {
		if targets[i] {
			e.label(at(i))
		}
		bad := func(why string) (uint16, error) {
			return 0, fmt.Errorf("instruction %d (%v): %s", i, ins, why)
		}
		switch ins := ins.(type) {
		case bpf.LoadAbsolute:
			if err := loadPacket(e, rA, noIndex, ins.Off, ins.Size, reject); err != nil {
				return bad(err.Error())
			}
		case bpf.LoadIndirect:
			if err := loadPacket(e, rA, rX, ins.Off, ins.Size, reject); err != nil {
				return bad(err.Error())
			}
		case bpf.LoadMemShift:
			if err := loadPacket(e, rX, noIndex, ins.Off, 1, reject); err != nil {
				return bad(err.Error())
			}
			e.emit(asm.And.Imm32(rX, 0xf), asm.LSh.Imm32(rX, 2))
		case bpf.LoadConstant:
			e.emit(asm.Mov.Imm32(reg(ins.Dst), int32(ins.Val)))
		case bpf.LoadExtension:
			if ins.Num != bpf.ExtLen {
				return bad("ancillary loads are not supported")
			}
			// A pointer difference is a scalar to a privileged program.
			e.emit(asm.Mov.Reg(rA, rEnd), asm.Sub.Reg(rA, rData), asm.Mov.Reg32(rA, rA))
		case bpf.LoadScratch:
			if ins.N < 0 || ins.N > 15 {
				return bad("scratch slot out of range 0..15")
			}
			mem |= 1 << ins.N
			e.emit(asm.LoadMem(reg(ins.Dst), asm.RFP, int16(memOff+4*ins.N), asm.Word))
		case bpf.StoreScratch:
			if ins.N < 0 || ins.N > 15 {
				return bad("scratch slot out of range 0..15")
			}
			e.emit(asm.StoreMem(asm.RFP, int16(memOff+4*ins.N), reg(ins.Src), asm.Word))
		case bpf.ALUOpConstant:
			op, ok := aluOps[ins.Op]
			if !ok {
				return bad("unknown ALU operation")
			}
			switch {
			case (ins.Op == bpf.ALUOpDiv || ins.Op == bpf.ALUOpMod) && ins.Val == 0:
				return bad("division by zero")
			case (ins.Op == bpf.ALUOpShiftLeft || ins.Op == bpf.ALUOpShiftRight) && ins.Val >= 32:
				e.emit(asm.Mov.Imm32(rA, 0)) // as Go shifts: all bits out
			default:
				e.emit(op.Imm32(rA, int32(ins.Val)))
			}
		case bpf.ALUOpX:
			op, ok := aluOps[ins.Op]
			if !ok {
				return bad("unknown ALU operation")
			}
			switch ins.Op {
			case bpf.ALUOpDiv, bpf.ALUOpMod:
				e.emit(asm.JEq.Imm32(rX, 0, reject), op.Reg32(rA, rX))
			case bpf.ALUOpShiftLeft, bpf.ALUOpShiftRight:
				shift, done := fmt.Sprintf("%s.%ds", p, i), fmt.Sprintf("%s.%dd", p, i)
				e.emit(asm.JLT.Imm32(rX, 32, shift), asm.Mov.Imm32(rA, 0), asm.Ja.Label(done))
				e.label(shift)
				e.emit(op.Reg32(rA, rX))
				e.label(done)
			default:
				e.emit(op.Reg32(rA, rX))
			}
		case bpf.NegateA:
			e.emit(asm.Neg.Imm32(rA, 0))
		case bpf.Jump:
			d := i + 1 + int(int32(ins.Skip))
			switch {
			case d > i:
				e.emit(asm.Ja.Label(at(d)))
			case more:
				e.emit(asm.Ja.Label(fmt.Sprintf("%s.%d", next, d)))
			default:
				e.emit(asm.Ja.Label(reject))
			}
		case bpf.JumpIf:
			if err := jump(e, ins.Cond, false, int32(ins.Val), at, i, ins.SkipTrue, ins.SkipFalse); err != nil {
				return bad(err.Error())
			}
		case bpf.JumpIfX:
			if err := jump(e, ins.Cond, true, 0, at, i, ins.SkipTrue, ins.SkipFalse); err != nil {
				return bad(err.Error())
			}
		case bpf.RetA:
			e.emit(asm.JNE.Imm32(rA, 0, accept), asm.Ja.Label(reject))
		case bpf.RetConstant:
			if ins.Val != 0 {
				e.emit(asm.Ja.Label(accept))
			} else {
				e.emit(asm.Ja.Label(reject))
			}
		case bpf.TAX:
			e.emit(asm.Mov.Reg32(rX, rA))
		case bpf.TXA:
			e.emit(asm.Mov.Reg32(rA, rX))
		default:
			return bad("not supported")
		}
	}
	return mem, nil
}

var aluOps = map[bpf.ALUOp]asm.ALUOp{
	bpf.ALUOpAdd: asm.Add, bpf.ALUOpSub: asm.Sub, bpf.ALUOpMul: asm.Mul, bpf.ALUOpDiv: asm.Div,
	bpf.ALUOpOr: asm.Or, bpf.ALUOpAnd: asm.And, bpf.ALUOpShiftLeft: asm.LSh, bpf.ALUOpShiftRight: asm.RSh,
	bpf.ALUOpMod: asm.Mod, bpf.ALUOpXor: asm.Xor,
}

func reg(r bpf.Register) asm.Register {
	if r == bpf.RegX {
		return rX
	}
	return rA
}

// noIndex: an absolute load.
const noIndex = asm.R10

var sizes = map[int]asm.Size{1: asm.Byte, 2: asm.Half, 4: asm.Word}

// loadPacket emits dst = the big-endian size bytes at offset off (plus
// register index, unless it is noIndex) of the frame, jumping to reject when
// they are not all inside it. The offset is computed in 64 bits, as the
// VM does, so off + X never wraps.
func loadPacket(e *emitter, dst, index asm.Register, off uint32, size int, reject string) error {
	sz, ok := sizes[size]
	if !ok {
		return fmt.Errorf("load of %d bytes", size)
	}
	end := uint64(off) + uint64(size)
	if end > maxPacketOff {
		e.emit(asm.Ja.Label(reject))
		return nil
	}
	// rT points at the bytes; dst, a pointer past them, is compared with
	// rEnd, which makes the verifier accept a load at rT.
	if index == noIndex {
		e.emit(asm.Mov.Reg(rT, rData), asm.Add.Imm(rT, int32(off)))
	} else {
		// X + off, bounded for the verifier's pointer arithmetic.
		e.emit(asm.Mov.Reg(rT, index), asm.Add.Imm(rT, int32(off)),
			asm.JGT.Imm(rT, int32(maxPacketOff-size), reject), asm.Add.Reg(rT, rData))
	}
	e.emit(asm.Mov.Reg(dst, rT), asm.Add.Imm(dst, int32(size)), asm.JGT.Reg(dst, rEnd, reject),
		asm.LoadMem(dst, rT, 0, sz))
	if size > 1 {
		e.emit(asm.HostTo(asm.BE, dst, sz))
	}
	return nil
}

// jumpOps are the eBPF jumps of the VM's conditions; BitsNotSet is a JSet
// with its targets swapped.
var jumpOps = map[bpf.JumpTest]asm.JumpOp{
	bpf.JumpEqual: asm.JEq, bpf.JumpNotEqual: asm.JNE, bpf.JumpGreaterThan: asm.JGT, bpf.JumpLessThan: asm.JLT,
	bpf.JumpGreaterOrEqual: asm.JGE, bpf.JumpLessOrEqual: asm.JLE, bpf.JumpBitsSet: asm.JSet,
	bpf.JumpBitsNotSet: asm.JSet,
}

// jump emits a conditional jump of instruction i on A against val (or X).
func jump(e *emitter, cond bpf.JumpTest, x bool, val int32, at func(int) string, i int, skipTrue, skipFalse uint8) error {
	op, ok := jumpOps[cond]
	if !ok {
		return fmt.Errorf("unknown jump condition")
	}
	if cond == bpf.JumpBitsNotSet {
		skipTrue, skipFalse = skipFalse, skipTrue
	}
	t, f := at(i+1+int(skipTrue)), at(i+1+int(skipFalse))
	if x {
		e.emit(op.Reg32(rA, rX, t))
	} else {
		e.emit(op.Imm32(rA, val, t))
	}
	if skipFalse != 0 {
		e.emit(asm.Ja.Label(f))
	}
	return nil
}

// zeroScratch emits the zeroing of the scratch slots of mem (bit n: M[n]),
// which classic BPF starts with and the verifier wants written before they
// are read.
func zeroScratch(e *emitter, mem uint16) {
	for n := 0; n < 16; n++ {
		if mem&(1<<n) != 0 {
			e.emit(asm.StoreImm(asm.RFP, int16(memOff+4*n), 0, asm.Word))
		}
	}
}

// prune drops the instructions no path reaches, which the verifier refuses:
// a classic program may hold some, and so may the code around it (a filter
// that always accepts never reaches its reject label).
func prune(insns asm.Instructions) (asm.Instructions, error) {
	at := map[string]int{}
	for i, ins := range insns {
		if s := ins.Symbol(); s != "" {
			at[s] = i
		}
	}
	seen := make([]bool, len(insns))
	work := []int{0}
	for len(work) > 0 {
		i := work[len(work)-1]
		work = work[:len(work)-1]
		for i < len(insns) && !seen[i] {
			seen[i] = true
			ins := insns[i]
			op := ins.OpCode.JumpOp()
			if !ins.OpCode.Class().IsJump() || op == asm.Call {
				i++
				continue
			}
			if op == asm.Exit {
				break
			}
			ref := ins.Reference()
			t, ok := at[ref]
			if !ok {
				return nil, fmt.Errorf("instruction %d: jump to unknown label %q", i, ref)
			}
			work = append(work, t)
			if op == asm.Ja {
				break
			}
			i++
		}
	}
	out := make(asm.Instructions, 0, len(insns))
	for i, ins := range insns {
		if seen[i] {
			out = append(out, ins)
		}
	}
	return out, nil
}
