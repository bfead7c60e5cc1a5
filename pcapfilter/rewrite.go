package pcapfilter

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// Classic BPF encoding (linux/filter.h, pcap/bpf.h).
const (
	clsLD   = 0x00
	clsLDX  = 0x01
	clsST   = 0x02
	clsSTX  = 0x03
	clsALU  = 0x04
	clsJMP  = 0x05
	clsRET  = 0x06
	clsMISC = 0x07

	sizeW = 0x00
	sizeH = 0x08
	sizeB = 0x10

	modeIMM = 0x00
	modeABS = 0x20
	modeIND = 0x40
	modeMEM = 0x60
	modeLEN = 0x80
	modeMSH = 0xa0

	aluADD = 0x00
	aluSUB = 0x10
	aluMUL = 0x20
	aluDIV = 0x30
	aluOR  = 0x40
	aluAND = 0x50
	aluLSH = 0x60
	aluRSH = 0x70
	aluNEG = 0x80
	aluMOD = 0x90
	aluXOR = 0xa0

	jmpJA   = 0x00
	jmpJEQ  = 0x10
	jmpJGT  = 0x20
	jmpJGE  = 0x30
	jmpJSET = 0x40

	srcK = 0x00
	srcX = 0x08

	retK = 0x00
	retX = 0x08
	retA = 0x10

	miscTAX = 0x00
	miscTXA = 0x80
)

// The scratch slots the rewrite owns. libpcap allocates its own slots from
// M[0] up, so a program that reaches these is refused as too complex.
const (
	memA   = 13 // A saved around inserted code
	memX   = 14 // X saved around inserted code
	memTag = 15 // the tag length: 0, 4 or 8
)

// etherTypeOff is where the EtherType sits in an untagged frame: loads
// from it on are shifted by the tag length, loads before it (the MAC
// addresses) are not.
const etherTypeOff = 12

// extOffset is where Linux's ancillary loads start (SKF_AD_OFF): libpcap
// emits them for inbound, outbound and ifindex.
const extOffset = 0xfffff000

// EtherTypes of the tags the data path parses (xdpprog/xdp.c): 802.1Q and
// 802.1ad, at most two.
const (
	tpid8021Q  = 0x8100
	tpid8021AD = 0x88a8
)

func loadSize(op uint16) uint32 {
	switch op & 0x18 {
	case sizeH:
		return 2
	case sizeB:
		return 1
	}
	return 4
}

// flow is the control flow of a classic BPF program: successors of each
// instruction.
type flow struct {
	prog []bpf.RawInstruction
	succ [][]int
	pred [][]int
}

// newFlow checks that every jump of prog lands inside it and that no
// instruction falls off its end.
func newFlow(prog []bpf.RawInstruction) (*flow, error) {
	n := len(prog)
	f := &flow{prog: prog, succ: make([][]int, n), pred: make([][]int, n)}
	for i, in := range prog {
		var s []int
		switch in.Op & 0x07 {
		case clsRET:
		case clsJMP:
			if in.Op&0xf0 == jmpJA {
				s = []int{i + 1 + int(int32(in.K))}
			} else {
				s = []int{i + 1 + int(in.Jt), i + 1 + int(in.Jf)}
			}
		default:
			s = []int{i + 1}
		}
		for _, j := range s {
			if j < 0 || j >= n {
				return nil, fmt.Errorf("instruction %d jumps to %d, outside the program", i, j)
			}
			f.pred[j] = append(f.pred[j], i)
		}
		f.succ[i] = s
	}
	return f, nil
}

// Registers as bits for liveness.
const (
	regA = 1
	regX = 2
)

// useDef returns the registers in reads and writes.
func useDef(in bpf.RawInstruction) (use, def int) {
	switch in.Op & 0x07 {
	case clsLD:
		if in.Op&0xe0 == modeIND {
			use = regX
		}
		return use, regA
	case clsLDX:
		return 0, regX
	case clsST:
		return regA, 0
	case clsSTX:
		return regX, 0
	case clsALU:
		use = regA
		if in.Op&0xf0 != aluNEG && in.Op&0x08 == srcX {
			use |= regX
		}
		return use, regA
	case clsJMP:
		if in.Op&0xf0 == jmpJA {
			return 0, 0
		}
		use = regA
		if in.Op&0x08 == srcX {
			use |= regX
		}
		return use, 0
	case clsRET:
		switch in.Op & 0x18 {
		case retA:
			return regA, 0
		case retX:
			return regX, 0
		}
		return 0, 0
	case clsMISC:
		if in.Op&0xf8 == miscTXA {
			return regX, regA
		}
		return regA, regX
	}
	return 0, 0
}

// liveOut returns, per instruction, the registers whose value some path
// reads after it before writing them (iterated to a fixed point: libpcap's
// protochain code loops).
func (f *flow) liveOut() (out []int, entry int) {
	n := len(f.prog)
	out = make([]int, n)
	in := make([]int, n)
	for changed := true; changed; {
		changed = false
		for i := n - 1; i >= 0; i-- {
			o := 0
			for _, s := range f.succ[i] {
				o |= in[s]
			}
			use, def := useDef(f.prog[i])
			ni := use | o&^def
			if o != out[i] || ni != in[i] {
				out[i], in[i], changed = o, ni, true
			}
		}
	}
	return out, in[0]
}

// fusedMSH returns the MSH loads (ldxb 4*([k]&0xf), k >= 12) whose X value
// is read only by indirect loads at offsets >= 12, and only where every
// reaching X value is such a load's. Those MSH loads add the tag length to
// X once, and their indirect loads run unchanged: libpcap's L4 code
// (ports, TCP flags) is MSH then indirect loads.
func (f *flow) fusedMSH() (fused, fusedUse []bool) {
	n := len(f.prog)
	fused = make([]bool, n)
	fusedUse = make([]bool, n)
	var defs []int // the candidate MSH loads
	idx := make(map[int]int)
	for i, in := range f.prog {
		if in.Op == clsLDX|sizeB|modeMSH && in.K >= etherTypeOff {
			idx[i] = len(defs)
			defs = append(defs, i)
			fused[i] = true
		}
	}
	if len(defs) == 0 {
		return fused, fusedUse
	}
	// Reaching definitions of X: bit len(defs) is "any other value".
	words := (len(defs) + 1 + 63) / 64
	other := len(defs)
	in := make([][]uint64, n)
	out := make([][]uint64, n)
	for i := range in {
		in[i] = make([]uint64, words)
		out[i] = make([]uint64, words)
	}
	in[0][other/64] |= 1 << (other % 64) // X = 0 at entry
	for changed := true; changed; {
		changed = false
		for i := 0; i < n; i++ {
			for _, p := range f.pred[i] {
				for w := range in[i] {
					in[i][w] |= out[p][w]
				}
			}
			next := make([]uint64, words)
			_, def := useDef(f.prog[i])
			if d, ok := idx[i]; ok {
				next[d/64] |= 1 << (d % 64)
			} else if def&regX != 0 {
				next[other/64] |= 1 << (other % 64)
			} else {
				copy(next, in[i])
			}
			for w := range next {
				if next[w] != out[i][w] {
					out[i], changed = next, true
					break
				}
			}
		}
	}
	// Drop candidates that reach a use other than a shifted indirect load,
	// or a use that another value also reaches; repeat until stable.
	reachesOnlyFused := func(i int) (ok bool, reach []int) {
		ok = in[i][other/64]&(1<<(other%64)) == 0
		for d, di := range defs {
			if in[i][d/64]&(1<<(d%64)) != 0 {
				reach = append(reach, di)
				ok = ok && fused[di]
			}
		}
		return ok && len(reach) > 0, reach
	}
	for changed := true; changed; {
		changed = false
		for i, ins := range f.prog {
			use, _ := useDef(ins)
			if use&regX == 0 {
				continue
			}
			shifted := ins.Op&0x07 == clsLD && ins.Op&0xe0 == modeIND && ins.K >= etherTypeOff
			allFused, reach := reachesOnlyFused(i)
			if shifted && allFused {
				continue
			}
			for _, di := range reach {
				if fused[di] {
					fused[di], changed = false, true
				}
			}
		}
	}
	for i, ins := range f.prog {
		if ins.Op&0x07 == clsLD && ins.Op&0xe0 == modeIND && ins.K >= etherTypeOff {
			fusedUse[i], _ = reachesOnlyFused(i)
		}
	}
	return fused, fusedUse
}

// unwrittenRead returns the first instruction that may read a scratch slot
// no path has written yet, or -1. libpcap's optimizer emits such reads for
// some expressions (geneve combined with other tests): libpcap then
// decides on whatever its stack held, and Linux's checker refuses the
// program. A must analysis over the slots written on every path.
func (f *flow) unwrittenRead() int {
	n := len(f.prog)
	out := make([]uint16, n)
	for i := range out {
		out[i] = 0xffff // optimistic start of a must analysis
	}
	in := make([]uint16, n)
	for changed := true; changed; {
		changed = false
		for i, ins := range f.prog {
			v := uint16(0xffff)
			if i == 0 {
				v = 0
			}
			for _, p := range f.pred[i] {
				v &= out[p]
			}
			in[i] = v
			switch {
			case ins.Op == clsST || ins.Op == clsSTX:
				v |= 1 << (ins.K & 15)
			}
			if v != out[i] {
				out[i], changed = v, true
			}
		}
	}
	for i, ins := range f.prog {
		if (ins.Op == clsLD|modeMEM || ins.Op == clsLDX|modeMEM) && in[i]&(1<<(ins.K&15)) == 0 {
			return i
		}
	}
	return -1
}

// xIsTag returns, per instruction, whether X holds the tag length when it
// starts in the rewritten program (so a shifted absolute load needs no
// setup), given what each rewrite leaves in X.
func (f *flow) xIsTag(live []int, entryTag bool) []bool {
	n := len(f.prog)
	in := make([]bool, n)
	out := make([]bool, n)
	for i := range out {
		out[i] = true // optimistic start of a must analysis
	}
	for changed := true; changed; {
		changed = false
		for i := 0; i < n; i++ {
			v := i != 0 || entryTag
			for _, p := range f.pred[i] {
				v = v && out[p]
			}
			in[i] = v
			o := xTagAfter(f.prog[i], v, live[i]&regX != 0)
			if o != out[i] {
				out[i], changed = o, true
			}
		}
	}
	return in
}

// xTagAfter is whether X holds the tag length after the rewrite of in,
// given whether it did before and whether X's own value is live after in.
func xTagAfter(in bpf.RawInstruction, before, xLive bool) bool {
	_, def := useDef(in)
	if def&regX != 0 {
		return false
	}
	if in.Op&0x07 != clsLD {
		return before
	}
	switch in.Op & 0xe0 {
	case modeABS:
		switch {
		case in.K >= extOffset, in.K+loadSize(in.Op) <= etherTypeOff:
			return before
		case in.K < etherTypeOff: // straddles 12: assembled through X, restored only when live
			return before && xLive
		}
		return before || !xLive
	case modeLEN:
		return before || !xLive
	case modeIND:
		return false
	}
	return before
}

// emitter builds the rewritten program with symbolic jump targets.
type emitter struct {
	out    []einsn
	labels []int // label -> position, -1 until bound
}

// einsn is an instruction of the rewritten program; jumps name labels.
type einsn struct {
	op     uint16
	k      uint32
	jt, jf int // labels of conditional jumps; jt of ja
}

func (e *emitter) label() int {
	e.labels = append(e.labels, -1)
	return len(e.labels) - 1
}

func (e *emitter) bind(l int) { e.labels[l] = len(e.out) }

func (e *emitter) op(op uint16, k uint32) { e.out = append(e.out, einsn{op: op, k: k, jt: -1, jf: -1}) }

func (e *emitter) jump(op uint16, k uint32, jt, jf int) {
	e.out = append(e.out, einsn{op: op, k: k, jt: jt, jf: jf})
}

// layout resolves labels to offsets. A conditional jump has 8-bit
// offsets: one whose target is too far for them jumps to a "ja" placed
// right after it (as libpcap's own code generator does), and the layout is
// redone until every jump fits.
func (e *emitter) layout() ([]bpf.RawInstruction, error) {
	n := len(e.out)
	farT := make([]bool, n)
	farF := make([]bool, n)
	pos := make([]int, n+1)
	for {
		p := 0
		for i := range e.out {
			pos[i] = p
			p++
			if farT[i] {
				p++
			}
			if farF[i] {
				p++
			}
		}
		pos[n] = p
		at := func(l int) int { return pos[e.labels[l]] }
		grown := false
		for i, in := range e.out {
			if in.op&0x07 != clsJMP || in.op&0xf0 == jmpJA {
				continue
			}
			if !farT[i] && at(in.jt)-(pos[i]+1) > 255 {
				farT[i], grown = true, true
			}
			if !farF[i] && at(in.jf)-(pos[i]+1) > 255 {
				farF[i], grown = true, true
			}
		}
		if grown {
			continue
		}
		prog := make([]bpf.RawInstruction, 0, p)
		ja := func(l int) {
			prog = append(prog, bpf.RawInstruction{Op: clsJMP | jmpJA, K: uint32(int32(at(l) - (len(prog) + 1)))})
		}
		for i, in := range e.out {
			r := bpf.RawInstruction{Op: in.op, K: in.k}
			if in.op&0x07 != clsJMP {
				prog = append(prog, r)
				continue
			}
			if in.op&0xf0 == jmpJA {
				r.K = uint32(int32(at(in.jt) - (pos[i] + 1)))
				prog = append(prog, r)
				continue
			}
			next := pos[i] + 1
			jt, jf := at(in.jt)-next, at(in.jf)-next
			if farT[i] {
				jt = 0
			}
			if farF[i] {
				jf = 0
				if farT[i] {
					jf = 1
				}
			}
			if jt < 0 || jt > 255 || jf < 0 || jf > 255 {
				return nil, errJumps // a backward conditional jump: libpcap never emits one
			}
			r.Jt, r.Jf = uint8(jt), uint8(jf)
			prog = append(prog, r)
			if farT[i] {
				ja(in.jt)
			}
			if farF[i] {
				ja(in.jf)
			}
		}
		return prog, nil
	}
}

var errJumps = &Error{Msg: "filter expression cannot run on the data path: a conditional jump backwards"}

// rewrite turns libpcap's program for an untagged Ethernet frame into one
// that decides the same on the frame as captured, with up to two
// 802.1Q/802.1ad tags after the MAC addresses.
//
// A prologue computes the tag length t into M[15], exactly as xdpprog/xdp.c
// parses tags: an outer 0x8100 or 0x88a8 EtherType means 4 bytes; then an
// inner one 0x8100 or 0x88a8 means 8. Every load at an untagged offset
// >= 12 reads t bytes further (absolute loads, indirect loads x+k, checked
// at run time when k < 12, and MSH loads); a load straddling offset 12 is
// assembled byte by byte; len is len - t. Inserted code keeps A and X as
// the original program expects them, saving them in M[13] and M[14] when
// they are live, and skips the setup when X already holds t.
func rewrite(orig []bpf.RawInstruction) ([]bpf.RawInstruction, error) {
	f, err := newFlow(orig)
	if err != nil {
		return nil, fmt.Errorf("libpcap's program: %w", err)
	}
	for _, in := range orig {
		switch in.Op & 0x07 {
		case clsLD, clsLDX:
			if in.Op&0xe0 != modeMEM {
				break
			}
			fallthrough
		case clsST, clsSTX:
			if in.K >= memA {
				return nil, &Error{Msg: "filter expression is too complex for the data path: it needs " +
					"more scratch memory than the VLAN tag handling leaves"}
			}
		}
		if in.Op&0x07 == clsLD && in.Op&0xe0 == modeABS && in.K >= extOffset {
			return nil, &Error{Msg: "filter expression uses packet metadata (inbound, outbound, ifindex) " +
				"that the data path does not have"}
		}
	}
	if i := f.unwrittenRead(); i >= 0 {
		return nil, &Error{Msg: fmt.Sprintf("filter expression cannot run on the data path: libpcap compiled it "+
			"into a program that reads scratch memory it may not have written (instruction %d); write it "+
			"another way", i)}
	}
	live, entryLive := f.liveOut()
	fused, fusedUse := f.fusedMSH()
	entryTag := entryLive&regX == 0
	xTag := f.xIsTag(live, entryTag)

	e := &emitter{}
	origLabel := make([]int, len(orig))
	for i := range orig {
		origLabel[i] = e.label()
	}
	e.prologue(entryLive, entryTag)
	for i, in := range orig {
		e.bind(origLabel[i])
		e.rewriteOne(in, xTag[i], live[i], fused[i], fusedUse[i], origLabel, i)
	}
	return e.layout()
}

// prologue computes the tag length into M[15]; X holds it too when the
// program does not read X before writing it, and A is 0 again when the
// program reads it first (both start at 0).
func (e *emitter) prologue(entryLive int, entryTag bool) {
	tagged, twoTags, one, zero, done := e.label(), e.label(), e.label(), e.label(), e.label()
	e.op(clsLD|sizeH|modeABS, etherTypeOff)
	e.jump(clsJMP|jmpJEQ|srcK, tpid8021Q, tagged, e.labelNext())
	e.jump(clsJMP|jmpJEQ|srcK, tpid8021AD, tagged, zero)
	e.bind(tagged)
	e.op(clsLD|sizeH|modeABS, etherTypeOff+4)
	e.jump(clsJMP|jmpJEQ|srcK, tpid8021Q, twoTags, e.labelNext())
	e.jump(clsJMP|jmpJEQ|srcK, tpid8021AD, twoTags, one)
	e.bind(twoTags)
	e.op(clsLD|modeIMM, 8)
	e.jump(clsJMP|jmpJA, 0, done, -1)
	e.bind(one)
	e.op(clsLD|modeIMM, 4)
	e.jump(clsJMP|jmpJA, 0, done, -1)
	e.bind(zero)
	e.op(clsLD|modeIMM, 0)
	e.bind(done)
	e.op(clsST, memTag)
	if entryTag {
		e.op(clsMISC|miscTAX, 0)
	}
	if entryLive&regA != 0 {
		e.op(clsLD|modeIMM, 0)
	}
}

// prologueRaw is the prologue as laid out, up to and including the store
// of the tag length (the interpreter runs it as one instruction).
func prologueRaw() []bpf.RawInstruction {
	e := &emitter{}
	e.prologue(0, false)
	prog, err := e.layout()
	if err != nil {
		panic(err) // fixed code: a bug
	}
	return prog
}

// labelNext returns a label for the instruction after the one about to be
// emitted (a conditional jump's fall-through).
func (e *emitter) labelNext() int {
	l := e.label()
	e.labels[l] = len(e.out) + 1
	return l
}

// rewriteOne emits the rewrite of orig[i].
func (e *emitter) rewriteOne(in bpf.RawInstruction, xTag bool, live int, fused, fusedUse bool, origLabel []int, i int) {
	xLive, aLive := live&regX != 0, live&regA != 0
	k := in.K
	switch {
	case in.Op&0x07 == clsJMP:
		if in.Op&0xf0 == jmpJA {
			e.jump(in.Op, 0, origLabel[i+1+int(int32(k))], -1)
		} else {
			e.jump(in.Op, k, origLabel[i+1+int(in.Jt)], origLabel[i+1+int(in.Jf)])
		}

	case in.Op&0x07 == clsLD && in.Op&0xe0 == modeABS:
		size := loadSize(in.Op)
		switch {
		case k >= etherTypeOff:
			e.withTagInX(xTag, xLive, func() { e.op(clsLD|in.Op&0x18|modeIND, k) })
		case k+size > etherTypeOff:
			e.straddle(k, size, xLive, true)
		default:
			e.op(in.Op, k)
		}

	case in.Op&0x07 == clsLD && in.Op&0xe0 == modeLEN:
		e.withTagInX(xTag, xLive, func() {
			e.op(clsLD|sizeW|modeLEN, 0)
			e.op(clsALU|aluSUB|srcX, 0)
		})

	case in.Op&0x07 == clsLDX && in.Op&0xe0 == modeLEN:
		if aLive {
			e.op(clsST, memA)
		}
		e.op(clsLDX|modeMEM, memTag)
		e.op(clsLD|sizeW|modeLEN, 0)
		e.op(clsALU|aluSUB|srcX, 0)
		e.op(clsMISC|miscTAX, 0)
		if aLive {
			e.op(clsLD|modeMEM, memA)
		}

	case in.Op&0x07 == clsLDX && in.Op&0xe0 == modeMSH && k >= etherTypeOff:
		if aLive {
			e.op(clsST, memA)
		}
		if !xTag {
			e.op(clsLDX|modeMEM, memTag)
		}
		e.op(clsLD|sizeB|modeIND, k)
		e.op(clsALU|aluAND|srcK, 0xf)
		e.op(clsALU|aluLSH|srcK, 2)
		if fused {
			e.op(clsALU|aluADD|srcX, 0) // X is t: the indirect loads run unchanged
		}
		e.op(clsMISC|miscTAX, 0)
		if aLive {
			e.op(clsLD|modeMEM, memA)
		}

	case in.Op&0x07 == clsLD && in.Op&0xe0 == modeIND && k >= etherTypeOff:
		if fusedUse {
			e.op(in.Op, k) // X already holds its MSH value + t
			break
		}
		e.indShifted(in.Op, k, xLive)

	case in.Op&0x07 == clsLD && in.Op&0xe0 == modeIND:
		e.indLow(in.Op, k)

	default:
		e.op(in.Op, k)
	}
}

// withTagInX emits body with X holding the tag length, keeping X's value
// when it is live afterwards.
func (e *emitter) withTagInX(xTag, xLive bool, body func()) {
	if xTag {
		body()
		return
	}
	if xLive {
		e.op(clsSTX, memX)
	}
	e.op(clsLDX|modeMEM, memTag)
	body()
	if xLive {
		e.op(clsLDX|modeMEM, memX)
	}
}

// rejectUnless emits a conditional jump over a "ret #0" : the frame is
// rejected when the condition is false.
func (e *emitter) rejectUnless(op uint16, k uint32) {
	skip := e.label()
	e.jump(op, k, skip, e.labelNext())
	e.op(clsRET|retK, 0)
	e.bind(skip)
}

// indShifted emits an indirect load at x+k, k >= 12: it reads x+k+t. An X
// so large that adding t wraps is out of every frame: libpcap rejects the
// frame there, and so does the rewrite.
func (e *emitter) indShifted(op uint16, k uint32, xLive bool) {
	if xLive {
		e.op(clsSTX, memX)
	}
	e.op(clsLD|modeMEM, memTag)
	e.op(clsALU|aluADD|srcX, 0)
	e.rejectUnless(clsJMP|jmpJGE|srcX, 0) // x+t >= x: no wrap
	e.op(clsMISC|miscTAX, 0)
	e.op(op, k)
	if xLive {
		e.op(clsLDX|modeMEM, memX)
	}
}

// indLow emits an indirect load at x+k, k < 12, whose offset o = x+k is
// known only at run time: o+size <= 12 reads o, o >= 12 reads o+t, and a
// load straddling 12 is assembled byte by byte.
func (e *emitter) indLow(op uint16, k uint32) {
	size := loadSize(op)
	shift, straddle, end := e.label(), e.label(), e.label()
	e.op(clsSTX, memX)
	e.op(clsMISC|miscTXA, 0)
	if k > 0 {
		e.op(clsALU|aluADD|srcK, k)
		e.rejectUnless(clsJMP|jmpJGE|srcX, 0) // x+k did not wrap
	}
	if size > 1 {
		e.jump(clsJMP|jmpJGE|srcK, etherTypeOff, shift, e.labelNext())
		e.jump(clsJMP|jmpJGT|srcK, etherTypeOff-size, straddle, e.labelNext())
	} else {
		e.jump(clsJMP|jmpJGE|srcK, etherTypeOff, shift, e.labelNext())
	}
	e.op(clsLDX|modeMEM, memX)
	e.op(op, k)
	e.jump(clsJMP|jmpJA, 0, end, -1)

	e.bind(shift)
	e.op(clsLDX|modeMEM, memTag)
	e.op(clsALU|aluADD|srcX, 0)
	e.rejectUnless(clsJMP|jmpJGE|srcX, 0) // o+t did not wrap
	e.op(clsMISC|miscTAX, 0)
	e.op(clsLD|op&0x18|modeIND, 0)
	e.op(clsLDX|modeMEM, memX)
	if size > 1 {
		e.jump(clsJMP|jmpJA, 0, end, -1)
		e.bind(straddle)
		for o := etherTypeOff - size + 1; o < etherTypeOff; o++ {
			next := e.label()
			e.jump(clsJMP|jmpJEQ|srcK, o, e.labelNext(), next)
			e.straddle(o, size, true, false)
			e.jump(clsJMP|jmpJA, 0, end, -1)
			e.bind(next)
		}
		e.op(clsRET|retK, 0) // not reached: o is one of the above
	}
	e.bind(end)
}

// straddle emits a load of size bytes at untagged offset o < 12 < o+size:
// bytes before 12 are read where they are, the others t bytes further.
// The result is in A; X is kept when xLive (saving it first when save).
func (e *emitter) straddle(o, size uint32, xLive, save bool) {
	if xLive && save {
		e.op(clsSTX, memX)
	}
	e.op(clsLD|sizeB|modeABS, o)
	e.op(clsST, memA)
	for j := uint32(1); j < size; j++ {
		if off := o + j; off < etherTypeOff {
			e.op(clsLD|sizeB|modeABS, off)
		} else {
			e.op(clsLDX|modeMEM, memTag)
			e.op(clsLD|sizeB|modeIND, off)
		}
		e.op(clsMISC|miscTAX, 0)
		e.op(clsLD|modeMEM, memA)
		e.op(clsALU|aluLSH|srcK, 8)
		e.op(clsALU|aluOR|srcX, 0)
		if j+1 < size {
			e.op(clsST, memA)
		}
	}
	if xLive {
		e.op(clsLDX|modeMEM, memX)
	}
}
