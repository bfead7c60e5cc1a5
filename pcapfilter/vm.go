package pcapfilter

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/net/bpf"
)

// The interpreter behind Match: classic BPF with libpcap's semantics
// (bpf_filter.c), the oracle of the differential tests: a load outside
// the frame, or a division by X = 0, rejects the frame; shifts by X >= 32
// give 0; A, X and the scratch memory start at 0; len is the frame's
// length. Instructions are decoded once into vmInsn, whose op is a dense
// code for the switch.

// vm opcodes.
const (
	vmRetK uint8 = iota
	vmRetA
	vmLdW
	vmLdH
	vmLdB
	vmLdIndW
	vmLdIndH
	vmLdIndB
	vmLdLen
	vmLdImm
	vmLdMem
	vmLdxImm
	vmLdxMem
	vmLdxLen
	vmLdxMsh
	vmSt
	vmStx
	vmJa
	vmJeqK
	vmJgtK
	vmJgeK
	vmJsetK
	vmJeqX
	vmJgtX
	vmJgeX
	vmJsetX
	vmAddK
	vmSubK
	vmMulK
	vmDivK
	vmModK
	vmAndK
	vmOrK
	vmXorK
	vmLshK
	vmRshK
	vmAddX
	vmSubX
	vmMulX
	vmDivX
	vmModX
	vmAndX
	vmOrX
	vmXorX
	vmLshX
	vmRshX
	vmNeg
	vmTax
	vmTxa
	vmTagLen // the rewrite's prologue in one step; k: where it ends
	// A load fused with the conditional jump (on K) that follows it; the
	// jump stays in place for the jumps that land on it.
	vmLdWJ
	vmLdHJ
	vmLdBJ
	vmLdIndWJ
	vmLdIndHJ
	vmLdIndBJ
	// The rewrite's MSH load: ldb [x+k]; and #0xf; lsh #2; (add x;) tax.
	// jt: how many instructions it stands for.
	vmMsh
)

type vmInsn struct {
	op     uint8
	jt, jf uint8
	k      uint32
}

// MaxBackJumps bounds the backward jumps of one run of a Program: a frame
// whose run would take more is rejected (Match returns false; xdpprog's
// translation, which unrolls the program MaxBackJumps+1 times, rejects it
// too). libpcap emits backward jumps only for protochain, whose loop takes
// exactly one per header it steps over: IPv6 hop-by-hop, destination
// options, routing and fragment headers, and AH (for ip and ip6). RFC 8200
// (4.1) allows each of them once, destination options twice, so a
// conforming chain takes at most 6; 16 leaves room for odd but real chains
// while keeping the unrolled fast-path code within the verifier's limits.
// tcpdump follows any number: on a frame with more than MaxBackJumps such
// headers before the protocol sought, the data path rejects what tcpdump
// might accept (the one deviation from tcpdump).
const MaxBackJumps = 16

// decode turns a program into vm instructions, checking what run relies
// on: known opcodes, jumps inside the program, scratch slots 0..15, and no
// way to run off its end.
func decode(prog []bpf.RawInstruction, fuse bool) ([]vmInsn, error) {
	if len(prog) == 0 {
		return nil, fmt.Errorf("empty program")
	}
	if _, err := newFlow(prog); err != nil {
		return nil, err
	}
	alu := map[uint16]uint8{
		aluADD: vmAddK, aluSUB: vmSubK, aluMUL: vmMulK, aluDIV: vmDivK, aluMOD: vmModK,
		aluAND: vmAndK, aluOR: vmOrK, aluXOR: vmXorK, aluLSH: vmLshK, aluRSH: vmRshK,
	}
	jmp := map[uint16]uint8{jmpJEQ: vmJeqK, jmpJGT: vmJgtK, jmpJGE: vmJgeK, jmpJSET: vmJsetK}
	out := make([]vmInsn, len(prog))
	for i, in := range prog {
		v := vmInsn{k: in.K, jt: in.Jt, jf: in.Jf}
		ok := true
		mem := func(op uint8) uint8 {
			ok = ok && in.K < 16
			return op
		}
		switch in.Op {
		case clsRET | retK:
			v.op = vmRetK
		case clsRET | retA:
			v.op = vmRetA
		case clsLD | sizeW | modeABS:
			v.op = vmLdW
		case clsLD | sizeH | modeABS:
			v.op = vmLdH
		case clsLD | sizeB | modeABS:
			v.op = vmLdB
		case clsLD | sizeW | modeIND:
			v.op = vmLdIndW
		case clsLD | sizeH | modeIND:
			v.op = vmLdIndH
		case clsLD | sizeB | modeIND:
			v.op = vmLdIndB
		case clsLD | sizeW | modeLEN:
			v.op = vmLdLen
		case clsLD | sizeW | modeIMM:
			v.op = vmLdImm
		case clsLD | sizeW | modeMEM:
			v.op = mem(vmLdMem)
		case clsLDX | sizeW | modeIMM:
			v.op = vmLdxImm
		case clsLDX | sizeW | modeMEM:
			v.op = mem(vmLdxMem)
		case clsLDX | sizeW | modeLEN:
			v.op = vmLdxLen
		case clsLDX | sizeB | modeMSH:
			v.op = vmLdxMsh
		case clsST:
			v.op = mem(vmSt)
		case clsSTX:
			v.op = mem(vmStx)
		case clsJMP | jmpJA:
			v.op = vmJa
		case clsALU | aluNEG:
			v.op = vmNeg
		case clsMISC | miscTAX:
			v.op = vmTax
		case clsMISC | miscTXA:
			v.op = vmTxa
		default:
			switch in.Op & 0x07 {
			case clsALU:
				op, known := alu[in.Op&0xf0]
				ok = known && in.Op&^0xf8 == clsALU
				if in.Op&0x08 == srcX {
					op += vmAddX - vmAddK
				}
				v.op = op
			case clsJMP:
				op, known := jmp[in.Op&0xf0]
				ok = known && in.Op&^0xf8 == clsJMP
				if in.Op&0x08 == srcX {
					op += vmJeqX - vmJeqK
				}
				v.op = op
			default:
				ok = false
			}
		}
		if !ok {
			return nil, fmt.Errorf("instruction %d: unsupported %v", i, in)
		}
		out[i] = v
	}
	if !fuse {
		return out, nil
	}
	// Superinstructions: fewer dispatches for the same result.
	fused := map[uint8]uint8{vmLdW: vmLdWJ, vmLdH: vmLdHJ, vmLdB: vmLdBJ,
		vmLdIndW: vmLdIndWJ, vmLdIndH: vmLdIndHJ, vmLdIndB: vmLdIndBJ}
	for i := 0; i+1 < len(out); i++ {
		if op, ok := fused[out[i].op]; ok && out[i+1].op >= vmJeqK && out[i+1].op <= vmJsetK {
			out[i].op = op
		}
	}
	for i := 0; i+3 < len(out); i++ {
		if out[i].op != vmLdIndB || out[i+1] != (vmInsn{op: vmAndK, k: 0xf}) || out[i+2] != (vmInsn{op: vmLshK, k: 2}) {
			continue
		}
		switch {
		case out[i+3].op == vmTax:
			out[i] = vmInsn{op: vmMsh, k: out[i].k, jt: 4}
		case out[i+3].op == vmAddX && i+4 < len(out) && out[i+4].op == vmTax:
			out[i] = vmInsn{op: vmMsh, k: out[i].k, jt: 5, jf: 1}
		}
	}
	// The prologue every rewritten program starts with runs as one
	// instruction.
	if pro := prologueRaw(); len(prog) > len(pro) {
		same := true
		for i, in := range pro {
			same = same && prog[i] == in
		}
		if same {
			out[0] = vmInsn{op: vmTagLen, k: uint32(len(pro))}
		}
	}
	return out, nil
}

// run executes prog on frame and returns what the program returns; a run
// that needs more than MaxBackJumps backward jumps returns 0.
func run(prog []vmInsn, frame []byte) uint32 {
	r, _ := runLimit(prog, frame, MaxBackJumps)
	return r
}

// runLimit executes prog on frame and returns what the program returns and
// how many backward jumps it took; at the limit+1-th backward jump it
// returns 0 (and limit+1).
func runLimit(prog []vmInsn, frame []byte, limit int) (ret uint32, back int) {
	var a, x uint32
	var mem [16]uint32
	n := uint64(len(frame))
	for pc := 0; ; pc++ {
		in := &prog[pc]
		switch in.op {
		case vmRetK:
			return in.k, back
		case vmRetA:
			return a, back
		case vmLdW:
			if uint64(in.k)+4 > n {
				return 0, back
			}
			a = binary.BigEndian.Uint32(frame[in.k:])
		case vmLdH:
			if uint64(in.k)+2 > n {
				return 0, back
			}
			a = uint32(binary.BigEndian.Uint16(frame[in.k:]))
		case vmLdB:
			if uint64(in.k) >= n {
				return 0, back
			}
			a = uint32(frame[in.k])
		case vmLdIndW:
			o := uint64(x) + uint64(in.k)
			if o+4 > n {
				return 0, back
			}
			a = binary.BigEndian.Uint32(frame[o:])
		case vmLdIndH:
			o := uint64(x) + uint64(in.k)
			if o+2 > n {
				return 0, back
			}
			a = uint32(binary.BigEndian.Uint16(frame[o:]))
		case vmLdIndB:
			o := uint64(x) + uint64(in.k)
			if o >= n {
				return 0, back
			}
			a = uint32(frame[o])
		case vmLdLen:
			a = uint32(n)
		case vmLdImm:
			a = in.k
		case vmLdMem:
			a = mem[in.k&15]
		case vmLdxImm:
			x = in.k
		case vmLdxMem:
			x = mem[in.k&15]
		case vmLdxLen:
			x = uint32(n)
		case vmLdxMsh:
			if uint64(in.k) >= n {
				return 0, back
			}
			x = uint32(frame[in.k]&0xf) << 2
		case vmSt:
			mem[in.k&15] = a
		case vmStx:
			mem[in.k&15] = x
		case vmJa:
			off := int32(in.k)
			if off < 0 {
				if back++; back > limit {
					return 0, back
				}
			}
			pc += int(off)
		case vmJeqK:
			pc += cond(a == in.k, in)
		case vmJgtK:
			pc += cond(a > in.k, in)
		case vmJgeK:
			pc += cond(a >= in.k, in)
		case vmJsetK:
			pc += cond(a&in.k != 0, in)
		case vmJeqX:
			pc += cond(a == x, in)
		case vmJgtX:
			pc += cond(a > x, in)
		case vmJgeX:
			pc += cond(a >= x, in)
		case vmJsetX:
			pc += cond(a&x != 0, in)
		case vmAddK:
			a += in.k
		case vmSubK:
			a -= in.k
		case vmMulK:
			a *= in.k
		case vmDivK:
			if in.k == 0 {
				return 0, back
			}
			a /= in.k
		case vmModK:
			if in.k == 0 {
				return 0, back
			}
			a %= in.k
		case vmAndK:
			a &= in.k
		case vmOrK:
			a |= in.k
		case vmXorK:
			a ^= in.k
		case vmLshK:
			a <<= in.k // 0 from 32 on, as the translator and x/net/bpf give (libpcap refuses constant shifts > 31)
		case vmRshK:
			a >>= in.k
		case vmAddX:
			a += x
		case vmSubX:
			a -= x
		case vmMulX:
			a *= x
		case vmDivX:
			if x == 0 {
				return 0, back
			}
			a /= x
		case vmModX:
			if x == 0 {
				return 0, back
			}
			a %= x
		case vmAndX:
			a &= x
		case vmOrX:
			a |= x
		case vmXorX:
			a ^= x
		case vmLshX:
			a <<= x // Go: 0 for x >= 32, as libpcap
		case vmRshX:
			a >>= x
		case vmNeg:
			a = -a
		case vmTax:
			x = a
		case vmTxa:
			a = x
		case vmLdWJ:
			if uint64(in.k)+4 > n {
				return 0, back
			}
			a = binary.BigEndian.Uint32(frame[in.k:])
			pc++
			pc += condK(a, &prog[pc])
		case vmLdHJ:
			if uint64(in.k)+2 > n {
				return 0, back
			}
			a = uint32(binary.BigEndian.Uint16(frame[in.k:]))
			pc++
			pc += condK(a, &prog[pc])
		case vmLdBJ:
			if uint64(in.k) >= n {
				return 0, back
			}
			a = uint32(frame[in.k])
			pc++
			pc += condK(a, &prog[pc])
		case vmLdIndWJ:
			o := uint64(x) + uint64(in.k)
			if o+4 > n {
				return 0, back
			}
			a = binary.BigEndian.Uint32(frame[o:])
			pc++
			pc += condK(a, &prog[pc])
		case vmLdIndHJ:
			o := uint64(x) + uint64(in.k)
			if o+2 > n {
				return 0, back
			}
			a = uint32(binary.BigEndian.Uint16(frame[o:]))
			pc++
			pc += condK(a, &prog[pc])
		case vmLdIndBJ:
			o := uint64(x) + uint64(in.k)
			if o >= n {
				return 0, back
			}
			a = uint32(frame[o])
			pc++
			pc += condK(a, &prog[pc])
		case vmMsh:
			o := uint64(x) + uint64(in.k)
			if o >= n {
				return 0, back
			}
			a = uint32(frame[o]&0xf) << 2
			if in.jf != 0 {
				a += x
			}
			x = a
			pc += int(in.jt) - 1
		case vmTagLen:
			if n < 14 {
				return 0, back
			}
			a = 0
			if tp := uint16(frame[12])<<8 | uint16(frame[13]); tp == tpid8021Q || tp == tpid8021AD {
				if n < 18 {
					return 0, back
				}
				a = 4
				if tp := uint16(frame[16])<<8 | uint16(frame[17]); tp == tpid8021Q || tp == tpid8021AD {
					a = 8
				}
			}
			mem[memTag] = a
			pc = int(in.k) - 1
		}
	}
}

// condK returns the offset the conditional jump on K in adds to pc.
func condK(a uint32, in *vmInsn) int {
	var c bool
	switch in.op {
	case vmJeqK:
		c = a == in.k
	case vmJgtK:
		c = a > in.k
	case vmJgeK:
		c = a >= in.k
	default: // vmJsetK
		c = a&in.k != 0
	}
	if c {
		return int(in.jt)
	}
	return int(in.jf)
}

// cond returns the offset a conditional jump adds to pc.
func cond(c bool, in *vmInsn) int {
	if c {
		return int(in.jt)
	}
	return int(in.jf)
}
