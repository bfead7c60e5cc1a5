package xdpprog

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcap"
	"golang.org/x/net/bpf"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
	"github.com/taas-appliance/taas/pcapfilter"
)

// filterProgram loads classic program prog, translated, as an XDP program
// that returns XDP_PASS when prog accepts a frame and XDP_DROP when it
// rejects it: what the fast path's filter program does for one filter.
func filterProgram(prog []bpf.Instruction) (*ebpf.Program, error) {
	e := &emitter{}
	e.emit(asm.LoadMem(rData, asm.R1, 0, asm.Word), asm.LoadMem(rEnd, asm.R1, 4, asm.Word))
	mem, err := translate(e, prog, "f", "accept", "reject")
	if err != nil {
		return nil, err
	}
	body := e.insns
	e = &emitter{}
	e.emit(body[:2]...)
	zeroScratch(e, mem)
	e.emit(body[2:]...)
	e.label("accept")
	e.emit(asm.Mov.Imm(asm.R0, int32(xdpPass)), asm.Return())
	e.label("reject")
	e.emit(asm.Mov.Imm(asm.R0, int32(xdpDrop)), asm.Return())
	insns, err := prune(e.insns)
	if err != nil {
		return nil, err
	}
	return ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: insns})
}

// verdicts compares prog's decisions in the kernel and in x/net/bpf's VM
// on frames; vm nil: the VM cannot run prog (NegateA), want gives the
// verdicts instead.
func verdicts(t *testing.T, name string, prog []bpf.Instruction, frames [][]byte, want func([]byte) bool) (accepted int) {
	t.Helper()
	if want == nil {
		vm, err := bpf.NewVM(prog)
		if err != nil {
			t.Fatalf("%s: NewVM: %v", name, err)
		}
		want = func(b []byte) bool {
			n, err := vm.Run(b)
			if err != nil {
				t.Fatalf("%s: VM: %v", name, err)
			}
			return n != 0
		}
	}
	p, err := filterProgram(prog)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("%s: verifier: %+v\nprogram:\n%v", name, ve, prog)
		}
		t.Fatalf("%s: %v", name, err)
	}
	defer p.Close()
	for _, fr := range frames {
		ret, err := p.Run(&ebpf.RunOptions{Data: fr})
		if err != nil {
			t.Fatalf("%s: run on %d bytes: %v", name, len(fr), err)
		}
		if got, w := ret == xdpPass, want(fr); got != w {
			t.Fatalf("%s on %x: kernel accepts %v, VM %v\nprogram: %v", name, fr, got, w, prog)
		}
		if ret == xdpPass {
			accepted++
		}
	}
	return accepted
}

// TestTranslate checks each kind of instruction against the VM, and
// NegateA (which the VM lacks) against its definition.
func TestTranslate(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	fr := []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x00, 0x45, 0xff, 0x80, 0x81, 0x82, 0x83}
	frames := [][]byte{fr, fr[:14], fr[:16], append(fr, make([]byte, 100)...)}
	ret := []bpf.Instruction{bpf.RetA{}}
	cases := []struct {
		name string
		prog []bpf.Instruction
	}{
		{"ret k", []bpf.Instruction{bpf.RetConstant{Val: 1}}},
		{"ret 0", []bpf.Instruction{bpf.RetConstant{}}},
		{"ld abs 1", append([]bpf.Instruction{bpf.LoadAbsolute{Off: 15, Size: 1}}, ret...)},
		{"ld abs 2", append([]bpf.Instruction{bpf.LoadAbsolute{Off: 12, Size: 2}, bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x800, SkipFalse: 1}}, bpf.RetConstant{Val: 1}, bpf.RetConstant{})},
		{"ld abs 4 past the end", append([]bpf.Instruction{bpf.LoadAbsolute{Off: 17, Size: 4}}, ret...)},
		{"ld abs far", []bpf.Instruction{bpf.LoadAbsolute{Off: 0xfffffff0, Size: 4}, bpf.RetConstant{Val: 1}}},
		{"ld ind", []bpf.Instruction{bpf.LoadConstant{Dst: bpf.RegX, Val: 3}, bpf.LoadIndirect{Off: 12, Size: 4}, bpf.RetA{}}},
		{"ld ind wraps not", []bpf.Instruction{bpf.LoadConstant{Dst: bpf.RegX, Val: 0xffffffff}, bpf.LoadIndirect{Off: 2, Size: 1}, bpf.RetConstant{Val: 1}}},
		{"msh", []bpf.Instruction{bpf.LoadMemShift{Off: 14}, bpf.TXA{}, bpf.RetA{}}},
		{"len", []bpf.Instruction{bpf.LoadExtension{Num: bpf.ExtLen}, bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: 20, SkipTrue: 1}, bpf.RetConstant{}, bpf.RetA{}}},
		{"mem", []bpf.Instruction{bpf.LoadScratch{Dst: bpf.RegA, N: 3}, bpf.JumpIf{Cond: bpf.JumpEqual, SkipTrue: 1}, bpf.RetConstant{}, bpf.LoadConstant{Val: 7}, bpf.StoreScratch{Src: bpf.RegA, N: 15}, bpf.LoadScratch{Dst: bpf.RegX, N: 15}, bpf.TXA{}, bpf.RetA{}}},
		{"div x zero", []bpf.Instruction{bpf.LoadConstant{Val: 7}, bpf.ALUOpX{Op: bpf.ALUOpDiv}, bpf.RetConstant{Val: 1}}},
		{"mod x", []bpf.Instruction{bpf.LoadConstant{Val: 7}, bpf.LoadConstant{Dst: bpf.RegX, Val: 4}, bpf.ALUOpX{Op: bpf.ALUOpMod}, bpf.RetA{}}},
		{"shift x 32", []bpf.Instruction{bpf.LoadConstant{Val: 7}, bpf.LoadConstant{Dst: bpf.RegX, Val: 32}, bpf.ALUOpX{Op: bpf.ALUOpShiftLeft}, bpf.RetA{}}},
		{"shift k 40", []bpf.Instruction{bpf.LoadConstant{Val: 7}, bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 40}, bpf.RetA{}}},
		{"jset x", []bpf.Instruction{bpf.LoadAbsolute{Off: 14, Size: 1}, bpf.LoadConstant{Dst: bpf.RegX, Val: 0x40}, bpf.JumpIfX{Cond: bpf.JumpBitsSet, SkipTrue: 1}, bpf.RetConstant{}, bpf.RetConstant{Val: 9}}},
		{"jump not set", []bpf.Instruction{bpf.LoadAbsolute{Off: 14, Size: 1}, bpf.JumpIf{Cond: bpf.JumpBitsNotSet, Val: 0x02, SkipTrue: 1}, bpf.RetConstant{}, bpf.RetConstant{Val: 9}}},
		{"ja", []bpf.Instruction{bpf.Jump{Skip: 1}, bpf.RetConstant{}, bpf.RetConstant{Val: 2}}},
		{"big k", []bpf.Instruction{bpf.LoadConstant{Val: 0xfffffffe}, bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: 0xfffffffd, SkipTrue: 1}, bpf.RetConstant{}, bpf.RetConstant{Val: 2}}},
	}
	for _, tc := range cases {
		verdicts(t, tc.name, tc.prog, frames, nil)
	}
	neg := []bpf.Instruction{bpf.LoadConstant{Val: 5}, bpf.NegateA{}, bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0xfffffffb, SkipTrue: 1}, bpf.RetConstant{}, bpf.RetConstant{Val: 1}}
	verdicts(t, "neg", neg, frames, func([]byte) bool { return true })
}

// TestTranslateRefuses checks what the translator refuses with an error.
func TestTranslateRefuses(t *testing.T) {
	cases := []struct {
		name string
		prog []bpf.Instruction
	}{
		{"empty", nil},
		{"ancillary", []bpf.Instruction{bpf.LoadExtension{Num: bpf.ExtProto}, bpf.RetA{}}},
		{"div k 0", []bpf.Instruction{bpf.ALUOpConstant{Op: bpf.ALUOpDiv}, bpf.RetA{}}},
		{"mod k 0", []bpf.Instruction{bpf.ALUOpConstant{Op: bpf.ALUOpMod}, bpf.RetA{}}},
		{"jump past the end", []bpf.Instruction{bpf.Jump{Skip: 1}, bpf.RetA{}}},
		{"no return", []bpf.Instruction{bpf.LoadConstant{Val: 1}}},
		{"ret x", []bpf.Instruction{bpf.RawInstruction{Op: 0x06 | 0x08}}},
		{"scratch 16", []bpf.Instruction{bpf.LoadScratch{N: 16}, bpf.RetA{}}},
		{"too long", make([]bpf.Instruction, MaxFilterLen+1)},
	}
	for _, tc := range cases {
		if err := checkFilter(tc.prog); err == nil {
			t.Errorf("checkFilter(%s) = nil, want an error", tc.name)
		}
	}
}

// pcapExprs are libpcap expressions of the kinds tap flows use.
var pcapExprs = []string{
	"tcp port 443", "udp and port 53", "net 10.1.0.0/16 and not icmp", "tcp[tcpflags] & tcp-syn != 0", "ip6",
	"icmp", "arp", "host 198.51.100.7", "src net 198.51.100.0/24", "dst host 10.1.2.3", "tcp", "udp",
	"port 80 or port 8080", "portrange 1000-2000", "ip6 and tcp port 22", "icmp6", "ip proto 47",
	"less 100", "greater 200", "ip[8] < 64", "ip[2:2] > 200", "tcp[13] = 2", "udp[8:4] = 0",
	"ip6 and udp dst port 4789", "ether host 02:00:00:00:00:0a", "ether broadcast", "ether multicast",
	"ip and not ip[6:2] & 0x1fff = 0", "tcp dst portrange 440-450", "ip host 10.1.0.1 and tcp",
	"not port 22", "ip[0] & 0xf != 5", "len >= 64 and len <= 128", "ip6 net 2001:db8::/32",
	"ip multicast", "(tcp or udp) and port 53", "sctp", "ip proto \\tcp and tcp[0:2] > 1023",
}

// libpcap compiles expr for an Ethernet frame, as pcapfilter does.
func libpcap(t testing.TB, expr string) []bpf.Instruction {
	t.Helper()
	raw, err := pcap.CompileBPFFilter(layers.LinkTypeEthernet, 65535, expr)
	if err != nil {
		t.Fatalf("compile %q: %v", expr, err)
	}
	prog := make([]bpf.Instruction, len(raw))
	for i, r := range raw {
		prog[i] = bpf.RawInstruction{Op: r.Code, Jt: r.Jt, Jf: r.Jf, K: r.K}.Disassemble()
	}
	return prog
}

// randomFrames are frames of the kinds the expressions select, built from
// few values so that they match often, and cut short at random.
func randomFrames(t testing.TB, rnd *rand.Rand, n int) [][]byte {
	t.Helper()
	pick := func(vals ...int) int { return vals[rnd.IntN(len(vals))] }
	v4 := func() net.IP {
		return [][]byte{{10, 1, 0, 1}, {10, 1, 2, 3}, {198, 51, 100, 7}, {198, 51, 100, 255}, {224, 0, 0, 1}, {10, 9, 9, 9}}[rnd.IntN(6)]
	}
	v6 := func() net.IP {
		return net.IP{0x20, 0x01, 0x0d, 0xb8, 15: byte(rnd.IntN(3))}
	}
	macs := [][6]byte{macA, macB, macBcast, macMcast}
	var frames [][]byte
	for len(frames) < n {
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(macs[rnd.IntN(2)][:]), DstMAC: net.HardwareAddr(macs[rnd.IntN(4)][:])}
		ls := []gopacket.SerializableLayer{eth}
		var l4 []gopacket.SerializableLayer
		var proto layers.IPProtocol
		switch rnd.IntN(4) {
		case 0:
			proto = layers.IPProtocolTCP
			l4 = append(l4, &layers.TCP{SrcPort: layers.TCPPort(pick(443, 22, 1500, 50000)), DstPort: layers.TCPPort(pick(443, 80, 445, 8080, 1023)),
				SYN: rnd.IntN(2) == 0, ACK: rnd.IntN(2) == 0, DataOffset: 5})
		case 1:
			proto = layers.IPProtocolUDP
			l4 = append(l4, &layers.UDP{SrcPort: layers.UDPPort(pick(53, 4789, 1234)), DstPort: layers.UDPPort(pick(53, 4789, 2000))})
		case 2:
			proto = layers.IPProtocolICMPv4
			l4 = append(l4, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0)})
		default:
			proto = layers.IPProtocol(pick(47, 132, 58))
		}
		l4 = append(l4, gopacket.Payload(make([]byte, rnd.IntN(300))))
		switch rnd.IntN(5) {
		case 0, 1:
			eth.EthernetType = layers.EthernetTypeIPv4
			ip := &layers.IPv4{Version: 4, IHL: uint8(pick(5, 5, 6)), TTL: uint8(pick(1, 64, 200)), Protocol: proto, SrcIP: v4(), DstIP: v4(),
				FragOffset: uint16(pick(0, 0, 0, 100)), Flags: layers.IPv4Flag(pick(0, 2))}
			if ip.IHL == 6 {
				ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
			}
			ls = append(ls, ip)
		case 2, 3:
			eth.EthernetType = layers.EthernetTypeIPv6
			if proto == layers.IPProtocolICMPv4 {
				proto = layers.IPProtocolICMPv6
				l4[0] = &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}
			}
			ls = append(ls, &layers.IPv6{Version: 6, NextHeader: proto, HopLimit: 64, SrcIP: v6(), DstIP: v6()})
		default:
			eth.EthernetType = layers.EthernetType(pick(0x0806, 0x8100, 0x88cc))
			l4 = []gopacket.SerializableLayer{gopacket.Payload(make([]byte, 28+rnd.IntN(40)))}
		}
		ls = append(ls, l4...)
		buf := gopacket.NewSerializeBuffer()
		opts := gopacket.SerializeOptions{FixLengths: true}
		if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
			continue // e.g. a checksum over a mismatched layer: skip
		}
		b := append([]byte(nil), buf.Bytes()...)
		if rnd.IntN(4) == 0 {
			b = b[:14+rnd.IntN(len(b)-13)]
		}
		frames = append(frames, b)
	}
	return frames
}

// TestTranslateLibpcap runs libpcap's programs of pcapExprs translated in
// the kernel and in the VM on the same random frames.
func TestTranslateLibpcap(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	rnd := rand.New(rand.NewPCG(1, 2))
	frames := randomFrames(t, rnd, 400)
	for _, expr := range pcapExprs {
		n := verdicts(t, expr, libpcap(t, expr), frames, nil)
		t.Logf("%q accepts %d of %d frames", expr, n, len(frames))
	}
}

// TestTranslatePcapfilter runs pcapfilter's programs (libpcap's, rewritten
// for the frame as captured) translated in the kernel and through
// Filter.Match, the AF_XDP workers' interpreter, on the same random
// frames, a third of them with one or two VLAN tags.
func TestTranslatePcapfilter(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	rnd := rand.New(rand.NewPCG(7, 8))
	frames := randomFrames(t, rnd, 400)
	for i, fr := range frames {
		tags := [][]byte{nil, nil, {0x81, 0x00, 0x00, 0x0a}, {0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x20, 0x0b}}[rnd.IntN(4)]
		frames[i] = slices.Concat(fr[:12], tags, fr[12:])
	}
	for _, expr := range pcapExprs {
		f, err := pcapfilter.Compile(expr)
		if err != nil {
			t.Logf("%q: %v", expr, err)
			continue
		}
		n := verdicts(t, expr, f.Program(), frames, f.Match)
		t.Logf("%q accepts %d of %d frames", expr, n, len(frames))
	}
}

// TestTranslateProtochain runs protochain filters (libpcap's loop over
// extension headers, unrolled MaxBackJumps+1 times) in the kernel and
// through Filter.Match on frames behind 0..MaxBackJumps+3 IPv6 extension
// headers, with 0, 1 and 2 VLAN tags, and measures the cost of the
// unrolling: one filter, and MaxFastFilters of them in one filter
// program.
func TestTranslateProtochain(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	var frames [][]byte
	for _, fr := range packettest.ChainFrames(MaxBackJumps + 3) {
		frames = append(frames, packettest.TagVariants(fr)...)
	}
	for _, expr := range []string{"ip6 protochain 6", "ip6 protochain 17", "ip6 protochain 6 or ip protochain 17",
		"ip6 protochain 44", "ip6 protochain 6 and tcp port 443"} {
		f, err := pcapfilter.Compile(expr)
		if err != nil {
			t.Fatal(err)
		}
		n := verdicts(t, expr, f.Program(), frames, f.Match)
		t.Logf("%q accepts %d of %d frames", expr, n, len(frames))
	}
	f, err := pcapfilter.Compile("ip6 protochain 6 or ip protochain 17")
	if err != nil {
		t.Fatal(err)
	}
	e := &emitter{}
	if _, err := translate(e, f.Program(), "f", "accept", "reject"); err != nil {
		t.Fatal(err)
	}
	insns, err := prune(append(e.insns, asm.Ja.Label("accept").WithSymbol("accept"), asm.Ja.Label("reject").WithSymbol("reject")))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p, err := filterProgram(f.Program())
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	t.Logf("%q: %d classic instructions, %d eBPF after unrolling and pruning, loaded in %v", f.Expr(),
		len(f.Program()), len(insns)-2, time.Since(start))
	c, err := Load(Config{})
	testutil.SkipIfNotSupported(t, err)
	t.Cleanup(func() { c.Close() })
	// The verifier walks each filter the frame may need: MaxFastFilters
	// of them pass its limit of 1M instructions processed (measured: about
	// 125k each), and SetFast refuses such a table with ErrFastLimit (the
	// capture stays on the AF_XDP path). A few fit.
	filters := make([][]bpf.Instruction, protochainFit)
	for i := range filters {
		filters[i] = f.Program()
	}
	all, err := c.filterInsns(filters)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	c.mu.Lock()
	prog, err := c.loadFiltersLocked(filters)
	c.mu.Unlock()
	if err != nil {
		t.Fatalf("%d such filters: %v", len(filters), err)
	}
	prog.Close()
	t.Logf("%d such filters in one filter program: %d eBPF instructions, loaded in %v", len(filters), len(all),
		time.Since(start))
}

// protochainFit is how many "ip6 protochain 6 or ip protochain 17" filters
// TestTranslateProtochain loads in one filter program.
const protochainFit = 6

// randomProgram is a random classic program the VM runs: loads at small
// offsets, ALU, forward jumps, scratch memory, returns.
func randomProgram(rnd *rand.Rand, n int) []bpf.Instruction {
	prog := make([]bpf.Instruction, n)
	ops := []bpf.ALUOp{bpf.ALUOpAdd, bpf.ALUOpSub, bpf.ALUOpMul, bpf.ALUOpDiv, bpf.ALUOpOr, bpf.ALUOpAnd,
		bpf.ALUOpShiftLeft, bpf.ALUOpShiftRight, bpf.ALUOpMod, bpf.ALUOpXor}
	conds := []bpf.JumpTest{bpf.JumpEqual, bpf.JumpNotEqual, bpf.JumpGreaterThan, bpf.JumpLessThan,
		bpf.JumpGreaterOrEqual, bpf.JumpLessOrEqual, bpf.JumpBitsSet, bpf.JumpBitsNotSet}
	val := func() uint32 {
		switch rnd.IntN(4) {
		case 0:
			return rnd.Uint32()
		case 1:
			return uint32(rnd.IntN(40))
		default:
			return uint32(rnd.IntN(256))
		}
	}
	size := func() int { return []int{1, 2, 4}[rnd.IntN(3)] }
	skip := func(i int) uint8 { return uint8(rnd.IntN(min(n-1-i, 256))) }
	for i := range n - 1 {
		var ins bpf.Instruction
		switch rnd.IntN(16) {
		case 0, 1:
			ins = bpf.LoadAbsolute{Off: uint32(rnd.IntN(80)), Size: size()}
		case 2:
			ins = bpf.LoadIndirect{Off: uint32(rnd.IntN(60)), Size: size()}
		case 3:
			ins = bpf.LoadMemShift{Off: uint32(rnd.IntN(40))}
		case 4:
			ins = bpf.LoadConstant{Dst: bpf.Register(rnd.IntN(2)), Val: val()}
		case 5:
			ins = bpf.LoadExtension{Num: bpf.ExtLen}
		case 6:
			ins = bpf.LoadScratch{Dst: bpf.Register(rnd.IntN(2)), N: rnd.IntN(16)}
		case 7:
			ins = bpf.StoreScratch{Src: bpf.Register(rnd.IntN(2)), N: rnd.IntN(16)}
		case 8:
			op := ops[rnd.IntN(len(ops))]
			v := val()
			if v == 0 && (op == bpf.ALUOpDiv || op == bpf.ALUOpMod) {
				v = 3
			}
			ins = bpf.ALUOpConstant{Op: op, Val: v}
		case 9:
			ins = bpf.ALUOpX{Op: ops[rnd.IntN(len(ops))]}
		case 10, 11:
			ins = bpf.JumpIf{Cond: conds[rnd.IntN(len(conds))], Val: val(), SkipTrue: skip(i), SkipFalse: skip(i)}
		case 12:
			ins = bpf.JumpIfX{Cond: conds[rnd.IntN(len(conds))], SkipTrue: skip(i), SkipFalse: skip(i)}
		case 13:
			ins = bpf.Jump{Skip: uint32(skip(i))}
		case 14:
			ins = []bpf.Instruction{bpf.TAX{}, bpf.TXA{}}[rnd.IntN(2)]
		default:
			ins = []bpf.Instruction{bpf.RetA{}, bpf.RetConstant{Val: val()}}[rnd.IntN(2)]
		}
		prog[i] = ins
	}
	prog[n-1] = []bpf.Instruction{bpf.RetA{}, bpf.RetConstant{Val: 1}}[rnd.IntN(2)]
	return prog
}

// TestTranslateRandom runs random programs translated in the kernel and in
// the VM on the same random frames.
func TestTranslateRandom(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	rnd := rand.New(rand.NewPCG(3, 4))
	var frames [][]byte
	for range 64 {
		b := make([]byte, 14+rnd.IntN(100))
		for i := range b {
			b[i] = byte(rnd.IntN(8)) // small values: more equal compares
		}
		frames = append(frames, b)
	}
	mixed := 0
	for range 300 {
		prog := randomProgram(rnd, 2+rnd.IntN(40))
		if n := verdicts(t, "random program", prog, frames, nil); n > 0 && n < len(frames) {
			mixed++
		}
	}
	t.Logf("%d of 300 programs accepted some frames and rejected others", mixed)
}

// FuzzTranslate decodes arbitrary bytes as a classic program (8 bytes an
// instruction: op, jt, jf, k) and a frame: the translator must refuse it
// or translate it to code the verifier accepts, and the kernel must then
// decide the frame as the VM does.
func FuzzTranslate(f *testing.F) {
	seed := func(prog []bpf.Instruction, fr []byte) {
		raw, err := bpf.Assemble(prog)
		if err != nil {
			f.Fatal(err)
		}
		var b []byte
		for _, r := range raw {
			b = binary.BigEndian.AppendUint16(b, r.Op)
			b = append(b, r.Jt, r.Jf)
			b = binary.BigEndian.AppendUint32(b, r.K)
		}
		f.Add(b, fr)
	}
	rnd := rand.New(rand.NewPCG(5, 6))
	fr := randomFrames(f, rnd, 1)[0]
	seed(libpcap(f, "tcp port 443"), fr)
	seed(libpcap(f, "ip[2:2] > 200 and ip6 or len > 100"), fr)
	seed(randomProgram(rnd, 20), fr)
	root := os.Geteuid() == 0
	var capture struct {
		once sync.Once
		c    *Capture
		err  error
	}
	f.Cleanup(func() {
		if capture.c != nil {
			capture.c.Close()
		}
	})
	f.Fuzz(func(t *testing.T, code, fr []byte) {
		var prog []bpf.Instruction
		for ; len(code) >= 8; code = code[8:] {
			prog = append(prog, bpf.RawInstruction{Op: binary.BigEndian.Uint16(code), Jt: code[2], Jf: code[3],
				K: binary.BigEndian.Uint32(code[4:])})
		}
		if err := checkFilter(prog); err != nil {
			return
		}
		vm, err := bpf.NewVM(normalize(prog))
		if !root {
			return
		}
		p, err2 := filterProgram(prog)
		if err2 != nil {
			t.Fatalf("translated program refused: %v\nprogram: %v", err2, normalize(prog))
		}
		defer p.Close()
		if err != nil || len(fr) < 14 || len(fr) > maxTestRun {
			return // NegateA: the VM cannot run it; or a frame the kernel does not take
		}
		ret, err := p.Run(&ebpf.RunOptions{Data: fr})
		if err != nil {
			t.Fatal(err)
		}
		n, err := vm.Run(fr)
		if err != nil {
			return // an instruction the VM does not know
		}
		if got := ret == xdpPass; got != (n != 0) {
			t.Fatalf("on %x: kernel accepts %v, VM %v\nprogram: %v", fr, got, n != 0, normalize(prog))
		}
		// The same through SetFast, on a frame from a port: the whole
		// filter program, xdp_capture and xdp_resume.
		capture.once.Do(func() { capture.c, capture.err = Load(Config{}) })
		if capture.err != nil {
			t.Fatal(capture.err)
		}
		c := capture.c
		tab := &FastTable{Ports: map[[6]byte]uint32{macA: 1}, Filters: [][]bpf.Instruction{prog},
			Decisions: map[FastKey]Decision{{Src: 1}: {Flows: []uint16{0}, FlowServices: []uint8{0}, FlowFilters: []int{0}}},
			Copies:    map[uint64]Copies{1: {Outputs: []int{1}, Services: []DecisionService{{Slot: 0}}}}}
		if err := c.SetFast(tab); err != nil {
			t.Fatalf("SetFast: %v\nprogram: %v", err, normalize(prog))
		}
		fr = slices.Clone(fr)
		copy(fr[0:6], macOther[:])
		copy(fr[6:12], macA[:])
		fr[12], fr[13] = 0x08, 0x00
		n, err = vm.Run(fr)
		if err != nil {
			return
		}
		want := FastFiltered
		if n != 0 {
			want = FastRedirected
		}
		if o, err := c.Run(fr); err != nil || o != want {
			t.Fatalf("Run(%x) = %v, %v; want %v\nprogram: %v", fr, o, err, want, normalize(prog))
		}
	})
}
